"""``[train]`` config section: the head and its optimisation (defaults: the paper's).

Kept apart from :mod:`fedicd.train` (the training loop) so that configuration, the run plan and the
federated clients read it without importing the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from fedicd.heads import build_head
from fedicd.losses import HybridLoss

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Head and optimisation settings (defaults: the paper's)."""

    mode: str = "central"
    """The training mode, "central" or "federated"; set by the run (a federated run trains through [federated])."""
    head: str = "mlp"
    """The classifier head: "mlp", "deep_mlp", "deep_res_mlp", "linear" (one linear layer, the strong DP baseline)
    or "bottleneck" (a rank-r linear map d → r → labels, r = hidden[0], default 64); or a chunk-sequence head
    reading each note's chunk vectors: "label_attention" (LAAT's label-wise attention over the chunks) or
    "multires_cnn" (MultiResCNN's convolutions over the chunks, then label attention); see fedicd.heads and
    fedicd.heads_sequence."""
    hidden: tuple[int, ...] | None = None
    """Hidden layer widths; unset uses the head's own defaults ("linear" takes none, "bottleneck" one: its rank;
    "label_attention" two: its per-chunk ReLU value layer and attention projection, default [512, 256];
    "multires_cnn" one: filter maps per kernel size, default 100)."""
    kernel_sizes: tuple[int, ...] | None = None
    """Head "multires_cnn" only: the odd convolution kernel sizes, in chunks, one branch each; unset: [1, 3, 5]."""
    input_norm: str = "none"
    """The head's input: "none" (as given) or "l2" (a parameter-free first layer scaling each row to L2 norm √d;
    saved heads are unchanged by it)."""
    norm: str | None = None
    """Normalisation in the deeper heads: "batch" (the paper's), "layer", "group" (needed under
    sample-level DP) or "none"; unset: the head's default."""
    dropout: float = 0.1
    """Dropout probability after each hidden layer (the paper's 0.1)."""
    epochs: int = 20
    """Training epochs of a central run (a federated run's schedule spans federated.rounds ×
    federated.local_epochs)."""
    batch_size: int = 64
    """Mini-batch size (under sample-level DP the expected Poisson batch size)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW, decayed by a cosine schedule (the paper's 1e-3)."""
    weight_decay: float = 1e-5
    """AdamW weight decay (the paper's 1e-5)."""
    focal_alpha: float = 0.35
    """HybridLoss focal term's α (the paper's 0.35)."""
    focal_gamma: float = 2.0
    """HybridLoss focal term's γ (the paper's 2)."""
    bce_weight: float = 0.5
    """HybridLoss weight of binary cross-entropy; the focal term gets 1 − bce_weight (the paper's
    0.5)."""
    seed: int | None = None
    """Seed of initialisation, shuffling and dropout; unset follows the experiment's seed."""
    device: str = "cpu"
    """The head's torch device: "cpu", "cuda", "cuda:N" or "mps"."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kernel_sizes is not None:
            object.__setattr__(self, "kernel_sizes", tuple(int(k) for k in self.kernel_sizes))
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
        return build_head(self.head, input_dim, n_labels, hidden=self.hidden, norm=self.norm, dropout=self.dropout,
                          input_norm=self.input_norm, kernel_sizes=self.kernel_sizes)

    def loss(self, reduction: str = "mean") -> HybridLoss:
        return HybridLoss(alpha=self.focal_alpha, gamma=self.focal_gamma, bce_weight=self.bce_weight,
                          reduction=reduction)
