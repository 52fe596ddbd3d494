"""Error classes raised by fedicd.

Every error is built on a builtin so callers can catch ``ValueError`` or
``FileNotFoundError`` as usual, and every message names the file, row, column
or parameter that is wrong.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataFormatError", "MissingColumnError", "OutputDirError", "ShapeError"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


class OutputDirError(ValueError):
    """An output folder cannot be written, or would overwrite an earlier result."""


class DataFormatError(ValueError):
    """An input file or record is malformed.

    Parameters
    ----------
    message:
        What is wrong.
    source:
        File (or other source) the bad record came from.
    row:
        1-based data row (header excluded) or record id, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, row: int | str | None = None):
        where = []
        if source is not None:
            where.append(f"file {source}")
        if row is not None:
            where.append(f"row {row}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.source = source
        self.row = row


class MissingColumnError(DataFormatError):
    """A required column is absent from a table."""

    def __init__(self, column: str, *, source: str, available: list[str]):
        super().__init__(
            f"missing required column {column!r}; columns present: {sorted(available)}",
            source=source,
        )
        self.column = column


class ShapeError(ValueError):
    """Arrays passed together have inconsistent shapes or invalid values."""
