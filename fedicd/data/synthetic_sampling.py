"""Random draws of the synthetic corpus: sites, patients and what each note says.

Helper of :mod:`fedicd.data.synthetic`. A :class:`Site` tilts the pool's
Zipf-law code weights by a Dirichlet draw over chapters (so sites are
non-IID) and carries a writing style; :func:`plan_note` draws one note's
codes (primary first, comorbidity cluster mates likely to follow), how each
is mentioned, and the codes mentioned negated; :func:`make_patients` invents
the planted identities. Every draw comes from a seeded generator passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from fedicd.data import synthetic_lexicon as lex
from fedicd.data.synthetic_catalogue import POOL_CHAPTERS, CodePool
from fedicd.data.synthetic_text import (
    Dice,
    NotePlan,
    Patient,
    SiteStyle,
    make_site_style,
    mention_phrase,
)

__all__ = ["Site", "make_patients", "make_sites", "plan_note", "site_shares", "truncated_poisson_cdf"]

_FIRST_DAY = dt.date(2010, 1, 1).toordinal()
_ADMISSION_SPAN_DAYS = 13 * 365
_MAX_HISTORY = 3
_MAX_NEGATED = 4


@dataclass(frozen=True)
class Site:
    """One site: its name, cumulative code weights and writing style."""

    name: str
    cumulative: tuple[float, ...]
    style: SiteStyle


def make_sites(n_sites: int, pool: CodePool, *, zipf_exponent: float, concentration: float,
               rng: np.random.Generator) -> list[Site]:
    """Sites with Dirichlet-tilted chapter mixes over a shared Zipf law."""
    base = np.arange(1, len(pool) + 1, dtype=float) ** -zipf_exponent
    chapters = np.asarray(pool.chapters)
    sites = []
    for s in range(n_sites):
        tilt = rng.dirichlet(np.full(len(POOL_CHAPTERS), concentration)) * len(POOL_CHAPTERS)
        jitter = rng.lognormal(0.0, 0.3, size=len(pool))
        weights = base * (tilt[chapters] + 1e-3) * jitter
        sites.append(Site(name=f"site-{s}", cumulative=tuple(np.cumsum(weights).tolist()),
                          style=make_site_style(rng)))
    return sites


def site_shares(n_sites: int, concentration: float, rng: np.random.Generator) -> tuple[float, ...]:
    """Cumulative share of notes per site (a Dirichlet draw)."""
    return tuple(np.cumsum(rng.dirichlet(np.full(n_sites, concentration))).tolist())


def truncated_poisson_cdf(mean: float, cap: int) -> tuple[float, ...]:
    """Cumulative probabilities of ``min(Poisson(mean), cap)`` for ``0..cap``."""
    pmf = [math.exp(-mean) * mean ** k / math.factorial(k) for k in range(cap)]
    return tuple(np.cumsum(pmf + [max(0.0, 1.0 - sum(pmf))]).tolist())


def plan_note(pool: CodePool, site: Site, dice: Dice, *, female: bool, n_codes: int,
              n_negated: int, cohesion: float, indirect_rate: float) -> NotePlan:
    """Draw what one note says (codes, mentions, negations, history).

    Codes of the other sex's genital organs are never drawn, nor negated.
    """
    blocked = set(pool.male_only if female else pool.female_only)
    codes = _draw_codes(pool, site, dice, n_codes, cohesion, blocked)
    indirect = tuple(bool(pool.indirect[c] or pool.abbreviations[c]) and dice.chance(indirect_rate)
                     for c in codes)
    mentions = tuple(mention_phrase(pool, c, ind, site.style, dice) for c, ind in zip(codes, indirect))
    history = tuple(c for c in codes[1:] if dice.chance(0.6))[:_MAX_HISTORY]
    return NotePlan(codes=codes, mentions=mentions, indirect=indirect,
                    negated=_draw_negated(pool, site, dice, codes, n_negated, blocked),
                    in_history=history)


def _draw_codes(pool: CodePool, site: Site, dice: Dice, k: int, cohesion: float,
                blocked: set[str]) -> tuple[int, ...]:
    primary = dice.weighted(site.cumulative)
    while pool.categories[primary] in blocked:
        primary = dice.weighted(site.cumulative)
    chosen, categories = [primary], {pool.categories[primary]} | blocked
    cluster = pool.clusters[pool.cluster_of[primary]] if pool.cluster_of[primary] >= 0 else ()
    for code in cluster:
        if len(chosen) < k and pool.categories[code] not in categories and dice.chance(cohesion):
            chosen.append(code)
            categories.add(pool.categories[code])
    for _ in range(20 * k):
        if len(chosen) >= k:
            break
        code = dice.weighted(site.cumulative)
        if pool.categories[code] not in categories:
            chosen.append(code)
            categories.add(pool.categories[code])
    return tuple(chosen)


def _draw_negated(pool: CodePool, site: Site, dice: Dice, codes: tuple[int, ...],
                  n: int, blocked: set[str]) -> tuple[int, ...]:
    """Codes outside the note's categories: cluster mates first (hard distractors)."""
    taken = {pool.categories[c] for c in codes} | blocked
    cluster = pool.clusters[pool.cluster_of[codes[0]]] if pool.cluster_of[codes[0]] >= 0 else ()
    candidates = [c for c in cluster if pool.categories[c] not in taken]
    candidates += [dice.weighted(site.cumulative) for _ in range(2 * n)]
    out: list[int] = []
    for code in candidates:
        if len(out) < min(n, _MAX_NEGATED) and pool.categories[code] not in taken:
            out.append(code)
            taken.add(pool.categories[code])
    return tuple(out)


def make_patients(n: int, rng: np.random.Generator) -> list[Patient]:
    """Invent ``n`` patients: names, unique 7-digit MRNs, ages and dates."""
    female = rng.random(n) < 0.5
    first_f = rng.integers(len(lex.FIRST_NAMES_F), size=n)
    first_m = rng.integers(len(lex.FIRST_NAMES_M), size=n)
    last = rng.integers(len(lex.LAST_NAMES), size=n)
    mrn = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    age = np.clip(np.rint(rng.normal(62, 16, size=n)), 18, 95).astype(int)
    admit = _FIRST_DAY + rng.integers(_ADMISSION_SPAN_DAYS, size=n)
    stay = np.minimum(1 + rng.geometric(0.22, size=n), 30)
    birth = admit - np.floor(age * 365.25).astype(int) - rng.integers(365, size=n)
    return [Patient(first=(lex.FIRST_NAMES_F[first_f[i]] if female[i] else lex.FIRST_NAMES_M[first_m[i]]),
                    last=lex.LAST_NAMES[last[i]], mrn=str(mrn[i]), dob=_iso(birth[i]),
                    admission=_iso(admit[i]), discharge=_iso(admit[i] + stay[i]),
                    age=int(age[i]), female=bool(female[i]))
            for i in range(n)]


def _iso(ordinal: int) -> str:
    return dt.date.fromordinal(int(ordinal)).isoformat()
