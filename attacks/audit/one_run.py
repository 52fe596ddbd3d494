"""The one-run DP audit: an empirical lower bound on ε from m randomly included canaries.

Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1) Training Run"
(NeurIPS 2023, arXiv:2305.08846). Each of m canaries is included in the
training data independently with probability 1/2. After one training run the
auditor scores every canary, guesses "in" for the k+ highest scores and "out"
for the k− lowest, and abstains on the rest: r = k+ + k− guesses of which v are
correct. If the mechanism is (ε, δ)-DP, the number of correct guesses is
stochastically dominated by Binomial(r, e^ε / (1 + e^ε)) up to a δ term
(their Theorem 3 for ε-DP; the (ε, δ) version is their Appendix D code):

    p(ε, δ) = P[Bin(r, q) ≥ v] + 2 m δ · max_{1≤i≤v} P[v > Bin(r, q) ≥ v − i] / i,   q = e^ε / (1 + e^ε)

and ε̂ is the largest ε with p(ε, δ) < α (α = 0.05 for 95 % confidence). This
module reproduces their ``p_value_DP_audit`` / ``get_eps_audit`` (Appendix D,
also ML Privacy Meter's ``audit.py``, privacytrustlab/ml_privacy_meter) with a
vectorised inner maximum, the binomial terms from ``scipy.special`` and a bisection run to 1e-9 instead of
30 halvings.

Choosing k±. Reporting the best of many (k+, k−) as if it had been fixed in
advance inflates ε̂ (ML Privacy Meter's ``compute_abstain_attack_results``
takes such a maximum without correction). Here the candidates are a fixed,
data-independent grid and each is tested at level α / |grid| (Bonferroni), so
the maximum over the grid is itself a valid 1 − α lower bound: ε̂ > ε for some
candidate has probability at most Σ α/|grid| = α under (ε, δ)-DP.

Privacy / threat model: ``dp_audit`` in :data:`attacks.threat.THREAT_MODELS`:
the auditor holds the inclusion coins it drew and its canaries' scores, nothing
about the other training data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["CanaryCountError", "p_value", "epsilon_lower_bound", "guess_counts", "default_grid", "AuditResult",
           "audit_scores", "epsilon_cap"]

DEFAULT_ALPHA = 0.05
GRID_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)  # k = fraction · m / 2


class CanaryCountError(ValueError):
    """Too few canaries (m < 2), or guess counts that cannot come from m canaries."""


def _check_counts(m: int, r: int, v: int) -> None:
    if isinstance(m, bool) or int(m) != m or m < 2:
        raise CanaryCountError(f"m (number of canaries) must be an integer >= 2, got {m!r}")
    if not 0 <= v <= r <= m:
        raise CanaryCountError(f"need 0 <= v <= r <= m for v correct out of r guesses on m canaries, got "
                               f"v={v}, r={r}, m={m}")


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least ``v`` of ``r`` guesses correct] under an (ε, δ)-DP mechanism (Steinke et al. 2023, App. D)."""
    _check_counts(m, r, v)
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if not 0 <= delta <= 1:
        raise ValueError(f"delta must be in [0, 1], got {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of ε-DP randomized response
    # scipy.special rather than scipy.stats.binom (the same functions without its per-call argument checks,
    # which dominated the bisection's time)
    beta = float(special.bdtrc(v - 1, r, q)) if v > 0 else 1.0  # P[Bin(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    partial = np.cumsum(_binom_pmf(v - i, r, q))  # P[v > Bin(r, q) >= v - i]
    alpha = float(np.max(partial / i))
    return min(beta + alpha * delta * 2 * m, 1.0)


def _binom_pmf(k: np.ndarray, r: int, q: float) -> np.ndarray:
    """P[Bin(r, q) = k] for an array of k in [0, r], from log-gamma (as scipy.stats.binom.pmf, faster)."""
    log_choose = special.gammaln(r + 1) - special.gammaln(k + 1) - special.gammaln(r - k + 1)
    return np.exp(log_choose + special.xlogy(k, q) + special.xlog1py(r - k, -q))


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float = 0.0, alpha: float = DEFAULT_ALPHA,
                        tol: float = 1e-9) -> float:
    """ε̂: the largest ε with :func:`p_value` ``< alpha`` (0 when even ε = 0 is not rejected)."""
    _check_counts(m, r, v)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = 0.0, 1.0
    if p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    while p_value(m, r, v, hi, delta) < alpha:
        lo, hi = hi, hi + 1.0
        if hi > 1e3:
            raise ValueError(f"ε̂ diverges for m={m}, r={r}, v={v}, δ={delta}")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def epsilon_cap(m: int, *, delta: float = 0.0, alpha: float = DEFAULT_ALPHA, grid_size: int = 1) -> float:
    """The largest ε̂ any auditor can reach with m canaries: every one of m guesses correct, at level
    ``alpha / grid_size``."""
    return epsilon_lower_bound(m, m, m, delta=delta, alpha=alpha / grid_size)


def guess_counts(scores: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int) -> tuple[int, int]:
    """(r, v): guess "in" for the ``k_plus`` highest scores and "out" for the ``k_minus`` lowest (ties broken
    by index, stably); returns the number of guesses and of correct ones."""
    s, inc = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and included {inc.shape} must be 1-D of the same length")
    if not np.isfinite(s).all():
        raise ValueError("canary scores contain NaN/Inf")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > len(s):
        raise CanaryCountError(f"k_plus={k_plus} and k_minus={k_minus} must be >= 0 with k_plus + k_minus <= "
                               f"m = {len(s)}")
    order = np.argsort(s, kind="stable")
    v = int(inc[order[len(s) - k_plus:]].sum()) if k_plus else 0
    v += int((~inc[order[:k_minus]]).sum())
    return k_plus + k_minus, v


def default_grid(m: int) -> list[tuple[int, int]]:
    """The fixed (k+, k−) candidates: k+ = k− = round(f · m / 2) for f in :data:`GRID_FRACTIONS` (deduplicated).
    (Adding "in"-only candidates (k, 0) doubles the Bonferroni factor; at δ = 1e-5 and m ≥ 10⁴ the δ term
    2mδ then dominates and ε̂ dropped, so the grid stays symmetric.)"""
    ks = sorted({max(1, int(round(f * m / 2))) for f in GRID_FRACTIONS})
    return [(k, k) for k in ks if 2 * k <= m]


@dataclass(frozen=True)
class AuditResult:
    """The audit's outcome at the best candidate of the grid (tested at ``alpha / grid_size``)."""

    epsilon_lower_bound: float
    m: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    delta: float
    alpha: float
    grid_size: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def audit_scores(scores: np.ndarray, included: np.ndarray, *, delta: float, alpha: float = DEFAULT_ALPHA,
                 grid: Sequence[tuple[int, int]] | None = None) -> AuditResult:
    """ε̂ at confidence ``1 - alpha`` from canary ``scores`` (higher = more likely included) and the true
    inclusion coins, maximised over a fixed ``grid`` of (k+, k−) with a Bonferroni correction."""
    inc = np.asarray(included, dtype=bool)
    m = len(inc)
    _check_counts(m, 0, 0)
    cands = list(grid) if grid is not None else default_grid(m)
    if not cands:
        raise CanaryCountError(f"no (k+, k−) candidates for m={m}")
    level = alpha / len(cands)
    best = None
    for k_plus, k_minus in cands:
        r, v = guess_counts(scores, inc, k_plus, k_minus)
        eps = epsilon_lower_bound(m, r, v, delta=delta, alpha=level) if r else 0.0
        if best is None or eps > best[0]:
            best = (eps, k_plus, k_minus, r, v)
    eps, k_plus, k_minus, r, v = best
    return AuditResult(epsilon_lower_bound=eps, m=m, k_plus=k_plus, k_minus=k_minus, guesses=r, correct=v,
                       delta=float(delta), alpha=float(alpha), grid_size=len(cands))
