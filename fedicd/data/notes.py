"""The one shape every loader produces: coded notes plus a load summary.

``CodedNotes`` is columnar (parallel lists) so that 300k MIMIC notes cost
little more than their text. It is written to disk as gzip JSON lines, one
note per line, with the load summary in a sidecar JSON file.

Privacy
-------
A ``CodedNotes`` object holds raw clinical text. Only the embedding step and
the attacks' scoring code may read ``texts``; everything downstream of
``fedicd.embed`` works on vectors.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from fedicd.errors import DataFormatError, ShapeError

__all__ = ["CodedNotes", "LoadSummary", "SPLIT_NAMES", "unique_codes"]

SPLIT_NAMES = ("train", "val", "test")


def unique_codes(codes: Iterable[str]) -> tuple[str, ...]:
    """Codes in first-seen order with duplicates removed."""
    return tuple(dict.fromkeys(codes))


@dataclass
class LoadSummary:
    """What a loader read, kept and dropped, so nothing disappears silently.

    ``dropped`` maps a reason (``"no_text"``, ``"no_codes_after_filter"``...)
    to how many notes were dropped for it; ``info`` holds other counts worth
    reporting (notes that needed chunking, codes removed by a frequency rule).
    """

    source: str
    rows_read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    info: dict[str, int | float | str] = field(default_factory=dict)

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
                "dropped": dict(self.dropped), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "LoadSummary":
        return cls(source=d["source"], rows_read=int(d.get("rows_read", 0)),
                   dropped=dict(d.get("dropped", {})), info=dict(d.get("info", {})))

    def describe(self) -> str:
        """One human-readable line for logs and the CLI."""
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.info.items()))
        return f"{self.source}: read {self.rows_read}, dropped {drops}" + (f"; {extra}" if extra else "")


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
    icd_version:
        9 or 10 per note.
    sites:
        Optional site/hospital/country per note (used by natural partitions).
    splits:
        Optional ``"train"``/``"val"``/``"test"`` per note (published splits).
    summary:
        The loader's :class:`LoadSummary`.
    """

    ids: list[str]
    texts: list[str]
    codes: list[tuple[str, ...]]
    icd_version: list[int]
    sites: list[str] | None = None
    splits: list[str] | None = None
    summary: LoadSummary = field(default_factory=lambda: LoadSummary(source="memory"))

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
        bad_versions = set(self.icd_version) - {9, 10}
        if bad_versions:
            raise DataFormatError(f"icd_version must be 9 or 10, found {sorted(bad_versions)}",
                                  source=self.summary.source)
        if self.splits is not None:
            bad = set(self.splits) - set(SPLIT_NAMES)
            if bad:
                raise DataFormatError(f"unknown split names {sorted(bad)}; allowed {SPLIT_NAMES}",
                                      source=self.summary.source)

    # ------------------------------------------------------------------ views
    def subset(self, indices: Iterable[int]) -> "CodedNotes":
        """A new ``CodedNotes`` with the notes at ``indices`` (order kept)."""
        idx = [int(i) for i in indices]
        pick = lambda col: None if col is None else [col[i] for i in idx]  # noqa: E731
        return CodedNotes(ids=pick(self.ids), texts=pick(self.texts), codes=pick(self.codes),
                          icd_version=pick(self.icd_version), sites=pick(self.sites),
                          splits=pick(self.splits), summary=self.summary)

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
        """Write gzip JSON lines to ``path`` and the summary to ``path + '.summary.json'``."""
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
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        _summary_path(path).write_text(json.dumps(self.summary.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CodedNotes":
        """Read what :meth:`save` wrote."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"notes file not found: {path}")
        cols: dict[str, list] = {"id": [], "text": [], "codes": [], "icd_version": [], "site": [], "split": []}
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
        return cls(ids=cols["id"], texts=cols["text"], codes=[tuple(c) for c in cols["codes"]],
                   icd_version=[int(v) for v in cols["icd_version"]],
                   sites=_optional(cols["site"]), splits=_optional(cols["split"]), summary=summary)


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
    if not isinstance(rec["codes"], list):
        raise DataFormatError(f"field 'codes' must be a JSON list, got {type(rec['codes']).__name__}",
                              source=str(path), row=lineno)
    return rec


def _optional(col: Sequence) -> list | None:
    if all(v is None for v in col):
        return None
    if any(v is None for v in col):
        raise DataFormatError("some records have the field and some do not (site/split)")
    return list(col)
