"""Centralized training of a head on pre-computed embeddings.

Paper protocol (Xu & Dray, 2025): AdamW (lr 1e-3, weight decay 1e-5), cosine
schedule over 20 epochs, dropout 0.1, HybridLoss. Training is seeded and
deterministic on CPU: initialisation and shuffling draw from generators seeded
by ``TrainConfig.seed`` inside :func:`torch.random.fork_rng`, so the caller's
global CPU RNG state is neither used nor changed. In an experiment,
``train.seed`` defaults to the experiment's ``seed``.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
import numpy as np
import torch
from torch import nn

from fedicd.errors import ShapeError
from fedicd.heads import build_head
from fedicd.losses import HybridLoss

__all__ = ["TrainConfig", "TrainResult", "train_central", "predict_proba", "make_optimizer", "train_epoch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Head and optimisation settings (defaults: the paper's)."""

    mode: str = "central"
    head: str = "mlp"
    hidden: tuple[int, ...] | None = None
    norm: str | None = None
    dropout: float = 0.1
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    focal_alpha: float = 0.35
    focal_gamma: float = 2.0
    bce_weight: float = 0.5
    seed: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.mode not in ("central", "federated"):
            raise ValueError(f"mode must be 'central' or 'federated', got {self.mode!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        with torch.random.fork_rng(devices=[]):  # a throw-away build checks head, norm, dropout, widths now
            self.build(4, 2)

    @property
    def resolved_seed(self) -> int:
        return 0 if self.seed is None else int(self.seed)

    def build(self, input_dim: int, n_labels: int) -> nn.Module:
        return build_head(self.head, input_dim, n_labels, hidden=self.hidden, norm=self.norm, dropout=self.dropout)

    def loss(self, reduction: str = "mean") -> HybridLoss:
        return HybridLoss(alpha=self.focal_alpha, gamma=self.focal_gamma, bce_weight=self.bce_weight,
                          reduction=reduction)


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _as_tensors(x: np.ndarray, y: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ShapeError(f"{name}: features {x.shape} and labels {y.shape} must be 2-D with the same number of rows")
    if len(x) == 0:
        raise ShapeError(f"{name}: no rows")
    if not np.isfinite(x).all():
        raise ShapeError(f"{name}: features contain {int((~np.isfinite(x)).sum())} NaN/Inf values")
    if not np.isin(y, (0, 1)).all():
        raise ShapeError(f"{name}: labels must be 0/1 (found {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()})")
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)


def make_optimizer(model: nn.Module, config: TrainConfig, total_epochs: int):
    """AdamW plus a cosine schedule stepped once per epoch over ``total_epochs``."""
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_epochs)
    return opt, sched


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor,
                y: torch.Tensor, *, batch_size: int, generator: torch.Generator) -> float:
    """One pass over ``(x, y)`` in shuffled mini-batches; returns the mean batch loss."""
    model.train()
    order = torch.randperm(len(x), generator=generator)
    total, n_batches = 0.0, 0
    for idx in _batches(order, batch_size):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach())
        n_batches += 1
    return total / max(n_batches, 1)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Mini-batches of ``order``; a trailing batch of one row joins the previous one
    (BatchNorm cannot normalise a single row, and no row may be skipped)."""
    parts = list(torch.split(order, batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


@torch.inference_mode()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """Sigmoid probabilities ``[N, C]`` (model in eval mode)."""
    model.eval()
    x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    device = next(model.parameters()).device
    parts = [torch.sigmoid(model(x[i:i + batch_size].to(device))).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy()


def train_central(x_train: np.ndarray, y_train: np.ndarray, config: TrainConfig = TrainConfig(), *,
                  x_val: np.ndarray | None = None, y_val: np.ndarray | None = None) -> TrainResult:
    """Train ``config.head`` for ``config.epochs`` epochs; log train (and val) loss per epoch."""
    xt, yt = _as_tensors(x_train, y_train, "train")
    val = _as_tensors(x_val, y_val, "val") if x_val is not None else None
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.resolved_seed)
        model = config.build(xt.shape[1], yt.shape[1]).to(config.device)
        gen = torch.Generator().manual_seed(config.resolved_seed + 1)
        opt, sched = make_optimizer(model, config, config.epochs)
        loss_fn = config.loss()
        result = TrainResult(model=model)
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
def _eval_loss(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    device = next(model.parameters()).device
    return float(loss_fn(model(x.to(device)), y.to(device)))

