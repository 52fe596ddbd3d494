import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.data.splits import (
    holdout_split,
    repeated_splits,
    stratified_split,
    with_splits,
)
from fedicd.errors import ShapeError


@settings(deadline=None, max_examples=25)
@given(st.integers(20, 200), st.integers(1, 12), st.integers(0, 10_000))
def test_every_row_in_exactly_one_part_and_deterministic(n, n_labels, seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) > 0.7).astype(int)
    parts = stratified_split(y, seed=seed)
    allidx = np.concatenate([parts["train"], parts["val"], parts["test"]])
    assert sorted(allidx.tolist()) == list(range(n))
    again = stratified_split(y, seed=seed)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_proportions_and_label_balance():
    rng = np.random.default_rng(0)
    y = (rng.random((2000, 20)) < np.linspace(0.02, 0.4, 20)).astype(int)
    parts = stratified_split(y, seed=3)
    assert abs(len(parts["train"]) / 2000 - 0.7) < 0.01 and abs(len(parts["test"]) / 2000 - 0.15) < 0.01
    share = {"train": 0.7, "val": 0.15, "test": 0.15}
    for name, idx in parts.items():  # rare labels: positives shared out to within 2 notes of the fraction
        expected = share[name] * y[:, :5].sum(0)
        assert np.abs(y[idx, :5].sum(0) - expected).max() <= 2
        assert np.abs(y[idx].mean(0) - y.mean(0)).mean() < 0.01


def test_repeated_splits_differ_and_independent_of_global_rng():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 5)) > 0.6).astype(int)
    np.random.seed(0)
    first = repeated_splits(y, n_repeats=3, seed=5)
    np.random.seed(99)
    second = repeated_splits(y, n_repeats=3, seed=5)
    assert all(np.array_equal(a["test"], b["test"]) for a, b in zip(first, second))
    assert not np.array_equal(first[0]["test"], first[1]["test"])


def test_holdout_and_with_splits(tiny_notes):
    y = np.eye(4, dtype=int).repeat(10, axis=0)
    keep, held = holdout_split(y, fraction=0.25, seed=0)
    assert abs(len(held) - 10) <= 1 and sorted([*keep, *held]) == list(range(40))
    out = with_splits(tiny_notes, seed=0)
    assert sorted(set(out.splits)) <= ["test", "train", "val"] and tiny_notes.splits is None


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(np.ones((10, 2)), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ShapeError, match="2-D binary matrix"):
        stratified_split(np.ones(10))
