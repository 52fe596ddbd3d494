import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.data.notes import CodedNotes, LoadSummary, unique_codes
from fedicd.errors import DataFormatError, ShapeError

_text = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())
_codes = st.lists(st.sampled_from(["I10", "E11.9", "J18.9", "N18.3", "Z99.2"]), max_size=4, unique=True).map(tuple)


@settings(deadline=None, max_examples=25)
@given(st.lists(st.tuples(_text, _codes, st.sampled_from([9, 10]), st.sampled_from(["train", "val", "test"])),
                min_size=1, max_size=15))
def test_save_load_round_trip(tmp_path_factory, rows):
    notes = CodedNotes(ids=[f"id{i}" for i in range(len(rows))], texts=[r[0] for r in rows],
                       codes=[r[1] for r in rows], icd_version=[r[2] for r in rows],
                       splits=[r[3] for r in rows], summary=LoadSummary(source="t", rows_read=len(rows),
                                                                        dropped={"empty_text": 2}))
    path = notes.save(tmp_path_factory.mktemp("n") / "notes.jsonl.gz")
    back = CodedNotes.load(path)
    assert (back.ids, back.texts, back.codes, back.icd_version, back.splits, back.sites) == \
        (notes.ids, notes.texts, notes.codes, notes.icd_version, notes.splits, None)
    assert back.summary.to_dict() == notes.summary.to_dict()


def test_invalid_notes_raise_naming_the_problem(tiny_notes):
    with pytest.raises(DataFormatError, match=r"duplicate note ids: \['a'\]"):
        CodedNotes(ids=["a", "a"], texts=["x", "y"], codes=[(), ()], icd_version=[10, 10])
    with pytest.raises(DataFormatError, match="row 2: note 'b' has empty text"):
        CodedNotes(ids=["a", "b"], texts=["x", "  "], codes=[(), ()], icd_version=[10, 10])
    with pytest.raises(ShapeError, match="column 'codes' has 1 entries but there are 2 ids"):
        CodedNotes(ids=["a", "b"], texts=["x", "y"], codes=[()], icd_version=[10, 10])
    with pytest.raises(DataFormatError, match="unknown split names"):
        CodedNotes(ids=["a"], texts=["x"], codes=[()], icd_version=[10], splits=["dev"])


def test_subset_code_counts_and_unique_codes(tiny_notes):
    sub = tiny_notes.subset([2, 0])
    assert sub.ids == ["n2", "n0"] and sub.codes == [("J18.9", "I10"), ("I10", "E11.9")]
    assert tiny_notes.code_counts()["I10"] == 4
    assert unique_codes(["B", "A", "B", "C", "A"]) == ("B", "A", "C")


def test_load_reports_bad_json_line(tmp_path):
    import gzip
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"id": "a", "text": "x", "codes": [], "icd_version": 10}\n{"id": "b", "text":\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl.gz, row 2: invalid JSON"):
        CodedNotes.load(path)
    with pytest.raises(FileNotFoundError, match="notes file not found"):
        CodedNotes.load(tmp_path / "missing.jsonl.gz")
