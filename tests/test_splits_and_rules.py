"""Label rules, splits and folds in prepare_data: one-line refusals before any embedding, sizes reported, folds."""

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedicd.prepare as prepare
from fedicd.config import config_from_dict
from fedicd.data.notes import CodedNotes, LoadSummary
from fedicd.data.splits import EmptySplitError, fold_assignment, kfold_split, stratified_split
from fedicd.errors import ConfigError, DataFormatError
from fedicd.experiment import run_experiment
from fedicd.prepare import prepare_data


def _save(tmp_path, codes, name="notes.jsonl.gz"):
    n = len(codes)
    notes = CodedNotes(ids=[f"n{i}" for i in range(n)], texts=[f"text {i}" for i in range(n)],
                       codes=[tuple(cs) for cs in codes], icd_version=[10] * n)
    return notes.save(tmp_path / name)


def _cfg(path, seed=0, **data):
    return config_from_dict({"seed": seed, "data": {"source": "notes", "path": str(path), **data}})


def _rare_corpus(tmp_path):
    """40 notes over 37 codes (A00..A36): one code per note, the first three codes twice."""
    return _save(tmp_path, [[f"A{i % 37:02d}"] for i in range(40)])


@pytest.fixture
def no_embedding(monkeypatch):
    """Fail the test if anything is embedded."""
    def refuse(*args, **kwargs):
        raise AssertionError("embedding must not start")
    monkeypatch.setattr(prepare, "embed_texts", refuse)


def test_paper_rule_that_removes_every_code_names_rule_threshold_and_counts(tmp_path, no_embedding):
    with pytest.raises(ConfigError) as err:
        prepare_data(_cfg(_rare_corpus(tmp_path), min_per_client=1))
    assert str(err.value) == ("data.min_per_client=1 × data.n_clients=20 keeps codes with >= 20 notes; it removed all "
                              "37 codes and left 0 of 40 notes — lower data.min_per_client (or data.n_clients) or "
                              "set it to 0")


def test_paper_rule_after_roll_up_says_so(tmp_path, no_embedding):
    path = _save(tmp_path, [[f"A0{i % 3}.{i % 2}"] for i in range(12)])  # 6 codes, 3 categories, 4 notes each
    with pytest.raises(ConfigError, match=r"data.n_clients=5 keeps codes with >= 5 notes; it removed all 3 codes and "
                                          r"left 0 of 12 notes \(after rolling codes up to data.granularity = "
                                          r"'category': 6 codes → 3\)"):
        prepare_data(_cfg(path, min_per_client=1, n_clients=5, granularity="category"))


def test_min_train_count_that_removes_every_code(tmp_path, no_embedding):
    path = _save(tmp_path, [[f"A{i % 30:02d}"] for i in range(60)])  # every code on 2 notes
    with pytest.raises(ConfigError, match=r"^data.min_train_count=5 keeps codes with >= 5 training notes; it "
                                          r"removed all 30 codes seen in the \d+ training notes — lower "
                                          r"data.min_train_count"):
        prepare_data(_cfg(path, min_train_count=5))


def test_empty_corpus_and_corpus_without_codes_are_refused(tmp_path, monkeypatch, no_embedding):
    path = _save(tmp_path, [["A01"]] * 5)
    empty = CodedNotes(ids=[], texts=[], codes=[], icd_version=[], summary=LoadSummary(source=str(path)))
    monkeypatch.setattr(prepare, "load_notes", lambda cfg, seed: empty)
    with pytest.raises(DataFormatError, match=r"^data.source = 'notes' \(data.path = .*\) gave no notes"):
        prepare_data(_cfg(path))
    uncoded = CodedNotes(ids=["a", "b", "c"], texts=["x", "y", "z"], codes=[(), (), ()], icd_version=[10] * 3)
    monkeypatch.setattr(prepare, "load_notes", lambda cfg, seed: uncoded)
    with pytest.raises(DataFormatError, match="none of the 3 notes from data.source = 'notes' .* carries a code"):
        prepare_data(_cfg(path))


def test_empty_split_names_the_split_its_size_and_why(tmp_path, no_embedding):
    path = _save(tmp_path, [[f"A{i:02d}"] for i in range(6)])
    with pytest.raises(ConfigError, match=r"^data.split = 'stratified' with data.fractions = \[0.9, 0.05, 0.05\] on "
                                          r"the 6 notes left after the label rules: the test split is empty \(train/"
                                          r"val/test = 5/1/0 of 6 notes; 6 notes × 0.05 = 0.30 expected in test\)"):
        prepare_data(_cfg(path, fractions=[0.9, 0.05, 0.05]))


def test_too_few_notes_for_a_split(tmp_path, no_embedding):
    path = _save(tmp_path, [["A01"], ["A02"]])
    with pytest.raises(ConfigError, match="data.split = 'stratified' .* on the 2 notes left after the label rules: "
                                          "it needs at least 3 notes"):
        prepare_data(_cfg(path))


def test_stratification_that_leaves_val_empty_is_redrawn_at_random(tmp_path, caplog):
    """The 40-note, 37-code corpus: iterative stratification alone gave val 0 notes (then StandardScaler's error)."""
    with caplog.at_level(logging.WARNING):
        data = prepare_data(_cfg(_rare_corpus(tmp_path)))
    sizes = [len(data.parts[p]) for p in ("train", "val", "test")]
    assert min(sizes) >= 1 and sum(sizes) == 40
    assert "left one side of a 3-note cut empty" in caplog.text


def test_small_splits_are_reported_and_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="fedicd.prepare"):
        data = prepare_data(_cfg(_rare_corpus(tmp_path)))
    info = data.label_info
    for p in ("train", "val", "test"):
        assert info[f"{p}_notes"] == len(data.parts[p])
        assert info[f"{p}_codes"] == int((data.labels[p].sum(axis=0) > 0).sum())
    assert info["split"] == "stratified" and info["notes_loaded"] == 40
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith(f"the test split has only {info['test_notes']} note(s) (fewer than 10)") for m in warnings)
    assert any(r.levelno == logging.INFO and r.getMessage().startswith("split stratified: train ")
               for r in caplog.records)


def test_kfold_split_in_prepare_data_records_the_fold(tmp_path):
    path = _rare_corpus(tmp_path)
    tests = []
    for k in range(4):
        data = prepare_data(_cfg(path, split="kfold", n_folds=4, fold=k))
        assert data.label_info["fold"] == k and data.label_info["n_folds"] == 4 and data.label_info["split"] == "kfold"
        assert sorted(np.concatenate(list(data.parts.values())).tolist()) == list(range(40))
        tests.append(set(data.parts["test"].tolist()))
    assert set().union(*tests) == set(range(40)) and sum(len(t) for t in tests) == 40


def test_fold_keys_are_checked():
    with pytest.raises(ConfigError, match=r"data.fold must be an integer in 0..2 \(data.n_folds = 3\), got 3"):
        config_from_dict({"data": {"split": "kfold", "n_folds": 3, "fold": 3}})
    with pytest.raises(ConfigError, match="data.n_folds / data.fold apply to data.split = 'kfold' only"):
        config_from_dict({"data": {"fold": 1}})
    assert config_from_dict({"data": {"split": "kfold"}}).data.n_folds == 5


@settings(deadline=None, max_examples=30)
@given(n=st.integers(6, 60), n_codes=st.integers(1, 8), n_folds=st.integers(2, 5), seed=st.integers(0, 10_000),
       density=st.floats(0.05, 0.9))
def test_folds_are_disjoint_and_cover_every_note_once(n, n_codes, n_folds, seed, density):
    y = (np.random.default_rng(seed).random((n, n_codes)) < density).astype(int)
    folds = fold_assignment(y, n_folds=n_folds, seed=seed)
    assert folds.min() >= 0 and set(folds.tolist()) <= set(range(n_folds))
    tests = []
    for k in range(n_folds):
        try:
            parts = kfold_split(y, n_folds=n_folds, fold=k, val_fraction=0.2, seed=seed)
        except EmptySplitError:  # tiny folds: refused by name, never returned empty
            continue
        assert np.array_equal(parts["test"], np.flatnonzero(folds == k))
        assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(n))
        tests.append(parts["test"])
    all_tests = np.concatenate([np.flatnonzero(folds == k) for k in range(n_folds)])
    assert sorted(all_tests.tolist()) == list(range(n))  # every note is test in exactly one fold


def test_stratified_split_raises_instead_of_returning_an_empty_part():
    y = np.eye(4, dtype=int)
    with pytest.raises(EmptySplitError, match=r"the test split is empty \(train/val/test = 3/1/0 of 4 notes; "
                                              r"4 notes × 0.1 = 0.40 expected in test\)"):
        stratified_split(y, fractions=(0.8, 0.1, 0.1), seed=0)


def test_central_run_refuses_partition_rule_keys(tmp_path, no_embedding):
    cfg = config_from_dict({"data": {"source": "notes", "path": str(_rare_corpus(tmp_path))},
                            "partition": {"min_per_client": 2, "drop_infeasible": True}})
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"^partition.min_per_client = 2 and partition.drop_infeasible = true apply "
                                          r"to federated runs \(train.mode = 'federated'\) and `fedicd partition`; "
                                          r"this run is central"):
        run_experiment(cfg, out)
    assert not out.exists()


def test_official_split_with_too_few_training_notes(tmp_path, no_embedding):
    notes = CodedNotes(ids=["a", "b", "c"], texts=["x", "y", "z"], codes=[("A01",)] * 3, icd_version=[10] * 3,
                       splits=["train", "test", "test"])
    path = notes.save(tmp_path / "n.jsonl.gz")
    with pytest.raises(ConfigError, match=r"^data.split = 'official': 1 notes are in data.train_parts = \['train'\]; "
                                          r"holding out a validation share needs at least 2"):
        prepare_data(_cfg(path, split="official"))
