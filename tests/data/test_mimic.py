"""Tests for fedicd.data.mimic on tiny tables in the real MIMIC-IV(-Note) schema (see conftest.py)."""

from __future__ import annotations

import gzip
import re
import shutil

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedicd.data.mimic import MimicConfig, load_mimic
from fedicd.errors import ConfigError, DataFormatError, MissingColumnError

ICD9_IDS = ["10000032-DS-21", "10000300-DS-7"]
ICD9_CODES = [("428.0", "E849.7", "V15.82"), ("401.9", "428.0")]
ICD10_IDS = ["10000032-DS-22", "10000084-DS-17", "10000400-DS-3"]
ICD10_CODES = [("E11.9", "I50.22"), ("N17.9", "I50.22", "S72.001A"), ("J18.9",)]
COMMON_DROPS = {"empty_text": 1, "null_hadm_id": 1, "no_codes": 1}


def _load(root, hosp_root=None, **options):
    options.setdefault("min_per_client", 0)
    return load_mimic(root, hosp_root, **options)


# ------------------------------------------------------------ outputs
def test_icd9_codes_formatted_in_seq_num_order_and_deduplicated(mimic_root):
    notes = _load(mimic_root, icd_version=9)
    assert notes.ids == ICD9_IDS
    assert notes.codes == ICD9_CODES
    assert notes.icd_version == [9, 9]
    assert notes.sites is None and notes.splits is None
    assert notes.texts[0].startswith("Name: ___\nChief Complaint: dyspnea, \"CHF\"")


def test_icd10_codes(mimic_root):
    notes = _load(mimic_root, icd_version=10)
    assert notes.ids == ICD10_IDS
    assert notes.codes == ICD10_CODES
    assert notes.icd_version == [10, 10, 10]


@pytest.mark.parametrize("version, other", [(9, 3), (10, 2)])
def test_drop_counts_per_reason(mimic_root, version, other):
    notes = _load(mimic_root, icd_version=version)
    summary = notes.summary
    assert summary.rows_read == 8
    assert summary.dropped == {**COMMON_DROPS, "other_icd_version": other}
    assert summary.rows_read == len(notes) + summary.n_dropped
    assert summary.info["n_admissions_with_codes"] == 3
    assert summary.info["n_admissions_any_version"] == 6
    assert summary.source.endswith("discharge.csv.gz")


@pytest.mark.parametrize("version, expected", [
    (9, [("428.0", "E849.7", "V15.82", "39.61"), ("401.9", "428.0")]),
    (10, [("E11.9", "I50.22"), ("N17.9", "I50.22", "S72.001A", "0DTJ4ZZ"), ("J18.9",)]),
])
def test_procedures_follow_diagnoses(mimic_root, version, expected):
    notes = _load(mimic_root, icd_version=version, include_procedures=True)
    assert notes.codes == expected
    assert notes.summary.info["procedure_rows_read"] == 2


def test_procedures_file_is_optional_unless_asked_for(mimic_root):
    (mimic_root / "hosp" / "procedures_icd.csv.gz").unlink()
    assert _load(mimic_root, icd_version=9).codes == ICD9_CODES
    with pytest.raises(FileNotFoundError, match=re.escape(str(mimic_root / "hosp" / "procedures_icd.csv.gz"))):
        _load(mimic_root, icd_version=9, include_procedures=True)


def test_separate_note_and_hosp_roots(mimic_root, tmp_path):
    note_root, hosp_root = tmp_path / "mimic-iv-note", tmp_path / "mimic-iv"
    shutil.copytree(mimic_root / "note", note_root / "note")
    shutil.copytree(mimic_root / "hosp", hosp_root / "hosp")
    notes = _load(note_root, hosp_root, icd_version=10)
    assert notes.ids == ICD10_IDS


def test_uncompressed_csv_is_accepted(mimic_root):
    for rel in ("note/discharge.csv.gz", "hosp/diagnoses_icd.csv.gz"):
        gz = mimic_root / rel
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert _load(mimic_root, icd_version=9).codes == ICD9_CODES


def test_label_rule_keeps_codes_with_min_per_client_times_n_clients_notes(mimic_root):
    notes = load_mimic(mimic_root, icd_version=10, min_per_client=1, n_clients=2)
    assert notes.ids == ["10000032-DS-22", "10000084-DS-17"]
    assert notes.codes == [("I50.22",), ("I50.22",)]
    assert notes.summary.dropped["no_codes_after_filter"] == 1
    assert notes.summary.info["min_code_count"] == 2
    assert notes.summary.info["codes_before"] == 5 and notes.summary.info["codes_kept"] == 1


def test_default_label_rule_is_200_notes(mimic_root):
    assert MimicConfig().min_code_count == 200
    # every note falls to the rule: an error with the counts, not an empty corpus that fails later
    with pytest.raises(DataFormatError, match=r"discharge\.csv\.gz: all 8 notes were dropped \(empty_text=1, "
                       r"no_codes=1, no_codes_after_filter=3, null_hadm_id=1, other_icd_version=2\); nothing to load"):
        load_mimic(mimic_root, icd_version=10)


def test_config_object_equals_keywords(mimic_root):
    cfg = MimicConfig(icd_version=10, include_procedures=True, min_per_client=0, chunksize=3)
    by_config = load_mimic(mimic_root, config=cfg)
    by_keywords = load_mimic(mimic_root, icd_version=10, include_procedures=True, min_per_client=0, chunksize=3)
    assert (by_config.ids, by_config.codes) == (by_keywords.ids, by_keywords.codes)


# ------------------------------------------------------------ splits
def _split_frame() -> pd.DataFrame:
    return pd.DataFrame({"note_id": ["10000032-DS-21", "10000032-DS-22", "10000084-DS-17", "10000400-DS-3"],
                         "split": ["train", "valid", "TEST", "dev"]})


@pytest.mark.parametrize("fmt", ["csv", "feather"])
def test_split_file(mimic_root, tmp_path, fmt):
    path = tmp_path / f"splits.{fmt}"
    frame = _split_frame()
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_feather(path)
    notes = _load(mimic_root, icd_version=10, split_file=path)
    assert notes.ids == ICD10_IDS
    assert notes.splits == ["val", "test", "val"]
    nine = _load(mimic_root, icd_version=9, split_file=path)
    assert nine.ids == ["10000032-DS-21"] and nine.splits == ["train"]
    assert nine.summary.dropped["not_in_split_file"] == 1


def test_split_file_with_custom_columns_keyed_by_hadm_id(mimic_root, tmp_path):
    path = tmp_path / "splits.csv"
    pd.DataFrame({"_id": [22841357, 23052089], "fold": ["train", "test"]}).to_csv(path, index=False)
    notes = _load(mimic_root, icd_version=10, split_file=path, split_id_column="_id", split_column="fold",
                  split_match_on="hadm_id")
    assert notes.ids == ["10000032-DS-22", "10000084-DS-17"]
    assert notes.splits == ["train", "test"]
    assert notes.summary.dropped["not_in_split_file"] == 1


def test_split_file_errors(mimic_root, tmp_path):
    path = tmp_path / "splits.csv"
    pd.DataFrame({"note_id": ["a", "b"], "split": ["train", "holdout"]}).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"splits\.csv, row 2: unknown split 'holdout'"):
        _load(mimic_root, split_file=path)
    pd.DataFrame({"note_id": ["a"], "part": ["train"]}).to_csv(path, index=False)
    with pytest.raises(MissingColumnError, match=r"splits\.csv: missing required column 'split'"):
        _load(mimic_root, split_file=path)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        _load(mimic_root, split_file=tmp_path / "nowhere.csv")


# ------------------------------------------------------------ chunking
@pytest.mark.parametrize("chunksize", [1, 2, 3])
def test_small_chunks_equal_one_chunk(mimic_root, chunksize):
    one = _load(mimic_root, icd_version=9, chunksize=10_000)
    many = _load(mimic_root, icd_version=9, chunksize=chunksize)
    assert (many.ids, many.texts, many.codes) == (one.ids, one.texts, one.codes)
    assert many.summary.to_dict() == one.summary.to_dict()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunksize=st.integers(min_value=1, max_value=12), version=st.sampled_from([9, 10]),
       procedures=st.booleans())
def test_any_chunksize_gives_same_result(shared_mimic_root, chunksize, version, procedures):
    opts = dict(icd_version=version, include_procedures=procedures)
    one = _load(shared_mimic_root, chunksize=10_000, **opts)
    many = _load(shared_mimic_root, chunksize=chunksize, **opts)
    assert (many.ids, many.texts, many.codes) == (one.ids, one.texts, one.codes)
    assert many.summary.dropped == one.summary.dropped


# ------------------------------------------------------------ errors
def test_missing_files_are_named(mimic_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "note" / "discharge.csv.gz"))):
        load_mimic(tmp_path / "empty")
    (mimic_root / "hosp" / "diagnoses_icd.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"hosp[/\\]diagnoses_icd\.csv\.gz"):
        load_mimic(mimic_root)


@pytest.mark.parametrize("table, column, filename", [
    ("discharge", "text", "discharge.csv.gz"),
    ("discharge", "hadm_id", "discharge.csv.gz"),
    ("diagnoses", "icd_version", "diagnoses_icd.csv.gz"),
    ("diagnoses", "seq_num", "diagnoses_icd.csv.gz"),
])
def test_missing_column_names_file_and_column(mimic_tables, write_mimic, table, column, filename):
    mimic_tables[table] = mimic_tables[table].drop(columns=[column])
    root = write_mimic(mimic_tables)
    with pytest.raises(MissingColumnError, match=rf"{re.escape(filename)}: missing required column '{column}'"):
        _load(root)


def test_duplicate_note_id_names_the_id(mimic_tables, write_mimic):
    notes = mimic_tables["discharge"]
    notes.loc[6, "note_id"] = "10000032-DS-21"
    root = write_mimic(mimic_tables)
    for chunksize in (2, 10_000):  # across chunks and within one
        with pytest.raises(DataFormatError, match=r"discharge\.csv\.gz, row 7: duplicate note_id '10000032-DS-21'"):
            _load(root, chunksize=chunksize)


def test_empty_note_id_is_an_error(mimic_tables, write_mimic):
    mimic_tables["discharge"].loc[1, "note_id"] = ""
    with pytest.raises(DataFormatError, match=r"discharge\.csv\.gz, row 2: empty note_id"):
        _load(write_mimic(mimic_tables))


@pytest.mark.parametrize("version, bad, row", [(9, "42X0", 3), (10, "15022", 5), (10, "", 5)])
def test_malformed_code_names_file_row_and_value(mimic_tables, write_mimic, version, bad, row):
    mimic_tables["diagnoses"].loc[row - 1, "icd_code"] = bad
    root = write_mimic(mimic_tables)
    pattern = rf"diagnoses_icd\.csv\.gz, row {row}: malformed ICD-{version} diagnosis code '{bad}'"
    with pytest.raises(DataFormatError, match=pattern):
        _load(root, icd_version=version)


def test_malformed_code_can_be_dropped_and_counted(mimic_tables, write_mimic):
    mimic_tables["diagnoses"].loc[4, "icd_code"] = "15022"
    notes = _load(write_mimic(mimic_tables), icd_version=10, on_invalid_code="drop")
    assert notes.codes[0] == ("E11.9",)
    assert notes.summary.info["invalid_codes_dropped"] == 1


def test_malformed_procedure_code(mimic_tables, write_mimic):
    mimic_tables["procedures"].loc[1, "icd_code"] = "0DTJ4Z"
    root = write_mimic(mimic_tables)
    with pytest.raises(DataFormatError, match=r"procedures_icd\.csv\.gz, row 2: malformed ICD-10 procedure code"):
        _load(root, icd_version=10, include_procedures=True)


def test_non_numeric_icd_version_is_a_format_error(mimic_tables, write_mimic):
    mimic_tables["diagnoses"]["icd_version"] = mimic_tables["diagnoses"]["icd_version"].astype(str)
    mimic_tables["diagnoses"].loc[0, "icd_version"] = "ICD9"
    with pytest.raises(DataFormatError, match=r"diagnoses_icd\.csv\.gz"):
        _load(write_mimic(mimic_tables))


def test_truncated_gzip_names_the_file(mimic_tables, write_mimic):
    mimic_tables["discharge"]["text"] = mimic_tables["discharge"]["text"] + " filler" * 4000
    root = write_mimic(mimic_tables)
    path = root / "note" / "discharge.csv.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"discharge\.csv\.gz: cannot read file"):
        _load(root, chunksize=2)


def test_corrupt_gzip_names_the_file(mimic_root):
    path = mimic_root / "hosp" / "diagnoses_icd.csv.gz"
    path.write_bytes(b"this is not gzip data at all\n" * 10)
    with pytest.raises(DataFormatError, match=r"diagnoses_icd\.csv\.gz: cannot read file"):
        _load(mimic_root)


@pytest.mark.parametrize("options, name", [
    ({"icd_version": 11}, "icd_version"), ({"min_per_client": -1}, "min_per_client"),
    ({"n_clients": 0}, "n_clients"), ({"chunksize": 0}, "chunksize"),
    ({"on_invalid_code": "skip"}, "on_invalid_code"), ({"split_match_on": "subject_id"}, "split_match_on"),
    ({"include_procedures": "yes"}, "include_procedures"),
])
def test_config_is_checked(options, name):
    with pytest.raises(ConfigError, match=rf"MimicConfig\.{name} must be"):
        MimicConfig(**options)


def test_config_and_options_are_exclusive(mimic_root):
    with pytest.raises(ConfigError, match="unknown MIMIC option"):
        load_mimic(mimic_root, icd_verison=9)
    with pytest.raises(ConfigError, match="not both"):
        load_mimic(mimic_root, config=MimicConfig(), icd_version=9)
