"""Code-description initialisation of the chunk-sequence heads (federated rows and the central initialiser)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from fedicd.config import config_from_dict
from fedicd.embedding import EmbedConfig
from fedicd.errors import ConfigError
from fedicd.federated.model import seeded_model
from fedicd.sequences import pack
from fedicd.train_config import TrainConfig
from fedicd.warm_start import WarmStartConfig
from fedicd.warm_start.central import central_initialiser
from fedicd.warm_start.descriptions import DescribedLabels
from fedicd.warm_start.zero_shot import apply_descriptions
from tests.embedding.fakes import FakeEncoder

DIM, N_LABELS = 24, 6
WS = WarmStartConfig(init="descriptions", scale=8.0, margin=0.2)
HEADS = {"label_attention": TrainConfig(head="label_attention", hidden=(16,), dropout=0.0, seed=0),
         "multires_cnn": TrainConfig(head="multires_cnn", hidden=(48,), kernel_sizes=(1, 3), dropout=0.0, seed=0)}


def _described(missing: tuple[int, ...] = ()) -> DescribedLabels:
    vectors = np.random.default_rng(1).normal(size=(N_LABELS, DIM)).astype(np.float32)
    described = np.array([j not in missing for j in range(N_LABELS)])
    vectors[~described] = 0
    labels = [f"C{j}" for j in range(N_LABELS)]
    return DescribedLabels(labels=labels, texts={c: c for c, d in zip(labels, described) if d},
                           missing=[c for c, d in zip(labels, described) if not d], vectors=vectors,
                           described=described)


def _one_chunk(x: np.ndarray) -> torch.Tensor:
    """Notes of one chunk each, packed: ``[n, 1, 1 + d]``."""
    t = torch.as_tensor(x, dtype=torch.float32)[:, None, :]
    return pack(t, torch.ones(t.shape[:2], dtype=torch.bool))


@pytest.mark.parametrize("input_norm", ["none", "l2"])
def test_a_one_chunk_note_scores_exactly_as_the_linear_zero_shot_coder(input_norm) -> None:
    labels = _described(missing=(2,))
    linear = TrainConfig(head="linear", dropout=0.0, input_norm=input_norm, seed=0)
    attend = TrainConfig(head="label_attention", hidden=(16,), dropout=0.0, input_norm=input_norm, seed=0)
    a, b = seeded_model(linear, DIM, N_LABELS), seeded_model(attend, DIM, N_LABELS)
    apply_descriptions(a, linear, labels, WS)
    apply_descriptions(b, attend, labels, WS)
    x = np.random.default_rng(3).normal(size=(10, DIM))
    with torch.no_grad():
        expected, got = a.eval()(torch.as_tensor(x, dtype=torch.float32)), b.eval()(_one_chunk(x))
    described = torch.as_tensor(labels.described)
    torch.testing.assert_close(got[:, described], expected[:, described], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_undescribed_labels_keep_their_seeded_rows_and_are_listed(head, caplog) -> None:
    train = HEADS[head]
    before, model = seeded_model(train, DIM, N_LABELS), seeded_model(train, DIM, N_LABELS)
    info = apply_descriptions(model, train, _described(missing=(1, 4)), WS)
    assert info["described"] == 4 and info["labels"] == N_LABELS and info["missing"] == ["C1", "C4"]
    for name in ("attention.weight", "out.weight", "out.bias"):
        old, new = before.state_dict()[name], model.state_dict()[name]
        assert torch.equal(old[[1, 4]], new[[1, 4]]) and not torch.equal(old[[0, 2, 3, 5]], new[[0, 2, 3, 5]])
    rest = [k for k in before.state_dict() if not k.startswith(("attention.", "out."))]
    assert rest and all(torch.equal(before.state_dict()[k], model.state_dict()[k]) for k in rest)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_the_chunk_resembling_a_code_gets_that_codes_attention(head) -> None:
    """A note of noise chunks plus one near-copy of description l: code l attends mostly to that chunk."""
    train, labels = HEADS[head], _described()
    model = seeded_model(train, DIM, N_LABELS).eval()
    apply_descriptions(model, train, labels, WS)
    rng = np.random.default_rng(5)
    for code in range(N_LABELS):
        chunks = rng.normal(size=(4, DIM))
        chunks[2] = labels.vectors[code] + 0.1 * rng.normal(size=DIM)
        x, mask = torch.as_tensor(chunks[None], dtype=torch.float32), torch.ones(1, 4, dtype=torch.bool)
        with torch.no_grad():
            scored = model.project(model.inp(x)) if head == "label_attention" else model.features(x, mask)
            weights = torch.softmax(model.attention(scored)[0, :, code], dim=0)
        assert weights.argmax().item() == 2 and weights[2] > 1.5 / 4  # well above uniform attention


def test_multires_rows_are_the_scaled_unit_conv_features_of_the_descriptions() -> None:
    train, labels = HEADS["multires_cnn"], _described()
    model = seeded_model(train, DIM, N_LABELS).eval()
    info = apply_descriptions(model, train, labels, WS)
    width = 48 * 2
    assert info["query_scale"] == pytest.approx(WS.scale / width ** 0.5)
    with torch.no_grad():
        r = model.features(torch.as_tensor(labels.vectors[:, None, :]), torch.ones(N_LABELS, 1, dtype=torch.bool))[:, 0]
        logits = model(_one_chunk(labels.vectors))
    unit = r / r.norm(dim=1, keepdim=True)
    torch.testing.assert_close(model.out.weight, info["query_scale"] * unit)
    torch.testing.assert_close(model.attention.weight, model.out.weight)
    # a description read as a one-chunk note: logit τ·(‖r‖/√(F·K) − c)
    torch.testing.assert_close(logits.diagonal(), WS.scale * (r.norm(dim=1) / width ** 0.5 - WS.margin))


def test_label_attention_queries_are_scaled_unit_projections() -> None:
    train, labels = HEADS["label_attention"], _described()
    model = seeded_model(train, DIM, N_LABELS)
    with torch.no_grad():
        z = torch.tanh(model.proj(torch.as_tensor(labels.vectors)))
    info = apply_descriptions(model, train, labels, WS)
    assert info["query_scale"] == pytest.approx(WS.scale / 4.0)  # τ/√d_a, d_a = 16
    torch.testing.assert_close(model.attention.weight, WS.scale / 4.0 * z / z.norm(dim=1, keepdim=True))


# --- the central initialiser ----------------------------------------------------------------------------------

LABELS = ["E11.9", "I10", "J18.9", "N18.3", "0DTJ4ZZ"]
TEXTS = {"E11.9": "Type 2 diabetes mellitus without complications", "I10": "Essential (primary) hypertension",
         "J18.9": "Pneumonia, unspecified organism", "N18.3": "Chronic kidney disease, stage 3 (moderate)"}


@pytest.fixture(autouse=True)
def catalogue(monkeypatch) -> None:
    """The catalogue's descriptions of LABELS (parsing the ICD-10-CM XML takes ~10 s; tests/test_warm_start.py
    reads the real one)."""
    monkeypatch.setattr("fedicd.warm_start.descriptions.describe_code", lambda code, kind="icd10": TEXTS.get(code))


@pytest.fixture
def fake_config(tmp_path: Path) -> EmbedConfig:
    model_dir = tmp_path / "fake-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "fake"}')
    return EmbedConfig(model=str(model_dir), device="cpu", chunk_overlap=4, model_language="en")


def _cfg(fake_config: EmbedConfig, tmp_path: Path, head: str, **warm_start):
    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    return config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                             "train": {"head": head, "dropout": 0.0, **({"hidden": [8]} if head != "linear" else {})},
                             "warm_start": warm_start})


@pytest.mark.parametrize("head", ["label_attention", "multires_cnn", "linear"])
def test_central_initialiser_writes_the_descriptions_and_reports_the_missing(head, fake_config, tmp_path,
                                                                               caplog) -> None:
    cfg = _cfg(fake_config, tmp_path, head, init="descriptions")
    scaler = StandardScaler().fit(np.random.default_rng(0).normal(size=(40, 8)))
    with caplog.at_level(logging.WARNING, logger="fedicd.warm_start.descriptions"):
        initialise = central_initialiser(cfg, scaler, LABELS, encoder=FakeEncoder(fake_config))
    assert "1 of 5 labels have no public description" in caplog.text
    model = seeded_model(cfg.train, 8, len(LABELS))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = initialise(model)
    assert record["method"] == "descriptions" and record["described"] == 4 and record["labels"] == 5
    assert record["missing"] == ["0DTJ4ZZ"]
    assert torch.equal(before["out.weight"][4], model.state_dict()["out.weight"][4])
    assert not torch.equal(before["out.weight"][:4], model.state_dict()["out.weight"][:4])


def test_central_initialiser_refusals(fake_config, tmp_path) -> None:
    scaler = StandardScaler().fit(np.zeros((3, 8)) + np.arange(3)[:, None])
    assert central_initialiser(_cfg(fake_config, tmp_path, "label_attention"), scaler, LABELS) is None
    public = _cfg(fake_config, tmp_path, "label_attention", init="descriptions", public_config="public.toml")
    with pytest.raises(ConfigError, match="public_config = 'public.toml' pre-trains federated runs only"):
        central_initialiser(public, scaler, LABELS)
    with pytest.raises(ConfigError, match="head 'mlp' has a non-linear hidden layer"):
        central_initialiser(_cfg(fake_config, tmp_path, "mlp", init="descriptions"), scaler, LABELS)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_a_staged_federated_sequence_run_starts_from_the_descriptions(head, fake_config, tmp_path) -> None:
    """Federated staging: chunk-sequence features, a scaler fitted on chunk rows, round-0 model and zero-shot scores."""
    from fedicd.data.labels import fit_binarizer, save_binarizer
    from fedicd.federated.data import stage_arrays
    from fedicd.federated.model import INITIAL_MODEL, initial_arrays
    from fedicd.partition import iid_partition
    from fedicd.scaling import save_scaler
    from fedicd.sequences import ChunkSequences
    from fedicd.warm_start.stage import stage_warm_start

    rng, run = np.random.default_rng(0), tmp_path / "run"
    sizes = {"train": 30, "val": 12, "test": 12}
    feats = {p: ChunkSequences.from_lists([rng.normal(size=(int(rng.integers(1, 4)), 8)) for _ in range(n)])
             for p, n in sizes.items()}
    labels = {p: (rng.random((n, len(LABELS))) < 0.3).astype(np.float32) for p, n in sizes.items()}
    stage_arrays(run, feats, labels, iid_partition([()] * 30, 3, seed=0), iid_partition([()] * 12, 3, seed=1),
                 head=head)
    save_binarizer(fit_binarizer([LABELS]), run / "labels.json")
    save_scaler(StandardScaler().fit(feats["train"].chunks), run / "scaler.npz")
    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    cfg = config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                            "train": {"mode": "federated", "head": head, "hidden": [16], "dropout": 0.0},
                            "federated": {"rounds": 1, "engine": "inprocess"}, "partition": {"n_clients": 3},
                            "warm_start": {"init": "descriptions"}})
    record = stage_warm_start(cfg, run, input_dim=8, encoder=FakeEncoder(fake_config))
    assert record["descriptions"]["missing"] == ["0DTJ4ZZ"] and record["descriptions"]["described"] == 4
    assert record["zero_shot"]["test"]["n_notes"] == 12
    seeded = initial_arrays(cfg.train, 8, len(LABELS))
    with np.load(run / INITIAL_MODEL) as saved:
        for name in ("attention.weight", "out.weight"):  # 0DTJ4ZZ sorts first: row 0 keeps its seeded values
            np.testing.assert_array_equal(saved[name][0], seeded[name][0])
            assert not np.array_equal(saved[name][1:], seeded[name][1:])
