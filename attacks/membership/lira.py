"""LiRA: the likelihood-ratio membership attack (Carlini et al. 2022, "Membership inference attacks from first
principles", IEEE S&P).

For each candidate note the adversary trains reference models with the note IN
(on a random half of its population that contains it) and OUT, fits a Gaussian
to the note's statistic under each (per note: the note's own difficulty is
calibrated away), and scores the target model's statistic ``s``:

* **online**: ``log N(s; μ_in, σ_in²) − log N(s; μ_out, σ_out²)``;
* **offline** (OUT models only): the one-sided test ``log Φ((s − μ_out) / σ_out)``,
  large when ``s`` sits above what models that never saw the note produce.

With few reference models the per-note variances are noisy; the *fixed-variance*
variant uses one global σ for all notes (Carlini et al. §VI-A: better below
about 64 models). Means are medians over the models, as in the reference code
(``tensorflow/privacy``, ``research/mi_lira_2021/plot.py``, ``generate_ours`` /
``generate_ours_offline``). Scores are "higher = more likely a member".

Reference models are assigned by :func:`reference_keep`: every candidate is IN
for exactly half of them (the reference code's ``keep``), so online LiRA needs
an even number of references.

Privacy
-------
Threat model ``membership_inference`` (:data:`attacks.threat.THREAT_MODELS`):
the adversary holds the target's outputs on its candidates, reference models it
trained itself and which candidates each of them saw; never the target's
membership, which only :mod:`attacks.membership.roc` (the scoring side) reads.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from attacks.membership.signals import MembershipInputError

__all__ = ["NoReferenceModelsError", "reference_keep", "lira_online", "lira_offline", "check_reference_stats"]

_TINY = 1e-30


class NoReferenceModelsError(ValueError):
    """A reference-model attack was given no (or too few) reference models."""


def reference_keep(n_refs: int, n_candidates: int, *, seed: int, online: bool = True) -> np.ndarray:
    """``[n_refs, n_candidates]`` bool: which candidates each reference model trains on.

    Every candidate is IN for exactly ``n_refs // 2`` models (a random half, seeded), so the IN and OUT
    Gaussians of online LiRA each get ``n_refs / 2`` samples. ``n_refs`` must be >= 1, and even and >= 2
    when ``online`` (offline attacks only use OUT models and accept any ``n_refs >= 1``; with one model
    it is OUT for every candidate).
    """
    if not isinstance(n_refs, (int, np.integer)) or n_refs < 1:
        raise NoReferenceModelsError(f"n_refs must be an integer >= 1, got {n_refs!r}")
    if online and (n_refs < 2 or n_refs % 2):
        raise NoReferenceModelsError(f"online attacks need IN and OUT halves: n_refs must be even and >= 2, "
                                     f"got {n_refs} (offline attacks accept any n_refs >= 1)")
    rng = np.random.default_rng(seed)
    order = rng.random((n_refs, n_candidates)).argsort(axis=0)
    return order < n_refs // 2


def check_reference_stats(target: np.ndarray, refs: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(target [n], refs [R, n], keep [R, n])`` checked: R >= 1, matching shapes, finite values."""
    t = np.asarray(target, dtype=np.float64)
    r = np.asarray(refs, dtype=np.float64)
    k = np.asarray(keep)
    if t.ndim != 1:
        raise MembershipInputError(f"target statistics must be 1-D [n_candidates], got shape {t.shape}")
    if r.ndim != 2 or r.shape[0] == 0:
        raise NoReferenceModelsError(f"reference statistics must be [n_refs >= 1, {t.size}], got shape {r.shape}: "
                                     "train reference models first")
    if r.shape != (r.shape[0], t.size) or k.shape != r.shape:
        raise MembershipInputError(f"reference statistics {r.shape} and keep mask {k.shape} must both be "
                                   f"[n_refs, {t.size}] (one row per reference model, one column per candidate)")
    if k.dtype != bool:
        raise MembershipInputError(f"keep must be a bool mask, got dtype {k.dtype}")
    for name, a in (("target statistics", t), ("reference statistics", r)):
        if not np.isfinite(a).all():
            raise MembershipInputError(f"{name} contain NaN/Inf")
    return t, r, k


def _gaussian(refs: np.ndarray, mask: np.ndarray, fix_variance: bool, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-candidate median and std of ``refs`` where ``mask`` (NaN elsewhere); a global std when fixed."""
    counts = mask.sum(axis=0)
    if (counts == 0).any():
        raise NoReferenceModelsError(f"{int((counts == 0).sum())} candidate(s) have no {side} reference model; "
                                     f"use more references (each candidate needs >= 1 {side}, >= 2 for a "
                                     "per-note variance)")
    vals = np.where(mask, refs, np.nan)
    mu = np.nanmedian(vals, axis=0)
    if fix_variance or (counts < 2).any():
        sd = np.full_like(mu, np.nanstd(vals - np.nanmean(vals, axis=0)))
    else:
        sd = np.nanstd(vals, axis=0)
    return mu, sd + _TINY


def lira_online(target: np.ndarray, refs: np.ndarray, keep: np.ndarray, *, fix_variance: bool = False) -> np.ndarray:
    """Online LiRA scores ``[n]``: log-likelihood ratio of the target's statistic under IN vs OUT Gaussians.

    Parameters
    ----------
    target : array [n]
        The target model's statistic per candidate (:func:`attacks.membership.signals.scaled_logit`).
    refs : array [R, n]
        Each reference model's statistic per candidate.
    keep : bool array [R, n]
        Which candidates each reference model was trained on (:func:`reference_keep`).
    fix_variance : bool
        One global variance per side (pooled over candidates) instead of one per candidate.
    """
    t, r, k = check_reference_stats(target, refs, keep)
    mu_in, sd_in = _gaussian(r, k, fix_variance, "IN")
    mu_out, sd_out = _gaussian(r, ~k, fix_variance, "OUT")
    return norm.logpdf(t, mu_in, sd_in) - norm.logpdf(t, mu_out, sd_out)


def lira_offline(target: np.ndarray, refs: np.ndarray, keep: np.ndarray, *, fix_variance: bool = False
                 ) -> np.ndarray:
    """Offline LiRA scores ``[n]``: ``log Φ((s − μ_out) / σ_out)``, the one-sided test against OUT models only."""
    t, r, k = check_reference_stats(target, refs, keep)
    mu_out, sd_out = _gaussian(r, ~k, fix_variance, "OUT")
    return norm.logcdf((t - mu_out) / sd_out)
