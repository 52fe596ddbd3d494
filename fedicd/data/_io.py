"""Table-reading helpers shared by the MIMIC and generic loaders.

Column checks, chunked CSV reading, split files and split-name aliases; every
read failure (corrupt gzip, bad CSV) becomes a :class:`DataFormatError` that
names the file.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from fedicd.errors import DataFormatError, MissingColumnError

__all__ = ["SPLIT_ALIASES", "normalize_split", "read_split_file", "require_columns", "read_header",
           "iter_csv_chunks", "read_csv_checked", "READ_ERRORS", "unreadable", "check_exists"]

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, pd.errors.ParserError)


def unreadable(path: Path, exc: BaseException) -> DataFormatError:
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
    """Raise :class:`MissingColumnError` for the first of ``required`` not in ``available``."""
    for column in required:
        if column not in available:
            raise MissingColumnError(column, source=str(path), available=list(available))


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
