"""The zero-shot retrieval coder: exact cosines, chunk-max scoring, undescribed codes, validation-only choices."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedicd.warm_start.descriptions as descriptions
from fedicd.config import config_from_dict
from fedicd.embedding import EmbedConfig
from fedicd.errors import ConfigError
from fedicd.retrieval import (cosine_probabilities, cosine_scores, identity_scaler, retrieval_metrics, unit_rows,
                              zero_shot_coder)
from fedicd.sequences import ChunkSequences
from tests.corpora import SITE_CORPUS, write_small_site_corpus
from tests.embedding.fakes import FakeEncoder

DESC = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])


def test_cosines_are_exact_and_rank_codes() -> None:
    notes = np.array([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    cos = cosine_scores(notes, DESC)
    np.testing.assert_allclose(cos, [[0.6, 0.8, 0.0], [0.0, 0.0, -1.0]], atol=1e-12)
    assert list(np.argsort(-cos[0])) == [1, 0, 2]
    probs = cosine_probabilities(cos, np.array([True, True, False]))
    np.testing.assert_allclose(probs, [[0.8, 0.9, 0.0], [0.5, 0.5, 0.0]], atol=1e-12)


def test_chunk_max_finds_the_passage_that_the_mean_dilutes() -> None:
    # one chunk names code 0 exactly; two others lean towards code 1 and cancel in their third coordinate
    note = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.8, 0.6, 0.0], [0.0, 0.8, -0.6, 0.0]])
    seqs = ChunkSequences.from_lists([note, np.array([[0.0, 0.0, 0.0, 1.0]])])
    by_chunk = cosine_scores(seqs, DESC)
    by_mean = cosine_scores(seqs.mean_pooled(), DESC)
    np.testing.assert_allclose(by_chunk[0], [1.0, 0.8, 0.0], atol=1e-12)
    assert by_chunk[0].argmax() == 0 and by_mean[0].argmax() == 1
    np.testing.assert_allclose(by_chunk[1], [0.0, 0.0, 1.0], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=6), st.integers(0, 10_000))
def test_chunk_scores_are_each_notes_own_maximum(lengths: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    per_note = [rng.standard_normal((n, 4)) for n in lengths]
    cos = cosine_scores(ChunkSequences.from_lists(per_note), DESC)
    for i, chunks in enumerate(per_note):
        np.testing.assert_allclose(cos[i], (unit_rows(chunks) @ unit_rows(DESC).T).max(axis=0), atol=1e-5)


def test_identity_scaler_returns_its_input() -> None:
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(identity_scaler(3).transform(x), x)


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Notes that point at their one true code (with noise) and their labels."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, n)
    notes = DESC[codes] / np.linalg.norm(DESC[codes], axis=1, keepdims=True) + 0.3 * rng.standard_normal((n, 4))
    y = np.zeros((n, 3), dtype=np.int8)
    y[np.arange(n), codes] = 1
    return notes, y


def test_undescribed_codes_are_never_predicted_and_the_space_is_chosen_on_validation() -> None:
    (xv, yv), (xt, yt), (_, ytr) = _split(60, 1), _split(60, 2), _split(60, 3)
    described = np.array([True, True, False])
    good = ({"val": xv, "test": xt}, DESC)
    bad = ({"val": -xv, "test": xt}, DESC)  # wrong on validation only
    labels = {"train": ytr, "val": yv, "test": yt}
    out = retrieval_metrics({"raw": bad, "scaled": good}, described, labels)
    assert out["space"] == "scaled"
    assert out["selection"]["scaled"]["micro_f1"] > out["selection"]["raw"]["micro_f1"]
    flipped = retrieval_metrics({"raw": bad, "scaled": good}, described, {**labels, "test": 1 - yt})
    assert flipped["space"] == "scaled"  # the test labels never choose
    # code 2 has no description: its probability is 0, so it is never predicted and its recall is 0
    assert out["test"]["micro_recall"] <= (yt[:, :2].sum() / yt.sum()) + 1e-12
    assert out["test"]["threshold"] > 0




def _cfg(fake_config: EmbedConfig, tmp_path: Path):
    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    data = {**SITE_CORPUS, "path": str(write_small_site_corpus(tmp_path)), "min_train_count": 1}
    return config_from_dict({"name": "zs", "cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                             "data": data})


@pytest.fixture
def catalogue(monkeypatch):
    """Descriptions without the 100k-code catalogue (slow to parse): every code but I10 and J18.9 has one."""
    monkeypatch.setattr(descriptions, "describe_code", lambda code, kind="icd10": None if code in {"J18.9", "I10"}
                        else f"finding recorded as code {code} in the chart")


def test_zero_shot_coder_lists_codes_without_a_description(fake_config, tmp_path, catalogue) -> None:
    out = zero_shot_coder(_cfg(fake_config, tmp_path), encoder=FakeEncoder(fake_config))
    assert out["descriptions"]["missing"] == ["I10", "J18.9"]  # in label order
    assert out["descriptions"]["described"] == out["descriptions"]["labels"] - 2 == 6
    assert out["model"] == {"head": "zero_shot_pooled", "parameters": 0, "parameter_bytes": 0}
    assert out["coder"]["space"] in out["coder"]["selection"] and set(out["coder"]["selection"]) == {"raw", "scaled"}
    chosen = out["coder"]["selection"][out["coder"]["space"]]["micro_f1"]
    assert chosen == max(s["micro_f1"] for s in out["coder"]["selection"].values()) == out["val"]["micro_f1"]
    assert {"r_precision", "map", "rare_macro_f1", "p_at_8", "p_at_15"} <= set(out["test"])


def test_zero_shot_coder_refuses_unknown_settings(fake_config, tmp_path) -> None:
    cfg = _cfg(fake_config, tmp_path)
    with pytest.raises(ConfigError, match="notes = 'sentences'"):
        zero_shot_coder(cfg, notes="sentences")
    with pytest.raises(ConfigError, match="spaces"):
        zero_shot_coder(cfg, spaces=("whitened",))


def test_zero_shot_coder_on_chunk_sequences(fake_config, tmp_path, catalogue) -> None:
    cfg = _cfg(fake_config, tmp_path)
    out = zero_shot_coder(cfg, notes="chunks", encoder=FakeEncoder(fake_config), spaces=("raw",))
    assert out["coder"] == {**out["coder"], "notes": "chunks", "space": "raw"}
    assert out["embedding"]["chunks"] >= out["labels"]["train_notes"] + out["labels"]["val_notes"]
    assert out["model"]["head"] == "zero_shot_chunks"
