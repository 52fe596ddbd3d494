"""Labels that are not ICD codes (``data.label_kind = "free"``) and the label-kind settings."""

from __future__ import annotations

from collections import Counter

import pytest

from fedicd.data.codes import resolve_label_kind
from fedicd.data.config import DataConfig
from fedicd.data.labels import filter_rare_codes, roll_up, roll_up_notes
from fedicd.data.notes import CodedNotes
from fedicd.data.sources import load_notes
from fedicd.data.tabular import load_tabular
from fedicd.errors import ConfigError, DataFormatError
from tests.corpora import FREE_CORPUS, SEVERITIES, write_free_label_corpus

COLUMNS = dict(text_column="text", codes_column="codes")


@pytest.fixture
def free_path(tmp_path):
    return write_free_label_corpus(tmp_path / "severity.csv")


@pytest.fixture
def free_notes(free_path) -> CodedNotes:
    return load_notes(DataConfig(**{**FREE_CORPUS, "path": str(free_path)}))


def test_severity_corpus_loads_as_free_labels(free_notes):
    assert len(free_notes) == 500
    assert free_notes.label_kind == "free" and set(free_notes.icd_version) == {0}
    assert Counter(cs for cs in free_notes.codes) == {("mild",): 167, ("moderate",): 167, ("severe",): 166}
    assert len(set(free_notes.texts)) == 15
    by_text = {}
    for text, cs in zip(free_notes.texts, free_notes.codes):
        by_text.setdefault(text, set()).add(cs)
    assert all(len(labels) == 1 for labels in by_text.values())  # one severity per distinct text
    assert free_notes.attributes == {"Ward": [f"Ward {r % 4}" for r in range(500)]}
    assert free_notes.summary.info == {"label_kind": "free"}  # nothing normalised, nothing to report


def test_free_labels_keep_case_and_are_stripped(table_writer):
    path = table_writer("t.csv", [{"text": "a", "codes": " Severe "}, {"text": "b", "codes": "severe"},
                                  {"text": "c", "codes": "R201"}])
    notes = load_tabular(path, **COLUMNS, label_kind="free")
    assert notes.codes == [("Severe",), ("severe",), ("R201",)]


def test_without_label_kind_a_severity_is_a_malformed_icd_code(free_path):
    with pytest.raises(DataFormatError, match=r"severity\.csv, row 1: malformed ICD-10 diagnosis code 'mild' in "
                                              r"column 'Severity' \(.*label_kind='free' keeps labels as written"):
        load_notes(DataConfig(source="tabular", path=str(free_path), text_column="Report Text",
                              codes_column="Severity"))


def test_validate_codes_false_means_free(table_writer):
    notes = load_tabular(table_writer("t.csv", [{"text": "a", "codes": "x"}]), **COLUMNS, validate_codes=False)
    assert notes.label_kind == "free"
    with pytest.raises(ConfigError, match="validate_codes=False keeps labels as written"):
        load_tabular(table_writer("t.csv", [{"text": "a", "codes": "x"}]), **COLUMNS, validate_codes=False,
                     label_kind="icd10")


def test_free_labels_binarize_through_prepare_data(free_path):
    from fedicd.config import config_from_dict
    from fedicd.prepare import prepare_data

    cfg = config_from_dict({"data": {**FREE_CORPUS, "path": str(free_path), "min_per_client": 5, "n_clients": 2}})
    data = prepare_data(cfg)
    assert list(data.binarizer.classes_) == sorted(SEVERITIES)
    assert data.labels["train"].shape[1] == 3
    assert (data.labels["test"].sum(axis=1) == 1).all()  # multi-class: one label per note


def test_frequency_rule_works_on_free_labels(free_notes):
    rare = free_notes.subset([0, 1, 2, 15])  # mild, moderate, severe, mild
    assert filter_rare_codes(rare, min_count=2).codes == [("mild",), ("mild",)]


# ------------------------------------------------------------ ICD-only steps refuse free labels
def test_roll_up_refuses_free_labels(free_notes):
    assert roll_up_notes(free_notes, "full").codes == free_notes.codes
    with pytest.raises(ConfigError, match=r"data.granularity = 'category' rolls ICD codes up.*carry free labels"):
        roll_up_notes(free_notes, "category")
    with pytest.raises(ConfigError, match=r"label 'mild' has icd_version 0 \(not an ICD code\)"):
        roll_up("mild", 0, "chapter")


def test_free_notes_need_version_zero():
    with pytest.raises(DataFormatError, match=r"icd_version must be 0 for label_kind='free', found \[10\]"):
        CodedNotes(ids=["a"], texts=["x"], codes=[("mild",)], icd_version=[10], label_kind="free")
    with pytest.raises(DataFormatError, match=r"icd_version must be 9 or 10 for label_kind='icd', found \[0\]"):
        CodedNotes(ids=["a"], texts=["x"], codes=[("mild",)], icd_version=[0])


# ------------------------------------------------------------ config
@pytest.mark.parametrize("label_kind, icd_version, expected", [
    (None, None, ("icd10", 10)), (None, 9, ("icd9", 9)), (None, 10, ("icd10", 10)), ("icd9", None, ("icd9", 9)),
    ("icd9", 9, ("icd9", 9)), ("free", None, ("free", 0)),
])
def test_label_kind_and_icd_version_resolve(label_kind, icd_version, expected):
    assert resolve_label_kind(label_kind, icd_version) == expected


@pytest.mark.parametrize("values, message", [
    ({"label_kind": "icd9", "icd_version": 10}, "data.label_kind = 'icd9' contradicts data.icd_version = 10"),
    ({"label_kind": "free", "icd_version": 10}, "data.label_kind = 'free' contradicts data.icd_version = 10"),
    ({"label_kind": "ICD-10"}, r"data.label_kind must be one of \['icd10', 'icd9', 'free'\], got 'ICD-10'"),
    ({"icd_version": 11}, "data.icd_version must be 9 or 10, got 11"),
    ({"label_kind": "free", "granularity": "category"},
     "data.granularity = 'category' rolls ICD codes up to categories/chapters; with data.label_kind = 'free'"),
    ({"label_kind": "free", "source": "codiesp"}, "data.label_kind = 'free' applies to data.source 'tabular' or "
                                                  "'notes'; data.source = 'codiesp' is ICD-coded"),
    ({"icd_version": 9, "source": "synthetic"}, "does not fit data.source = 'synthetic': synthetic notes are "
                                                "coded in ICD-10"),
])
def test_label_settings_are_checked(values, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**{"source": "tabular", "path": "x.csv", **values})


def test_resolved_config_names_the_label_kind_and_reloads():
    import dataclasses

    for values in ({"icd_version": 9}, {"label_kind": "free"}, {}):
        cfg = DataConfig(source="tabular", path="x.csv", **values)
        assert DataConfig(**dataclasses.asdict(cfg)) == cfg
    assert DataConfig(source="mimic", path="m", icd_version=9).label_kind == "icd9"
    assert DataConfig(source="tabular", path="x.csv", label_kind="free").icd_version is None


# ------------------------------------------------------------ saved notes
def test_saved_free_notes_reload_with_their_kind(free_notes, tmp_path):
    path = free_notes.save(tmp_path / "notes.jsonl.gz")
    back = load_notes(DataConfig(source="notes", path=str(path), label_kind="free"))
    assert back.label_kind == "free" and back.codes == free_notes.codes and back.attributes == free_notes.attributes
    with pytest.raises(ConfigError, match=r"notes\.jsonl\.gz holds free labels \(label_kind = 'free'\) but "
                                          r"data.label_kind = 'icd10'"):
        load_notes(DataConfig(source="notes", path=str(path)))


def test_saved_icd_notes_still_load_by_default(tiny_notes, tmp_path):
    path = tiny_notes.save(tmp_path / "notes.jsonl.gz")
    assert load_notes(DataConfig(source="notes", path=str(path))).codes == tiny_notes.codes
    with pytest.raises(ConfigError, match=r"holds ICD-10 codes but data.label_kind = 'icd9'"):
        load_notes(DataConfig(source="notes", path=str(path), label_kind="icd9"))
