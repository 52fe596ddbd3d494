"""Canaries for the one-run audit: inclusion coins, directions, crafted rows, and scores from observations.

Three kinds (Steinke, Nasr & Jagielski 2023, §6; Andrew et al. 2024, "One-shot
empirical privacy estimation for federated learning", ICLR 2024):

* **gradient canaries** (white-box, sample-level DP-SGD): canary j is a
  "sample" whose clipped gradient is always ``C · u_j``, a fixed unit
  direction (:class:`CanaryDirections`: a Dirac direction, one coordinate of
  the first layer's weight each, or a sparse random ±1/√s direction). The
  auditor observes the noised gradient sums (or the update that sums them) and
  scores ``⟨observation, u_j⟩`` (:func:`sum_scores`) or the per-step log
  likelihood ratio of the Poisson-subsampled Gaussian (:func:`step_likelihood_scores`);
* **canary clients** (white-box, client-level DP): a client whose update is
  ``C · u_j``; scored by the cosine of the model delta with ``u_j`` (:func:`cosine_scores`);
* **canary rows** (black-box): crafted input vectors with a random rare label
  set (:func:`canary_rows`), scored by minus their loss on the final model
  (:func:`loss_scores`).

Privacy / threat model: ``dp_audit``. The auditor holds what it inserted (coins,
directions, rows) and what its threat model lets it observe; scores never read
the defender's other training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attacks.audit.one_run import CanaryCountError

__all__ = ["inclusion_coins", "CanaryDirections", "sum_scores", "step_likelihood_scores", "cosine_scores",
           "canary_rows", "loss_scores"]


def inclusion_coins(m: int, seed: int) -> np.ndarray:
    """``m`` independent fair coins (True = canary included), from ``seed``."""
    if isinstance(m, bool) or int(m) != m or m < 2:
        raise CanaryCountError(f"m (number of canaries) must be an integer >= 2, got {m!r}")
    return np.random.default_rng(seed).random(int(m)) < 0.5


@dataclass(frozen=True)
class CanaryDirections:
    """m unit directions in a ``dim``-dimensional space, each supported on ``sparsity`` coordinates.

    ``sparsity = 1`` gives Dirac canaries on m *distinct* coordinates (so they
    never overlap); ``sparsity > 1`` gives ±1/√s on s random coordinates each
    (near-orthogonal random directions, as Andrew et al. use, stored as indices).
    """

    dim: int
    coords: np.ndarray  # [m, s] int64
    signs: np.ndarray  # [m, s] float64, each row of unit norm

    @classmethod
    def make(cls, dim: int, m: int, *, sparsity: int = 1, seed: int = 0) -> CanaryDirections:
        if isinstance(m, bool) or int(m) != m or m < 2:
            raise CanaryCountError(f"m (number of canaries) must be an integer >= 2, got {m!r}")
        if not 1 <= sparsity <= dim:
            raise ValueError(f"sparsity must be in [1, dim={dim}], got {sparsity}")
        rng = np.random.default_rng(seed)
        if sparsity == 1:
            if m > dim:
                raise CanaryCountError(f"{m} Dirac canaries need {m} distinct coordinates; the space has {dim}")
            coords = rng.choice(dim, size=m, replace=False)[:, None]
            signs = np.ones((m, 1))
        else:
            coords = rng.integers(0, dim, size=(m, sparsity))
            while True:  # redraw the rare rows that hit a coordinate twice (each row: s distinct coordinates)
                srt = np.sort(coords, axis=1)
                bad = (srt[:, 1:] == srt[:, :-1]).any(1)
                if not bad.any():
                    break
                coords[bad] = rng.integers(0, dim, size=(int(bad.sum()), sparsity))
            signs = rng.choice([-1.0, 1.0], size=(m, sparsity)) / math.sqrt(sparsity)
        return cls(int(dim), coords.astype(np.int64), signs.astype(np.float64))

    @property
    def m(self) -> int:
        return int(self.coords.shape[0])

    def project(self, x: np.ndarray) -> np.ndarray:
        """``⟨x, u_j⟩`` for every canary: ``x`` is ``[..., dim]``, the result ``[..., m]``."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise ValueError(f"observations have {x.shape[-1]} coordinates, the canaries live in {self.dim}")
        return (x[..., self.coords] * self.signs).sum(-1)

    def combine(self, weights: np.ndarray) -> np.ndarray:
        """``Σ_j weights_j · u_j`` as a dense ``[dim]`` vector."""
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.m,):
            raise ValueError(f"need one weight per canary ({self.m}), got shape {w.shape}")
        out = np.zeros(self.dim)
        np.add.at(out, self.coords.ravel(), (self.signs * w[:, None]).ravel())
        return out


def sum_scores(projections: np.ndarray) -> np.ndarray:
    """Σ over observations of ``⟨o_t, u_j⟩``: ``projections`` is ``[T, m]`` (or ``[m]``)."""
    p = np.asarray(projections, dtype=np.float64)
    return p if p.ndim == 1 else p.sum(0)


def step_likelihood_scores(projections: np.ndarray, *, signal: float, noise_std: float,
                           sample_rate: float) -> np.ndarray:
    """Σ_t log[(1 − q) + q · exp((x_t s − s²/2) / σ²)]: the log likelihood ratio "included" vs "not" of the
    per-step projections ``x_t`` (``[T, m]``, in units of the clipped sum), for a canary of norm ``s`` kept with
    probability q under Gaussian noise of std σ per coordinate (the most powerful test per step)."""
    if not noise_std > 0:
        raise ValueError(f"noise_std must be > 0 for a likelihood ratio, got {noise_std}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    x = np.asarray(projections, dtype=np.float64)
    llr = (x * signal - signal ** 2 / 2) / noise_std ** 2
    q = sample_rate
    if q == 1:
        return llr.sum(0)
    return np.logaddexp(math.log1p(-q), math.log(q) + llr).sum(0)


def cosine_scores(delta: np.ndarray, directions: CanaryDirections) -> np.ndarray:
    """cos(delta, u_j) for every canary (0 for a zero delta)."""
    d = np.asarray(delta, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(d))
    return directions.project(d) / norm if norm > 0 else np.zeros(directions.m)


def canary_rows(m: int, dim: int, n_labels: int, *, labels_per_canary: int = 3, scale: float = 1.0,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """m crafted rows: Gaussian vectors of norm ``scale · √dim`` (like a standardised embedding) and a random set
    of ``labels_per_canary`` labels each (mislabelled notes); returns ``(x [m, dim] float32, y [m, n_labels])``."""
    if not 1 <= labels_per_canary <= n_labels:
        raise ValueError(f"labels_per_canary must be in [1, n_labels={n_labels}], got {labels_per_canary}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, dim))
    x *= scale * math.sqrt(dim) / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.zeros((m, n_labels), dtype=np.float32)
    for j in range(m):
        y[j, rng.choice(n_labels, size=labels_per_canary, replace=False)] = 1.0
    return x.astype(np.float32), y


def loss_scores(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the mean binary cross-entropy of each canary's labels (higher = fits better = likely included)."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if z.shape != y.shape:
        raise ValueError(f"logits {z.shape} and labels {y.shape} must have the same shape")
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return -bce.mean(1)
