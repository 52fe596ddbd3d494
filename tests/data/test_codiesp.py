from collections import Counter

import pytest

from fedicd.data.codiesp import load_codiesp, load_codiesp_background
from fedicd.errors import DataFormatError


def test_official_counts(codiesp_root):
    notes = load_codiesp(codiesp_root, language="en", codes="diagnosis")
    assert len(notes) == 1000
    assert len(notes.code_counts()) == 2557
    assert Counter(notes.splits) == {"train": 500, "val": 250, "test": 250}
    assert sum(1 for n in notes.code_counts().values() if n >= 10) == 229
    assert all(c == c.upper() for cs in notes.codes for c in cs)
    assert notes.summary.n_dropped == 0


def test_spanish_and_procedures(codiesp_root):
    es = load_codiesp(codiesp_root, language="es", codes="both")
    assert len(es) == 1000
    assert any(len(c) in (4, 7) and "." not in c for cs in es.codes for c in cs)  # ICD-10-PCS present
    proc = load_codiesp(codiesp_root, codes="procedure")
    assert len(proc) + proc.summary.dropped["no_codes"] == 1000


def test_background_texts(codiesp_root):
    ids, texts = load_codiesp_background(codiesp_root)
    assert len(ids) == len(texts) == 2751 and all(t.strip() for t in texts)


def _layout(root, code="r50.9"):
    for split in ("train", "dev", "test"):
        d = root / split / "text_files_en"
        d.mkdir(parents=True)
        (d / f"{split}-1.txt").write_text(f"fever case in {split}")
        (d / f"{split}-2.txt").write_text("an uncoded case")
        (root / split / f"{split}D.tsv").write_text(f"{split}-1\t{code}\n{split}-1\tI10\n")
    return root


def test_small_layout_and_errors(tmp_path):
    notes = load_codiesp(_layout(tmp_path / "ok"))
    assert notes.ids == ["train-1", "dev-1", "test-1"] and notes.splits == ["train", "val", "test"]
    assert notes.codes[0] == ("R50.9", "I10") and notes.summary.dropped == {"no_codes": 3}
    with pytest.raises(DataFormatError, match=r"trainD.tsv, row 1: malformed ICD-10 diagnosis code 'xx'"):
        load_codiesp(_layout(tmp_path / "bad", "xx"))
    with pytest.raises(FileNotFoundError, match="CodiEsp split folder not found"):
        load_codiesp(tmp_path / "nothing")
    with pytest.raises(ValueError, match="language must be one of"):
        load_codiesp(tmp_path / "ok", language="fr")
