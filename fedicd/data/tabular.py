"""Generic loader for user tables of coded notes (CSV, TSV, JSON lines).

Use it for PARROT-style exports or any table with a text column and a codes
column (``"I63.4, I65.23"``), or a column of labels that are not ICD codes
(``label_kind="free"``: a severity, a specialty). Every other column is kept
as a per-note string attribute (:attr:`CodedNotes.attributes`). Table
reading helpers shared with the MIMIC loader live in :mod:`fedicd.data._io`.

Privacy
-------
The returned :class:`~fedicd.data.notes.CodedNotes` holds raw clinical text;
see :mod:`fedicd.data.notes`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from fedicd.data._io import Table, normalize_split, read_delimited, read_jsonl, require_columns
from fedicd.data.codes import CODE_PATTERNS, CodeKind, CodeNormaliser, is_valid_code, resolve_label_kind
from fedicd.data.notes import SPLIT_NAMES, CodedNotes, LoadSummary, check_kept, unique_codes
from fedicd.errors import ConfigError, DataFormatError

__all__ = ["load_tabular", "TABULAR_SUFFIXES"]

logger = logging.getLogger(__name__)

TABULAR_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")
_OTHER_DELIMITERS = (",", ";", "|", "\t", " ")


# -------------------------------------------------------------- reading
def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(TABULAR_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"unsupported file type for {path}; allowed suffixes: {', '.join(TABULAR_SUFFIXES)}")


def _read_table(path: Path, suffix: str) -> Table:
    """The whole table; rows are 1-based data rows (CSV/TSV) or line numbers (JSON lines)."""
    if suffix.startswith(".jsonl"):
        return read_jsonl(path)
    return read_delimited(path, sep="\t" if suffix.startswith(".tsv") else ",")


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


def _attribute_value(value: Any) -> str:
    """A table value as an attribute string: strings as written, ``""`` when missing, JSON otherwise."""
    if _is_missing(value) and not isinstance(value, str):
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class _RowParser:
    """Turns one table row into (text, codes, site, split), or a drop reason."""

    def __init__(self, path: Path, opts: dict[str, Any]):
        self.path, self.opts = path, opts
        self.normaliser = CodeNormaliser(opts["icd_version"], opts["code_kind"])  # unused for free labels

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
        if o["label_kind"] == "free":
            return unique_codes(raw)
        out = []
        for code in raw:
            canon = self.normaliser(code)
            if not is_valid_code(canon, o["icd_version"], o["code_kind"]):
                raise DataFormatError(f"malformed ICD-{o['icd_version']} {o['code_kind']} code {code!r} "
                                      f"in column {o['codes_column']!r}{self._delimiter_hint(code)}",
                                      source=str(self.path), row=row)
            out.append(canon)
        return unique_codes(out)

    def _delimiter_hint(self, code: str) -> str:
        delimiter = self.opts["codes_delimiter"]
        if any(d in code for d in _OTHER_DELIMITERS if d != delimiter):
            return (f" (codes are split on {delimiter!r}; set codes_delimiter / data.codes_delimiter, or "
                    "label_kind='free' for labels that are not ICD codes)")
        return " (allowed: ICD codes such as 'I63.4' or 'I634'; label_kind='free' keeps labels as written)"

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


def _row_ids(table: Table, id_column: str | None, path: Path) -> list[str]:
    if id_column is None:
        return [f"row-{row}" for row in table.rows]
    ids, seen, dupes = [], set(), set()
    for row, rec in zip(table.rows, table.records):
        value = rec[id_column]
        if _is_missing(value):
            raise DataFormatError(f"empty id in column {id_column!r}", source=str(path), row=row)
        nid = _attribute_value(value).strip()
        (dupes if nid in seen else seen).add(nid)
        ids.append(nid)
    if dupes:
        raise DataFormatError(f"duplicate ids in column {id_column!r}: {sorted(dupes)[:5]} ({len(dupes)} in all)",
                              source=str(path))
    return ids


def _check_options(opts: dict[str, Any]) -> None:
    if opts["label_kind"] != "free" and (opts["icd_version"], opts["code_kind"]) not in CODE_PATTERNS:
        raise ConfigError(f"icd_version={opts['icd_version']!r}, code_kind={opts['code_kind']!r} is not a "
                          "known coding system; allowed versions 9 or 10, kinds 'diagnosis' or 'procedure'")
    if opts["on_empty_text"] not in ("drop", "error"):
        raise ConfigError(f"on_empty_text must be 'drop' or 'error', got {opts['on_empty_text']!r}")
    if not opts["codes_delimiter"]:
        raise ConfigError("codes_delimiter must be a non-empty string")
    roles = {k: opts[k] for k in ("text_column", "codes_column", "id_column", "site_column", "split_column")
             if opts[k] is not None}
    repeated = sorted({c for c in roles.values() if list(roles.values()).count(c) > 1})
    if repeated:
        raise ConfigError(f"column(s) {repeated} given for more than one of {sorted(roles)}; "
                          "each role needs its own column")


def _label_kind(label_kind: str | None, icd_version: int | None, validate_codes: bool) -> tuple[str, int]:
    if not validate_codes:  # the older spelling of label_kind="free"
        if label_kind not in (None, "free"):
            raise ConfigError(f"validate_codes=False keeps labels as written, which is label_kind='free'; "
                              f"got label_kind={label_kind!r}")
        label_kind = "free"
    return resolve_label_kind(label_kind, icd_version)


def _collect(table: Table, ids: list[str], parser: _RowParser, attributes: list[str],
             summary: LoadSummary) -> dict:
    cols: dict[str, list] = {"ids": [], "texts": [], "codes": [], "sites": [], "splits": []}
    attrs: dict[str, list[str]] = {name: [] for name in attributes}
    for i, (row, rec) in enumerate(zip(table.rows, table.records)):
        parsed = parser.parse(rec, row)
        if isinstance(parsed, str):
            summary.drop(parsed)
            continue
        cols["ids"].append(ids[i])
        for name, value in zip(("texts", "codes", "sites", "splits"), parsed):
            cols[name].append(value)
        for name in attributes:
            attrs[name].append(_attribute_value(rec[name]))
    cols["attributes"] = attrs or None
    return cols


def load_tabular(path: str | Path, *, text_column: str, codes_column: str, codes_delimiter: str = ",",
                 id_column: str | None = None, site_column: str | None = None,
                 split_column: str | None = None, icd_version: int | None = None,
                 code_kind: CodeKind = "diagnosis", label_kind: str | None = None, validate_codes: bool = True,
                 on_empty_text: Literal["drop", "error"] = "drop") -> CodedNotes:
    """Load coded notes from a ``.csv``, ``.csv.gz``, ``.tsv(.gz)``, ``.jsonl`` or ``.jsonl.gz`` file.

    Parameters
    ----------
    path:
        The table; its type is taken from the suffix. CSV/TSV are read
        strictly: quoted fields may hold the delimiter and line breaks, but a
        row with more or fewer fields than the header raises. Column names
        may hold spaces (``"Report Text"``).
    text_column, codes_column:
        Columns (JSON fields) holding the note text and its codes. Codes are
        a ``codes_delimiter``-separated string (``"I63.4, I65.23"``;
        whitespace around each code is stripped) or, in JSON lines, a list.
        One label per row (a multi-class column) is the one-code case.
    id_column:
        Column of unique note ids; without it ids are ``"row-<n>"`` (1-based
        data row for CSV/TSV, line number for JSON lines).
    site_column, split_column:
        Optional site and published-split columns (``valid``/``dev`` mean ``val``).
    icd_version, label_kind:
        ``label_kind`` is ``"icd10"``, ``"icd9"`` or ``"free"``; unset, it
        follows ``icd_version`` (9 or 10; both unset: ``"icd10"``); both set
        and contradicting raises :class:`ConfigError`. ICD codes are put in
        canonical form (:func:`~fedicd.data.codes.format_code`); a malformed
        one raises :class:`DataFormatError` naming file, row and code, and
        every rewrite is counted in ``summary.info["codes_normalised"]``
        (examples in ``codes_normalised_examples``). ``"free"`` labels are
        kept as written (stripped, case kept), not validated, and the notes
        get ``icd_version`` 0 and ``label_kind="free"``.
    code_kind:
        ``"diagnosis"`` or ``"procedure"`` (ICD labels only).
    validate_codes:
        ``False`` is the older spelling of ``label_kind="free"``.
    on_empty_text:
        ``"drop"`` (default) drops and counts notes with empty text under
        ``"empty_text"``, as the MIMIC loader does; ``"error"`` raises.

    Notes without codes are dropped and counted under ``"no_codes"``. A file
    with no data row, or whose every row is dropped, raises
    :class:`DataFormatError` with the count per reason. Duplicate or empty
    ids, and empty or unknown site/split values, raise :class:`DataFormatError`.
    Every column other than the text, codes and id columns is kept in
    ``attributes`` (one string per kept note, ``""`` where empty; None when
    there is no such column).
    """
    path = Path(path)
    kind, version = _label_kind(label_kind, icd_version, validate_codes)
    opts = dict(codes_delimiter=codes_delimiter, icd_version=version, code_kind=code_kind, label_kind=kind,
                on_empty_text=on_empty_text, text_column=text_column, codes_column=codes_column,
                id_column=id_column, site_column=site_column, split_column=split_column)
    _check_options(opts)
    table = _read_table(path, _suffix(path))
    optional = [c for c in (id_column, site_column, split_column) if c is not None]
    if table.columns:  # an empty JSON-lines file has no columns to check; check_kept names it below
        require_columns(table.columns, [text_column, codes_column, *optional], path)
    summary = LoadSummary(source=str(path), rows_read=len(table), info={"label_kind": kind})
    parser = _RowParser(path, opts)
    attributes = [c for c in table.columns if c not in (text_column, codes_column, id_column)]
    cols = _collect(table, _row_ids(table, id_column, path), parser, attributes, summary)
    if kind != "free":
        parser.normaliser.report(summary.info)
    check_kept(len(cols["ids"]), summary)
    notes = CodedNotes(ids=cols["ids"], texts=cols["texts"], codes=cols["codes"],
                       icd_version=[version] * len(cols["ids"]),
                       sites=cols["sites"] if site_column is not None else None,
                       splits=cols["splits"] if split_column is not None else None, summary=summary,
                       attributes=cols["attributes"], label_kind="free" if kind == "free" else "icd")
    logger.info("%s", summary.describe())
    return notes
