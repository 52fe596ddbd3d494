"""Centralized training of a head on pre-computed embeddings.

Paper protocol (Xu & Dray, 2025): AdamW (lr 1e-3, weight decay 1e-5), cosine
schedule over 20 epochs, dropout 0.1, HybridLoss. Training is seeded and
deterministic on CPU: initialisation and shuffling draw from generators seeded
by ``TrainConfig.seed`` inside :func:`torch.random.fork_rng`, so the caller's
global CPU RNG state is neither used nor changed. In an experiment,
``train.seed`` defaults to the experiment's ``seed``.

The training loop
-----------------
:func:`run_epoch` is the one loop of fedicd: centralized training, a federated
client's local round (:mod:`fedicd.local_training`) and sample-level DP-SGD
(:mod:`fedicd.privacy.dp_local`) all pass their batches through it. What
differs is given to it:

* the batch source: :func:`shuffled_batches` (a permutation per epoch) or
  Poisson sampling (:func:`fedicd.privacy.dp_sgd.poisson_batches`);
* the step: :func:`plain_step` (loss, backward, ``opt.step()``) or
  :meth:`fedicd.privacy.dp_sgd.DPStepper.step` (per-sample clipping and noise);
* the step's hooks: ``after_loss`` edits the loss before backward (FedProx's
  proximal term) and ``before_update`` edits the finished gradients right
  before the optimizer update (SCAFFOLD's correction; under DP-SGD FedProx's
  proximal gradient, added after the noise).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedicd.errors import ShapeError
from fedicd.heads import SEQUENCE_HEADS
from fedicd.sequences import ChunkSequences, as_model_input, is_sequence, require_sequences
from fedicd.train_config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "train_central", "predict_proba", "predict_logits", "make_optimizer",
           "train_epoch", "run_epoch", "plain_step", "shuffled_batches", "eval_slices", "Step", "Batch", "Features"]

log = logging.getLogger(__name__)

Features = np.ndarray | torch.Tensor | ChunkSequences
"""A split's inputs: pooled vectors ``[N, d]`` or chunk sequences (batches ``[B, T, 1 + d]``, see
:mod:`fedicd.sequences`)."""
Batch = tuple[torch.Tensor, torch.Tensor]
Step = Callable[[torch.Tensor, torch.Tensor], float | None]
"""One optimisation step on a batch ``(x, y)``; returns the batch loss, or None when there is none (an
empty Poisson batch)."""


SEQUENCE_EVAL_CHUNKS = 32_768
"""Evaluation batches of chunk sequences hold at most this many padded chunk rows (``B × T``), so that a batch of
long notes stays small; pooled vectors are scored ``batch_size`` rows at a time."""


@dataclass
class TrainResult:
    """The trained model, its per-epoch losses, the training seconds and ``initialise``'s record (or None)."""

    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    init_info: dict | None = None


def _as_tensors(x: Features, y: np.ndarray, name: str) -> tuple[torch.Tensor | ChunkSequences, torch.Tensor]:
    """``(x, y)`` checked (2-D, same rows, finite features, 0/1 labels) as model input and a float tensor."""
    y = np.asarray(y)
    values = x.chunks if is_sequence(x) else np.asarray(x)
    x_ndim = 2 if is_sequence(x) else values.ndim
    if x_ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ShapeError(f"{name}: features {tuple(x.shape)} and labels {y.shape} must be 2-D with the same number "
                         "of rows")
    if len(x) == 0:
        raise ShapeError(f"{name}: no rows")
    if not np.isfinite(values).all():
        raise ShapeError(f"{name}: features contain {int((~np.isfinite(values)).sum())} NaN/Inf values")
    if not np.isin(y, (0, 1)).all():
        raise ShapeError(f"{name}: labels must be 0/1 (found {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()})")
    return (x if is_sequence(x) else as_model_input(values)), torch.as_tensor(y, dtype=torch.float32)


def make_optimizer(model: nn.Module, config: TrainConfig, total_epochs: int):
    """AdamW plus a cosine schedule stepped once per epoch over ``total_epochs``."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_epochs)
    return opt, sched


def run_epoch(model: nn.Module, step: Step, batches: Iterable[Batch]) -> float:
    """One pass of ``step`` over ``batches`` in training mode; returns the mean of the batch losses it reported."""
    model.train()
    total, n_batches = 0.0, 0
    for x, y in batches:
        loss = step(x, y)
        if loss is not None:
            total += loss
            n_batches += 1
    return total / max(n_batches, 1)


def plain_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable, *,
               after_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
               before_update: Callable[[], None] | None = None) -> Step:
    """A non-private step: loss (``after_loss`` may add to it), backward, ``before_update``, ``opt.step()``."""

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        if after_loss is not None:
            loss = after_loss(loss)
        loss.backward()
        if before_update is not None:
            before_update()
        opt.step()
        return float(loss.detach())

    return step


def shuffled_batches(x: torch.Tensor | ChunkSequences, y: torch.Tensor, batch_size: int,
                     generator: torch.Generator) -> Iterator[Batch]:
    """The rows of ``(x, y)`` in mini-batches of a fresh permutation drawn from ``generator`` (chunk sequences:
    each batch padded to its longest note, ``[B, T, 1 + d]``)."""
    for idx in _batches(torch.randperm(len(x), generator=generator), batch_size):
        yield x[idx], y[idx]


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor | ChunkSequences,
                y: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> float:
    """One pass over ``(x, y)`` in shuffled mini-batches; returns the mean batch loss."""
    return run_epoch(model, plain_step(model, opt, loss_fn), shuffled_batches(x, y, batch_size, generator))


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Mini-batches of ``order``; a trailing batch of one row joins the previous one
    (BatchNorm cannot normalise a single row, and no row may be skipped)."""
    parts = list(torch.split(order, batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def eval_slices(x: Features, batch_size: int) -> list[slice]:
    """Consecutive row ranges for scoring ``x``: ``batch_size`` rows each; for chunk sequences also at most
    :data:`SEQUENCE_EVAL_CHUNKS` padded chunk rows (at least one note per range)."""
    n = len(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not is_sequence(x):
        return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    slices, start, longest, lengths = [], 0, 0, x.lengths
    for i in range(n):
        longest_with = max(longest, int(lengths[i]))
        if i > start and (i - start >= batch_size or (i - start + 1) * longest_with > SEQUENCE_EVAL_CHUNKS):
            slices.append(slice(start, i))
            start, longest_with = i, int(lengths[i])
        longest = longest_with
    if n:
        slices.append(slice(start, n))
    return slices


@torch.inference_mode()
def predict_logits(model: nn.Module, x: Features, *, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``[N, C]`` on the CPU, scored in batches (:func:`eval_slices`) on the model's device; the model's
    mode is left as it is (callers put it in eval mode)."""
    x = as_model_input(x)
    device = next(model.parameters()).device
    parts = [model(x[s].to(device)).cpu() for s in eval_slices(x, batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


@torch.inference_mode()
def predict_proba(model: nn.Module, x: Features, *, batch_size: int = 4096) -> np.ndarray:
    """Sigmoid probabilities ``[N, C]`` (model in eval mode); ``x`` pooled vectors or chunk sequences."""
    model.eval()
    return torch.sigmoid(predict_logits(model, x, batch_size=batch_size)).numpy()


def train_central(x_train: Features, y_train: np.ndarray, config: TrainConfig = TrainConfig(), *,
                  x_val: Features | None = None, y_val: np.ndarray | None = None,
                  initialise: Callable[[nn.Module], dict] | None = None) -> TrainResult:
    """Train ``config.head`` for ``config.epochs`` epochs; log train (and val) loss per epoch.

    Parameters
    ----------
    x_train, x_val:
        Pooled vectors ``[N, d]`` or :class:`~fedicd.sequences.ChunkSequences` (for the chunk-sequence heads).
    initialise:
        Called on the freshly built (seeded) model before the optimizer is made, e.g. a description
        initialisation (:func:`fedicd.warm_start.central.central_initialiser`); its record becomes
        ``TrainResult.init_info``.
    """
    if config.head in SEQUENCE_HEADS:
        require_sequences(x_train, config.head, "the training features given to train_central")
    xt, yt = _as_tensors(x_train, y_train, "train")
    val = _as_tensors(x_val, y_val, "val") if x_val is not None else None
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.resolved_seed)
        model = config.build(xt.shape[1], yt.shape[1]).to(config.device)
        init_info = initialise(model) if initialise is not None else None
        gen = torch.Generator().manual_seed(config.resolved_seed + 1)
        opt, sched = make_optimizer(model, config, config.epochs)
        loss_fn = config.loss()
        result = TrainResult(model=model, init_info=init_info)
        xt, yt = xt.to(config.device), yt.to(config.device)
        for epoch in range(config.epochs):
            train_loss = train_epoch(model, opt, loss_fn, xt, yt, batch_size=config.batch_size, generator=gen)
            sched.step()
            row = {"epoch": epoch + 1, "train_loss": train_loss}
            if val is not None:
                row["val_loss"] = _eval_loss(model, loss_fn, *val)
            result.history.append(row)
            log.info("epoch %d/%d %s", epoch + 1, config.epochs, row)
    result.seconds = time.perf_counter() - start
    return result


@torch.inference_mode()
def _eval_loss(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor | ChunkSequences, y: torch.Tensor) -> float:
    """The mean loss over all rows (chunk sequences scored in batches, the loss taken once over all logits)."""
    model.eval()
    device = next(model.parameters()).device
    if is_sequence(x):
        return float(loss_fn(predict_logits(model, x).to(device), y.to(device)))
    return float(loss_fn(model(x.to(device)), y.to(device)))
