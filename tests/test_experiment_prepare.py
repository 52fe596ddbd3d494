"""prepare_data / embed_parts: official and stratified splits, label space and scaler fitted on train only."""

from types import SimpleNamespace

import numpy as np
import pytest

import fedicd.prepare as prepare
from fedicd.config import config_from_dict
from fedicd.data.notes import CodedNotes
from fedicd.prepare import embed_parts, prepare_data
from fedicd.sequences import ChunkSequences, ChunksMissingError


def _notes(tmp_path):
    codes, splits = [], []
    for i in range(60):
        split = "train" if i < 36 else "val" if i < 48 else "test"
        cs = ["A01", "B02"] if i % 3 == 0 else ["A01"] if i % 3 == 1 else ["C03.1"]
        if split == "test" and i % 4 == 0:
            cs = cs + ["Z99.9"]  # a code only test notes carry
        if split == "train" and i == 1:
            cs = cs + ["R50.9"]  # a code with a single training note
        codes.append(tuple(cs))
        splits.append(split)
    notes = CodedNotes(ids=[f"n{i}" for i in range(60)], texts=[f"text {i}" for i in range(60)], codes=codes,
                       icd_version=[10] * 60, splits=splits)
    return notes.save(tmp_path / "notes.jsonl.gz")


def _cfg(path, **data):
    return config_from_dict({"seed": 1, "data": {"source": "notes", "path": str(path), "split": "official", **data}})


def test_official_split_uses_given_parts_and_train_only_label_space(tmp_path):
    data = prepare_data(_cfg(_notes(tmp_path)))
    ids = {p: [data.notes.ids[i] for i in idx] for p, idx in data.parts.items()}
    assert ids["train"] == [f"n{i}" for i in range(36)] and ids["test"] == [f"n{i}" for i in range(48, 60)]
    assert "Z99.9" not in data.binarizer.classes_ and "R50.9" in data.binarizer.classes_
    assert data.label_info["test_code_occurrences_outside_label_space"] == 3


def test_val_carved_from_train_parts_only_and_min_train_count(tmp_path):
    data = prepare_data(_cfg(_notes(tmp_path), train_parts=["train", "val"], val_fraction=0.25, min_train_count=2))
    train, val, test = (set(data.parts[p].tolist()) for p in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val == set(range(48)) and test == set(range(48, 60))
    assert abs(len(val) - 12) <= 1
    assert "R50.9" not in data.binarizer.classes_  # one training note < min_train_count=2


def test_stratified_split_and_paper_rule(tmp_path):
    data = prepare_data(_cfg(_notes(tmp_path), split="stratified", min_per_client=2, n_clients=10))
    assert sorted(np.concatenate(list(data.parts.values())).tolist()) == list(range(len(data.notes)))
    assert set(data.binarizer.classes_) <= {"A01", "B02", "C03.1"}  # Z99.9 (3 notes), R50.9 (1) < 20
    assert data.notes.summary.info["min_code_count"] == 20


def test_granularity_rolls_codes_up(tmp_path):
    data = prepare_data(_cfg(_notes(tmp_path), granularity="category"))
    assert "C03" in data.binarizer.classes_ and "C03.1" not in data.binarizer.classes_


def test_scaler_is_fitted_on_training_vectors_only(tmp_path, monkeypatch):
    cfg = _cfg(_notes(tmp_path))
    data = prepare_data(cfg)
    vectors = np.arange(60 * 3, dtype=np.float32).reshape(60, 3) ** 1.5
    fake = SimpleNamespace(vectors=vectors, model_id="fake", dim=3, n_chunked=0, n_chunks=60, n_cached=0,
                           n_reembedded=0, n_corrupt=0, cache_problems=[], language_check={})
    monkeypatch.setattr(prepare, "embed_texts", lambda texts, *a, **k: fake)
    feats, info, scaler = embed_parts(data, cfg)
    np.testing.assert_allclose(scaler.mean_, vectors[data.parts["train"]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(feats["train"].mean(axis=0), 0.0, atol=1e-5)
    assert abs(feats["test"].mean()) > 1.0  # test vectors are not re-centred on themselves


def test_official_split_without_split_column_is_an_error(tmp_path):
    notes = CodedNotes(ids=["a", "b", "c"], texts=["x", "y", "z"], codes=[("A01",)] * 3, icd_version=[10] * 3)
    path = notes.save(tmp_path / "n.jsonl.gz")
    with pytest.raises(ValueError, match="gave no split column"):
        prepare_data(_cfg(path))


def _sequences(n: int = 60, dim: int = 3) -> ChunkSequences:
    lengths = 1 + np.arange(n) % 3  # 1, 2, 3 chunks per note
    rows = np.arange(int(lengths.sum()) * dim, dtype=np.float32).reshape(-1, dim)
    return ChunkSequences(np.sqrt(rows) * (1 + rows % 7), np.concatenate([[0], np.cumsum(lengths)]))


def _fake_embedding(monkeypatch, sequences, calls):
    def fake(texts, *args, keep_chunks=False, **kwargs):
        calls.append(keep_chunks)
        vectors = sequences.mean_pooled()
        return SimpleNamespace(vectors=vectors, sequences=sequences if keep_chunks else None, model_id="fake",
                               dim=vectors.shape[1], n_chunked=0, n_chunks=0, n_cached=0, n_reembedded=0,
                               n_corrupt=0, cache_problems=[], language_check={})
    monkeypatch.setattr(prepare, "embed_texts", fake)


def test_sequence_head_gets_chunk_sequences_scaled_by_training_chunk_rows(tmp_path, monkeypatch):
    cfg = config_from_dict({"seed": 1, "train": {"head": "label_attention"},
                            "data": {"source": "notes", "path": str(_notes(tmp_path)), "split": "official"}})
    data, sequences, calls = prepare_data(cfg), _sequences(), []
    _fake_embedding(monkeypatch, sequences, calls)

    feats, info, scaler = embed_parts(data, cfg)

    train_rows = sequences.take(data.parts["train"]).chunks.astype(np.float64)
    assert calls == [True] and all(isinstance(x, ChunkSequences) for x in feats.values())
    np.testing.assert_allclose(scaler.mean_, train_rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, train_rows.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(feats["train"].chunks.mean(axis=0), 0.0, atol=1e-5)
    test_rows = sequences.take(data.parts["test"]).chunks
    np.testing.assert_allclose(feats["test"].chunks, (test_rows - scaler.mean_) / scaler.scale_, rtol=1e-5)
    assert feats["test"].lengths.tolist() == sequences.lengths[data.parts["test"]].tolist()
    assert info["sequences"]["train"] == {"notes": 36, "chunks": 72, "max_length": 3, "mean_length": 2.0,
                                          "bytes": 72 * 3 * 4 + 37 * 8}


def test_embedding_noise_applies_to_every_chunk_before_the_scaler(tmp_path, monkeypatch):
    cfg = config_from_dict({"seed": 7, "train": {"head": "multires_cnn"}, "privacy": {"embedding_noise": 0.5},
                            "data": {"source": "notes", "path": str(_notes(tmp_path)), "split": "official"}})
    data, sequences = prepare_data(cfg), _sequences()
    _fake_embedding(monkeypatch, sequences, [])

    feats, info, scaler = embed_parts(data, cfg)

    noisy = prepare.noise_embeddings(sequences.chunks, 0.5, seed=7)
    restored = feats["val"].chunks * scaler.scale_ + scaler.mean_
    expected = ChunkSequences(noisy, sequences.offsets).take(data.parts["val"]).chunks
    np.testing.assert_allclose(restored, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(expected, sequences.take(data.parts["val"]).chunks, atol=0.1)
    train_noisy = ChunkSequences(noisy, sequences.offsets).take(data.parts["train"]).chunks
    np.testing.assert_allclose(scaler.mean_, train_noisy.astype(np.float64).mean(axis=0), rtol=1e-10)
    assert info["embedding_noise"] == 0.5


def test_pooled_head_embeds_without_chunks(tmp_path, monkeypatch):
    cfg = _cfg(_notes(tmp_path))
    calls = []
    _fake_embedding(monkeypatch, _sequences(), calls)
    feats, info, _ = embed_parts(prepare_data(cfg), cfg)
    assert calls == [False] and feats["train"].shape == (36, 3) and "sequences" not in info


def test_sequence_head_without_chunks_from_the_embedder_names_the_problem(tmp_path, monkeypatch):
    cfg = config_from_dict({"seed": 1, "train": {"head": "label_attention"},
                            "data": {"source": "notes", "path": str(_notes(tmp_path)), "split": "official"}})
    data = prepare_data(cfg)
    monkeypatch.setattr(prepare, "embed_texts", lambda *a, **k: SimpleNamespace(
        vectors=np.zeros((60, 3), np.float32), sequences=None, model_id="fake", dim=3, n_chunked=0, n_chunks=0,
        n_cached=0, n_reembedded=0, n_corrupt=0, cache_problems=[], language_check={}))
    with pytest.raises(ChunksMissingError, match="returned no chunk sequences"):
        embed_parts(data, cfg)
