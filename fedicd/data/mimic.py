"""MIMIC-IV-Note discharge summaries coded with MIMIC-IV ``hosp`` ICD codes.

MIMIC-IV-Note and MIMIC-IV are separate PhysioNet downloads, so the loader takes
two roots::

    <note_root>/note/discharge.csv.gz       note_id, subject_id, hadm_id, note_type,
                                            note_seq, charttime, storetime, text
    <hosp_root>/hosp/diagnoses_icd.csv.gz   subject_id, hadm_id, seq_num, icd_code, icd_version
    <hosp_root>/hosp/procedures_icd.csv.gz  subject_id, hadm_id, seq_num, chartdate,
                                            icd_code, icd_version   (optional)

(An uncompressed ``.csv`` beside a missing ``.csv.gz`` is accepted.) The code
tables are read first into ``hadm_id -> codes``; the 331,794 notes (about 3.5 G
characters at ~10,500 per note) are then streamed in chunks of 5,000 and only
id, text and codes are kept: a full-size fake file in the real schema loads
(ICD-10: 148k notes, 1.57 GB of kept text) in ~2.1 GB peak RSS
(``experiments/bench_mimic_loader.py``). Codes
follow ``seq_num`` (diagnoses, primary first, then procedures) and carry the
decimal point. The paper's label rule (Xu & Dray, 2025, Sec. 3) keeps codes with
at least ``min_per_client * n_clients`` notes (10 x 20 = 200).

Every note not kept is counted in ``summary.dropped`` under one reason, checked
in this order: ``empty_text``, ``null_hadm_id``, ``no_codes`` (admission absent
from the code tables), ``other_icd_version`` (admission has codes, none of
``icd_version``), ``not_in_split_file``, then ``no_codes_after_filter``; when
no note is left the loader raises :class:`DataFormatError` with these counts.
Codes stored without their decimal point are rewritten to canonical form and
counted in ``summary.info["codes_normalised"]`` (rows), with up to 20
``codes_normalised_examples``.

Privacy
-------
The result holds raw clinical text from a credentialed-access dataset; never
write it outside the PhysioNet-approved environment (see :mod:`fedicd.data.notes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fedicd.data._io import (
    iter_csv_chunks,
    read_csv_checked,
    read_header,
    read_split_file,
    require_columns,
)
from fedicd.data.codes import CodeKind, CodeNormaliser, is_valid_code
from fedicd.data.labels import filter_rare_codes
from fedicd.data.notes import CodedNotes, LoadSummary, check_kept, unique_codes
from fedicd.errors import ConfigError, DataFormatError

__all__ = ["MimicConfig", "load_mimic", "NOTE_FILE", "DIAGNOSES_FILE", "PROCEDURES_FILE"]

logger = logging.getLogger(__name__)

NOTE_FILE = Path("note") / "discharge.csv.gz"
DIAGNOSES_FILE = Path("hosp") / "diagnoses_icd.csv.gz"
PROCEDURES_FILE = Path("hosp") / "procedures_icd.csv.gz"

_NOTE_COLUMNS = ["note_id", "hadm_id", "text"]
# object (not pandas 3's Arrow-backed str) columns: one copy of each text, read 1.8x faster
_NOTE_READ = dict(usecols=_NOTE_COLUMNS, dtype={"note_id": object, "hadm_id": "Int64", "text": object},
                  keep_default_na=False, na_values={"note_id": [""], "hadm_id": [""]})
_CODE_DTYPES = {"hadm_id": "Int64", "seq_num": "Int32", "icd_code": str, "icd_version": "Int8"}
_CODE_READ = dict(dtype=_CODE_DTYPES, keep_default_na=False,
                  na_values={"hadm_id": [""], "seq_num": [""], "icd_version": [""]})


@dataclass(frozen=True)
class MimicConfig:
    """Options of :func:`load_mimic`, checked on construction.

    Parameters
    ----------
    icd_version:
        Keep only ICD-9 or only ICD-10 codes (MIMIC-IV mixes both).
    include_procedures:
        Append ``procedures_icd`` codes after the diagnoses.
    min_per_client, n_clients:
        Keep codes with at least ``min_per_client * n_clients`` notes (the
        paper's 10 x 20); ``min_per_client=0`` disables the rule.
    split_file:
        Optional CSV or Feather file of published splits.
    split_id_column, split_column:
        Its id and split columns; values train/val/test (valid/dev = val).
    split_match_on:
        Whether the split file's ids are ``note_id`` or ``hadm_id`` values.
    chunksize:
        Notes read per chunk.
    on_invalid_code:
        ``"error"`` (default) raises on a malformed code; ``"drop"`` drops the
        code and counts it in ``summary.info["invalid_codes_dropped"]``.
    """

    icd_version: Literal[9, 10] = 10
    include_procedures: bool = False
    min_per_client: int = 10
    n_clients: int = 20
    split_file: str | Path | None = None
    split_id_column: str = "note_id"
    split_column: str = "split"
    split_match_on: Literal["note_id", "hadm_id"] = "note_id"
    chunksize: int = 5_000
    on_invalid_code: Literal["error", "drop"] = "error"

    def __post_init__(self) -> None:
        _require(self.icd_version in (9, 10), "icd_version", self.icd_version, "9 or 10")
        _require(isinstance(self.include_procedures, bool), "include_procedures",
                 self.include_procedures, "True or False")
        _require(_is_int(self.min_per_client, 0), "min_per_client", self.min_per_client, "an integer >= 0")
        _require(_is_int(self.n_clients, 1), "n_clients", self.n_clients, "an integer >= 1")
        _require(_is_int(self.chunksize, 1), "chunksize", self.chunksize, "an integer >= 1")
        _require(self.split_match_on in ("note_id", "hadm_id"), "split_match_on", self.split_match_on,
                 "'note_id' or 'hadm_id'")
        _require(self.on_invalid_code in ("error", "drop"), "on_invalid_code", self.on_invalid_code,
                 "'error' or 'drop'")

    @property
    def min_code_count(self) -> int:
        """Notes a code needs to be kept (0: no rule)."""
        return self.min_per_client * self.n_clients


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"MimicConfig.{name} must be {allowed}, got {value!r}")


# ------------------------------------------------------------- code tables
def _locate(root: Path, relative: Path) -> Path:
    """``root/relative``, or its uncompressed twin; FileNotFoundError names the .gz path."""
    path = root / relative
    if path.is_file():
        return path
    if path.with_suffix("").is_file():
        return path.with_suffix("")
    raise FileNotFoundError(f"MIMIC file not found: {path}")


def _canonical_codes(frame: pd.DataFrame, path: Path, cfg: MimicConfig, kind: CodeKind,
                     info: dict) -> pd.Series:
    """Canonical code per row (NaN where malformed and ``on_invalid_code='drop'``).

    Rewrites (``4280`` → ``428.0``) are counted per row in ``info["codes_normalised"]``.
    """
    normaliser, mapping = CodeNormaliser(cfg.icd_version, kind), {}
    for raw, count in frame["icd_code"].value_counts(sort=False).items():
        code = normaliser(raw, occurrences=int(count))
        mapping[raw] = code if is_valid_code(code, cfg.icd_version, kind) else None
    normaliser.report(info)
    canonical = frame["icd_code"].map(mapping)
    bad = canonical.isna()
    if bad.any() and cfg.on_invalid_code == "error":
        first = bad.idxmax()
        raise DataFormatError(f"malformed ICD-{cfg.icd_version} {kind} code "
                              f"{frame.at[first, 'icd_code']!r} in column 'icd_code'",
                              source=str(path), row=int(first) + 1)
    info["invalid_codes_dropped"] = info.get("invalid_codes_dropped", 0) + int(bad.sum())
    return canonical


def _read_code_table(path: Path, cfg: MimicConfig, kind: CodeKind, summary: LoadSummary,
                     any_version: set) -> pd.DataFrame:
    """Rows of ``cfg.icd_version`` as ``hadm_id, rank, seq_num, code``; fills ``any_version``."""
    frame = read_csv_checked(path, required=list(_CODE_DTYPES), **_CODE_READ)
    summary.info[f"{kind}_rows_read"] = len(frame)
    incomplete = frame["hadm_id"].isna() | frame["icd_version"].isna() | frame["icd_code"].isna()
    summary.info[f"{kind}_rows_missing_hadm_id_code_or_version"] = int(incomplete.sum())
    frame = frame[~incomplete]
    any_version.update(frame["hadm_id"].unique().tolist())
    frame = frame[frame["icd_version"] == cfg.icd_version]
    code = _canonical_codes(frame, path, cfg, kind, summary.info)
    out = pd.DataFrame({"hadm_id": frame["hadm_id"], "rank": 0 if kind == "diagnosis" else 1,
                        "seq_num": frame["seq_num"], "code": code})
    return out[out["code"].notna()]


def _codes_by_admission(frames: list[pd.DataFrame]) -> dict[int, tuple[str, ...]]:
    """``hadm_id -> codes`` ordered by (diagnoses first, seq_num), duplicates removed."""
    table = pd.concat(frames, ignore_index=True).sort_values(["hadm_id", "rank", "seq_num"], kind="stable")
    index, names = pd.factorize(table["code"])
    names = names.tolist()  # one string object per distinct code, shared by all tuples
    grouped: dict[int, list[str]] = {}
    for hadm, i in zip(table["hadm_id"].tolist(), index.tolist()):
        grouped.setdefault(hadm, []).append(names[i])
    return {hadm: unique_codes(codes) for hadm, codes in grouped.items()}


# ------------------------------------------------------------------- notes
@dataclass
class _Collector:
    """What the note stream keeps, plus the lookups it needs."""

    codes: dict[int, tuple[str, ...]]
    any_version: set
    splits: dict[str, str] | None
    match_on_hadm: bool
    summary: LoadSummary
    seen: set = field(default_factory=set)
    kept: dict[str, list] = field(default_factory=lambda: {"ids": [], "texts": [], "codes": [], "splits": []})

    def check_ids(self, chunk: pd.DataFrame, path: Path) -> None:
        missing = chunk["note_id"].isna()
        if missing.any():
            raise DataFormatError("empty note_id", source=str(path), row=int(missing.idxmax()) + 1)
        ids = set(chunk["note_id"].tolist())
        # linear in the chunk (isdisjoint walks the smaller set); the row search runs only on error
        if len(ids) != len(chunk) or not self.seen.isdisjoint(ids):
            repeated = chunk["note_id"].duplicated() | chunk["note_id"].isin(self.seen)
            first = repeated.idxmax()
            raise DataFormatError(f"duplicate note_id {chunk.at[first, 'note_id']!r}", source=str(path),
                                  row=int(first) + 1)
        self.seen.update(ids)

    def reason(self, note_id: str, hadm: Any, text: str) -> str | None:
        """Why this note is dropped, or None to keep it."""
        if not text or text.isspace():
            return "empty_text"
        if hadm is pd.NA:
            return "null_hadm_id"
        if hadm not in self.codes:
            return "other_icd_version" if hadm in self.any_version else "no_codes"
        if self.splits is not None and self._split_key(note_id, hadm) not in self.splits:
            return "not_in_split_file"
        return None

    def _split_key(self, note_id: str, hadm: int) -> str:
        return str(hadm) if self.match_on_hadm else note_id

    def add(self, chunk: pd.DataFrame) -> None:
        self.summary.rows_read += len(chunk)
        for note_id, hadm, text in zip(chunk["note_id"], chunk["hadm_id"], chunk["text"]):
            why = self.reason(note_id, hadm, text)
            if why is not None:
                self.summary.drop(why)
                continue
            self.kept["ids"].append(str(note_id))
            self.kept["texts"].append(text)
            self.kept["codes"].append(self.codes[hadm])
            if self.splits is not None:
                self.kept["splits"].append(self.splits[self._split_key(note_id, hadm)])


# -------------------------------------------------------------- entry point
def _config(config: MimicConfig | None, options: dict[str, Any]) -> MimicConfig:
    if config is not None and options:
        raise ConfigError(f"pass either config or keyword options, not both (got {sorted(options)})")
    if config is not None:
        return config
    unknown = set(options) - set(MimicConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown MIMIC option(s) {sorted(unknown)}; allowed "
                          f"{sorted(MimicConfig.__dataclass_fields__)}")
    return MimicConfig(**options)


def _admission_codes(hosp_root: Path, cfg: MimicConfig, summary: LoadSummary) -> tuple[dict, set]:
    any_version: set = set()
    frames = [_read_code_table(_locate(hosp_root, DIAGNOSES_FILE), cfg, "diagnosis", summary, any_version)]
    if cfg.include_procedures:
        frames.append(_read_code_table(_locate(hosp_root, PROCEDURES_FILE), cfg, "procedure", summary,
                                       any_version))
    codes = _codes_by_admission(frames)
    summary.info["n_admissions_with_codes"] = len(codes)
    summary.info["n_admissions_any_version"] = len(any_version)
    return codes, any_version


def _read_splits(cfg: MimicConfig, summary: LoadSummary) -> dict[str, str] | None:
    if cfg.split_file is None:
        return None
    splits = read_split_file(cfg.split_file, id_column=cfg.split_id_column, split_column=cfg.split_column)
    summary.info["split_file_ids"] = len(splits)
    return splits


def load_mimic(note_root: str | Path, hosp_root: str | Path | None = None, *,
               config: MimicConfig | None = None, **options: Any) -> CodedNotes:
    """Load MIMIC-IV-Note discharge summaries with their MIMIC-IV ICD codes.

    Parameters
    ----------
    note_root:
        Folder holding ``note/discharge.csv.gz`` (the MIMIC-IV-Note download).
    hosp_root:
        Folder holding ``hosp/diagnoses_icd.csv.gz`` (the MIMIC-IV download);
        defaults to ``note_root``.
    config, **options:
        A :class:`MimicConfig`, or its fields as keywords (not both).

    Returns
    -------
    CodedNotes
        Ids ``str(note_id)``, codes in canonical form, one ``icd_version``
        per note, no sites, splits from ``split_file`` or None.

    Raises
    ------
    FileNotFoundError
        A MIMIC file (or the split file) is missing.
    MissingColumnError
        A table lacks a column the loader reads.
    DataFormatError
        Unreadable gzip/CSV, malformed code, empty or duplicate ``note_id``,
        a bad split file (the message names file and row), or no note kept.
    """
    cfg = _config(config, options)
    note_path = _locate(Path(note_root), NOTE_FILE)
    require_columns(read_header(note_path), _NOTE_COLUMNS, note_path)
    summary = LoadSummary(source=str(note_path), info={"icd_version": cfg.icd_version})
    codes, any_version = _admission_codes(Path(hosp_root if hosp_root is not None else note_root), cfg, summary)
    collector = _Collector(codes, any_version, _read_splits(cfg, summary), cfg.split_match_on == "hadm_id",
                           summary)
    for chunk in iter_csv_chunks(note_path, chunksize=cfg.chunksize, **_NOTE_READ):
        collector.check_ids(chunk, note_path)
        collector.add(chunk)
    kept = collector.kept
    notes = CodedNotes(ids=kept["ids"], texts=kept["texts"], codes=kept["codes"],
                       icd_version=[cfg.icd_version] * len(kept["ids"]),
                       splits=kept["splits"] if cfg.split_file is not None else None, summary=summary)
    if cfg.min_code_count > 0:
        notes = filter_rare_codes(notes, min_count=cfg.min_code_count)
    check_kept(len(notes), notes.summary, what="notes")
    logger.info("%s", summary.describe())
    return notes
