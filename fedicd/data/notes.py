"""The one shape every loader produces: coded notes plus a load summary.

``CodedNotes`` is columnar (parallel lists) so that 300k MIMIC notes cost
little more than their text. It is written to disk as gzip JSON lines, one
note per line, with the load summary in a sidecar JSON file.

Privacy
-------
A ``CodedNotes`` object holds raw clinical text. Only the embedding step and
the attacks' scoring code may read ``texts``; everything downstream of
``fedicd.embedding`` works on vectors.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from fedicd.errors import DataFormatError, ShapeError

__all__ = ["CodedNotes", "LoadSummary", "SPLIT_NAMES", "LABEL_KINDS_OF_NOTES", "unique_codes", "check_kept"]

SPLIT_NAMES = ("train", "val", "test")
LABEL_KINDS_OF_NOTES = ("icd", "free")


def unique_codes(codes: Iterable[str]) -> tuple[str, ...]:
    """Codes in first-seen order with duplicates removed."""
    return tuple(dict.fromkeys(codes))


@dataclass
class LoadSummary:
    """What a loader read, kept and dropped, so nothing disappears silently.

    ``dropped`` maps a reason (``"no_text"``, ``"no_codes_after_filter"``...)
    to how many notes were dropped for it; ``info`` holds other counts worth
    reporting (notes that needed chunking, codes removed by a frequency rule,
    ``codes_normalised`` with ``codes_normalised_examples``: codes rewritten
    to canonical form, see :class:`fedicd.data.codes.CodeNormaliser`). Values
    are JSON-ready: numbers, strings, or small ``{str: str}`` mappings.
    """

    source: str
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "LoadSummary":
        return LoadSummary.from_dict(self.to_dict())

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` notes dropped for ``reason``."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {"source": self.source, "rows_read": self.rows_read,
                "dropped": dict(self.dropped), "info": copy.deepcopy(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "LoadSummary":
        return cls(source=d["source"], rows_read=int(d.get("rows_read", 0)),
                   dropped=dict(d.get("dropped", {})), info=copy.deepcopy(dict(d.get("info", {}))))

    def describe_drops(self) -> str:
        """``"empty_text=3, no_codes=2"`` (``"none"`` when nothing was dropped)."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"

    def describe(self) -> str:
        """One human-readable line for logs and the CLI (mappings shown as ``{raw->canonical, ...}``)."""
        extra = ", ".join(f"{k}={_show(v)}" for k, v in sorted(self.info.items()) if v != {})
        return f"{self.source}: read {self.rows_read}, dropped {self.describe_drops()}" + (
            f"; {extra}" if extra else "")


def _show(value: Any, limit: int = 5) -> str:
    """A value for :meth:`LoadSummary.describe`; mappings show their first ``limit`` pairs."""
    if not isinstance(value, dict):
        return str(value)
    pairs = [f"{k}->{v}" for k, v in list(value.items())[:limit]]
    if len(value) > limit:
        pairs.append(f"+{len(value) - limit} more in the saved summary")
    return "{" + ", ".join(pairs) + "}"


def check_kept(n_kept: int, summary: LoadSummary, *, what: str = "rows") -> None:
    """Raise :class:`DataFormatError` naming the source when a loader kept no note.

    The message says whether the source held no ``what`` at all or that all
    of them were dropped, with the count per reason, instead of letting an
    empty corpus fail later as a ``(0, 0)`` label matrix.
    """
    if n_kept:
        return
    if summary.rows_read == 0:
        raise DataFormatError(f"holds no {what}: nothing to load", source=summary.source)
    raise DataFormatError(f"all {summary.rows_read} {what} were dropped ({summary.describe_drops()}); "
                          "nothing to load", source=summary.source)


@dataclass
class CodedNotes:
    """Clinical notes with their ICD codes, as parallel columns.

    Parameters
    ----------
    ids:
        Unique note identifiers (strings).
    texts:
        Note text, never empty.
    codes:
        One tuple of canonical codes (see :mod:`fedicd.data.codes`) per note,
        in the source's order (MIMIC: ``seq_num``, so the first is the primary
        diagnosis), without duplicates; use :func:`unique_codes` to build one.
        Free labels (``label_kind="free"``) are any non-empty strings.
    icd_version:
        9 or 10 per note; 0 for every note when ``label_kind="free"``.
    sites:
        Optional site/hospital/country per note (used by natural partitions).
    splits:
        Optional ``"train"``/``"val"``/``"test"`` per note (published splits).
    summary:
        The loader's :class:`LoadSummary`.
    attributes:
        Optional per-note string attributes: column name → one string per
        note (``""`` where the source had no value). Tabular sources keep
        every column that is not the text, codes or id column here (the site
        and split columns too, as written), e.g. for attribute-inference attacks.
    label_kind:
        ``"icd"`` (codes are ICD-9/10 in canonical form) or ``"free"``
        (labels kept as written; ICD roll-up and catalogue look-ups refuse them).
    """

    ids: list[str]
    texts: list[str]
    codes: list[tuple[str, ...]]
    icd_version: list[int]
    sites: list[str] | None = None
    splits: list[str] | None = None
    summary: LoadSummary = field(default_factory=lambda: LoadSummary(source="memory"))
    attributes: dict[str, list[str]] | None = None
    label_kind: str = "icd"

    def __post_init__(self) -> None:
        self.validate()

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        """Raise if columns disagree in length, ids repeat, or a text/split is invalid."""
        n = len(self.ids)
        columns = {"texts": self.texts, "codes": self.codes, "icd_version": self.icd_version,
                   "sites": self.sites, "splits": self.splits}
        for name, col in columns.items():
            if col is not None and len(col) != n:
                raise ShapeError(f"column {name!r} has {len(col)} entries but there are {n} ids")
        counts = Counter(self.ids)
        dupes = [i for i, c in counts.items() if c > 1]
        if dupes:
            raise DataFormatError(f"duplicate note ids: {sorted(dupes)[:5]} ({len(dupes)} in all)",
                                  source=self.summary.source)
        for i, (nid, text) in enumerate(zip(self.ids, self.texts)):
            if not isinstance(text, str) or not text.strip():
                raise DataFormatError(f"note {nid!r} has empty text", source=self.summary.source, row=i + 1)
        for i, cs in enumerate(self.codes):
            if not isinstance(cs, tuple) or not all(isinstance(c, str) and c.strip() for c in cs):
                raise DataFormatError(f"note {self.ids[i]!r}: codes must be a tuple of non-empty strings, got {cs!r}",
                                      source=self.summary.source, row=i + 1)
        self._validate_label_kind()
        self._validate_attributes(n)
        if self.splits is not None:
            bad = set(self.splits) - set(SPLIT_NAMES)
            if bad:
                raise DataFormatError(f"unknown split names {sorted(bad)}; allowed {SPLIT_NAMES}",
                                      source=self.summary.source)

    def _validate_label_kind(self) -> None:
        if self.label_kind not in LABEL_KINDS_OF_NOTES:
            raise ShapeError(f"label_kind must be one of {list(LABEL_KINDS_OF_NOTES)}, got {self.label_kind!r}")
        allowed = {0} if self.label_kind == "free" else {9, 10}
        bad_versions = set(self.icd_version) - allowed
        if bad_versions:
            raise DataFormatError(f"icd_version must be {' or '.join(map(str, sorted(allowed)))} for "
                                  f"label_kind={self.label_kind!r}, found {sorted(bad_versions)}",
                                  source=self.summary.source)

    def _validate_attributes(self, n: int) -> None:
        if self.attributes is None:
            return
        for name, col in self.attributes.items():
            if not isinstance(name, str) or not isinstance(col, list):
                raise ShapeError(f"attributes must map column names to lists, got {name!r}: {type(col).__name__}")
            if len(col) != n:
                raise ShapeError(f"attribute {name!r} has {len(col)} entries but there are {n} ids")
            if not all(isinstance(v, str) for v in col):
                raise ShapeError(f"attribute {name!r} must hold strings ('' for a missing value)")

    # ------------------------------------------------------------------ views
    def subset(self, indices: Iterable[int]) -> "CodedNotes":
        """A new ``CodedNotes`` with the notes at ``indices`` (order kept)."""
        idx = [int(i) for i in indices]
        pick = lambda col: None if col is None else [col[i] for i in idx]  # noqa: E731
        attributes = None if self.attributes is None else {k: pick(v) for k, v in self.attributes.items()}
        return CodedNotes(ids=pick(self.ids), texts=pick(self.texts), codes=pick(self.codes),
                          icd_version=pick(self.icd_version), sites=pick(self.sites),
                          splits=pick(self.splits), summary=self.summary, attributes=attributes,
                          label_kind=self.label_kind)

    def code_counts(self) -> Counter:
        """Number of notes carrying each code."""
        return Counter(c for cs in self.codes for c in cs)

    def split_indices(self, name: str) -> list[int]:
        """Indices of notes whose published split is ``name``."""
        if self.splits is None:
            raise ValueError("these notes carry no split column; make one with fedicd.data.splits")
        return [i for i, s in enumerate(self.splits) if s == name]

    # -------------------------------------------------------------- disk I/O
    def save(self, path: str | Path) -> Path:
        """Write gzip JSON lines to ``path`` and the summary to ``path + '.summary.json'``.

        Each line holds ``id``, ``text``, ``codes``, ``icd_version`` (0 for
        free labels) and, when present, ``site``, ``split`` and
        ``attributes`` (``{column: value}``).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            for i in range(len(self)):
                rec = {"id": self.ids[i], "text": self.texts[i], "codes": list(self.codes[i]),
                       "icd_version": self.icd_version[i]}
                if self.sites is not None:
                    rec["site"] = self.sites[i]
                if self.splits is not None:
                    rec["split"] = self.splits[i]
                if self.attributes is not None:
                    rec["attributes"] = {k: v[i] for k, v in self.attributes.items()}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        _summary_path(path).write_text(json.dumps(self.summary.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CodedNotes":
        """Read what :meth:`save` wrote."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"notes file not found: {path}")
        cols: dict[str, list] = {"id": [], "text": [], "codes": [], "icd_version": [], "site": [], "split": [],
                                 "attributes": []}
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    rec = _parse_record(line, path, lineno)
                    for key in cols:
                        cols[key].append(rec.get(key))
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"cannot read gzip JSON lines: {exc}", source=str(path)) from exc
        summary_file = _summary_path(path)
        summary = (LoadSummary.from_dict(json.loads(summary_file.read_text())) if summary_file.exists()
                   else LoadSummary(source=str(path), rows_read=len(cols["id"])))
        versions = [int(v) for v in cols["icd_version"]]
        return cls(ids=cols["id"], texts=cols["text"], codes=[tuple(c) for c in cols["codes"]],
                   icd_version=versions, sites=_optional(cols["site"], path, "site"),
                   splits=_optional(cols["split"], path, "split"), summary=summary,
                   attributes=_attribute_columns(cols["attributes"], path),
                   label_kind="free" if 0 in versions else "icd")


def _summary_path(path: Path) -> Path:
    return path.with_name(path.name + ".summary.json")


def _parse_record(line: str, path: Path, lineno: int) -> dict:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON: {exc.msg}", source=str(path), row=lineno) from exc
    for key in ("id", "text", "codes", "icd_version"):
        if key not in rec:
            raise DataFormatError(f"record lacks field {key!r}", source=str(path), row=lineno)
    if isinstance(rec["icd_version"], bool) or not isinstance(rec["icd_version"], int):
        raise DataFormatError(f"field 'icd_version' must be an integer (9, 10, or 0 for free labels), got "
                              f"{rec['icd_version']!r}", source=str(path), row=lineno)
    if not isinstance(rec["codes"], list):
        raise DataFormatError(f"field 'codes' must be a JSON list, got {type(rec['codes']).__name__}",
                              source=str(path), row=lineno)
    return rec


def _optional(col: Sequence, path: Path, name: str) -> list | None:
    if all(v is None for v in col):
        return None
    if any(v is None for v in col):
        first = next(i for i, v in enumerate(col) if v is None) + 1
        raise DataFormatError(f"record lacks field {name!r} that other records have", source=str(path), row=first)
    return list(col)


def _attribute_columns(records: Sequence[dict | None], path: Path) -> dict[str, list[str]] | None:
    """``[{column: value}, ...]`` per line → ``{column: [value, ...]}``; every line must name the same columns."""
    if all(r is None for r in records):
        return None
    names = list(records[0]) if isinstance(records[0], dict) else []
    for lineno, rec in enumerate(records, start=1):
        if not isinstance(rec, dict) or list(rec) != names:
            raise DataFormatError(f"field 'attributes' must name the columns {names} on every line, "
                                  f"got {rec!r}", source=str(path), row=lineno)
    return {name: [rec[name] for rec in records] for name in names}
