"""Synthetic discharge summaries: fedicd's embedded default dataset.

THE NOTES ARE SYNTHETIC. They describe no real patient: the text is assembled
from templates, the diagnoses are drawn at random, and every name, medical
record number and date is invented. Only the codes and their wording are real:
they come from the ICD-10-CM catalogue (via :mod:`simple_icd_10_cm`).

What the generator models, so that the demo exercises what real MIMIC notes do:

* MIMIC-shaped notes: a header (name, unit number, admission, discharge and
  birth dates), chief complaint, history of present illness, hospital course,
  discharge diagnoses and discharge medications, ~120-350 words each.
* Long-tailed code frequencies (Zipf law over a pool of billable codes from
  several chapters) and comorbidity clusters that co-occur (e.g. type 2
  diabetes, hypertension and chronic kidney disease).
* Codes that are hard to read off: some are named only by an inclusion term,
  the parent category's wording or clinician shorthand; codes the note does
  *not* carry are mentioned negated ("no evidence of ...", "ruled out").
* Non-IID sites: each site tilts the code distribution towards some chapters
  (a Dirichlet draw) and has its own headings, abbreviations and templates.
* Planted identifiers whose ground truth (:class:`PlantedIdentifiers`) is kept
  so that attacks can measure identifier leakage.

Output is deterministic for ``SyntheticConfig.seed`` and independent of the
global ``random``/``numpy`` state. 20,000 notes take a few seconds.

Privacy
-------
The corpus contains fake identifiers on purpose; treat its text like real
notes (only embedding and attack scoring read it) so the pipeline is tested
as it will run on MIMIC.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from fedicd.data.notes import CodedNotes, LoadSummary, unique_codes
from fedicd.data.synthetic_catalogue import CodePool, build_code_pool
from fedicd.data.synthetic_sampling import (
    Site,
    make_patients,
    make_sites,
    plan_note,
    site_shares,
    truncated_poisson_cdf,
)
from fedicd.data.synthetic_text import Dice, Patient, render_note
from fedicd.errors import ConfigError

__all__ = ["PlantedIdentifiers", "SyntheticConfig", "SyntheticCorpus", "generate_synthetic"]

logger = logging.getLogger(__name__)

NOTES_FILE, IDENTIFIERS_FILE, MENTIONS_FILE = "notes.jsonl.gz", "identifiers.jsonl", "mentions.jsonl"


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the synthetic corpus; checked on construction.

    Parameters
    ----------
    n_notes, n_sites, n_codes:
        Corpus size, number of sites (``"site-0"``...), size of the code pool.
    seed:
        Seeds every random draw (pool, sites, patients, notes).
    zipf_exponent:
        Code ``r`` (by rank) has base weight ``r ** -zipf_exponent``.
    mean_codes, max_codes:
        Codes per note: ``1 + Poisson(mean_codes - 1)`` capped at ``max_codes``.
    cluster_cohesion:
        Chance that each other member of the primary code's cluster joins it.
    indirect_rate:
        Chance that a code is named only indirectly (inclusion term, parent, shorthand).
    mean_negations:
        Mean number of negated mentions of codes the note does not carry.
    site_concentration:
        Dirichlet concentration of each site's tilt over chapters (smaller: more non-IID).
    site_size_concentration:
        Dirichlet concentration of the sites' shares of notes (smaller: more unequal).
    """

    n_notes: int = 20_000
    n_sites: int = 5
    n_codes: int = 300
    seed: int = 0
    zipf_exponent: float = 1.0
    mean_codes: float = 4.5
    max_codes: int = 8
    cluster_cohesion: float = 0.5
    indirect_rate: float = 0.25
    mean_negations: float = 1.5
    site_concentration: float = 0.5
    site_size_concentration: float = 5.0

    def __post_init__(self) -> None:
        _check_range("n_notes", self.n_notes, 1, 1_000_000, integer=True)
        _check_range("n_sites", self.n_sites, 1, 100, integer=True)
        _check_range("n_codes", self.n_codes, 10, 2000, integer=True)
        _check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        _check_range("max_codes", self.max_codes, 1, 20, integer=True)
        _check_range("mean_codes", self.mean_codes, 1, self.max_codes)
        _check_range("cluster_cohesion", self.cluster_cohesion, 0, 1)
        _check_range("indirect_rate", self.indirect_rate, 0, 1)
        _check_range("mean_negations", self.mean_negations, 0, 4)
        for name in ("zipf_exponent", "site_concentration", "site_size_concentration"):
            _check_range(name, getattr(self, name), 0, 100, open_low=True)


def _check_range(name: str, value: object, low: float, high: float, *,
                 integer: bool = False, open_low: bool = False) -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``value`` lies in the range."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and value <= high
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigError(f"SyntheticConfig.{name}={value!r} is invalid; allowed: "
                          f"{'an integer' if integer else 'a number'} in {interval}")


@dataclass
class PlantedIdentifiers:
    """Ground truth of the fake identifiers written into one note."""

    note_id: str
    first_name: str
    last_name: str
    mrn: str
    date_of_birth: str
    admission_date: str
    discharge_date: str


@dataclass
class SyntheticCorpus:
    """Synthetic notes plus the ground truth an attack or a test needs.

    ``negated_codes`` and ``indirect_codes`` list, per note, the codes
    mentioned negated (never among the note's codes) and the note's codes
    named only indirectly.
    """

    notes: CodedNotes
    identifiers: list[PlantedIdentifiers]
    negated_codes: list[tuple[str, ...]] = field(default_factory=list)
    indirect_codes: list[tuple[str, ...]] = field(default_factory=list)

    def save(self, directory: str | Path) -> None:
        """Write ``notes.jsonl.gz`` (+ summary), ``identifiers.jsonl`` and ``mentions.jsonl``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.notes.save(directory / NOTES_FILE)
        _write_jsonl(directory / IDENTIFIERS_FILE, (asdict(p) for p in self.identifiers))
        _write_jsonl(directory / MENTIONS_FILE, (
            {"id": i, "negated": list(n), "indirect": list(d)}
            for i, n, d in zip(self.notes.ids, self.negated_codes, self.indirect_codes)))

    @classmethod
    def load(cls, directory: str | Path) -> SyntheticCorpus:
        """Read what :meth:`save` wrote (``mentions.jsonl`` is optional)."""
        directory = Path(directory)
        notes = CodedNotes.load(directory / NOTES_FILE)
        ids_path = directory / IDENTIFIERS_FILE
        if not ids_path.exists():
            raise FileNotFoundError(f"identifiers file not found: {ids_path}")
        identifiers = [PlantedIdentifiers(**rec) for rec in _read_jsonl(ids_path)]
        mentions = (_read_jsonl(directory / MENTIONS_FILE)
                    if (directory / MENTIONS_FILE).exists() else [])
        return cls(notes=notes, identifiers=identifiers,
                   negated_codes=[tuple(m["negated"]) for m in mentions],
                   indirect_codes=[tuple(m["indirect"]) for m in mentions])


def _write_jsonl(path: Path, records) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def generate_synthetic(config: SyntheticConfig | None = None, **overrides) -> SyntheticCorpus:
    """Generate a synthetic corpus (see the module docstring: NOT real patients).

    Parameters
    ----------
    config:
        The settings; defaults to ``SyntheticConfig()``.
    **overrides:
        Fields of :class:`SyntheticConfig` to replace, e.g. ``n_notes=500``.

    Returns
    -------
    SyntheticCorpus
        Notes with ``icd_version=10``, sites ``"site-0"``..., codes primary
        first, plus planted identifiers and mention ground truth.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(SyntheticConfig)})
    if unknown:
        raise ConfigError(f"unknown SyntheticConfig fields {unknown}; allowed: "
                          f"{[f.name for f in fields(SyntheticConfig)]}")
    cfg = replace(config or SyntheticConfig(), **overrides)
    start = time.perf_counter()
    pool_ss, site_ss, people_ss, note_ss = np.random.SeedSequence(cfg.seed).spawn(4)
    pool = build_code_pool(cfg.n_codes, np.random.default_rng(pool_ss))
    site_rng = np.random.default_rng(site_ss)
    sites = make_sites(cfg.n_sites, pool, zipf_exponent=cfg.zipf_exponent,
                       concentration=cfg.site_concentration, rng=site_rng)
    shares = site_shares(cfg.n_sites, cfg.site_size_concentration, site_rng)
    patients = make_patients(cfg.n_notes, np.random.default_rng(people_ss))
    corpus = _write_notes(cfg, pool, sites, shares, patients, Dice(np.random.default_rng(note_ss)))
    logger.info("generated %d synthetic notes in %.2f s: %s", len(corpus.notes),
                time.perf_counter() - start, corpus.notes.summary.describe())
    return corpus


def _write_notes(cfg: SyntheticConfig, pool: CodePool, sites: list[Site], shares: tuple[float, ...],
                 patients: list[Patient], dice: Dice) -> SyntheticCorpus:
    """Plan and render every note, then assemble the corpus and its ground truth."""
    k_cdf = truncated_poisson_cdf(cfg.mean_codes - 1, cfg.max_codes - 1)
    neg_cdf = truncated_poisson_cdf(cfg.mean_negations, 4)
    ids, texts, codes, site_names, negated, indirect = [], [], [], [], [], []
    for i, who in enumerate(patients):
        site = sites[dice.weighted(shares)]
        plan = plan_note(pool, site, dice, female=who.female, n_codes=1 + dice.weighted(k_cdf),
                         n_negated=dice.weighted(neg_cdf), cohesion=cfg.cluster_cohesion,
                         indirect_rate=cfg.indirect_rate)
        ids.append(f"syn-{i + 1:06d}")
        texts.append(render_note(plan, who, site.style, pool, dice))
        codes.append(unique_codes(pool.codes[c] for c in plan.codes))
        site_names.append(site.name)
        negated.append(tuple(pool.codes[c] for c in plan.negated))
        indirect.append(tuple(pool.codes[c] for c, ind in zip(plan.codes, plan.indirect) if ind))
    notes = CodedNotes(ids=ids, texts=texts, codes=codes, icd_version=[10] * len(ids),
                       sites=site_names, splits=None, summary=_summary(cfg, codes, negated, indirect))
    identifiers = [_planted(nid, who) for nid, who in zip(ids, patients)]
    return SyntheticCorpus(notes=notes, identifiers=identifiers, negated_codes=negated,
                           indirect_codes=indirect)


def _planted(note_id: str, who: Patient) -> PlantedIdentifiers:
    return PlantedIdentifiers(note_id=note_id, first_name=who.first, last_name=who.last,
                              mrn=who.mrn, date_of_birth=who.dob, admission_date=who.admission,
                              discharge_date=who.discharge)


def _summary(cfg: SyntheticConfig, codes: list, negated: list, indirect: list) -> LoadSummary:
    info: dict[str, int | float | str] = {k: v for k, v in asdict(cfg).items() if k != "seed"}
    info.update(kind="SYNTHETIC notes, no real patients",
                codes_used=len({c for cs in codes for c in cs}),
                mean_codes_per_note=round(sum(map(len, codes)) / max(1, len(codes)), 3),
                negated_mentions=sum(map(len, negated)),
                indirect_mentions=sum(map(len, indirect)))
    return LoadSummary(source=f"synthetic(seed={cfg.seed})", rows_read=len(codes), info=info)
