"""Scoring a membership attack: ROC, AUC and TPR at low FPR, with bootstrap 95 % intervals.

The scoring side: the only module that reads the membership truth. Following
Carlini et al. 2022 (§III-B), an attack is judged by its true-positive rate at a
low false-positive rate (0.1 %, 1 %) on a log-scale ROC, not only by AUC.
``TPR at FPR ≤ f`` is the largest TPR among thresholds whose FPR does not
exceed ``f`` (0 when none does), as in the reference code
(``tpr[np.where(fpr < f)[0][-1]]``).

Resolution: with ``n`` non-members the smallest non-zero FPR is ``1 / n``, so
TPR at 0.1 % FPR means "TPR with *no* false positive" unless ``n >= 1000``;
:func:`membership_metrics` records ``n_members`` / ``n_nonmembers`` so a reader
can tell. Intervals: percentile bootstrap over notes, members and non-members
resampled separately (each resample keeps the class sizes), fixed seed.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from attacks.membership.signals import MembershipInputError

__all__ = ["roc_curve", "auc_score", "tpr_at_fpr", "membership_metrics", "FPR_LEVELS", "metric_name"]

FPR_LEVELS = (0.001, 0.01)


def metric_name(fpr: float) -> str:
    """``tpr_at_0.1pct_fpr`` for 0.001, ``tpr_at_1pct_fpr`` for 0.01."""
    return f"tpr_at_{100 * fpr:g}pct_fpr"


def _check(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, m = np.asarray(scores, dtype=np.float64), np.asarray(is_member)
    if s.ndim != 1 or m.shape != s.shape:
        raise MembershipInputError(f"scores {s.shape} and is_member {m.shape} must be 1-D of equal length")
    if m.dtype != bool:
        raise MembershipInputError(f"is_member must be a bool mask, got dtype {m.dtype}")
    if m.all() or not m.any():
        raise MembershipInputError(f"need both members and non-members, got {int(m.sum())} of {m.size}")
    if np.isnan(s).any():
        raise MembershipInputError(f"scores contain {int(np.isnan(s).sum())} NaN values")
    return s, m


def roc_curve(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: one point per distinct score (predict member when ``score >= threshold``),
    starting at (0, 0) with threshold +inf."""
    s, m = _check(scores, is_member)
    order = np.argsort(-s, kind="mergesort")
    s, m = s[order], m[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last index of each run of equal scores
    tp = np.cumsum(m)[last]
    fp = np.cumsum(~m)[last]
    return (np.r_[0.0, fp / (~m).sum()], np.r_[0.0, tp / m.sum()], np.r_[np.inf, s[last]])


def auc_score(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Area under the ROC (trapezoids; ties count one half)."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    """The largest TPR at an FPR ``<= level``."""
    ok = np.asarray(fpr) <= level + 1e-12
    return float(np.max(np.asarray(tpr)[ok])) if ok.any() else 0.0


def _point(scores: np.ndarray, is_member: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(scores, is_member)
    out = {"auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))}
    out.update({metric_name(f): tpr_at_fpr(fpr, tpr, f) for f in FPR_LEVELS})
    return out


def _points(mem: np.ndarray, out: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`_point` for a batch of resamples at once: member scores ``[B, n1]``, non-member scores ``[B, n0]``.

    AUC is the Mann-Whitney statistic (ties count one half, as the trapezoids do); TPR at FPR ``<= f`` is
    the share of members scoring above the ``(k + 1)``-th highest non-member, ``k = floor(f n0)``: the same
    numbers :func:`roc_curve` gives (tested)."""
    n1, n0 = mem.shape[1], out.shape[1]
    ranks = rankdata(np.concatenate([mem, out], axis=1), axis=1)
    res = {"auc": (ranks[:, :n1].sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)}
    desc = -np.sort(-out, axis=1)
    for f in FPR_LEVELS:
        k = int(np.floor(f * n0 + 1e-9))
        res[metric_name(f)] = (np.ones(len(mem)) if k >= n0 else (mem > desc[:, k:k + 1]).mean(axis=1))
    return res


def membership_metrics(scores: np.ndarray, is_member: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, dict[str, float]]:
    """``{"auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr"}`` each as ``{"value", "ci_low", "ci_high", "n",
    "n_members", "n_nonmembers"}`` (the :class:`attacks.report.AttackReport` metric format plus class sizes)."""
    s, m = _check(scores, is_member)
    if n_boot < 1:
        raise MembershipInputError(f"n_boot must be >= 1, got {n_boot}")
    point = _point(s, m)
    rng = np.random.default_rng(seed)
    mem, out = s[m], s[~m]
    draws = _points(mem[rng.integers(0, mem.size, (n_boot, mem.size))],
                    out[rng.integers(0, out.size, (n_boot, out.size))])
    alpha = (1 - level) / 2
    return {k: {"value": v, "ci_low": float(np.quantile(draws[k], alpha)),
                "ci_high": float(np.quantile(draws[k], 1 - alpha)), "n": int(s.size),
                "n_members": int(mem.size), "n_nonmembers": int(out.size)} for k, v in point.items()}
