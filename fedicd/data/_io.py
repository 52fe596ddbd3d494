"""Table-reading helpers shared by the MIMIC and generic loaders.

Column checks, chunked CSV reading, strict reading of user tables
(:func:`read_delimited`, :func:`read_jsonl`), split files and split-name
aliases; every read failure (corrupt gzip, bad CSV, not UTF-8) becomes a
:class:`DataFormatError` that names the file.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from fedicd.errors import DataFormatError, MissingColumnError

__all__ = ["SPLIT_ALIASES", "normalize_split", "read_split_file", "require_columns", "read_header",
           "iter_csv_chunks", "read_csv_checked", "READ_ERRORS", "unreadable", "check_exists", "Table",
           "read_delimited", "read_jsonl"]

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, pd.errors.ParserError)


def unreadable(path: Path, exc: BaseException) -> DataFormatError:
    if isinstance(exc, UnicodeDecodeError):
        return DataFormatError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8",
                               source=str(path))
    if isinstance(exc, pd.errors.EmptyDataError):
        return DataFormatError("file is empty: no header row", source=str(path))
    return DataFormatError(f"cannot read file (corrupt or truncated gzip, or malformed table): "
                           f"{type(exc).__name__}: {exc}", source=str(path))


def check_exists(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")


def read_header(path: str | Path, *, sep: str = ",") -> list[str]:
    """Column names of a (possibly gzip) CSV; unreadable files raise :class:`DataFormatError`."""
    path = Path(path)
    check_exists(path)
    try:
        return [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns]
    except DataFormatError:
        raise
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc


def require_columns(available: Sequence[str], required: Sequence[str], path: str | Path) -> None:
    """Raise :class:`MissingColumnError` for the first of ``required`` not in ``available``.

    A column that differs only in case or surrounding spaces is named as a
    likely match (``"Report Text "`` for ``"report text"``).
    """
    for column in required:
        if column not in available:
            err = MissingColumnError(column, source=str(path), available=list(available))
            near = [c for c in available if c.strip().casefold() == column.strip().casefold()]
            if near:
                err.args = (f"{err.args[0]}; did you mean {near[0]!r} (differs in case or spaces)?",)
            raise err


def read_csv_checked(path: str | Path, *, required: Sequence[str], **read_kwargs: Any) -> pd.DataFrame:
    """Read the ``required`` columns of a CSV whole, naming the file on any read failure."""
    path = Path(path)
    require_columns(read_header(path, sep=read_kwargs.get("sep", ",")), required, path)
    try:
        return pd.read_csv(path, usecols=list(required), **read_kwargs)
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc


def iter_csv_chunks(path: str | Path, *, chunksize: int, **read_kwargs: Any) -> Iterator[pd.DataFrame]:
    """Yield ``chunksize``-row frames; read failures (not the caller's) become :class:`DataFormatError`."""
    path = Path(path)
    try:
        reader = pd.read_csv(path, chunksize=chunksize, **read_kwargs)
    except READ_ERRORS as exc:
        raise unreadable(path, exc) from exc
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                return
            except READ_ERRORS as exc:
                raise unreadable(path, exc) from exc
            yield chunk


def normalize_split(value: Any) -> str | None:
    """Map a split label (``"valid"``, ``"dev"``, ``" Train "``...) to train/val/test, or None."""
    if not isinstance(value, str):
        return None
    return SPLIT_ALIASES.get(value.strip().lower())


def _read_split_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if path.name.lower().endswith((".feather", ".arrow")):
        try:
            frame = pd.read_feather(path)
        except READ_ERRORS as exc:
            raise unreadable(path, exc) from exc
        require_columns([str(c) for c in frame.columns], columns, path)
        return frame[columns]
    return read_csv_checked(path, required=columns, dtype=str, keep_default_na=False)


def read_split_file(path: str | Path, *, id_column: str = "note_id",
                    split_column: str = "split") -> dict[str, str]:
    """Read a published split (CSV or Feather) into ``{id: "train"|"val"|"test"}``.

    Ids are compared as strings. ``"valid"``/``"dev"`` mean ``"val"``. An unknown
    split name, or an id listed twice with different splits, raises
    :class:`DataFormatError` naming the file and row.
    """
    path = Path(path)
    check_exists(path)
    frame = _read_split_table(path, [id_column, split_column])
    out: dict[str, str] = {}
    for row, (raw_id, raw_split) in enumerate(zip(frame[id_column], frame[split_column]), start=1):
        split = normalize_split(raw_split)
        if split is None:
            raise DataFormatError(f"unknown split {raw_split!r} in column {split_column!r}; allowed "
                                  f"{sorted(SPLIT_ALIASES)}", source=str(path), row=row)
        key = str(raw_id).strip()
        if out.setdefault(key, split) != split:
            raise DataFormatError(f"id {key!r} is listed in two splits ({out[key]!r}, {split!r})",
                                  source=str(path), row=row)
    return out


# ------------------------------------------------------------- user tables
@dataclass
class Table:
    """A user table read whole: column names, 1-based row numbers, one dict per row.

    CSV/TSV values are strings (``""`` when empty); JSON-lines values are as
    parsed (None where a record lacks a column another record has).
    """

    columns: list[str]
    rows: list[int]
    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records)


def _open_text(path: Path):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig", newline="")


def _check_header(header: list[str] | None, path: Path) -> list[str]:
    if header is None:
        raise DataFormatError("file is empty: no header row", source=str(path))
    names = [h.strip() for h in header]
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes or "" in names:
        problem = f"repeated column names {dupes}" if dupes else f"an empty column name (column {names.index('') + 1})"
        raise DataFormatError(f"the header row has {problem}; every column needs its own name", source=str(path))
    return header


def _delimited_records(reader: Any, header: list[str], path: Path) -> Table:
    table = Table(columns=header, rows=[], records=[])
    for record in reader:
        if not record:  # a blank line
            continue
        row = len(table.rows) + 1
        if len(record) != len(header):
            raise DataFormatError(f"has {len(record)} fields but the header has {len(header)} columns (ends at line "
                                  f"{reader.line_num}; is a text with the delimiter or a line break not quoted?)",
                                  source=str(path), row=row)
        table.rows.append(row)
        table.records.append(dict(zip(header, record)))
    return table


def read_delimited(path: str | Path, *, sep: str = ",") -> Table:
    """Read a (gzip) CSV/TSV strictly: quoted fields may hold the delimiter and line breaks.

    A row whose field count differs from the header's, a repeated or empty
    column name, bad quoting, an empty file or non-UTF-8 bytes raise
    :class:`DataFormatError` naming the file (and row): pandas would silently
    drop extra fields or shift them into an index. A UTF-8 byte-order mark
    is ignored; row numbers count data rows (header and blank lines excluded).
    """
    path = Path(path)
    check_exists(path)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # clinical notes may exceed 128 KiB
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=sep, strict=True)
            header = _check_header(next(reader, None), path)
            return _delimited_records(reader, header, path)
    except csv.Error as exc:
        raise DataFormatError(f"malformed table near line {reader.line_num}: {exc}", source=str(path)) from exc
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc


def read_jsonl(path: str | Path) -> Table:
    """Read JSON lines (one object per line; blank lines skipped); rows are line numbers."""
    path = Path(path)
    check_exists(path)
    table = Table(columns=[], rows=[], records=[])
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    table.records.append(_json_object(line, path, lineno))
                    table.rows.append(lineno)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc
    table.columns = list(dict.fromkeys(k for rec in table.records for k in rec))
    table.records = [{c: rec.get(c) for c in table.columns} for rec in table.records]
    return table


def _json_object(line: str, path: Path, lineno: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"invalid JSON: {exc.msg}", source=str(path), row=lineno) from exc
    if not isinstance(record, dict):
        raise DataFormatError(f"expected a JSON object, got {type(record).__name__}", source=str(path),
                              row=lineno)
    return record
