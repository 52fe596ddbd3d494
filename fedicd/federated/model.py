"""The global model in the server's process: the seeded initial arrays, and a module holding given arrays."""

from __future__ import annotations

import numpy as np
import torch

from fedicd.train_config import TrainConfig

__all__ = ["initial_arrays", "load_global_model"]


def initial_arrays(train_cfg: TrainConfig, input_dim: int, n_labels: int) -> dict[str, np.ndarray]:
    """The seeded initial model, exactly as centralized training initialises it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.resolved_seed)
        model = train_cfg.build(input_dim, n_labels)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def load_global_model(train_cfg: TrainConfig, input_dim: int, n_labels: int,
                      arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    """A module of the run's head holding ``arrays`` (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = train_cfg.build(input_dim, n_labels)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    return model
