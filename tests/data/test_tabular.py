"""Tests for fedicd.data.tabular: CSV/TSV/JSONL user tables (fixtures in conftest.py)."""

from __future__ import annotations

import gzip
import re

import pandas as pd
import pytest

from fedicd.data._io import normalize_split, read_split_file
from fedicd.data.tabular import load_tabular
from fedicd.errors import ConfigError, DataFormatError, MissingColumnError

PARROT_IDS = ["p1", "p2", "p5"]
PARROT_CODES = [("I63.4", "I65.23"), ("I63.9",), ("I63.4", "I10")]
COLUMNS = dict(text_column="text", codes_column="codes")


@pytest.mark.parametrize("filename", ["parrot.csv", "parrot.csv.gz", "parrot.tsv", "parrot.jsonl",
                                      "parrot.jsonl.gz"])
def test_every_format_gives_the_same_notes(table_writer, parrot_records, filename):
    path = table_writer(filename, parrot_records)
    notes = load_tabular(path, **COLUMNS, id_column="id", site_column="country", split_column="split")
    assert notes.ids == PARROT_IDS
    assert notes.codes == PARROT_CODES
    assert notes.texts[0] == "Left MCA stroke, carotid stenosis."
    assert notes.icd_version == [10, 10, 10]
    assert notes.sites == ["FR", "DE", "IT"]
    assert notes.splits == ["train", "val", "test"]
    assert notes.summary.rows_read == 5
    assert notes.summary.dropped == {"empty_text": 1, "no_codes": 1}
    assert notes.summary.source == str(path)


def test_without_optional_columns(table_writer, parrot_records):
    notes = load_tabular(table_writer("t.csv", parrot_records), **COLUMNS)
    assert notes.ids == ["row-1", "row-2", "row-5"]
    assert notes.sites is None and notes.splits is None


def test_jsonl_codes_may_be_lists_or_strings(table_writer):
    records = [{"text": "a", "codes": ["I63.4", " i10 ", "I63.4"]}, {"text": "b", "codes": "I10;I639"},
               {"text": "c", "codes": []}, {"text": "d", "codes": None}, {"text": "e"}]
    notes = load_tabular(table_writer("t.jsonl", records), **COLUMNS, codes_delimiter=";")
    assert notes.ids == ["row-1", "row-2"]
    assert notes.codes == [("I63.4", "I10"), ("I10", "I63.9")]
    assert notes.summary.dropped == {"no_codes": 3}


def test_jsonl_row_ids_are_line_numbers(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "codes": "I10"}\n\n{"text": "b", "codes": "I10"}\n')
    assert load_tabular(path, **COLUMNS).ids == ["row-1", "row-3"]


def test_icd9_diagnoses_and_procedures(table_writer):
    dx = table_writer("dx.csv", [{"text": "a", "codes": "4280, E8497,V1582"}])
    assert load_tabular(dx, **COLUMNS, icd_version=9).codes == [("428.0", "E849.7", "V15.82")]
    px = table_writer("px.csv", [{"text": "a", "codes": "3961"}])
    assert load_tabular(px, **COLUMNS, icd_version=9, code_kind="procedure").codes == [("39.61",)]
    pcs = table_writer("pcs.csv", [{"text": "a", "codes": "0DTJ4ZZ"}])
    assert load_tabular(pcs, **COLUMNS, code_kind="procedure").codes == [("0DTJ4ZZ",)]


def test_validate_codes_false_keeps_codes_as_written(table_writer):
    path = table_writer("t.csv", [{"text": "a", "codes": " cardio | neuro|cardio"}])
    notes = load_tabular(path, **COLUMNS, codes_delimiter="|", validate_codes=False)
    assert notes.codes == [("cardio", "neuro")]


def test_text_that_looks_like_na_is_kept(table_writer):
    notes = load_tabular(table_writer("t.csv", [{"text": "NA", "codes": "I10"}]), **COLUMNS)
    assert notes.texts == ["NA"]


# ------------------------------------------------------------ errors
def test_empty_text_can_be_an_error(table_writer, parrot_records):
    path = table_writer("t.csv", parrot_records)
    with pytest.raises(DataFormatError, match=r"t\.csv, row 3: empty text in column 'text'"):
        load_tabular(path, **COLUMNS, on_empty_text="error")


@pytest.mark.parametrize("filename", ["t.csv", "t.jsonl"])
def test_malformed_code_names_file_row_and_code(table_writer, filename):
    records = [{"text": "a", "codes": "I10"}, {"text": "b", "codes": "I63.4, XYZ"}]
    path = table_writer(filename, records)
    pattern = rf"{re.escape(filename)}, row 2: malformed ICD-10 diagnosis code 'XYZ' in column 'codes'"
    with pytest.raises(DataFormatError, match=pattern):
        load_tabular(path, **COLUMNS)


def test_duplicate_ids_are_named(table_writer):
    records = [{"id": i, "text": "t", "codes": "I10"} for i in ["a", "b", "a", "c", "b"]]
    with pytest.raises(DataFormatError, match=r"t\.csv: duplicate ids in column 'id': \['a', 'b'\]"):
        load_tabular(table_writer("t.csv", records), **COLUMNS, id_column="id")


def test_non_string_text_names_the_row(table_writer):
    with pytest.raises(DataFormatError, match=r"t\.jsonl, row 2: text in column 'text' is a int"):
        load_tabular(table_writer("t.jsonl", [{"text": "a", "codes": "I10"}, {"text": 5, "codes": "I10"}]),
                     **COLUMNS)


def test_empty_id_names_the_row(table_writer):
    records = [{"id": "a", "text": "t", "codes": "I10"}, {"id": "", "text": "t", "codes": "I10"}]
    with pytest.raises(DataFormatError, match=r"t\.csv, row 2: empty id in column 'id'"):
        load_tabular(table_writer("t.csv", records), **COLUMNS, id_column="id")


def test_unknown_split_and_empty_site_name_the_row(table_writer):
    records = [{"text": "t", "codes": "I10", "split": "holdout", "site": ""}]
    path = table_writer("t.csv", records)
    with pytest.raises(DataFormatError, match=r"t\.csv, row 1: unknown split 'holdout' in column 'split'"):
        load_tabular(path, **COLUMNS, split_column="split")
    with pytest.raises(DataFormatError, match=r"t\.csv, row 1: empty value in column 'site'"):
        load_tabular(path, **COLUMNS, site_column="site")


@pytest.mark.parametrize("filename", ["t.csv", "t.jsonl"])
def test_missing_column_names_file_and_column(table_writer, filename):
    path = table_writer(filename, [{"text": "t", "labels": "I10"}])
    with pytest.raises(MissingColumnError, match=rf"{re.escape(filename)}: missing required column 'codes'"):
        load_tabular(path, **COLUMNS)
    with pytest.raises(MissingColumnError, match="missing required column 'site'"):
        load_tabular(path, text_column="text", codes_column="labels", site_column="site")


def test_unknown_suffix_lists_allowed(tmp_path):
    path = tmp_path / "t.parquet"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"t\.parquet.*\.csv, \.csv\.gz, \.tsv.*\.jsonl, \.jsonl\.gz"):
        load_tabular(path, **COLUMNS)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        load_tabular(tmp_path / "absent.csv", **COLUMNS)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "codes": "I10"}\n{"text": "b", codes: "I10"}\n')
    with pytest.raises(DataFormatError, match=r"t\.jsonl, row 2: invalid JSON"):
        load_tabular(path, **COLUMNS)


@pytest.mark.parametrize("filename", ["t.csv.gz", "t.jsonl.gz"])
def test_corrupt_gzip_names_the_file(tmp_path, filename):
    path = tmp_path / filename
    if ".jsonl" in filename:
        body = "".join(f'{{"text": "note {i} {i * 7919}", "codes": "I10"}}\n' for i in range(3000))
    else:
        body = "text,codes\n" + "".join(f"note {i} {i * 7919},I10\n" for i in range(3000))
    data = gzip.compress(body.encode())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=rf"{re.escape(filename)}: cannot read file"):
        load_tabular(path, **COLUMNS)


@pytest.mark.parametrize("options, fragment", [
    ({"icd_version": 11}, "icd_version must be 9 or 10, got 11"), ({"code_kind": "drug"}, "code_kind='drug'"),
    ({"on_empty_text": "skip"}, "on_empty_text"), ({"codes_delimiter": ""}, "codes_delimiter"),
])
def test_options_are_checked(table_writer, options, fragment):
    path = table_writer("t.csv", [{"text": "t", "codes": "I10"}])
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_tabular(path, **COLUMNS, **options)


# ------------------------------------------------------------ split helpers
@pytest.mark.parametrize("raw, expected", [("train", "train"), (" Valid ", "val"), ("DEV", "val"),
                                           ("test", "test"), ("holdout", None), (None, None)])
def test_normalize_split(raw, expected):
    assert normalize_split(raw) == expected


def test_read_split_file_rejects_conflicting_ids(tmp_path):
    path = tmp_path / "s.csv"
    pd.DataFrame({"note_id": ["a", "b", "a"], "split": ["train", "test", "val"]}).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"s\.csv, row 3: id 'a' is listed in two splits"):
        read_split_file(path)
