"""User-brought tabular corpora: awkward CSVs, empty files, attribute columns, normalisation reports."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pytest

from fedicd.data.config import DataConfig
from fedicd.data.labels import filter_rare_codes
from fedicd.data.notes import CodedNotes, LoadSummary
from fedicd.data.sources import load_notes
from fedicd.data.splits import with_splits
from fedicd.data.tabular import load_tabular
from fedicd.errors import ConfigError, DataFormatError, MissingColumnError, ShapeError
from tests.corpora import SITE_CORPUS, SITE_SIZES, write_small_site_corpus

COLUMNS = dict(text_column="text", codes_column="codes")


@pytest.fixture
def site_notes(tmp_path) -> CodedNotes:
    path = write_small_site_corpus(tmp_path / "corpus.csv")
    return load_notes(DataConfig(source="tabular", path=str(path), text_column="Report Text",
                                 codes_column="ICD-10 codes", site_column="Hospital site"))


# ------------------------------------------------------------ the 40-note, 13-site corpus
def test_small_site_corpus_loads_every_note(site_notes):
    assert len(site_notes) == 40
    assert sorted(Counter(site_notes.sites).values()) == sorted(SITE_SIZES)
    assert len(set(site_notes.sites)) == 13
    assert site_notes.summary.rows_read == 40 and site_notes.summary.dropped == {}
    assert all(1 <= len(cs) <= 3 for cs in site_notes.codes)
    assert site_notes.codes[:2] == [("I10", "J18.9"), ("E11.9", "N18.3")]


def test_multi_line_quoted_texts_are_kept_whole(site_notes):
    text = site_notes.texts[1]
    assert text.startswith('Report 2: patient seen on ward 1, "stable" on arrival.\n')
    assert text.endswith("\nPlan: follow-up in clinic, review medication.")
    assert all(t.count("\n") >= 2 for t in site_notes.texts)


def test_every_other_column_is_an_attribute(site_notes):
    attrs = site_notes.attributes
    assert list(attrs) == ["Hospital site", "Patient sex", "Age group"]
    assert attrs["Hospital site"] == site_notes.sites
    assert attrs["Patient sex"][:3] == ["F", "M", ""]  # an empty cell is "", not dropped
    assert attrs["Age group"][:2] == ["40-49", "50-59"]


def test_same_corpus_through_a_config_dict(tmp_path):
    from fedicd.config import config_from_dict

    path = write_small_site_corpus(tmp_path)
    cfg = config_from_dict({"data": {**SITE_CORPUS, "path": str(path)}})
    assert len(load_notes(cfg.data)) == 40


def test_attributes_follow_subset_filter_splits_and_disk(site_notes, tmp_path):
    sub = site_notes.subset([3, 0])
    assert sub.attributes["Patient sex"] == [site_notes.attributes["Patient sex"][i] for i in (3, 0)]
    filtered = filter_rare_codes(site_notes, min_count=10)
    kept = [site_notes.ids.index(i) for i in filtered.ids]
    assert filtered.attributes["Age group"] == [site_notes.attributes["Age group"][i] for i in kept]
    assert with_splits(site_notes, seed=0).attributes == site_notes.attributes
    back = CodedNotes.load(site_notes.save(tmp_path / "notes.jsonl.gz"))
    assert back.attributes == site_notes.attributes and back.sites == site_notes.sites


def test_attribute_lengths_are_checked():
    with pytest.raises(ShapeError, match="attribute 'ward' has 1 entries but there are 2 ids"):
        CodedNotes(ids=["a", "b"], texts=["x", "y"], codes=[("I10",)] * 2, icd_version=[10, 10],
                   attributes={"ward": ["1"]})
    with pytest.raises(ShapeError, match="attribute 'ward' must hold strings"):
        CodedNotes(ids=["a"], texts=["x"], codes=[("I10",)], icd_version=[10], attributes={"ward": [1]})


def test_jsonl_attribute_values_become_strings(table_writer):
    records = [{"text": "a", "codes": "I10", "age": 71, "flags": ["x", "y"], "ward": "3 "},
               {"text": "b", "codes": "I10", "age": None}]
    notes = load_tabular(table_writer("t.jsonl", records), **COLUMNS)
    assert notes.attributes == {"age": ["71", ""], "flags": ['["x", "y"]', ""], "ward": ["3 ", ""]}


def test_no_other_column_gives_no_attributes(table_writer):
    assert load_tabular(table_writer("t.csv", [{"text": "a", "codes": "I10"}]), **COLUMNS).attributes is None


def test_synthetic_notes_carry_their_site_as_attribute():
    notes = load_notes(DataConfig(n_notes=30, n_sites=3, n_codes=40))
    assert notes.attributes == {"site": notes.sites}


# ------------------------------------------------------------ nothing to load
@pytest.mark.parametrize("name, body", [("h.csv", "text,codes\n"), ("h.tsv", "text\tcodes\n"),
                                        ("h.jsonl", "\n\n")])
def test_header_only_file_says_it_holds_no_rows(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(DataFormatError, match=rf"file {re.escape(str(path))}: holds no rows: nothing to load"):
        load_tabular(path, **COLUMNS)


@pytest.mark.parametrize("name", ["e.csv", "e.jsonl"])
def test_all_rows_dropped_gives_the_count_per_reason(table_writer, name):
    records = [{"text": " ", "codes": "I10"}, {"text": "", "codes": "I10"}, {"text": "ok", "codes": ""}]
    path = table_writer(name, records)
    with pytest.raises(DataFormatError, match=rf"{re.escape(name)}: all 3 rows were dropped "
                                              r"\(empty_text=2, no_codes=1\); nothing to load"):
        load_tabular(path, **COLUMNS)


def test_empty_file_has_no_header(tmp_path):
    path = tmp_path / "z.csv"
    path.write_text("")
    with pytest.raises(DataFormatError, match=r"z\.csv: file is empty: no header row"):
        load_tabular(path, **COLUMNS)


def test_codiesp_and_mimic_refuse_an_empty_result(write_mimic, mimic_tables):
    from fedicd.data.mimic import load_mimic

    mimic_tables["diagnoses"] = mimic_tables["diagnoses"].iloc[0:0]
    root = write_mimic(mimic_tables)
    with pytest.raises(DataFormatError, match=r"all 8 notes were dropped \(.*no_codes=6.*\); nothing to load"):
        load_mimic(root, min_per_client=0)


# ------------------------------------------------------------ malformed tables
def test_row_with_too_many_fields_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,codes\nfine,I10\nPain, fever,I10\n")
    with pytest.raises(DataFormatError, match=r"r\.csv, row 2: has 3 fields but the header has 2 columns "
                                              r"\(ends at line 3; is a text with the delimiter"):
        load_tabular(path, **COLUMNS)


def test_row_with_too_few_fields_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("text,codes\nfirst line\nsecond line,I10\n")
    with pytest.raises(DataFormatError, match=r"r\.csv, row 1: has 1 fields but the header has 2 columns"):
        load_tabular(path, **COLUMNS)


def test_unterminated_quote_is_refused(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,codes\n"never closed,I10\n')
    with pytest.raises(DataFormatError, match=r"q\.csv: malformed table near line"):
        load_tabular(path, **COLUMNS)


@pytest.mark.parametrize("header, problem", [("text,codes,codes", r"repeated column names \['codes'\]"),
                                             ("text,,codes", r"an empty column name \(column 2\)")])
def test_bad_header_is_refused(tmp_path, header, problem):
    path = tmp_path / "b.csv"
    path.write_text(f"{header}\na,b,I10\n")
    with pytest.raises(DataFormatError, match=rf"b\.csv: the header row has {problem}"):
        load_tabular(path, **COLUMNS)


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("text,codes\nfièvre,I10\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"l\.csv: not UTF-8 text .*save the file as UTF-8"):
        load_tabular(path, **COLUMNS)


def test_byte_order_mark_and_gzip_are_read(tmp_path):
    path = tmp_path / "bom.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8-sig") as fh:
        fh.write('Report Text,ICD-10 codes\n"two\nlines",I10\n')
    notes = load_tabular(path, text_column="Report Text", codes_column="ICD-10 codes")
    assert notes.texts == ["two\nlines"]


def test_column_differing_in_spaces_is_suggested(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("Report Text ,codes\na,I10\n")
    with pytest.raises(MissingColumnError, match=r"missing required column 'Report Text'.*did you mean "
                                                 r"'Report Text '"):
        load_tabular(path, text_column="Report Text", codes_column="codes")


def test_one_column_cannot_play_two_roles(table_writer):
    with pytest.raises(ConfigError, match=r"column\(s\) \['codes'\] given for more than one"):
        load_tabular(table_writer("t.csv", [{"text": "a", "codes": "I10"}]), text_column="text",
                     codes_column="codes", site_column="codes")


def test_wrong_delimiter_gets_a_hint(table_writer):
    with pytest.raises(DataFormatError, match=r"code 'I10;E11.9' in column 'codes' \(codes are split on ','"):
        load_tabular(table_writer("t.csv", [{"text": "a", "codes": "I10;E11.9"}]), **COLUMNS)


# ------------------------------------------------------------ normalisation is reported
def test_tabular_normalisation_is_counted_with_examples(table_writer):
    records = [{"text": "a", "codes": "R201, k80.2, I10"}, {"text": "b", "codes": "R201,i10 "}]
    notes = load_tabular(table_writer("t.csv", records), **COLUMNS)
    assert notes.codes == [("R20.1", "K80.2", "I10"), ("R20.1", "I10")]
    info = notes.summary.info
    assert (info["codes_normalised"], info["codes_normalised_distinct"]) == (4, 3)
    assert info["codes_normalised_examples"] == {"R201": "R20.1", "k80.2": "K80.2", "i10": "I10"}
    assert "codes_normalised=4" in notes.summary.describe()
    assert "R201->R20.1" in notes.summary.describe()
    assert json.loads(json.dumps(notes.summary.to_dict()))["info"] == info


def test_normalisation_examples_are_capped_but_the_count_is_not(table_writer):
    records = [{"text": f"t{i}", "codes": f"I{10 + i}0"} for i in range(30)]
    info = load_tabular(table_writer("t.csv", records), **COLUMNS).summary.info
    assert info["codes_normalised"] == 30 and len(info["codes_normalised_examples"]) == 20
    assert "+15 more in the saved summary" in _describe(info)


def _describe(info: dict) -> str:
    return LoadSummary(source="s", info=info).describe()


def test_canonical_codes_are_not_counted(table_writer):
    info = load_tabular(table_writer("t.csv", [{"text": "a", "codes": "I10, E11.9"}]), **COLUMNS).summary.info
    assert info["codes_normalised"] == 0 and info["codes_normalised_examples"] == {}
    assert "codes_normalised_examples" not in _describe(info)


def test_mimic_normalisation_is_counted(mimic_root):
    from fedicd.data.mimic import load_mimic

    info = load_mimic(mimic_root, icd_version=9, min_per_client=0).summary.info
    assert info["codes_normalised"] == 7  # 4280 (x3), E8497, V1582, 4019 (x2): stored without the point
    assert info["codes_normalised_examples"]["4280"] == "428.0"
    assert info["codes_normalised_examples"]["E8497"] == "E849.7"


def test_codiesp_normalisation_is_counted(codiesp_root):
    from fedicd.data.codiesp import load_codiesp

    info = load_codiesp(codiesp_root).summary.info
    assert info["codes_normalised_distinct"] == 2557  # every distinct code is stored lower case
    assert all(raw.upper() == canon for raw, canon in info["codes_normalised_examples"].items())
