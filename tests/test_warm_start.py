"""Public warm starts: ICD descriptions, the zero-shot coder, and the staged round-0 model (fake encoder)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler

from fedicd.config import config_from_dict
from fedicd.data.labels import fit_binarizer, save_binarizer
from fedicd.errors import ConfigError
from fedicd.federated.checkpoint import save_checkpoint
from fedicd.federated.data import stage_arrays
from fedicd.federated.model import INITIAL_MODEL, initial_arrays, seeded_model
from fedicd.federated.staged import load_server_data
from fedicd.heads import output_layer
from fedicd.partition import iid_partition
from fedicd.scaling import save_scaler
from fedicd.train_config import TrainConfig
from fedicd.warm_start import WarmStartConfig
from fedicd.warm_start.descriptions import DescribedLabels, describe_code, description_vectors, label_descriptions
from fedicd.warm_start.stage import WARM_START_FILE, stage_warm_start, warm_start_results
from fedicd.warm_start.zero_shot import apply_descriptions, zero_shot_rows, zero_shot_scores
from tests.embedding.fakes import FakeEncoder




def test_icd10_descriptions_are_the_catalogue_text() -> None:
    assert describe_code("E11.9") == "Type 2 diabetes mellitus without complications"
    assert describe_code("I10") == "Essential (primary) hypertension"
    assert describe_code("E11") == "Type 2 diabetes mellitus"
    assert describe_code("chapter-4") == "Endocrine, nutritional and metabolic diseases (E00-E89)"
    assert describe_code("W19.XXX") == describe_code("W19") == "Unspecified fall"
    assert describe_code("T81.4XX") == describe_code("T81.4")
    assert describe_code("0DTJ4ZZ") is None  # an ICD-10-PCS procedure
    assert describe_code("I10", "free") is None


def test_icd9_descriptions_and_procedures() -> None:
    assert describe_code("428.0", "icd9") == "Congestive heart failure, unspecified"
    assert describe_code("chapter-390-459", "icd9") == "Diseases Of The Circulatory System"
    assert describe_code("39.61", "icd9") is None  # a procedure, not the diagnosis 396.1
    assert describe_code("999.99", "icd9") is None


def test_missing_descriptions_are_warned_by_name(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="fedicd.warm_start.descriptions"):
        texts, missing = label_descriptions(["E11.9", "0DTJ4ZZ", "I10", "BN20"])
    assert missing == ["0DTJ4ZZ", "BN20"] and sorted(texts) == ["E11.9", "I10"]
    assert "2 of 4 labels have no public description" in caplog.text and "'0DTJ4ZZ', 'BN20'" in caplog.text


@pytest.mark.parametrize(("labels", "kind", "message"), [
    ([], "icd10", "label space is empty"),
    (["severe", "mild"], "free", "none of the 2 labels"),
])
def test_no_description_is_a_named_error(labels, kind, message) -> None:
    with pytest.raises(ConfigError, match=message):
        label_descriptions(labels, kind)


def test_zero_shot_rows_are_scaled_unit_rows() -> None:
    vectors = np.random.default_rng(0).normal(size=(5, 16))
    rows, bias = zero_shot_rows(vectors, scale=8.0, margin=0.25)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 8.0 / 4.0, rtol=1e-6)
    np.testing.assert_allclose(bias, -2.0)
    x = 4.0 * vectors[2] / np.linalg.norm(vectors[2])  # norm √d: logit = τ(cos − c) = 8 · 0.75
    assert float(rows[2] @ x + bias[2]) == pytest.approx(6.0, rel=1e-5)
    with pytest.raises(ValueError, match="zero after scaling"):
        zero_shot_rows(np.zeros((1, 4)), 1.0, 0.0)


def _hand_built(n_labels: int = 6, dim: int = 24, missing: tuple[int, ...] = ()) -> DescribedLabels:
    vectors = np.random.default_rng(1).normal(size=(n_labels, dim)).astype(np.float32)
    described = np.array([j not in missing for j in range(n_labels)])
    vectors[~described] = 0
    labels = [f"C{j}" for j in range(n_labels)]
    return DescribedLabels(labels=labels, texts={c: c for c, d in zip(labels, described) if d},
                           missing=[c for c, d in zip(labels, described) if not d], vectors=vectors,
                           described=described)


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=torch.float32)).numpy()


@pytest.mark.parametrize("head", ["linear", "bottleneck"])
def test_zero_shot_head_ranks_the_right_code_first(head: str) -> None:
    labels = _hand_built()
    train = TrainConfig(head=head, hidden=(8,) if head == "bottleneck" else None, seed=0)
    model = seeded_model(train, 24, 6)
    info = apply_descriptions(model, train, labels, WarmStartConfig(init="descriptions"))
    notes = labels.vectors + 0.3 * np.random.default_rng(2).normal(size=labels.vectors.shape)
    assert (_logits(model, notes).argmax(axis=1) == np.arange(6)).all()
    assert info["described"] == 6 and info["missing"] == []


def test_bottleneck_of_full_rank_equals_the_linear_coder() -> None:
    labels, ws = _hand_built(), WarmStartConfig(init="descriptions", scale=5.0, margin=0.1)
    linear, wide = TrainConfig(head="linear", seed=0), TrainConfig(head="bottleneck", hidden=(10,), seed=0)
    a, b = seeded_model(linear, 24, 6), seeded_model(wide, 24, 6)
    apply_descriptions(a, linear, labels, ws)
    assert apply_descriptions(b, wide, labels, ws)["principal_directions"] == 6
    x = np.random.default_rng(3).normal(size=(20, 24))
    np.testing.assert_allclose(_logits(a, x), _logits(b, x), atol=1e-4)
    down = b.down.weight.detach().numpy()[:6]
    np.testing.assert_allclose(down @ down.T, np.eye(6), atol=1e-5)  # principal directions: orthonormal rows


def test_undescribed_rows_keep_the_seeded_initialisation() -> None:
    labels, train = _hand_built(missing=(1, 4)), TrainConfig(head="linear", seed=0)
    before, model = seeded_model(train, 24, 6), seeded_model(train, 24, 6)
    apply_descriptions(model, train, labels, WarmStartConfig(init="descriptions"))
    old, new = output_layer(before).weight.detach(), output_layer(model).weight.detach()
    assert torch.equal(old[[1, 4]], new[[1, 4]]) and not torch.equal(old[[0, 2]], new[[0, 2]])


@pytest.mark.parametrize(("train", "message"), [
    (TrainConfig(head="mlp"), "head 'mlp' has a non-linear hidden layer"),
    (TrainConfig(head="bottleneck", norm="layer"), "needs train.norm = 'none'"),
])
def test_heads_without_a_zero_shot_form_are_refused(train, message) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_descriptions(seeded_model(train, 24, 6), train, _hand_built(), WarmStartConfig(init="descriptions"))


@pytest.mark.parametrize(("values", "message"), [
    ({"init": "pca"}, "warm_start.init must be one of"), ({"scale": 0.0}, "warm_start.scale must be > 0"),
    ({"margin": 1.0}, "warm_start.margin"), ({"public_epochs": 0}, "warm_start.public_epochs"),
])
def test_bad_warm_start_settings_are_named(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"warm_start": values})


def test_the_method_names_what_is_combined() -> None:
    assert WarmStartConfig().method == "random" and not WarmStartConfig().enabled
    assert WarmStartConfig(init="descriptions", public_config="p.toml").method == "descriptions+public"
    assert WarmStartConfig(public_config="p.toml").enabled


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 8), st.integers(3, 12), st.floats(0.5, 30.0), st.floats(-0.5, 0.9), st.integers(0, 2**31 - 1))
def test_zero_shot_logit_is_scaled_cosine_minus_margin(k, dim, scale, margin, seed) -> None:
    vectors = np.random.default_rng(seed).normal(size=(k, dim))
    rows, bias = zero_shot_rows(vectors, scale, margin)
    x = np.random.default_rng(seed + 1).normal(size=(5, dim))
    x = np.sqrt(dim) * x / np.linalg.norm(x, axis=1, keepdims=True)  # rows of norm √d (train.input_norm = "l2")
    cosines = (x @ vectors.T) / np.sqrt(dim) / np.linalg.norm(vectors, axis=1)
    np.testing.assert_allclose(x @ rows.T + bias, scale * (cosines - margin), rtol=1e-4, atol=1e-4)


LABELS = ["E11.9", "I10", "J18.9", "N18.3", "0DTJ4ZZ"]


def _stage(run: Path, rng: np.random.Generator) -> None:
    """A staged run folder of random 8-dim features (the fake encoder's dimension) over LABELS."""
    sizes = {"train": 60, "val": 30, "test": 30}
    feats = {p: rng.normal(size=(n, 8)).astype(np.float32) for p, n in sizes.items()}
    labels = {p: (rng.random((n, len(LABELS))) < 0.3).astype(np.float32) for p, n in sizes.items()}
    mlb = fit_binarizer([LABELS])  # the run's label space: its files hold these codes, in this (sorted) order
    stage_arrays(run, feats, labels, iid_partition([()] * 60, 3, seed=0), iid_partition([()] * 30, 3, seed=1),
                 label_codes=mlb.classes_)
    save_binarizer(mlb, run / "labels.json")
    save_scaler(StandardScaler().fit(feats["train"]), run / "scaler.npz")


@pytest.fixture
def warm_cfg(fake_config, tmp_path: Path):
    from dataclasses import asdict

    embedding = {k: v for k, v in asdict(fake_config).items() if v is not None}
    return config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embedding,
                             "train": {"mode": "federated", "head": "linear", "dropout": 0.0},
                             "federated": {"rounds": 1, "engine": "inprocess"}, "partition": {"n_clients": 3},
                             "warm_start": {"init": "descriptions"}})


def _json(record: dict) -> str:
    return json.dumps(record, sort_keys=True)


def test_staged_warm_start_is_the_round_zero_model_and_resume_ignores_it(warm_cfg, fake_config, tmp_path) -> None:
    from fedicd.federated.server import _start_state
    from fedicd.runner.apps import server_setup
    from fedicd.runner.staging import build_plan

    run = tmp_path / "run"
    _stage(run, np.random.default_rng(0))
    record = stage_warm_start(warm_cfg, run, input_dim=8, encoder=FakeEncoder(fake_config))
    assert record["descriptions"]["missing"] == ["0DTJ4ZZ"] and record["descriptions"]["described"] == 4
    # compared as JSON: the records hold NaN (rare_macro_f1 with no rare code), which never equals itself
    assert _json(json.loads((run / WARM_START_FILE).read_text())) == _json(warm_start_results(run)) == _json(record)
    plan = build_plan(warm_cfg, input_dim=8, n_labels=5, client_sizes=[20, 20, 20])
    setup = server_setup(plan, run)
    round_zero = _start_state(run, setup, plan)[0]
    with np.load(run / INITIAL_MODEL) as saved:
        assert sorted(saved.files) == sorted(round_zero) and all(np.array_equal(saved[k], round_zero[k])
                                                                 for k in saved.files)
    seeded = initial_arrays(plan.train, 8, 5)
    assert not np.array_equal(seeded["out.weight"], round_zero["out.weight"])
    np.testing.assert_array_equal(seeded["out.weight"][0], round_zero["out.weight"][0])  # 0DTJ4ZZ: sorted first
    model = seeded_model(plan.train, 8, 5)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in round_zero.items()})
    assert _json(zero_shot_scores(model, load_server_data(run))) == _json(record["zero_shot"])
    resumed = {k: v + 1 for k, v in round_zero.items()}
    save_checkpoint(run, server_round=1, arrays=resumed, strategy_state={}, history=[], rejections=[])
    assert np.array_equal(_start_state(run, setup, plan)[0]["out.weight"], resumed["out.weight"])


def test_restaging_without_warm_start_removes_the_old_one(warm_cfg, fake_config, tmp_path) -> None:
    import dataclasses

    run = tmp_path / "run"
    _stage(run, np.random.default_rng(0))
    stage_warm_start(warm_cfg, run, input_dim=8, encoder=FakeEncoder(fake_config))
    plain = dataclasses.replace(warm_cfg, warm_start=WarmStartConfig())
    assert stage_warm_start(plain, run, input_dim=8) is None
    assert not (run / INITIAL_MODEL).exists() and warm_start_results(run) == {"method": "random"}


def test_description_vectors_pass_through_the_run_scaler(fake_config, tmp_path) -> None:
    encoder = FakeEncoder(fake_config)
    raw = np.random.default_rng(4).normal(size=(50, 8))
    scaler = StandardScaler().fit(raw)
    out = description_vectors(["I10", "BN20", "E11.9"], "icd10", fake_config, scaler, encoder=encoder)
    from fedicd.embedding import embed_texts

    direct = embed_texts([describe_code("I10"), describe_code("E11.9")], fake_config, encoder=encoder).vectors
    np.testing.assert_allclose(out.vectors[[0, 2]], scaler.transform(direct), rtol=1e-5)
    assert (out.vectors[1] == 0).all() and out.described.tolist() == [True, False, True]


def test_a_central_run_refuses_public_pretraining(tmp_path) -> None:
    """Central runs take warm_start.init = "descriptions" (tests/test_warm_start_sequence.py); public
    pre-training stays federated, refused before any note is loaded."""
    from fedicd.experiment import run_experiment

    cfg = config_from_dict({"warm_start": {"public_config": "p.toml"}, "train": {"head": "linear"}})
    with pytest.raises(ConfigError, match=r"\[warm_start\] \(public\) warm-starts federated runs"):
        run_experiment(cfg, tmp_path / "central")
    assert not (tmp_path / "central").exists()


@pytest.mark.slow  # Flower's in-process simulation and the plots: about 20 s on a loaded 2-core machine
def test_a_warm_started_run_reports_its_zero_shot_row(warm_cfg, fake_config, tmp_path) -> None:
    """In-process rounds from the staged warm start; results.json carries the staged record."""
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.run_plan import write_plan
    from fedicd.runner.results import finalize
    from fedicd.runner.simulation import simulate
    from fedicd.runner.staging import build_plan

    run = tmp_path / "run"
    _stage(run, np.random.default_rng(0))
    record = stage_warm_start(warm_cfg, run, input_dim=8, encoder=FakeEncoder(fake_config))
    plan = build_plan(warm_cfg, input_dim=8, n_labels=5, client_sizes=[20, 20, 20])
    write_plan(run, plan)
    seconds = simulate(run, plan, verbose=False)
    results = finalize("warm", run, plan, load_checkpoint(run), seconds)
    assert results["outcome"]["status"] == "ok"  # every client read its file (labels as the run's labels.json)
    assert _json(results["warm_start"]) == _json(record) and results["warm_start"]["zero_shot"]["test"]["n_notes"] == 30
    assert json.loads((run / "results.json").read_text())["warm_start"]["method"] == "descriptions"
