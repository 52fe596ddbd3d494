"""Analytic recovery of a fully connected layer's inputs from its update.

For a first layer ``y = W x + b`` followed by a ReLU, each sample ``n`` adds
``δ_in x_n`` to row ``i`` of the weight gradient and ``δ_in`` to the bias
gradient, where ``δ_in`` is zero when unit ``i`` is inactive (or dropped out) for
it. So ``G_W[i] / g_b[i]`` is a weighted mean of the inputs that activate unit
``i``, and *exactly* one input where unit ``i`` fires for one sample only (Phong
et al. 2018; Geiping et al. 2020, Prop. D.1; Fowl et al. 2022, "Robbing the
Fed"; breaching's ``analytic`` attack). Several samples sharing a unit give a
mixture, which matches no sample.

From one step of local SGD the update is ``lr`` times the batch gradient (plus
weight decay, undone by :meth:`UpdateView.gradients`), so the recovery is exact;
from an epoch of SGD it is a sum of gradients at drifting weights; from AdamW
it is a normalised moment (close to the gradient's sign after one step), and
the ratio no longer isolates an input.

Privacy: the recovered vectors live in the space the head reads, the *scaled*
embeddings; :func:`to_raw` maps them back with the shared scaler's statistics
(known to a server that staged the run) or with statistics the adversary
estimates from public auxiliary embeddings (:func:`estimate_scaler`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from attacks.update_inversion.view import EmptyUpdateError, UpdateView

__all__ = ["AnalyticConfig", "Recovery", "recover_inputs", "deduplicate", "estimate_scaler", "to_raw"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyticConfig:
    """``rel_tol``: a unit counts as active when ``|g_b[i]| > rel_tol · max |g_b|``;
    ``dedup_cosine``: candidates closer than this in cosine are one candidate (the first kept)."""

    rel_tol: float = 1e-4
    dedup_cosine: float = 0.999

    def __post_init__(self) -> None:
        if not 0 <= self.rel_tol < 1:
            raise ValueError(f"rel_tol must be in [0, 1), got {self.rel_tol!r}")
        if not 0 < self.dedup_cosine <= 1:
            raise ValueError(f"dedup_cosine must be in (0, 1], got {self.dedup_cosine!r}")


@dataclass(frozen=True)
class Recovery:
    """Candidate inputs (scaled space) and the unit each came from, strongest bias gradient first."""

    candidates: np.ndarray   # [k, d]
    units: np.ndarray        # [k] first-layer unit of each candidate
    active_units: int        # units with a bias gradient above the tolerance (before de-duplication)

    @property
    def n_candidates(self) -> int:
        return int(self.candidates.shape[0])


def deduplicate(x: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the rows kept when each row closer than ``threshold`` (cosine) to a kept row is dropped."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    kept: list[int] = []
    for i in range(len(x)):
        if not kept or float(np.max(unit[kept] @ unit[i])) <= threshold:
            kept.append(i)
    return np.asarray(kept, dtype=int)


def recover_inputs(view: UpdateView, config: AnalyticConfig = AnalyticConfig()) -> Recovery:
    """Every unit's ``G_W[i] / g_b[i]`` above the tolerance, de-duplicated (Geiping et al. 2020, Prop. D.1).

    Raises :class:`EmptyUpdateError` when no unit's bias moved (a zero update).
    """
    gw, gb = view.gradients()
    peak = float(np.max(np.abs(gb)))
    if peak == 0.0:
        raise EmptyUpdateError("no bias of the first layer moved (a zero update, or every unit inactive): "
                               "there is no input to recover")
    active = np.flatnonzero(np.abs(gb) > config.rel_tol * peak)
    order = active[np.argsort(-np.abs(gb[active]), kind="stable")]
    cand = gw[order] / gb[order, None]
    keep = deduplicate(cand, config.dedup_cosine)
    log.debug("%d active units -> %d candidates", len(order), len(keep))
    return Recovery(cand[keep].astype(np.float32), order[keep], int(len(order)))


def estimate_scaler(aux_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of public auxiliary raw embeddings, as StandardScaler computes them (zero std -> 1).

    The adversary's stand-in for fedicd's shared scaler when it does not hold ``scaler.npz``.
    """
    a = np.asarray(aux_raw, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"aux_raw must be [n >= 2, d], got shape {a.shape}")
    std = a.std(axis=0)
    return a.mean(axis=0), np.where(std == 0, 1.0, std)


def to_raw(candidates: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled candidates back to raw embedding space: ``x * scale + mean``."""
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != np.shape(mean)[0] or np.shape(scale) != np.shape(mean):
        raise ValueError(f"candidates {c.shape} and scaler ({np.shape(mean)}, {np.shape(scale)}) do not match")
    return (c * scale + mean).astype(np.float32)
