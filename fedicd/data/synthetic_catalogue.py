"""The code pool of the synthetic corpus, drawn from the real ICD-10-CM catalogue.

Helper of :mod:`fedicd.data.synthetic`. :func:`build_code_pool` picks billable
(leaf) ICD-10-CM codes from several chapters with a seeded generator, groups
some of them into comorbidity clusters (built by category, e.g. type 2
diabetes + hypertension + chronic kidney disease), ranks them for a Zipf-like
frequency law and precomputes every string the note writer needs (description,
inclusion terms, parent wording, abbreviations), so that no catalogue lookup
happens per note.

All catalogue access goes through :mod:`simple_icd_10_cm`, imported lazily.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["CLUSTER_CATEGORIES", "POOL_CHAPTERS", "CodePool", "build_code_pool"]

# ICD-10-CM chapters the pool draws from (infections, neoplasms, blood,
# endocrine, mental, nervous, circulatory, respiratory, digestive, skin,
# musculoskeletal, genitourinary, symptoms). Injury chapters are left out:
# their 7th-character extensions make awkward note text.
POOL_CHAPTERS = ("1", "2", "3", "4", "5", "6", "9", "10", "11", "12", "13", "14", "18")

# Comorbidity clusters as groups of ICD-10-CM categories that co-occur.
CLUSTER_CATEGORIES: tuple[tuple[str, ...], ...] = (
    ("E11", "I10", "N18", "E78", "E66"),
    ("I50", "I48", "I25", "I11"),
    ("J44", "J96", "F17", "J18"),
    ("A41", "R65", "N17", "E87"),
    ("F10", "K70", "K76", "D69"),
    ("K21", "K57", "K92", "D62"),
    ("C34", "C78", "D63", "R53"),
    ("I63", "G81", "R47", "G40"),
    ("F32", "F41", "F43", "G47"),
    ("N39", "N40", "R33", "B96"),
    ("M17", "M54", "M81", "G89"),
)

# Clinician shorthand, keyed by code prefix (longest prefix wins).
_ABBREVIATIONS = {
    "E11": "T2DM", "I10": "HTN", "N18": "CKD", "E78": "HLD", "I50": "CHF", "I48": "AFib",
    "I25": "CAD", "J44": "COPD", "J18": "PNA", "N17": "AKI", "F17": "tobacco use",
    "F10": "EtOH use", "K70": "EtOH liver disease", "K21": "GERD", "K92": "GI bleed",
    "C34": "lung ca", "I63": "CVA", "G40": "seizure disorder", "F32": "MDD",
    "F41.1": "GAD", "N39.0": "UTI", "N40": "BPH", "M17": "knee OA", "G47.33": "OSA",
    "A41": "sepsis", "J96": "resp failure", "K76.0": "NAFLD", "F43.1": "PTSD",
}

# Categories that apply to one sex only (male / female genital organs).
_SEX_RANGES = {"M": (("C60", "C63"), ("D29", "D29"), ("D40", "D40"), ("N40", "N53")),
               "F": (("C51", "C58"), ("D25", "D28"), ("D39", "D39"), ("N70", "N98"))}

_BAD_WORDS = ("sequela", "encounter", "other specified", "unspecified side")
_MAX_DESCRIPTION = 80
_MAX_INDIRECT = 4


@dataclass(frozen=True)
class CodePool:
    """Codes of the synthetic corpus and their precomputed wording.

    Every tuple is indexed by the code's position in ``codes``, which is also
    its frequency rank (0 = most frequent before any site tilt).

    Attributes
    ----------
    codes:
        Canonical ICD-10-CM codes (upper case, with the dot).
    descriptions:
        The catalogue description of each code (direct mention).
    indirect:
        Indirect wordings per code: inclusion terms and the parent
        category's description, cleaned of parentheticals. May be empty.
    abbreviations:
        Clinician shorthand per code ("CHF", "T2DM"), or ``""``.
    chapters:
        Index into :data:`POOL_CHAPTERS` per code.
    categories:
        Three-character category per code.
    male_only, female_only:
        Categories of the pool that apply to one sex only (genital organs).
    clusters:
        Comorbidity clusters as tuples of code indices (one code per category).
    cluster_of:
        Cluster index of each code, ``-1`` when it belongs to none.
    """

    codes: tuple[str, ...]
    descriptions: tuple[str, ...]
    indirect: tuple[tuple[str, ...], ...]
    abbreviations: tuple[str, ...]
    chapters: tuple[int, ...]
    categories: tuple[str, ...]
    male_only: frozenset[str]
    female_only: frozenset[str]
    clusters: tuple[tuple[int, ...], ...]
    cluster_of: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.codes)


def build_code_pool(n_codes: int, rng: np.random.Generator) -> CodePool:
    """Pick ``n_codes`` leaf codes from :data:`POOL_CHAPTERS`, clusters first.

    Cluster categories come first (ranked most frequent), then randomly chosen
    categories of the same chapters fill the pool. Each category gives one to
    three leaves, picked among those with the shortest descriptions (a proxy
    for the common, general codes). Deterministic for ``rng``'s state.
    """
    import simple_icd_10_cm as cm

    picked: list[tuple[str, int]] = []  # (code, cluster id or -1)
    order = rng.permutation(len(CLUSTER_CATEGORIES))
    for cid in order:
        for cat in CLUSTER_CATEGORIES[cid]:
            picked += [(c, int(cid)) for c in _pick_leaves(cm, cat, rng, 2)]
    seen = {cat for group in CLUSTER_CATEGORIES for cat in group}
    fill = [c for c in _all_categories(cm) if c not in seen]
    for idx in rng.permutation(len(fill)):
        if len(picked) >= n_codes:
            break
        picked += [(c, -1) for c in _pick_leaves(cm, fill[idx], rng, 3)]
    picked = _rank(picked[:n_codes], rng)
    return _make_pool(cm, picked)


def _all_categories(cm) -> list[str]:
    """Every 3-character category of the pool chapters, in catalogue order."""
    out: list[str] = []
    stack = list(reversed(POOL_CHAPTERS))
    while stack:
        node = stack.pop()
        if cm.is_category(node):
            out.append(node)
        else:
            stack.extend(reversed(cm.get_children(node)))
    return out


def _pick_leaves(cm, category: str, rng: np.random.Generator, at_most: int) -> list[str]:
    """One to ``at_most`` usable leaves of ``category`` (short descriptions favoured)."""
    leaves = [category] if cm.is_leaf(category) else [
        d for d in cm.get_descendants(category) if cm.is_leaf(d)]
    usable = [c for c in leaves if _usable(c, cm.get_description(c))]
    if not usable:
        return []
    usable.sort(key=lambda c: (len(cm.get_description(c)), c))
    shortlist = usable[: max(1, (len(usable) + 2) // 3)]
    k = int(rng.integers(1, min(at_most, len(shortlist)) + 1))
    return [shortlist[i] for i in sorted(rng.choice(len(shortlist), size=k, replace=False))]


def _usable(code: str, description: str) -> bool:
    low = description.lower()
    return (len(code) <= 7 and len(description) <= _MAX_DESCRIPTION
            and not low.startswith("other") and not any(w in low for w in _BAD_WORDS))


def _rank(picked: list[tuple[str, int]], rng: np.random.Generator) -> list[tuple[str, int]]:
    """Order codes by frequency rank: clustered codes shuffled first, then the rest."""
    clustered = [p for p in picked if p[1] >= 0]
    rest = [p for p in picked if p[1] < 0]
    return ([clustered[i] for i in rng.permutation(len(clustered))]
            + [rest[i] for i in rng.permutation(len(rest))])


def _make_pool(cm, picked: list[tuple[str, int]]) -> CodePool:
    codes = tuple(c for c, _ in picked)
    chapter_index = {ch: i for i, ch in enumerate(POOL_CHAPTERS)}
    abbrevs = tuple(_abbreviation(c) for c in codes)
    cluster_ids = sorted({cid for _, cid in picked if cid >= 0})
    remap = {cid: i for i, cid in enumerate(cluster_ids)}
    cluster_of = tuple(remap.get(cid, -1) for _, cid in picked)
    clusters = tuple(_one_per_category(codes, [i for i, k in enumerate(cluster_of) if k == j])
                     for j in range(len(cluster_ids)))
    return CodePool(
        codes=codes,
        descriptions=tuple(cm.get_description(c) for c in codes),
        indirect=tuple(_indirect(cm, c) for c in codes),
        abbreviations=abbrevs,
        chapters=tuple(chapter_index[cm.get_ancestors(c)[-1]] for c in codes),
        categories=tuple(c[:3] for c in codes),
        male_only=frozenset(c[:3] for c in codes if _sex_of(c[:3]) == "M"),
        female_only=frozenset(c[:3] for c in codes if _sex_of(c[:3]) == "F"),
        clusters=clusters,
        cluster_of=cluster_of,
    )


def _one_per_category(codes: tuple[str, ...], members: list[int]) -> tuple[int, ...]:
    first: dict[str, int] = {}
    for i in members:
        first.setdefault(codes[i][:3], i)
    return tuple(first.values())


def _sex_of(category: str) -> str:
    for sex, ranges in _SEX_RANGES.items():
        if any(lo <= category <= hi for lo, hi in ranges):
            return sex
    return ""


def _abbreviation(code: str) -> str:
    keys = [k for k in _ABBREVIATIONS if code.startswith(k)]
    return _ABBREVIATIONS[max(keys, key=len)] if keys else ""


def _indirect(cm, code: str) -> tuple[str, ...]:
    """Inclusion terms and parent wording that name ``code`` indirectly."""
    raw = list(cm.get_inclusion_term(code)) + list(cm.get_includes(code))
    parent = cm.get_parent(code)
    if parent and cm.is_category_or_subcategory(parent):
        raw.append(cm.get_description(parent))
    own = cm.get_description(code).lower()
    cleaned = (_clean(t) for t in raw)
    kept = (t for t in cleaned if t and t.lower() != own and len(t) <= 60
            and not t.lower().startswith(("other", "unspecified")))
    return tuple(dict.fromkeys(kept))[:_MAX_INDIRECT]


def _clean(term: str) -> str:
    """Drop parentheticals, brackets and 'NOS' from a catalogue term."""
    term = re.sub(r"\s*[\(\[][^\)\]]*[\)\]]", "", term)
    term = re.sub(r"\bNOS\b", "", term)
    return re.sub(r"\s+", " ", term).strip(" ,;")
