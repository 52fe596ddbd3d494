"""RMIA: relative membership inference (Zarifzadeh et al. 2024, "Low-cost high-power membership inference
attacks", ICML).

RMIA compares the likelihood ratio of a candidate ``x`` with those of population
notes ``z``:

    ``LR(x) = p(x | θ) / p(x)``,  ``score(x) = Pr_z[ LR(x) / LR(z) > γ ]``,

where ``p(x | θ)`` is the target's probability of ``x``'s true label (here the
whole code vector, :func:`attacks.membership.signals.log_label_probability`) and
``p(x)`` its average over reference models:

* **online**: the mean over all references (half of which saw ``x``);
* **offline** (OUT references only): ``p(x) ≈ ½((1 + a) p_out(x) + (1 − a))``, the
  paper's linear correction for the missing IN models (§3, "offline"); ``a`` is
  chosen on the reference models themselves (:func:`tune_offline_a`).

Population notes ``z`` are OUT for every reference model unless a keep mask says
otherwise. With ``γ = 1`` (as in ``privacytrustlab/ml_privacy_meter``,
``modules/attacks.py``: ``run_rmia``) the score is the fraction of ``z`` whose
ratio is below ``LR(x)``. All arithmetic is in log space (``p`` is a product of
one sigmoid per code and underflows).

Privacy
-------
Threat model ``membership_inference``: the adversary's own reference models and
population, and the target's outputs on candidates and population; never the
target's membership.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from attacks.membership.lira import NoReferenceModelsError, check_reference_stats
from attacks.membership.roc import auc_score
from attacks.membership.signals import MembershipInputError

__all__ = ["log_marginal", "rmia_scores", "tune_offline_a", "A_GRID"]

A_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


def log_marginal(log_p_refs: np.ndarray, keep: np.ndarray, *, offline: bool, a: float = 0.3) -> np.ndarray:
    """``log p(x)`` per candidate from the references' ``log p(x | θ_r)`` ``[R, n]`` (see module docstring)."""
    if not 0.0 <= a <= 1.0:
        raise MembershipInputError(f"offline a must be in [0, 1], got {a}")
    r, k = np.asarray(log_p_refs, dtype=np.float64), np.asarray(keep, dtype=bool)
    if not offline:
        return logsumexp(r, axis=0) - np.log(r.shape[0])
    out = ~k
    if (out.sum(axis=0) == 0).any():
        raise NoReferenceModelsError("a candidate has no OUT reference model; offline RMIA needs >= 1 per note")
    log_mean_out = logsumexp(np.where(out, r, -np.inf), axis=0) - np.log(out.sum(axis=0))
    if a >= 1.0:
        return log_mean_out
    return np.logaddexp(np.log((1 + a) / 2) + log_mean_out, np.log((1 - a) / 2))


def rmia_scores(target: np.ndarray, refs: np.ndarray, keep: np.ndarray, *, offline: bool, a: float = 0.3,
                pop_target: np.ndarray | None = None, pop_refs: np.ndarray | None = None,
                pop_keep: np.ndarray | None = None, gamma: float = 1.0) -> np.ndarray:
    """RMIA scores ``[n]`` in [0, 1] (higher = more likely a member).

    Parameters
    ----------
    target, refs, keep
        ``log p(x | θ)`` of the target ``[n]`` and of each reference ``[R, n]``; which candidates each
        reference trained on ``[R, n]``.
    offline, a
        Offline RMIA with the correction ``a`` (ignored online).
    pop_target, pop_refs, pop_keep
        The same for population notes ``z`` ``[m]``, ``[R, m]``; ``pop_keep`` defaults to all OUT. Without a
        population the candidates themselves serve as ``z`` (the ranking of candidates, hence the ROC, is
        the same: with ``γ = 1`` the score is monotone in ``LR(x)``).
    gamma : float
        The pairwise threshold ``γ >= 1``.
    """
    t, r, k = check_reference_stats(target, refs, keep)
    if gamma < 1.0:
        raise MembershipInputError(f"gamma must be >= 1, got {gamma}")
    log_lr_x = t - log_marginal(r, k, offline=offline, a=a)
    if pop_target is None:
        log_lr_z = log_lr_x
    else:
        pk = np.zeros(np.shape(pop_refs), dtype=bool) if pop_keep is None else pop_keep
        pt, pr, pk = check_reference_stats(pop_target, pop_refs, pk)
        if pr.shape[0] != r.shape[0]:
            raise MembershipInputError(f"population statistics come from {pr.shape[0]} reference models, the "
                                       f"candidates' from {r.shape[0]}")
        log_lr_z = pt - log_marginal(pr, pk, offline=offline, a=a)
    z_sorted = np.sort(log_lr_z)
    return np.searchsorted(z_sorted, log_lr_x - np.log(gamma), side="left") / z_sorted.size


def tune_offline_a(refs: np.ndarray, keep: np.ndarray, *, grid: tuple[float, ...] = A_GRID) -> float:
    """The offline ``a`` that best separates IN from OUT when each reference in turn plays the target.

    The adversary knows which candidates its own references trained on, so it can pick ``a`` by the
    AUC of offline RMIA against them (the paper tunes ``a`` this way, §4). Needs >= 2 references.
    """
    r, k = np.asarray(refs, dtype=np.float64), np.asarray(keep, dtype=bool)
    if r.shape[0] < 2:
        raise NoReferenceModelsError(f"tuning a needs >= 2 reference models, got {r.shape[0]}")
    best, best_auc = grid[0], -1.0
    for a in grid:
        aucs = []
        for j in range(r.shape[0]):
            rest = np.arange(r.shape[0]) != j
            if (~k[rest]).sum(axis=0).min() == 0 or k[j].all() or not k[j].any():
                continue
            aucs.append(auc_score(rmia_scores(r[j], r[rest], k[rest], offline=True, a=a), k[j]))
        if aucs and float(np.mean(aucs)) > best_auc:
            best, best_auc = a, float(np.mean(aucs))
    return float(best)
