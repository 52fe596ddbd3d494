"""Generic loader for user tables of coded notes (CSV, TSV, JSON lines).

Use it for PARROT-style exports or any table with a text column and a codes
column (``"I63.4, I65.23"``). Table helpers shared with the MIMIC loader
live in :mod:`fedicd.data._io`.

Privacy
-------
The returned :class:`~fedicd.data.notes.CodedNotes` holds raw clinical text;
see :mod:`fedicd.data.notes`.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fedicd.data._io import (
    check_exists,
    normalize_split,
    read_csv_checked,
    read_header,
    require_columns,
    unreadable,
)
from fedicd.data.codes import CODE_PATTERNS, CodeKind, format_code, is_valid_code
from fedicd.data.notes import SPLIT_NAMES, CodedNotes, LoadSummary, unique_codes
from fedicd.errors import ConfigError, DataFormatError

__all__ = ["load_tabular", "TABULAR_SUFFIXES"]

logger = logging.getLogger(__name__)

TABULAR_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")


# -------------------------------------------------------------- reading
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(TABULAR_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"unsupported file type for {path}; allowed suffixes: {', '.join(TABULAR_SUFFIXES)}")


def _read_jsonl(path: Path) -> pd.DataFrame:
    records, rows = [], []
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    records.append(_parse_json_line(line, path, lineno))
                    rows.append(lineno)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc
    if not records:
        raise DataFormatError("no JSON records in file", source=str(path))
    return pd.DataFrame.from_records(records, index=pd.Index(rows, name="row"))


def _parse_json_line(line: str, path: Path, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON: {exc.msg}", source=str(path), row=lineno) from exc
    if not isinstance(record, dict):
        raise DataFormatError(f"expected a JSON object, got {type(record).__name__}", source=str(path),
                              row=lineno)
    return record


def _read_table(path: Path, suffix: str) -> pd.DataFrame:
    """The whole table with a 1-based ``row`` index (data row for CSV, line for JSONL)."""
    if suffix.startswith(".jsonl"):
        return _read_jsonl(path)
    sep = "\t" if suffix.startswith(".tsv") else ","
    frame = read_csv_checked(path, required=read_header(path, sep=sep), sep=sep, dtype=str,
                             keep_default_na=False)
    frame.index = pd.RangeIndex(1, len(frame) + 1, name="row")
    return frame


# -------------------------------------------------------------- per row
def _is_missing(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return False
    return value is None or (isinstance(value, float) and value != value) or (
        isinstance(value, str) and not value.strip())


def _split_codes(value: Any, delimiter: str) -> list[str]:
    if _is_missing(value):
        return []
    pieces = value if isinstance(value, (list, tuple)) else str(value).split(delimiter)
    return [str(p).strip() for p in pieces if not _is_missing(p) and str(p).strip()]


class _RowParser:
    """Turns one table row into (text, codes, site, split), or a drop reason."""

    def __init__(self, path: Path, opts: dict[str, Any]):
        self.path, self.opts = path, opts

    def parse(self, rec: dict, row: int) -> str | tuple:
        """``(text, codes, site, split)``, or the reason the row is dropped."""
        o = self.opts
        text = self.text(rec[o["text_column"]], row)
        if text is None:
            return "empty_text"
        codes = self.codes(rec[o["codes_column"]], row)
        if not codes:
            return "no_codes"
        site = None if o["site_column"] is None else self.label(rec[o["site_column"]], o["site_column"], row,
                                                                is_split=False)
        split = None if o["split_column"] is None else self.label(rec[o["split_column"]], o["split_column"],
                                                                  row, is_split=True)
        return text, codes, site, split

    def text(self, value: Any, row: int) -> str | None:
        column = self.opts["text_column"]
        if _is_missing(value):
            if self.opts["on_empty_text"] == "error":
                raise DataFormatError(f"empty text in column {column!r}", source=str(self.path), row=row)
            return None
        if not isinstance(value, str):
            raise DataFormatError(f"text in column {column!r} is a {type(value).__name__}, not a string",
                                  source=str(self.path), row=row)
        return value

    def codes(self, value: Any, row: int) -> tuple[str, ...]:
        o = self.opts
        raw = _split_codes(value, o["codes_delimiter"])
        if not o["validate_codes"]:
            return unique_codes(raw)
        out = []
        for code in raw:
            canon = format_code(code, o["icd_version"], o["code_kind"])
            if not is_valid_code(canon, o["icd_version"], o["code_kind"]):
                raise DataFormatError(f"malformed ICD-{o['icd_version']} {o['code_kind']} code {code!r} "
                                      f"in column {o['codes_column']!r}", source=str(self.path), row=row)
            out.append(canon)
        return unique_codes(out)

    def label(self, value: Any, column: str, row: int, *, is_split: bool) -> str:
        if _is_missing(value):
            raise DataFormatError(f"empty value in column {column!r}", source=str(self.path), row=row)
        if not is_split:
            return str(value).strip()
        split = normalize_split(value)
        if split is None:
            raise DataFormatError(f"unknown split {value!r} in column {column!r}; allowed "
                                  f"{list(SPLIT_NAMES)} (or valid/dev)", source=str(self.path), row=row)
        return split


def _row_ids(frame: pd.DataFrame, id_column: str | None, path: Path) -> list[str]:
    if id_column is None:
        return [f"row-{row}" for row in frame.index]
    ids = []
    for row, value in zip(frame.index, frame[id_column]):
        if _is_missing(value):
            raise DataFormatError(f"empty id in column {id_column!r}", source=str(path), row=row)
        ids.append(str(value).strip())
    dupes = sorted(pd.Series(ids)[pd.Series(ids).duplicated()].unique())
    if dupes:
        raise DataFormatError(f"duplicate ids in column {id_column!r}: {dupes[:5]} ({len(dupes)} in all)",
                              source=str(path))
    return ids


def _check_options(opts: dict[str, Any]) -> None:
    if (opts["icd_version"], opts["code_kind"]) not in CODE_PATTERNS:
        raise ConfigError(f"icd_version={opts['icd_version']!r}, code_kind={opts['code_kind']!r} is not a "
                          "known coding system; allowed versions 9 or 10, kinds 'diagnosis' or 'procedure'")
    if opts["on_empty_text"] not in ("drop", "error"):
        raise ConfigError(f"on_empty_text must be 'drop' or 'error', got {opts['on_empty_text']!r}")
    if not opts["codes_delimiter"]:
        raise ConfigError("codes_delimiter must be a non-empty string")


def _collect(frame: pd.DataFrame, ids: list[str], parser: _RowParser, summary: LoadSummary) -> dict:
    cols: dict[str, list] = {"ids": [], "texts": [], "codes": [], "sites": [], "splits": []}
    for i, (row, rec) in enumerate(zip(frame.index, frame.to_dict("records"))):
        parsed = parser.parse(rec, row)
        if isinstance(parsed, str):
            summary.drop(parsed)
            continue
        cols["ids"].append(ids[i])
        for name, value in zip(("texts", "codes", "sites", "splits"), parsed):
            cols[name].append(value)
    return cols


def load_tabular(path: str | Path, *, text_column: str, codes_column: str, codes_delimiter: str = ",",
                 id_column: str | None = None, site_column: str | None = None,
                 split_column: str | None = None, icd_version: int = 10, code_kind: CodeKind = "diagnosis",
                 validate_codes: bool = True,
                 on_empty_text: Literal["drop", "error"] = "drop") -> CodedNotes:
    """Load coded notes from a ``.csv``, ``.csv.gz``, ``.tsv(.gz)``, ``.jsonl`` or ``.jsonl.gz`` file.

    Parameters
    ----------
    path:
        The table; its type is taken from the suffix.
    text_column, codes_column:
        Columns (JSON fields) holding the note text and its codes. Codes are
        a ``codes_delimiter``-separated string (``"I63.4, I65.23"``;
        whitespace around each code is stripped) or, in JSON lines, a list.
    id_column:
        Column of unique note ids; without it ids are ``"row-<n>"`` (1-based
        data row for CSV/TSV, line number for JSON lines).
    site_column, split_column:
        Optional site and published-split columns (``valid``/``dev`` mean ``val``).
    icd_version, code_kind:
        The coding system of every code in the file.
    validate_codes:
        When true (default) each code is put in canonical form with
        :func:`~fedicd.data.codes.format_code` and a malformed one raises
        :class:`DataFormatError` naming file, row and code. When false codes
        are kept as written (stripped), e.g. for label sets that are not ICD.
    on_empty_text:
        ``"drop"`` (default) drops and counts notes with empty text under
        ``"empty_text"``, as the MIMIC loader does; ``"error"`` raises.

    Notes without codes are dropped and counted under ``"no_codes"``. Duplicate
    or empty ids, and empty or unknown site/split values, raise
    :class:`DataFormatError`.
    """
    path = Path(path)
    opts = dict(codes_delimiter=codes_delimiter, icd_version=icd_version, code_kind=code_kind,
                validate_codes=validate_codes, on_empty_text=on_empty_text, text_column=text_column,
                codes_column=codes_column, site_column=site_column, split_column=split_column)
    _check_options(opts)
    suffix = _suffix(path)
    check_exists(path)
    frame = _read_table(path, suffix)
    optional = [c for c in (id_column, site_column, split_column) if c is not None]
    require_columns([str(c) for c in frame.columns], [text_column, codes_column, *optional], path)
    summary = LoadSummary(source=str(path), rows_read=len(frame))
    cols = _collect(frame, _row_ids(frame, id_column, path), _RowParser(path, opts), summary)
    notes = CodedNotes(ids=cols["ids"], texts=cols["texts"], codes=cols["codes"],
                       icd_version=[int(icd_version)] * len(cols["ids"]),
                       sites=cols["sites"] if site_column is not None else None,
                       splits=cols["splits"] if split_column is not None else None, summary=summary)
    logger.info("%s", summary.describe())
    return notes
