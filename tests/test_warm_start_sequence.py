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
from tests.test_warm_start import _hand_built

DIM, N_LABELS = 24, 6
WS = WarmStartConfig(init="descriptions", scale=8.0, margin=0.2)
DH, DA = 32, 16  # label_attention: value layer, attention projection
HEADS = {"label_attention": TrainConfig(head="label_attention", hidden=(DH, DA), dropout=0.0, seed=0),
         "multires_cnn": TrainConfig(head="multires_cnn", hidden=(48,), kernel_sizes=(1, 3), dropout=0.0, seed=0)}


def _described(missing: tuple[int, ...] = (), dim: int = DIM) -> DescribedLabels:
    return _hand_built(N_LABELS, dim, missing)


def _one_chunk(x: np.ndarray) -> torch.Tensor:
    """Notes of one chunk each, packed: ``[n, 1, 1 + d]``."""
    t = torch.as_tensor(x, dtype=torch.float32)[:, None, :]
    return pack(t, torch.ones(t.shape[:2], dtype=torch.bool))


def _values(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """``h(x) = ReLU(W_h inp(x) + b_h)`` under the model's value layer, computed by hand."""
    with torch.no_grad():
        x = model.inp(torch.as_tensor(x, dtype=torch.float32))
        return torch.relu(x @ model.value.weight.T + model.value.bias)


@pytest.mark.parametrize("input_norm", ["none", "l2"])
def test_a_one_chunk_notes_logit_is_the_scaled_dot_product_of_value_vectors(input_norm) -> None:
    """T = 1: ``logit_l = (τ/√d_h)·⟨h(x), h(s_l)⟩/‖h(s_l)‖ − τ·c`` for every described label; the value layer is the
    seeded one, untouched."""
    labels = _described(missing=(2,))
    train = TrainConfig(head="label_attention", hidden=(DH, DA), dropout=0.0, input_norm=input_norm, seed=0)
    model = seeded_model(train, DIM, N_LABELS)
    seeded_value = model.value.weight.clone()
    apply_descriptions(model, train, labels, WS)
    assert torch.equal(model.value.weight, seeded_value)
    x = np.random.default_rng(3).normal(size=(10, DIM))
    h_note, h_code = _values(model, x), _values(model, labels.vectors[labels.described])
    expected = WS.scale / DH ** 0.5 * h_note @ (h_code / h_code.norm(dim=1, keepdim=True)).T - WS.scale * WS.margin
    with torch.no_grad():
        got = model.eval()(_one_chunk(x))
    torch.testing.assert_close(got[:, torch.as_tensor(labels.described)], expected, rtol=1e-5, atol=1e-5)
    # a description read as a one-chunk note scores τ·(‖h(s_l)‖/√d_h − c)
    with torch.no_grad():
        own = model(_one_chunk(labels.vectors[labels.described]))[:, torch.as_tensor(labels.described)].diagonal()
    torch.testing.assert_close(own, WS.scale * (h_code.norm(dim=1) / DH ** 0.5 - WS.margin), rtol=1e-5, atol=1e-5)


def test_a_description_with_no_active_hidden_unit_keeps_its_rows_and_is_reported(caplog) -> None:
    """A rank-one value layer ``W_h = u aᵀ`` (u > 0, no bias): descriptions with ``⟨a, s⟩ < 0`` have ``h = 0``."""
    train, labels = HEADS["label_attention"], _described(missing=(1,))
    model = seeded_model(train, DIM, N_LABELS)
    a = torch.as_tensor(labels.vectors[0])
    with torch.no_grad():
        model.value.weight.copy_((torch.rand(DH, 1) + 0.1) * a[None, :])
        model.value.bias.zero_()
    signs = np.sign(labels.vectors @ a.numpy())
    signs[signs == 0] = 1
    labels.vectors[:] *= signs[:, None]  # every description now has ⟨a, s⟩ > 0 ...
    labels.vectors[[3, 5]] *= -1  # ... but codes 3 and 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="fedicd.warm_start.zero_shot"):
        info = apply_descriptions(model, train, labels, WS)
    assert info["no_active_hidden_unit"] == ["C3", "C5"] and info["missing"] == ["C1", "C3", "C5"]
    assert info["described"] == 3 and "2 of 5 described labels have no active hidden unit" in caplog.text
    assert "['C3', 'C5']" in caplog.text
    for name in ("attention.weight", "out.weight", "out.bias"):
        old, new = before[name], model.state_dict()[name]
        assert torch.equal(old[[1, 3, 5]], new[[1, 3, 5]]) and not torch.equal(old[[0, 2, 4]], new[[0, 2, 4]])


def test_every_description_active_reports_an_empty_list(caplog) -> None:
    train = HEADS["label_attention"]
    with caplog.at_level(logging.WARNING, logger="fedicd.warm_start.zero_shot"):
        info = apply_descriptions(seeded_model(train, DIM, N_LABELS), train, _described(), WS)
    assert info["no_active_hidden_unit"] == [] and info["described"] == N_LABELS and info["missing"] == []
    assert "no active hidden unit" not in caplog.text


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
    """A note of noise chunks plus one near-copy of description l: code l attends mostly to that chunk.

    label_attention at d = 128, widths [128, 64]: its value vectors are non-negative (ReLU), so unrelated chunks'
    ``Z`` share a common direction and the attention is less peaked at tiny widths (d = 24, [32, 16]: the matching
    chunk won 41 of 50 sampled notes); at these widths it won all 50 (at d = 384 and the default [512, 256] its
    weight was ≥ 0.45, uniform being 0.25)."""
    dim, train = (128, TrainConfig(head=head, hidden=(128, 64), dropout=0.0, seed=0)) if head == "label_attention" \
        else (DIM, HEADS[head])
    labels = _described(dim=dim)
    model = seeded_model(train, dim, N_LABELS).eval()
    apply_descriptions(model, train, labels, WS)
    rng = np.random.default_rng(5)
    for code in range(N_LABELS):
        chunks = rng.normal(size=(4, dim))
        chunks[2] = labels.vectors[code] + 0.1 * rng.normal(size=dim)
        x, mask = torch.as_tensor(chunks[None], dtype=torch.float32), torch.ones(1, 4, dtype=torch.bool)
        with torch.no_grad():
            scored = model.project(model.values(model.inp(x))) if head == "label_attention" else \
                model.features(x, mask)
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


def test_label_attention_queries_and_rows_are_scaled_unit_value_features() -> None:
    """``U_l = (τ/√d_a)·Z(h_l)/‖Z(h_l)‖``, ``β_l = (τ/√d_h)·h_l/‖h_l‖``, bias ``−τ·c``, with ``h_l = h(s_l)``."""
    train, labels = HEADS["label_attention"], _described()
    model = seeded_model(train, DIM, N_LABELS)
    h = _values(model, labels.vectors)
    with torch.no_grad():
        z = torch.tanh(h @ model.proj.weight.T + model.proj.bias)
    info = apply_descriptions(model, train, labels, WS)
    assert info["query_scale"] == pytest.approx(WS.scale / 4.0)  # τ/√d_a, d_a = 16
    torch.testing.assert_close(model.attention.weight, WS.scale / 4.0 * z / z.norm(dim=1, keepdim=True))
    torch.testing.assert_close(model.out.weight, WS.scale / DH ** 0.5 * h / h.norm(dim=1, keepdim=True))
    torch.testing.assert_close(model.out.bias, torch.full((N_LABELS,), -WS.scale * WS.margin))


# --- the central initialiser ----------------------------------------------------------------------------------

LABELS = ["E11.9", "I10", "J18.9", "N18.3", "0DTJ4ZZ"]
TEXTS = {"E11.9": "Type 2 diabetes mellitus without complications", "I10": "Essential (primary) hypertension",
         "J18.9": "Pneumonia, unspecified organism", "N18.3": "Chronic kidney disease, stage 3 (moderate)"}


@pytest.fixture(autouse=True)
def catalogue(monkeypatch) -> None:
    """The catalogue's descriptions of LABELS (parsing the ICD-10-CM XML takes ~10 s; tests/test_warm_start.py
    reads the real one)."""
    monkeypatch.setattr("fedicd.warm_start.descriptions.describe_code", lambda code, kind="icd10": TEXTS.get(code))




_HIDDEN = {"label_attention": {"hidden": [16, 8]}, "multires_cnn": {"hidden": [8]}}


def _cfg(fake_config: EmbedConfig, tmp_path: Path, head: str, **warm_start):
    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    return config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                             "train": {"head": head, "dropout": 0.0, **_HIDDEN.get(head, {})},
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
    mlb = fit_binarizer([LABELS])
    stage_arrays(run, feats, labels, iid_partition([()] * 30, 3, seed=0), iid_partition([()] * 12, 3, seed=1),
                 head=head, label_codes=mlb.classes_)
    save_binarizer(mlb, run / "labels.json")
    save_scaler(StandardScaler().fit(feats["train"].chunks), run / "scaler.npz")
    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    cfg = config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                            "train": {"mode": "federated", "head": head, "dropout": 0.0,
                                      "hidden": [16, 16] if head == "label_attention" else [16]},
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
