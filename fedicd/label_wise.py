"""Layers shared by the label-attention heads: a per-label output layer and a masked softmax.

:class:`LabelWiseLinear` scores each label from its own representation: ``V [B, L, k]`` (one ``k``-vector per
label, e.g. label-wise attention's weighted sum of the note's chunks) → logits ``[B, L]`` with
``logit[b, l] = ⟨weight[l], V[b, l]⟩ + bias[l]`` (LAAT's and MultiResCNN's output layer). Sample ``b``'s weight
gradient is row-wise ``g[b, l] · V[b, l]``, so its squared norm is ``Σ_l g[b, l]² ‖V[b, l]‖²``: exact per-sample
clipping needs no per-sample gradient tensor (:mod:`fedicd.privacy.fused_clipping`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LabelWiseLinear", "masked_softmax"]


class LabelWiseLinear(nn.Module):
    """``[B, L, in_features]`` → ``[B, L]``: one weight row and one bias per label."""

    def __init__(self, in_features: int, n_labels: int, *, bias: bool = True):
        super().__init__()
        if in_features < 1 or n_labels < 1:
            raise ValueError(f"in_features and n_labels must be >= 1, got {in_features} and {n_labels}")
        self.in_features, self.n_labels = in_features, n_labels
        self.weight = nn.Parameter(torch.empty(n_labels, in_features))
        self.bias = nn.Parameter(torch.empty(n_labels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)  # nn.Linear's default for each label's own linear map
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() != 3 or v.shape[1:] != (self.n_labels, self.in_features):
            raise ValueError(f"LabelWiseLinear expects [B, {self.n_labels}, {self.in_features}], got {tuple(v.shape)}")
        out = (v * self.weight).sum(-1)
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, n_labels={self.n_labels}, bias={self.bias is not None}"


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of ``scores`` along ``dim`` over the positions where ``mask`` (broadcastable, bool) is True.

    Masked positions get weight exactly 0; a row with no unmasked position raises (every note has a chunk).
    """
    if not mask.any(dim=dim).all():
        raise ValueError("masked_softmax: a row has no unmasked position (a note without chunks)")
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)
