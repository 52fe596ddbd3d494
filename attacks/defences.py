"""Defences a data holder can apply to embeddings before they leave it, to measure attacks against.

Each is public (the adversary knows it and retrains on defended auxiliary vectors:
the *adaptive* attacker) and keyed by its strength:

* :func:`gaussian_noise` — rows scaled to unit norm, then N(0, σ²) per coordinate;
* :func:`quantize` — every coordinate rounded to ``2**bits`` levels over the
  defender's range (fitted on its own training vectors);
* :class:`DimensionReducer` — PCA to ``k`` dimensions fitted on the defender's
  own training vectors.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

__all__ = ["gaussian_noise", "quantize", "DimensionReducer", "fit_range"]


def gaussian_noise(x: np.ndarray, sigma: float, *, seed: int | np.random.Generator = 0) -> np.ndarray:
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    x = np.asarray(x, dtype=np.float32)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    return (unit + sigma * rng.standard_normal(unit.shape)).astype(np.float32)


def fit_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate (low, high) of the defender's own vectors."""
    x = np.asarray(x, dtype=np.float32)
    return x.min(axis=0), x.max(axis=0)


def quantize(x: np.ndarray, bits: int, value_range: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Round each coordinate to the nearest of ``2**bits`` evenly spaced levels in its range (clipped)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    lo, hi = value_range
    span = np.maximum(hi - lo, 1e-12)
    levels = 2**bits - 1
    q = np.round((np.clip(x, lo, hi) - lo) / span * levels)
    return (lo + q / levels * span).astype(np.float32)


class DimensionReducer:
    """PCA to ``k`` dimensions, fitted on the defender's vectors."""

    def __init__(self, k: int, *, seed: int = 0):
        self.k, self.seed = k, seed
        self.pca: PCA | None = None

    def fit(self, x: np.ndarray) -> DimensionReducer:
        if not 1 <= self.k <= min(np.shape(x)):
            raise ValueError(f"k must be in [1, {min(np.shape(x))}], got {self.k}")
        self.pca = PCA(n_components=self.k, random_state=self.seed).fit(x)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.pca is None:
            raise RuntimeError("fit the reducer on the defender's vectors first")
        return self.pca.transform(x).astype(np.float32)
