"""Central training, scoring and the central run on chunk sequences (fedicd.train, fedicd.experiment).

A small test-local chunk-sequence head (``ToyAttention``: label-wise softmax attention over a note's chunks,
reading the packed batch through :func:`fedicd.sequences.unpack`) stands in for the registry's "label_attention",
so these tests check the loops, not a head under construction; one test runs the registered heads themselves.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler
from torch import nn

import fedicd.train as train_module
from fedicd.data.labels import load_binarizer
from fedicd.errors import ConfigError, ShapeError
from fedicd.heads import HEADS, SEQUENCE_HEADS, count_parameters
from fedicd.sequences import ChunkSequences, ChunksMissingError, unpack
from fedicd.train import TrainConfig, eval_slices, predict_logits, predict_proba, train_central

from tests.corpora import FREE_CORPUS, write_free_label_corpus

DIM, N_LABELS = 6, 4


class ToyAttention(nn.Module):
    """Per-label softmax attention over the real chunks, then a per-label dot product (a tiny LAAT)."""

    def __init__(self, input_dim: int, n_labels: int, **_: object) -> None:
        super().__init__()
        self.query = nn.Linear(input_dim, n_labels)
        self.out = nn.Linear(input_dim, n_labels)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x, mask = unpack(batch)
        scores = self.query(x).masked_fill(~mask[..., None], float("-inf"))  # [B, T, L]
        context = torch.einsum("btl,btd->bld", torch.softmax(scores, dim=1), x)
        return (context * self.out.weight).sum(-1) + self.out.bias


@pytest.fixture
def toy_head(monkeypatch):
    """"label_attention" is ToyAttention for the test (the registry restored afterwards)."""
    monkeypatch.setitem(HEADS, "label_attention", ToyAttention)
    return "label_attention"


def chunk_task(n: int, seed: int, max_len: int = 5) -> tuple[ChunkSequences, np.ndarray]:
    """Notes of 1..max_len chunks; label j is set when some chunk's feature j exceeds 1 (learnable by attention)."""
    rng = np.random.default_rng(seed)
    notes = [rng.normal(size=(int(rng.integers(1, max_len + 1)), DIM)).astype(np.float32) for _ in range(n)]
    y = np.stack([(note[:, :N_LABELS] > 1.0).any(axis=0) for note in notes]).astype(np.float32)
    return ChunkSequences.from_lists(notes), y


def toy_config(**changes) -> TrainConfig:
    base = {"head": "label_attention", "epochs": 12, "batch_size": 16, "lr": 2e-2, "dropout": 0.0, "seed": 3}
    return TrainConfig(**{**base, **changes})


def test_training_on_chunk_sequences_lowers_the_loss_and_scores_like_one_padded_forward(toy_head) -> None:
    x, y = chunk_task(80, seed=0)
    xv, yv = chunk_task(30, seed=1)
    result = train_central(x, y, toy_config(), x_val=xv, y_val=yv)
    losses = [row["train_loss"] for row in result.history]
    assert len(losses) == 12 and losses[-1] < 0.8 * losses[0]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    model = result.model.eval()
    with torch.no_grad():
        padded = xv[np.arange(len(xv))]  # every note in one batch, padded to the longest
        manual = torch.sigmoid(model(padded)).numpy()
        manual_loss = float(toy_config().loss()(model(padded), torch.as_tensor(yv)))
    np.testing.assert_allclose(predict_proba(model, xv), manual, rtol=1e-5, atol=1e-6)
    assert result.history[-1]["val_loss"] == pytest.approx(manual_loss, rel=1e-5)
    assert result.init_info is None


def test_scoring_does_not_depend_on_the_batches(toy_head, monkeypatch) -> None:
    x, y = chunk_task(40, seed=2, max_len=7)
    model = train_central(x, y, toy_config(epochs=2)).model
    one = predict_proba(model, x, batch_size=1)
    np.testing.assert_allclose(predict_proba(model, x, batch_size=4096), one, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(train_module, "SEQUENCE_EVAL_CHUNKS", 8)  # batches cut by padded chunk rows
    assert len(eval_slices(x, 4096)) > 5
    np.testing.assert_allclose(predict_proba(model, x, batch_size=4096), one, rtol=1e-5, atol=1e-6)
    assert predict_logits(model, x).shape == (40, N_LABELS)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=1, max_size=40), st.integers(1, 12), st.integers(1, 30))
def test_eval_slices_cover_every_note_once_within_both_limits(lengths, batch_size, budget) -> None:
    x = ChunkSequences(np.zeros((sum(lengths), 2), np.float32), np.concatenate([[0], np.cumsum(lengths)]))
    original = train_module.SEQUENCE_EVAL_CHUNKS
    train_module.SEQUENCE_EVAL_CHUNKS = budget
    try:
        slices = eval_slices(x, batch_size)
    finally:
        train_module.SEQUENCE_EVAL_CHUNKS = original
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(len(lengths)))
    for s in slices:
        count, longest = s.stop - s.start, max(lengths[s])
        assert count <= batch_size and (count == 1 or count * longest <= budget)
    pooled = eval_slices(np.zeros((len(lengths), 2)), batch_size)
    assert [s.stop - s.start for s in pooled[:-1]] == [batch_size] * (len(pooled) - 1)


def test_bad_chunk_inputs_are_named(toy_head) -> None:
    x, y = chunk_task(10, seed=4)
    with pytest.raises(ShapeError, match=r"train: features \(10, 6\) and labels \(9, 4\)"):
        train_central(x, y[:9], toy_config(epochs=1))
    x.chunks[0, 0] = np.nan  # corrupted after construction
    with pytest.raises(ShapeError, match="train: features contain 1 NaN/Inf"):
        train_central(x, y, toy_config(epochs=1))
    with pytest.raises(ShapeError, match="labels must be 0/1"):
        train_central(chunk_task(10, seed=5)[0], y * 2, toy_config(epochs=1))
    with pytest.raises(ChunksMissingError, match=r"train.head = 'label_attention' reads chunk sequences, but the "
                                                  r"training features given to train_central holds"):
        train_central(chunk_task(10, seed=5)[0].mean_pooled(), y, toy_config(epochs=1))


def test_initialise_runs_on_the_seeded_head_before_training_and_its_record_is_kept(toy_head) -> None:
    x, y = chunk_task(30, seed=6)
    cfg = toy_config(epochs=1, lr=1e-6)
    seen = {}

    def initialise(model: nn.Module) -> dict:
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        with torch.no_grad():
            model.out.bias.fill_(-3.0)
        return {"method": "descriptions", "described": 3}

    result = train_central(x, y, cfg, initialise=initialise)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.resolved_seed)
        seeded = cfg.build(DIM, N_LABELS).state_dict()
    assert all(torch.equal(seen[k], seeded[k]) for k in seeded)
    assert result.init_info == {"method": "descriptions", "described": 3}
    np.testing.assert_allclose(result.model.out.bias.detach().numpy(), -3.0, atol=1e-4)  # lr 1e-6: kept


def test_the_registered_sequence_heads_train_and_score_batch_independently() -> None:
    assert set(SEQUENCE_HEADS) <= set(HEADS)
    x, y = chunk_task(40, seed=7)
    for head in SEQUENCE_HEADS:
        hidden = (8, 8) if head == "label_attention" else (8,)  # label_attention: value layer, attention projection
        result = train_central(x, y, TrainConfig(head=head, hidden=hidden, epochs=3, batch_size=8, seed=1))
        assert all(np.isfinite(row["train_loss"]) for row in result.history)
        np.testing.assert_allclose(predict_proba(result.model, x, batch_size=1),
                                   predict_proba(result.model, x, batch_size=4096), rtol=1e-4, atol=1e-5)


# --- the central run ---------------------------------------------------------------------------------------

RAW: dict[str, ChunkSequences] = {}  # the last _chunked_features' unscaled chunks, per split


def _chunked_features(data, cfg):
    """embed_parts as a chunk-sequence run gets it: scaled ChunkSequences per split (random chunks)."""
    rng = np.random.default_rng(0)
    raw = {p: ChunkSequences.from_lists([rng.normal(size=(int(rng.integers(1, 4)), DIM)) for _ in idx])
           for p, idx in data.parts.items()}
    RAW.update(raw)
    scaler = StandardScaler().fit(raw["train"].chunks)
    return {p: s.map_chunks(scaler.transform) for p, s in raw.items()}, {"dim": DIM}, scaler


def _central_cfg(tmp_path, **warm_start):
    from fedicd.config import config_from_dict

    corpus = write_free_label_corpus(tmp_path)  # tabular notes with 3 free labels: no ICD catalogue to load
    return config_from_dict({"cache_dir": str(tmp_path / "cache"), "warm_start": warm_start,
                             "data": {**FREE_CORPUS, "path": str(corpus)},
                             "train": {"head": "label_attention", "epochs": 2, "dropout": 0.0}})


def test_a_central_sequence_run_records_its_model_and_its_warm_start(toy_head, tmp_path, monkeypatch) -> None:
    import fedicd.experiment as experiment

    monkeypatch.setattr(experiment, "embed_parts", _chunked_features)
    calls = []

    def central_initialiser(cfg, scaler, labels):
        calls.append((cfg.warm_start.init, scaler.mean_.shape, len(labels)))
        return lambda model: {"method": "descriptions", "described": len(labels) - 1, "missing": [labels[0]]}

    fake = types.ModuleType("fedicd.warm_start.central")
    fake.central_initialiser = central_initialiser
    monkeypatch.setitem(sys.modules, "fedicd.warm_start.central", fake)
    results = experiment.run_experiment(_central_cfg(tmp_path, init="descriptions"), tmp_path / "run")
    labels = list(load_binarizer(tmp_path / "run" / "labels.json").classes_)
    n_labels = len(labels)
    assert calls == [("descriptions", (DIM,), n_labels)]
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    expected_params = count_parameters(ToyAttention(DIM, n_labels))
    assert results["model"] == {"head": "label_attention", "parameters": expected_params,
                                "parameter_bytes": 4 * sum(v.numel() for v in model["state_dict"].values())}
    assert results["warm_start"] == {"method": "descriptions", "described": n_labels - 1, "missing": [labels[0]]}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["model"] == results["model"] and model["input_dim"] == DIM


def test_a_central_run_without_warm_start_records_random_and_refuses_a_public_corpus(toy_head, tmp_path,
                                                                                      monkeypatch) -> None:
    import fedicd.experiment as experiment

    monkeypatch.setattr(experiment, "embed_parts", _chunked_features)
    results = experiment.run_experiment(_central_cfg(tmp_path), tmp_path / "plain")
    assert results["warm_start"] == {"method": "random"} and results["model"]["head"] == "label_attention"
    import fedicd.evaluate as evaluate

    def embed_texts(texts, config, *, cache_dir=None, progress=True, encoder=None, keep_chunks=False):
        assert keep_chunks and len(texts) == len(RAW["test"])
        return types.SimpleNamespace(vectors=RAW["test"].mean_pooled(), sequences=RAW["test"])

    monkeypatch.setattr(evaluate, "embed_texts", embed_texts)
    rescored = evaluate.evaluate_run(tmp_path / "plain")  # re-embedded chunks through the saved scaler
    assert json.dumps(rescored, sort_keys=True) == json.dumps(results["test"], sort_keys=True)  # NaN == NaN
    public = tmp_path / "public.toml"
    public.write_text('[data]\nsource = "synthetic"\n')
    with pytest.raises(ConfigError, match=r"\[warm_start\] \(public\) warm-starts federated runs .* this run is "
                                          r"central .*unset warm_start.public_config"):
        experiment.run_experiment(_central_cfg(tmp_path, public_config=str(public)), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    def pooled_features(data, cfg):
        feats, info, scaler = _chunked_features(data, cfg)
        return {p: s.mean_pooled() for p, s in feats.items()}, info, scaler

    monkeypatch.setattr(experiment, "embed_parts", pooled_features)
    with pytest.raises(ChunksMissingError, match=r"but the embedded training notes \(fedicd.prepare.embed_parts\) "
                                                  r"holds one pooled vector"):
        experiment.run_experiment(_central_cfg(tmp_path), tmp_path / "pooled")


def test_public_pretraining_reads_chunk_sequences_for_a_sequence_head(toy_head, monkeypatch) -> None:
    import fedicd.warm_start.pretrain as pretrain
    from fedicd.config import config_from_dict

    raw, _ = chunk_task(5, seed=8)
    scaler = StandardScaler().fit(raw.chunks)
    asked = []

    def embed_texts(texts, config, *, cache_dir=None, progress=True, encoder=None, keep_chunks=False):
        asked.append(keep_chunks)
        return types.SimpleNamespace(vectors=raw.mean_pooled(), sequences=raw)

    monkeypatch.setattr(pretrain, "embed_texts", embed_texts)
    texts = [f"note {i}" for i in range(5)]
    x = pretrain._public_features(texts, config_from_dict({"train": {"head": toy_head}}), scaler, None)
    np.testing.assert_allclose(x.chunks, scaler.transform(raw.chunks), rtol=1e-6)
    np.testing.assert_array_equal(x.offsets, raw.offsets)
    pooled = pretrain._public_features(texts, config_from_dict({"train": {"head": "linear"}}), scaler, None)
    np.testing.assert_allclose(pooled, scaler.transform(raw.mean_pooled()), rtol=1e-6)
    assert asked == [True, False]
