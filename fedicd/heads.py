"""Classifier heads over frozen embeddings: MLP, DeepMLP, DeepResMLP, and the DP-friendly Linear and Bottleneck.

Xu & Dray (2025, Fig. 3) train three small heads on frozen note embeddings.
The paper's figure and Table 2 were not available offline when this module was
written, so the widths below are fedicd's reading of the paper's description
(one hidden layer; a deeper funnel with normalisation; a residual stack), all
with dropout 0.1. Every width is a parameter: set ``hidden`` to match another
reading. :func:`count_parameters` and :func:`expected_parameters` let tests
check the closed form.

``norm`` chooses the normalisation layer: ``"batch"`` (paper default),
``"layer"`` or ``"group"`` (needed under per-sample DP, where BatchNorm mixes
samples), or ``"none"``.

Two heads suit DP-SGD (Tramèr & Boneh, 2021: a linear model on good frozen
features is the strong DP baseline; fewer parameters mean less noise in total
at the same clip): ``"linear"`` (one ``nn.Linear`` d → labels, dropout on its
input) and ``"bottleneck"`` (d → r → labels with ``r = hidden[0]``, default
64, no non-linearity: a rank-r linear map; the first layer has no bias, which
the second's would absorb; ``norm`` and dropout act at the bottleneck). The
non-linear bottleneck is ``"mlp"`` with ``hidden = [r]``.

``input_norm`` (every head): ``"none"``, or ``"l2"``, a parameter-free first
layer (:class:`L2Normalize`) that scales every input row to L2 norm ``√d``
(unit norm times √d, so that a standardised row keeps its usual size and the
default initialisations and learning rates stay calibrated). It adds no
state-dict entry, so a saved head loads into a head built with either setting.
Measured (privacy_matrix_synthetic, 5 clients, 10 rounds, sample-level DP at
ε = 8, full-batch SGD, validation micro-F1 at lr 1 / 10 / 100): linear head
0.402 / 0.386 / 0.344 without it, 0.413 / 0.389 / 0.344 at norm √d, and
0.260 / 0.263 / 0.266 at unit norm (its steps are d times smaller); the MLP
0.506 / 0.472 / 0.450, 0.497 / 0.470 / 0.452 and 0.281 / 0.442 / 0.451.

Every pooled head ends in an ``nn.Linear`` (the output layer, :func:`output_layer`).

The chunk-sequence heads ``"label_attention"`` and ``"multires_cnn"`` (:data:`SEQUENCE_HEADS`,
:mod:`fedicd.heads_sequence`) read a note's chunk vectors ``[B, T, 1 + d]`` (:mod:`fedicd.sequences`) and end in an
``nn.Linear`` ``out`` (k → labels) applied to every chunk, whose per-chunk label scores each label's attention
pools; ``hidden`` is label_attention's two widths ``[dh, da]`` (per-chunk ReLU value layer, attention
projection; default ``[512, 256]``) and multires_cnn's one (filter maps per kernel size), ``kernel_sizes``
(``train.kernel_sizes``) multires_cnn's convolutions.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from fedicd.heads_sequence import INPUT_NORMS, L2Normalize, LabelAttention, MultiResCNN, check_kernel_sizes, \
    expected_sequence_parameters
from fedicd.heads_sequence import check_dims as _check_dims
from fedicd.heads_sequence import input_layer as _input_layer

__all__ = ["MLP", "DeepMLP", "DeepResMLP", "Linear", "Bottleneck", "L2Normalize", "HEADS", "INPUT_NORMS",
           "build_head", "count_parameters", "expected_parameters", "output_layer", "SEQUENCE_HEADS",
           "POOLED_HEADS", "LabelAttention", "MultiResCNN"]

_NORMS = ("batch", "layer", "group", "none")
SEQUENCE_HEADS = ("label_attention", "multires_cnn")  # heads that read chunk sequences [B, T, 1 + d] (fedicd.sequences)
BOTTLENECK_RANK = 64


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width)
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "group":
        return nn.GroupNorm(min(32, width), width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {_NORMS}, got {kind!r}")


class MLP(nn.Module):
    """One hidden layer: Linear → ReLU → Dropout → Linear (logits)."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (512,), dropout: float = 0.1,
                 norm: str = "none", input_norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        self.inp = _input_layer(input_norm)
        (width,) = hidden
        self.net = nn.Sequential(nn.Linear(input_dim, width), _norm(norm, width), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(width, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inp(x))


class DeepMLP(nn.Module):
    """A funnel of Linear → Norm → ReLU → Dropout blocks, then a linear output."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (1024, 512), dropout: float = 0.1,
                 norm: str = "batch", input_norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        self.inp = _input_layer(input_norm)
        layers: list[nn.Module] = []
        prev = input_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, n_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.inp(x))


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float, norm: str):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(width, width), _norm(norm, width))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DeepResMLP(nn.Module):
    """Input projection, ``n_blocks`` two-layer residual blocks, linear output."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (512,), n_blocks: int = 2,
                 dropout: float = 0.1, norm: str = "batch", input_norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        self.inp = _input_layer(input_norm)
        (width,) = hidden
        self.proj = nn.Sequential(nn.Linear(input_dim, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[_ResidualBlock(width, dropout, norm) for _ in range(n_blocks)])
        self.out = nn.Linear(width, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.proj(self.inp(x))))


class Linear(nn.Module):
    """Dropout on the input, then one ``nn.Linear`` d → labels (Tramèr & Boneh's DP baseline at dropout 0)."""

    def __init__(self, input_dim: int, n_labels: int, *, dropout: float = 0.1, norm: str = "none",
                 input_norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        if norm != "none":
            raise ValueError(f"head 'linear' has no hidden layer to normalise, got norm={norm!r}; "
                             "unset train.norm or set it to 'none'")
        self.inp = _input_layer(input_norm)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(input_dim, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.inp(x)))


class Bottleneck(nn.Module):
    """A rank-r linear map: Linear d → r (no bias) → Norm → Dropout → Linear r → labels; no non-linearity."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (BOTTLENECK_RANK,),
                 dropout: float = 0.1, norm: str = "none", input_norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        self.inp = _input_layer(input_norm)
        (rank,) = hidden
        self.down = nn.Linear(input_dim, rank, bias=False)
        self.mid = nn.Sequential(_norm(norm, rank), nn.Dropout(dropout))
        self.out = nn.Linear(rank, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.down(self.inp(x))))


HEADS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "deep_mlp": DeepMLP, "deep_res_mlp": DeepResMLP,
                                             "linear": Linear, "bottleneck": Bottleneck,
                                             "label_attention": LabelAttention, "multires_cnn": MultiResCNN}
POOLED_HEADS = tuple(name for name in HEADS if name not in SEQUENCE_HEADS)  # heads that read [B, d] vectors


_ONE_WIDTH = ("mlp", "deep_res_mlp", "bottleneck", "multires_cnn")
_TWO_WIDTHS = ("label_attention",)  # [dh, da]: per-chunk value layer, attention projection


def _check_hidden(name: str, hidden: Sequence[int]) -> tuple[int, ...]:
    if name == "linear":
        raise ValueError(f"head 'linear' has no hidden layer, got hidden={list(hidden)}; unset train.hidden")
    hidden = tuple(hidden)
    count = 1 if name in _ONE_WIDTH else 2 if name in _TWO_WIDTHS else None
    if (count is not None and len(hidden) != count) or not hidden or min(hidden) < 1:
        rule = {1: "exactly one width", 2: "exactly two widths [value, attention]", None: "one or more widths"}
        raise ValueError(f"hidden for head {name!r} takes {rule[count]} >= 1, got {list(hidden)}; set train.hidden")
    return hidden


def build_head(name: str, input_dim: int, n_labels: int, **kwargs) -> nn.Module:
    """Construct a head by registry name (``mlp``, ``deep_mlp``, ``deep_res_mlp``, ``linear``, ``bottleneck``, and
    the chunk-sequence heads ``label_attention`` and ``multires_cnn``, :mod:`fedicd.heads_sequence`).

    Keywords (``hidden``, ``norm``, ``dropout``, ``input_norm``, ``n_blocks``, ``kernel_sizes``) that are None take
    the head's default. Raises ValueError for an unknown name, widths or kernel sizes the head cannot take, or a
    bad norm/dropout.
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "hidden" in kwargs:
        kwargs["hidden"] = _check_hidden(name, kwargs["hidden"])
    if "kernel_sizes" in kwargs:
        if name != "multires_cnn":
            raise ValueError(f"train.kernel_sizes sets the convolutions of head 'multires_cnn'; head {name!r} has "
                             f"none, got kernel_sizes={list(kwargs['kernel_sizes'])}: unset train.kernel_sizes")
        kwargs["kernel_sizes"] = check_kernel_sizes(kwargs["kernel_sizes"])
    return HEADS[name](input_dim, n_labels, **kwargs)


def output_layer(model: nn.Module) -> nn.Linear:
    """The head's output layer: the last ``nn.Linear`` in ``model.modules()``.

    Every fedicd head ends in one: the pooled heads apply it to the last hidden vector, the chunk-sequence heads
    (``out``) to every chunk before attention pooling (the weights sum to 1, so its bias is added to every logit
    unchanged). Raises ValueError when the model holds none.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer, so no output layer to find")
    return layers[-1]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_parameters(name: str, input_dim: int, n_labels: int, *, hidden: Sequence[int] | None = None,
                        n_blocks: int = 2, norm: str | None = None, kernel_sizes: Sequence[int] | None = None) -> int:
    """Closed-form parameter count of a head (default widths unless ``hidden``; ``kernel_sizes``: multires_cnn's),
    for tests and docs."""
    if name in SEQUENCE_HEADS:
        return expected_sequence_parameters(name, input_dim, n_labels, hidden=hidden, kernel_sizes=kernel_sizes,
                                            norm=norm)
    norm_params = {"batch": 2, "layer": 2, "group": 2, "none": 0}
    if name == "mlp":
        (h,) = hidden or (512,)
        return input_dim * h + h + norm_params[norm or "none"] * h + h * n_labels + n_labels
    if name == "deep_mlp":
        widths = [input_dim, *(hidden or (1024, 512))]
        body = sum(a * b + b + norm_params[norm or "batch"] * b for a, b in zip(widths, widths[1:]))
        return body + widths[-1] * n_labels + n_labels
    if name == "deep_res_mlp":
        (h,) = hidden or (512,)
        k = norm_params[norm or "batch"]
        proj = input_dim * h + h + k * h
        block = 2 * (h * h + h + k * h)
        return proj + n_blocks * block + h * n_labels + n_labels
    if name == "linear":
        return input_dim * n_labels + n_labels
    if name == "bottleneck":
        (r,) = hidden or (BOTTLENECK_RANK,)
        return input_dim * r + norm_params[norm or "none"] * r + r * n_labels + n_labels
    raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
