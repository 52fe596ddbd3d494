"""Chunk-sequence heads: label-wise attention over a note's chunk vectors (LAAT) and a multi-resolution CNN.

Both read the packed batch ``[B, T, 1 + d]`` of :mod:`fedicd.sequences` (channel 0 the mask) and return logits
``[B, L]``. Each label attends over the note's chunks with its own query, so a code mentioned in one passage of a
long note is scored from that passage instead of from the note's mean vector. Both compute per-chunk features
``h_t`` (width k) and end in one weight row per label applied to that label's own representation
``V_l = Σ_t A[t, l] h_t``: computed as the attention-weighted sum of the per-chunk scores ``⟨β_l, h_t⟩ + b_l``
(equal, since the weights sum to 1), so the output layer is an ``nn.Linear`` (:func:`fedicd.heads.output_layer`)
and no ``[B, L, k]`` tensor is ever built.

``"label_attention"`` (after LAAT, Vu et al. 2020, and TransICD, Biswas et al. 2021): with ``x_t`` the note's
(input-normalised) chunk vectors, a per-chunk value layer ``H'_t = dropout(ReLU(W_h x_t + b_h))`` (``W_h``: d → dh,
``dh = hidden[0]``; it stands where LAAT has its BiLSTM: LAAT attends over non-linear hidden states, not over raw
inputs), ``Z = tanh(W H' + w₀)`` (``W``: dh → da, ``da = hidden[1]``; LAAT's has no ``w₀``), scores ``U Z``
(``U``: da → L, no bias), ``A = softmax_T`` over the real chunks, ``V = Aᵀ H' [B, L, dh]``,
``logit_l = ⟨β_l, V_l⟩ + b_l`` (``out``: dh → L), computed as ``Σ_t A[t, l]·out(H')[t, l]``. Defaults
``dh = 512`` (the width of the paper's one-hidden-layer MLP, Xu & Dray 2025) and ``da = 256`` (LAAT's projection
size for MIMIC-III-50, BiLSTM outputs of 2u = 512; its full-code-set setting is ``da = 512`` over 2u = 1024:
``hidden = [1024, 512]``). fedicd's corpora are small (about a thousand training notes) and DP noise grows with the
parameter count, hence the smaller setting. Without the value layer (a linear model over attended chunks) the head
learned far less on CodiEsp; the archived comparison of this layout is docs/results/coders.md
(``experiments/coders.py --suite codiesp``). Code descriptions initialise ``U`` and ``β`` through the initial value layer
(:mod:`fedicd.warm_start.zero_shot`).

``"multires_cnn"`` (after MultiResCNN, Li & Yu 2020): for each kernel size ``k`` in ``kernel_sizes`` (odd, default
``(1, 3, 5)``), ``Conv1d(d → F, k)`` → tanh → a residual block (``Conv1d F → F, k`` → tanh → ``Conv1d F → F, k``,
plus a 1×1 convolution shortcut, tanh of the sum); the ``K`` branches are concatenated to ``[B, T, F·K]``, dropout,
then the same label attention (``U``: F·K → L) and output layer (``out``: F·K → L, pooled the same way). Default ``F = 100``:
with three kernel sizes, ``F·K = 300``, the paper's attention width (6 filter sizes × 50 maps). The paper's
kernel sizes (3 … 25) span words; a note here is a handful of chunks, so the sizes span 1 to 5 chunks.
Padded positions are zeroed before every convolution, so a note's logits never depend on the batch's padding.

No BatchNorm (it mixes the samples of a batch, which sample-level DP forbids). ``norm = "layer"`` (multires_cnn
only) adds a LayerNorm over the channels at each position where the paper has BatchNorm (after each residual
convolution and the shortcut); ``"none"`` is the default.

This module also holds the input layers every head shares (:class:`L2Normalize`), re-exported by
:mod:`fedicd.heads`, which registers these heads.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fedicd.sequences import ChunksMissingError, unpack

__all__ = ["LabelAttention", "MultiResCNN", "L2Normalize", "INPUT_NORMS", "ATTENTION_WIDTH", "FILTER_MAPS",
           "KERNEL_SIZES", "VALUE_WIDTH", "check_kernel_sizes", "masked_softmax"]

INPUT_NORMS = ("none", "l2")
VALUE_WIDTH = 512  # dh: label_attention's per-chunk value layer, the paper MLP's hidden width
ATTENTION_WIDTH = 256  # da: LAAT's attention projection for MIMIC-III-50
FILTER_MAPS = 100  # F: F·K = 300 at K = 3, MultiResCNN's attention width (6 × 50)
KERNEL_SIZES = (1, 3, 5)


class L2Normalize(nn.Module):
    """Scale every row ``x`` (last dimension ``d``) to ``√d · x / ‖x‖₂`` (parameter-free; a zero row stays zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.shape[-1] ** 0.5
        return scale * x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def input_layer(kind: str) -> nn.Module:
    """The parameter-free first layer for ``train.input_norm`` (``"none"`` or ``"l2"``)."""
    if kind == "l2":
        return L2Normalize()
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {kind!r} (set train.input_norm)")


def check_dims(input_dim: int, n_labels: int, dropout: float) -> None:
    """Refuse empty dimensions and a dropout outside ``[0, 1)``."""
    if input_dim < 1 or n_labels < 1:
        raise ValueError(f"input_dim and n_labels must be >= 1, got {input_dim} and {n_labels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def check_kernel_sizes(kernel_sizes: Sequence[int]) -> tuple[int, ...]:
    """``kernel_sizes`` as a tuple; refuses an empty list, even or non-positive sizes and repeats."""
    sizes = tuple(int(k) for k in kernel_sizes)
    if not sizes or any(k < 1 or k % 2 == 0 for k in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"train.kernel_sizes takes one or more distinct odd sizes >= 1 (e.g. [1, 3, 5]: an odd "
                         f"kernel keeps a note's length), got {list(sizes)}")
    return sizes


def _unpack(batch: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.dim() == 2:
        raise ChunksMissingError(f"head {head!r} reads chunk sequences [B, T, 1 + d] (fedicd.sequences), got pooled "
                                 f"vectors {tuple(batch.shape)}: embed with chunks kept or choose a pooled head")
    return unpack(batch)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of ``scores`` along ``dim`` over the positions where ``mask`` (broadcastable, bool) is True.

    Masked positions get weight exactly 0; a row with no unmasked position raises (every note has a chunk).
    """
    if not mask.any(dim=dim).all():
        raise ValueError("masked_softmax: a row has no unmasked position (a note without chunks)")
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)


def _attend(scores: torch.Tensor, label_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-label attention pooling of per-chunk label scores: ``Σ_t softmax_T(scores)[b, t, l] · label_scores[b, t, l]``.

    With ``label_scores = out(H)`` (``out`` a ``nn.Linear`` k → L) this is ``⟨β_l, V_l⟩ + b_l`` for ``V = Aᵀ H``
    (the attention weights sum to 1), without the ``[B, L, k]`` tensor ``V``: memory ``[B, T, L]`` instead.
    """
    return (masked_softmax(scores, mask[..., None], dim=1) * label_scores).sum(dim=1)


class LabelAttention(nn.Module):
    """LAAT's label-wise attention over a note's chunks, on a per-chunk ReLU value layer (module docstring)."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (VALUE_WIDTH, ATTENTION_WIDTH),
                 dropout: float = 0.1, norm: str = "none", input_norm: str = "none"):
        super().__init__()
        check_dims(input_dim, n_labels, dropout)
        if norm != "none":
            raise ValueError(f"head 'label_attention' has no normalisation layer (its attention projection is "
                             f"tanh(W h)), got norm={norm!r}; unset train.norm or set it to 'none'")
        if len(hidden) != 2:
            raise ValueError(f"hidden for head 'label_attention' takes exactly two widths [value, attention] >= 1 "
                             f"(default [{VALUE_WIDTH}, {ATTENTION_WIDTH}]), got {list(hidden)}; set train.hidden")
        value_width, attention_width = hidden
        self.inp = input_layer(input_norm)
        self.value = nn.Linear(input_dim, value_width)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(value_width, attention_width)
        self.attention = nn.Linear(attention_width, n_labels, bias=False)
        self.out = nn.Linear(value_width, n_labels)  # registered last: fedicd.heads.output_layer finds it

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """``ReLU(W_h x + b_h)`` of (input-normalised) chunk vectors ``x [..., d]`` (before dropout)."""
        return torch.relu(self.value(x))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """``Z = tanh(W h + w₀)`` of value-layer outputs ``h [..., dh]``."""
        return torch.tanh(self.proj(h))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x, mask = _unpack(batch, "label_attention")
        h = self.drop(self.values(self.inp(x)))
        return _attend(self.attention(self.project(h)), self.out(h), mask)


class _ChannelNorm(nn.Module):
    """LayerNorm over the channels of ``[B, C, T]`` at each position (per sample, per position)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _channel_norm(kind: str, channels: int) -> nn.Module:
    if kind == "layer":
        return _ChannelNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"head 'multires_cnn' takes norm 'layer' or 'none' (BatchNorm mixes the notes of a batch, "
                     f"which sample-level DP forbids), got norm={kind!r}; set train.norm")


class _Branch(nn.Module):
    """One kernel size: ``Conv1d(d → F, k)`` → tanh → residual block; inputs zeroed at padding before each conv."""

    def __init__(self, input_dim: int, filters: int, kernel: int, norm: str):
        super().__init__()
        pad = kernel // 2
        self.base = nn.Conv1d(input_dim, filters, kernel, padding=pad)
        self.conv1 = nn.Conv1d(filters, filters, kernel, padding=pad)
        self.norm1 = _channel_norm(norm, filters)
        self.conv2 = nn.Conv1d(filters, filters, kernel, padding=pad)
        self.norm2 = _channel_norm(norm, filters)
        self.shortcut = nn.Conv1d(filters, filters, 1)
        self.norm_short = _channel_norm(norm, filters)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x [B, d, T]``, ``keep [B, 1, T]`` (1 real, 0 pad) → ``[B, F, T]`` (zero at padding)."""
        h = torch.tanh(self.base(x * keep)) * keep
        left = torch.tanh(self.norm1(self.conv1(h))) * keep
        left = self.norm2(self.conv2(left))
        return torch.tanh(left + self.norm_short(self.shortcut(h))) * keep


class MultiResCNN(nn.Module):
    """MultiResCNN over a note's chunk vectors (module docstring): K conv branches, label attention over F·K."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (FILTER_MAPS,),
                 kernel_sizes: Sequence[int] = KERNEL_SIZES, dropout: float = 0.1, norm: str = "none",
                 input_norm: str = "none"):
        super().__init__()
        check_dims(input_dim, n_labels, dropout)
        (filters,) = hidden
        self.kernel_sizes = check_kernel_sizes(kernel_sizes)
        self.inp = input_layer(input_norm)
        self.branches = nn.ModuleList(_Branch(input_dim, filters, k, norm) for k in self.kernel_sizes)
        self.drop = nn.Dropout(dropout)
        width = filters * len(self.kernel_sizes)
        self.attention = nn.Linear(width, n_labels, bias=False)
        self.out = nn.Linear(width, n_labels)

    def features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The concatenated branch outputs ``[B, T, F·K]`` of chunk vectors ``x [B, T, d]`` (zero at padding)."""
        x = self.inp(x).transpose(1, 2)
        keep = mask[:, None, :].to(x.dtype)
        return torch.cat([branch(x, keep) for branch in self.branches], dim=1).transpose(1, 2)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x, mask = _unpack(batch, "multires_cnn")
        h = self.drop(self.features(x, mask))
        return _attend(self.attention(h), self.out(h), mask)


def expected_sequence_parameters(name: str, input_dim: int, n_labels: int, *, hidden: Sequence[int] | None = None,
                                 kernel_sizes: Sequence[int] | None = None, norm: str | None = None) -> int:
    """Closed-form parameter count of a chunk-sequence head (default widths unless ``hidden``)."""
    d, n = input_dim, n_labels
    if name == "label_attention":
        dh, da = hidden or (VALUE_WIDTH, ATTENTION_WIDTH)
        return d * dh + dh + dh * da + da + da * n + n * dh + n
    if name == "multires_cnn":
        (f,) = hidden or (FILTER_MAPS,)
        sizes = tuple(kernel_sizes or KERNEL_SIZES)
        norms = 3 * 2 * f if norm == "layer" else 0
        branches = sum(d * f * k + f + 2 * (f * f * k + f) + f * f + f + norms for k in sizes)
        width = f * len(sizes)
        return branches + width * n + n * width + n
    raise ValueError(f"{name!r} is not a chunk-sequence head (label_attention, multires_cnn)")
