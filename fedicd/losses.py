"""HybridLoss: 0.5 · BCE + 0.5 · focal loss (α = 0.35, γ = 2), Xu & Dray (2025).

Focal loss (Lin et al., 2017) per element, with ``p_t`` the probability of the
true class and ``α_t = α`` for positives, ``1 − α`` for negatives::

    FL = − α_t · (1 − p_t)^γ · log(p_t)

Both terms are computed from logits in a numerically stable way
(``log p_t = −BCE``). ``reduction="per_sample"`` returns one value per row,
the mean over labels, so that ``per_sample(...).mean() == mean(...)``;
Opacus' ghost clipping needs this ``[B]``-shaped loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HybridLoss", "focal_loss_elements", "REDUCTIONS"]

REDUCTIONS = ("mean", "sum", "none", "per_sample")


def _bce_and_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float,
                   gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    alpha_t = alpha * targets + (1.0 - alpha) * (1.0 - targets)
    return bce, alpha_t * (1.0 - p_t).pow(gamma) * bce


def focal_loss_elements(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss, same shape as ``logits``."""
    return _bce_and_focal(logits, targets.to(logits.dtype), alpha, gamma)[1]


class HybridLoss(nn.Module):
    """Weighted sum of binary cross-entropy and focal loss for multi-label logits.

    Parameters
    ----------
    alpha, gamma:
        Focal parameters (paper: 0.35 and 2).
    bce_weight:
        Weight of the BCE term; the focal term gets ``1 − bce_weight`` (paper: 0.5).
    reduction:
        ``"mean"`` over all elements, ``"sum"``, ``"none"`` (``[B, C]``) or
        ``"per_sample"`` (``[B]``, mean over labels).
    """

    def __init__(self, *, alpha: float = 0.35, gamma: float = 2.0, bce_weight: float = 0.5, reduction: str = "mean"):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not 0.0 <= bce_weight <= 1.0:
            raise ValueError(f"bce_weight must be in [0, 1], got {bce_weight}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.alpha, self.gamma, self.bce_weight, self.reduction = alpha, gamma, bce_weight, reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
        targets = targets.to(logits.dtype)
        bce, focal = _bce_and_focal(logits, targets, self.alpha, self.gamma)
        elements = self.bce_weight * bce + (1.0 - self.bce_weight) * focal
        if self.reduction == "none":
            return elements
        if self.reduction == "per_sample":
            return elements.mean(dim=1)
        if self.reduction == "sum":
            return elements.sum()
        return elements.mean()
