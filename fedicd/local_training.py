"""What a federated client does locally: one round of training on its own rows, and evaluation.

:func:`local_train` runs :func:`fedicd.train.run_epoch`, the loop of
centralized training (HybridLoss, mini-batches), for ``local_epochs`` epochs
with a fresh AdamW or SGD (optionally with momentum) optimizer, at the learning rate of the global
cosine schedule at this round (:func:`round_lr`). FedProx and SCAFFOLD are
hooks of the step: the proximal term is added to the loss
(:func:`proximal_term`), SCAFFOLD's ``c - c_i`` to the gradients
(:func:`scaffold_correct_gradients_`). Each round's randomness (dropout,
shuffling) is seeded by (experiment seed, round, client) (:func:`round_seed`),
so a resumed run repeats an uninterrupted one exactly.

Sample-level DP-SGD runs the same schedule with a private step
(:func:`fedicd.privacy.dp_local.dp_local_train`). This module imports neither
Flower nor :mod:`fedicd.federated` nor :mod:`fedicd.strategies` (:func:`build_model` given a Flower record
decodes it with :mod:`fedicd.federated.records`, imported then).
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from fedicd.errors import ConfigError, ShapeError
from fedicd.metrics import f1_scores
from fedicd.sequences import ChunkSequences, as_model_input
from fedicd.train import Batch, Step, TrainConfig, plain_step, predict_logits, run_epoch, shuffled_batches

if TYPE_CHECKING:
    from flwr.app import ArrayRecord

__all__ = ["LocalData", "LocalTrainConfig", "round_lr", "round_seed", "local_optimizer", "set_lr", "build_model",
           "local_train", "run_local_epochs", "evaluate_local", "proximal_term", "proximal_gradient_",
           "scaffold_correct_gradients_"]


class LocalData(Protocol):
    """A client's rows (e.g. :class:`fedicd.federated.staged.ClientData`): pooled vectors or chunk sequences."""

    x_train: np.ndarray | ChunkSequences
    y_train: np.ndarray
    x_val: np.ndarray | ChunkSequences
    y_val: np.ndarray


@dataclass(frozen=True)
class LocalTrainConfig:
    """What one client does in one round.

    ``momentum`` is the local SGD's momentum (``federated.local_momentum``, in [0, 1); 0 = plain SGD); it must
    be 0 for AdamW. Pass it on explicitly: ``local_optimizer(model, local.optimizer, lr, wd,
    momentum=local.momentum)``.
    """

    server_round: int
    total_rounds: int
    local_epochs: int
    partition_id: int
    seed: int
    proximal_mu: float = 0.0
    optimizer: str = "adamw"
    lr: float = 0.0  # peak local learning rate; 0 = the TrainConfig's
    momentum: float = 0.0

    def __post_init__(self) -> None:
        _check_momentum(self.optimizer, self.momentum)


def round_lr(base_lr: float, epoch_index: int, total_epochs: int) -> float:
    """The centralized cosine schedule (``CosineAnnealingLR``, ``eta_min=0``) at a global epoch index."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch_index / total_epochs))


def round_seed(local: LocalTrainConfig) -> int:
    """The seed of one client's round: a function of (experiment seed, round, client)."""
    return (local.seed * 1_000_003 + local.server_round * 1_009 + local.partition_id) % (2**62)


def local_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float, *,
                    momentum: float = 0.0) -> torch.optim.Optimizer:
    """A fresh local optimizer (no state, momentum buffers included, is carried between rounds).

    ``name`` is "adamw" or "sgd"; ``momentum`` (SGD only, in [0, 1); callers pass ``local.momentum``).
    Raises ValueError for an unknown name, a momentum outside [0, 1), or a momentum with AdamW.
    """
    _check_momentum(name, momentum)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown local optimizer {name!r}; expected 'adamw' or 'sgd'")


def _check_momentum(name: str, momentum: float) -> None:
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"local momentum must be in [0, 1), got {momentum!r} (set federated.local_momentum)")
    if momentum and name != "sgd":
        raise ValueError(f"local momentum {momentum} needs local optimizer 'sgd', got {name!r} "
                         "(AdamW keeps its own moments: set federated.local_momentum = 0)")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def build_model(train_cfg: TrainConfig, input_dim: int, n_labels: int,
                arrays: ArrayRecord | Mapping[str, np.ndarray | torch.Tensor]) -> torch.nn.Module:
    """A fresh head of ``train_cfg`` holding ``arrays`` (a Flower ArrayRecord or named arrays); the caller's global
    RNG is not used.

    The head is a copy of a template built once per process and (config, dimensions), loaded with ``arrays``:
    building initialises every weight at random, about 10 times the cost of the copy, and every client call
    builds one. The result is the module a fresh build would give: ``load_state_dict`` overwrites every
    parameter and buffer, and fedicd's heads keep no other state (tests/test_local_training.py compares the
    two for every head). An ArrayRecord is decoded by :func:`fedicd.federated.records.from_record` (one copy
    per array instead of Flower's ``np.load``).
    """
    model = copy.deepcopy(_template(train_cfg, int(input_dim), int(n_labels)))
    model.load_state_dict(_state_dict(arrays))
    return model


@functools.lru_cache(maxsize=8)
def _template(train_cfg: TrainConfig, input_dim: int, n_labels: int) -> torch.nn.Module:
    """The head as ``train_cfg.build`` makes it (its random weights are overwritten by every user)."""
    with torch.random.fork_rng(devices=[]):
        return train_cfg.build(input_dim, n_labels)


def _state_dict(arrays) -> dict[str, torch.Tensor]:
    if hasattr(arrays, "to_torch_state_dict"):  # a Flower ArrayRecord: the caller has Flower loaded
        from fedicd.federated.records import from_record

        arrays = from_record(arrays)
    return {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for k, v in arrays.items()}


def run_local_epochs(model: torch.nn.Module, opt: torch.optim.Optimizer, peak_lr: float, local: LocalTrainConfig,
                     step: Step, batches: Callable[[], Iterable[Batch]]) -> float:
    """``local.local_epochs`` epochs of ``step`` over ``batches()``, each at its cosine learning rate.

    Epoch ``e`` of round ``r`` is epoch ``(r - 1) * local_epochs + e`` of the global schedule over
    ``total_rounds * local_epochs`` epochs. Returns the mean batch loss of the last epoch.
    """
    total_epochs = local.total_rounds * local.local_epochs
    loss = float("nan")
    for e in range(local.local_epochs):
        set_lr(opt, round_lr(peak_lr, (local.server_round - 1) * local.local_epochs + e, total_epochs))
        loss = run_epoch(model, step, batches())
    return loss


def local_train(model: torch.nn.Module, data: LocalData, train_cfg: TrainConfig, local: LocalTrainConfig, *,
                scaffold_c: dict[str, torch.Tensor] | None = None,
                scaffold_c_i: dict[str, torch.Tensor] | None = None) -> float:
    """Train ``model`` in place on the client's rows; returns the mean batch loss of the last epoch."""
    x = as_model_input(data.x_train)
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    loss_fn = train_cfg.loss()
    after_loss, before_update = _strategy_hooks(model, local.proximal_mu, scaffold_c, scaffold_c_i)
    peak_lr = local.lr or train_cfg.lr
    opt = local_optimizer(model, local.optimizer, peak_lr, train_cfg.weight_decay, momentum=local.momentum)
    step = plain_step(model, opt, loss_fn, after_loss=after_loss, before_update=before_update)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(round_seed(local))
        gen = torch.Generator().manual_seed(round_seed(local) + 1)
        return run_local_epochs(model, opt, peak_lr, local, step,
                                lambda: shuffled_batches(x, y, train_cfg.batch_size, gen))


def _strategy_hooks(model: torch.nn.Module, mu: float, scaffold_c: dict[str, torch.Tensor] | None,
                    scaffold_c_i: dict[str, torch.Tensor] | None):
    """(after_loss, before_update) of :func:`plain_step`: FedProx's term when ``mu > 0``, SCAFFOLD's correction
    when controls are given; None where the strategy asks for nothing."""
    after_loss = before_update = None
    if mu > 0:
        global_params = [p.detach().clone() for p in model.parameters()]

        def after_loss(loss: torch.Tensor) -> torch.Tensor:
            return loss + proximal_term(model, global_params, mu)

    if scaffold_c is not None:

        def before_update() -> None:
            scaffold_correct_gradients_(model, scaffold_c, scaffold_c_i)

    return after_loss, before_update


@torch.inference_mode()
def evaluate_local(model: torch.nn.Module, data: LocalData, train_cfg: TrainConfig) -> dict[str, float]:
    """Loss and F1 (threshold 0.5) of ``model`` on the client's validation rows."""
    if len(data.x_val) == 0:
        raise ValueError("this client holds no validation notes")
    model.eval()
    logits = predict_logits(model, data.x_val)
    loss = float(train_cfg.loss()(logits, torch.as_tensor(data.y_val, dtype=torch.float32)))
    micro, macro = f1_scores(data.y_val, torch.sigmoid(logits).numpy(), threshold=0.5)
    return {"eval_loss": loss, "micro_f1": micro, "macro_f1": macro}


def proximal_term(model: torch.nn.Module, global_params: list[torch.Tensor], mu: float) -> torch.Tensor:
    r"""FedProx's penalty :math:`\frac{\mu}{2} \sum_j \lVert w_j - w^t_j \rVert_2^2` (Li et al., 2020, Eq. 2).

    ``global_params`` are the received global parameters in ``model.parameters()`` order (detached here).
    Raises :class:`ConfigError` for a negative or non-finite ``mu`` and :class:`ShapeError` when
    ``global_params`` does not match the model's parameters.
    """
    mu = _non_negative("mu", mu)
    params = list(model.parameters())
    if len(params) != len(global_params):
        raise ShapeError(f"global_params has {len(global_params)} tensors but model.parameters() has {len(params)}")
    total = params[0].new_zeros(()) if params else torch.zeros(())
    for i, (local, reference) in enumerate(zip(params, global_params, strict=True)):
        if local.shape != reference.shape:
            raise ShapeError(f"global_params[{i}] has shape {tuple(reference.shape)}, expected {tuple(local.shape)}")
        total = total + (local - reference.detach().to(local.device, local.dtype)).pow(2).sum()
    return 0.5 * mu * total


def proximal_gradient_(model: torch.nn.Module, global_params: list[torch.Tensor], mu: float) -> None:
    """Add the gradient of :func:`proximal_term`, ``mu * (w - w_g)``, to every parameter's ``.grad`` in place."""
    for p, g in zip(model.parameters(), global_params):
        p.grad.add_(p.detach() - g, alpha=mu)


def scaffold_correct_gradients_(model: torch.nn.Module, c: dict[str, torch.Tensor],
                                c_i: dict[str, torch.Tensor]) -> None:
    """Add ``c - c_i`` to every trainable parameter's gradient, in place (SCAFFOLD, Algorithm 1, line 10).

    Controls are keyed by ``model.named_parameters()`` names. A parameter with no gradient gets
    ``c - c_i``. Raises :class:`ShapeError` for a missing entry or a shape mismatch.
    """
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        correction = _control(c, "c", name, p) - _control(c_i, "c_i", name, p)
        if p.grad is None:
            p.grad = correction.clone()
        else:
            p.grad.add_(correction)


def _control(control: dict[str, torch.Tensor], label: str, name: str, p: torch.Tensor) -> torch.Tensor:
    if name not in control:
        raise ShapeError(f"{label} has no entry for trainable parameter {name!r}")
    value = control[name]
    if tuple(value.shape) != tuple(p.shape):
        raise ShapeError(f"{label}[{name!r}] has shape {tuple(value.shape)}, expected {tuple(p.shape)}")
    return value.to(device=p.device, dtype=p.dtype)


def _non_negative(name: str, value: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
