import numpy as np
import pytest

from fedicd.data.labels import (
    filter_rare_codes,
    fit_binarizer,
    load_binarizer,
    roll_up,
    roll_up_notes,
    save_binarizer,
    transform_codes,
)


def test_filter_rare_codes_counts_drops(tiny_notes):
    out = filter_rare_codes(tiny_notes, min_count=2)
    # counts: I10 4, E11.9 2, J18.9 2, N18.3 1 → N18.3 removed, no note left empty
    assert out.codes[5] == ("I10",) and len(out) == 6
    out = filter_rare_codes(tiny_notes, min_count=3)
    assert out.ids == ["n0", "n1", "n2", "n5"]
    assert all(cs == ("I10",) for cs in out.codes)
    assert out.summary.dropped["no_codes_after_filter"] == 2
    assert out.summary.info["codes_before"] == 4 and out.summary.info["codes_kept"] == 1
    with pytest.raises(ValueError, match="min_count must be >= 1"):
        filter_rare_codes(tiny_notes, min_count=0)


@pytest.mark.parametrize("code, version, granularity, expected", [
    ("I50.22", 10, "category", "I50"), ("I50.22", 10, "chapter", "chapter-9"), ("E11.9", 10, "chapter", "chapter-4"),
    ("428.0", 9, "category", "428"), ("428.0", 9, "chapter", "chapter-390-459"),
    ("V15.82", 9, "chapter", "chapter-V01-V91"), ("J18.9", 10, "full", "J18.9"),
])
def test_roll_up(code, version, granularity, expected):
    assert roll_up(code, version, granularity) == expected


def test_roll_up_notes_merges_duplicates(tiny_notes):
    out = roll_up_notes(tiny_notes, "chapter")
    assert out.codes[5] == ("chapter-9", "chapter-14")
    assert tiny_notes.codes[5] == ("I10", "N18.3")  # original untouched
    with pytest.raises(ValueError, match="not in the catalogue"):
        roll_up("U99.1", 10, "chapter")


def test_binarizer_fitted_on_train_only_and_round_trips(tmp_path):
    mlb = fit_binarizer([["I10", "E11.9"], ["J18.9"]])
    y, unseen = transform_codes(mlb, [["I10", "Z99.2"], ["E11.9"]])
    assert list(mlb.classes_) == ["E11.9", "I10", "J18.9"]
    np.testing.assert_array_equal(y, [[0, 1, 0], [1, 0, 0]])
    assert unseen == 1 and y.dtype == np.float32
    save_binarizer(mlb, tmp_path / "labels.json")
    assert list(load_binarizer(tmp_path / "labels.json").classes_) == list(mlb.classes_)
    with pytest.raises(ValueError, match="carry no codes"):
        fit_binarizer([[], []])
