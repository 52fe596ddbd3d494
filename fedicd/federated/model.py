"""The global model in the server's process: the seeded initial arrays, and a module holding given arrays.

A run folder staged with a public warm start (``[warm_start]``, :mod:`fedicd.warm_start`) holds
:data:`INITIAL_MODEL`, the warm-started head: :func:`initial_arrays` given that folder returns it instead of the
seeded random head (a resumed run starts from its checkpoint and never reads it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedicd.train_config import TrainConfig

__all__ = ["INITIAL_MODEL", "initial_arrays", "load_global_model", "seeded_model", "save_initial_arrays", "server_scores",
           "model_record"]

INITIAL_MODEL = "initial_model.npz"


def seeded_model(train_cfg: TrainConfig, input_dim: int, n_labels: int) -> torch.nn.Module:
    """The run's head as centralized training initialises it (seeded; the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.resolved_seed)
        return train_cfg.build(input_dim, n_labels)


def initial_arrays(train_cfg: TrainConfig, input_dim: int, n_labels: int,
                   run_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The initial global model: ``run_dir``'s warm start when it holds one, else the seeded initial model.

    Raises
    ------
    ValueError
        The saved warm start does not fit the run's head (other keys or shapes).
    """
    seeded = {k: v.detach().numpy().copy() for k, v in seeded_model(train_cfg, input_dim, n_labels).state_dict().items()}
    path = Path(run_dir) / INITIAL_MODEL if run_dir is not None else None
    if path is None or not path.exists():
        return seeded
    with np.load(path) as saved:
        arrays = {k: saved[k] for k in saved.files}
    wrong = sorted(k for k in seeded.keys() | arrays.keys()
                   if k not in arrays or k not in seeded or arrays[k].shape != seeded[k].shape)
    if wrong:
        raise ValueError(f"{path} does not fit the run's head ({train_cfg.head}, {input_dim} → {n_labels}): "
                         f"entries {wrong[:5]} differ; stage the run again")
    return {k: arrays[k].astype(seeded[k].dtype, copy=False) for k in seeded}


def save_initial_arrays(run_dir: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write the warm-started initial model where :func:`initial_arrays` finds it."""
    path = Path(run_dir) / INITIAL_MODEL
    np.savez(path, **arrays)
    return path


def load_global_model(train_cfg: TrainConfig, input_dim: int, n_labels: int,
                      arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    """A module of the run's head holding ``arrays`` (the global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = train_cfg.build(input_dim, n_labels)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    return model


def server_scores(model: torch.nn.Module, data: dict[str, np.ndarray]) -> dict[str, dict]:
    """Validation and test metrics of ``model`` as ``results.json`` reports them: the threshold best on
    validation (:func:`fedicd.metrics.choose_threshold`), top-k F1 over the 50 codes most frequent in training
    (ties: lower column first, as :func:`fedicd.metrics.top_k_labels`) and the rare codes' scores, both from
    ``data["train_label_counts"]`` (training notes per code: an aggregate, the server holds no training row);
    ``data`` is :func:`fedicd.federated.staged.load_server_data`'s (the server's own ``server/eval.npz``)."""
    from fedicd.metrics import choose_threshold, compute_metrics
    from fedicd.train import predict_proba

    probs = {p: predict_proba(model, data[f"x_{p}"]) for p in ("val", "test")}
    threshold = choose_threshold(data["y_val"], probs["val"])
    counts = np.asarray(data["train_label_counts"])
    frequent = np.argsort(-counts, kind="stable")[:50]
    return {p: compute_metrics(data[f"y_{p}"], probs[p], threshold=threshold, frequent=frequent, train_counts=counts)
            for p in ("val", "test")}


def model_record(model: torch.nn.Module, head: str) -> dict:
    """``results.json["model"]``: the head's name, its trainable parameters and the bytes of its state dict as
    float32 (one copy of the model, on disk or in a federated message before any compression)."""
    from fedicd.heads import count_parameters

    n_values = sum(v.numel() for v in model.state_dict().values())
    return {"head": head, "parameters": count_parameters(model), "parameter_bytes": int(n_values) * 4}
