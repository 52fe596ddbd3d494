"""Classifier heads over frozen embeddings: MLP, DeepMLP, DeepResMLP.

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
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

__all__ = ["MLP", "DeepMLP", "DeepResMLP", "HEADS", "build_head", "count_parameters", "expected_parameters"]

_NORMS = ("batch", "layer", "group", "none")


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


def _check_dims(input_dim: int, n_labels: int, dropout: float) -> None:
    if input_dim < 1 or n_labels < 1:
        raise ValueError(f"input_dim and n_labels must be >= 1, got {input_dim} and {n_labels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class MLP(nn.Module):
    """One hidden layer: Linear → ReLU → Dropout → Linear (logits)."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (512,), dropout: float = 0.1,
                 norm: str = "none"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        (width,) = hidden
        self.net = nn.Sequential(nn.Linear(input_dim, width), _norm(norm, width), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(width, n_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepMLP(nn.Module):
    """A funnel of Linear → Norm → ReLU → Dropout blocks, then a linear output."""

    def __init__(self, input_dim: int, n_labels: int, *, hidden: Sequence[int] = (1024, 512), dropout: float = 0.1,
                 norm: str = "batch"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        layers: list[nn.Module] = []
        prev = input_dim
        for width in hidden:
            layers += [nn.Linear(prev, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout)]
            prev = width
        layers.append(nn.Linear(prev, n_labels))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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
                 dropout: float = 0.1, norm: str = "batch"):
        super().__init__()
        _check_dims(input_dim, n_labels, dropout)
        (width,) = hidden
        self.proj = nn.Sequential(nn.Linear(input_dim, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout))
        self.blocks = nn.Sequential(*[_ResidualBlock(width, dropout, norm) for _ in range(n_blocks)])
        self.out = nn.Linear(width, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(self.proj(x)))


HEADS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "deep_mlp": DeepMLP, "deep_res_mlp": DeepResMLP}


_ONE_WIDTH = ("mlp", "deep_res_mlp")


def build_head(name: str, input_dim: int, n_labels: int, **kwargs) -> nn.Module:
    """Construct a head by registry name (``mlp``, ``deep_mlp``, ``deep_res_mlp``)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(kwargs["hidden"])
        if (name in _ONE_WIDTH and len(kwargs["hidden"]) != 1) or not kwargs["hidden"] \
                or min(kwargs["hidden"]) < 1:
            rule = "exactly one width" if name in _ONE_WIDTH else "one or more widths"
            raise ValueError(f"hidden for head {name!r} takes {rule} >= 1, got {list(kwargs['hidden'])}")
    return HEADS[name](input_dim, n_labels, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_parameters(name: str, input_dim: int, n_labels: int, *, hidden: Sequence[int] | None = None,
                        n_blocks: int = 2, norm: str | None = None) -> int:
    """Closed-form parameter count of a head with default widths (for tests and docs)."""
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
    raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
