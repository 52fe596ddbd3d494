"""Public pre-training of the head (synthetic public corpus, fake encoder): overlap, restored rows, refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from fedicd.config import config_from_dict, load_config
from fedicd.embedding import EmbedConfig
from fedicd.errors import ConfigError
from fedicd.federated.model import seeded_model
from fedicd.heads import output_layer
from fedicd.prepare import prepare_data
from fedicd.warm_start.pretrain import pretrain_public, shared_labels
from tests.embedding.fakes import FakeEncoder

PUBLIC = """name = "public"
seed = 7
[data]
source = "synthetic"
n_notes = 60
n_codes = 12
n_sites = 1
min_train_count = 2
[embedding]
model = "{model}"
device = "cpu"
chunk_overlap = 4
model_language = "en"
max_tokens = {max_tokens}
"""


@pytest.fixture
def setup(tmp_path: Path):
    model_dir = tmp_path / "fake-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "fake"}')
    embedding = EmbedConfig(model=str(model_dir), device="cpu", chunk_overlap=4, model_language="en", max_tokens=64)
    public_path = tmp_path / "public.toml"
    public_path.write_text(PUBLIC.format(model=model_dir, max_tokens=64))
    public_labels = [str(c) for c in prepare_data(load_config(public_path)).binarizer.classes_]
    run_labels = sorted([*public_labels[:3], "Z99.89", "0DTJ4ZZ"])
    embed = {k: v for k, v in dataclasses.asdict(embedding).items() if v is not None}
    cfg = config_from_dict({"cache_dir": str(tmp_path / "cache"), "embedding": embed,
                            "train": {"mode": "federated", "head": "linear", "dropout": 0.0},
                            "warm_start": {"public_config": str(public_path), "public_epochs": 2}})
    return cfg, run_labels, public_labels, FakeEncoder(embedding), tmp_path


@pytest.mark.parametrize("head", ["linear", "mlp"])  # an MLP cannot hold description rows: public pre-training can
def test_pretraining_trains_only_the_shared_labels(setup, head: str) -> None:
    cfg, run_labels, public_labels, encoder, _ = setup
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head=head, hidden=(16,) if head == "mlp" else None))
    scaler = StandardScaler().fit(np.random.default_rng(0).normal(size=(40, 8)))
    before, model = seeded_model(cfg.train, 8, len(run_labels)), seeded_model(cfg.train, 8, len(run_labels))
    record = pretrain_public(model, cfg, run_labels, scaler, ["a private note"], encoder=encoder)
    shared = [j for j, c in enumerate(run_labels) if c in set(public_labels)]
    assert record["shared_labels"] == 3 == len(shared) and record["run_labels"] == 5
    assert record["public_labels"] == len(public_labels) and record["notes"] > 0 and np.isfinite(record["final_loss"])
    old, new = output_layer(before), output_layer(model)
    others = [j for j in range(5) if j not in shared]
    assert torch.equal(old.weight[others], new.weight[others]) and torch.equal(old.bias[others], new.bias[others])
    assert not torch.equal(old.weight[shared], new.weight[shared])
    if head == "mlp":  # the hidden layer is shared by every label: it trains
        assert not torch.equal(before.net[0].weight, model.net[0].weight)


def test_overlap_count_and_zero_overlap() -> None:
    assert shared_labels(["A00", "I10", "E11.9"], ["I10", "E11.9", "K21.9"]) == [1, 2]
    with pytest.raises(ConfigError, match="shares none of the run's 2 labels"):
        shared_labels(["A00", "B01"], ["I10"])
    with pytest.raises(ConfigError, match="label space is empty"):
        shared_labels([], ["I10"])


def test_different_embedding_settings_are_refused(setup) -> None:
    cfg, run_labels, _, encoder, tmp_path = setup
    other = tmp_path / "other.toml"
    other.write_text(PUBLIC.format(model=cfg.embedding.model, max_tokens=32))
    bad = dataclasses.replace(cfg, warm_start=dataclasses.replace(cfg.warm_start, public_config=str(other)))
    with pytest.raises(ConfigError, match=r"differs from the run's in \['max_tokens'\]"):
        pretrain_public(seeded_model(cfg.train, 8, 5), bad, run_labels, StandardScaler(), encoder=encoder)


def test_missing_public_config_and_shared_notes_are_refused(setup) -> None:
    cfg, run_labels, _, encoder, tmp_path = setup
    gone = dataclasses.replace(cfg, warm_start=dataclasses.replace(cfg.warm_start, public_config="nope.toml"))
    with pytest.raises(ConfigError, match="'nope.toml': no such file"):
        pretrain_public(seeded_model(cfg.train, 8, 5), gone, run_labels, StandardScaler(), encoder=encoder)
    public = prepare_data(load_config(cfg.warm_start.public_config))
    with pytest.raises(ConfigError, match="notes of the run's own corpus"):
        pretrain_public(seeded_model(cfg.train, 8, 5), cfg, run_labels, StandardScaler(),
                        public.notes.texts[:3], encoder=encoder)


def test_a_warm_start_under_sample_dp_is_built_for_the_planned_head(setup) -> None:
    """Sample-level DP turns a BatchNorm head into norm = "group": the staged warm start must be that head's."""
    from fedicd.data.labels import fit_binarizer, save_binarizer
    from fedicd.federated.data import stage_arrays
    from fedicd.federated.model import INITIAL_MODEL, initial_arrays
    from fedicd.partition import iid_partition
    from fedicd.privacy.plan import dp_compatible_train
    from fedicd.scaling import save_scaler
    from fedicd.warm_start.stage import stage_warm_start

    cfg, run_labels, _, encoder, tmp_path = setup
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, head="deep_mlp", hidden=(16, 8)))
    dp_train, notices = dp_compatible_train(cfg.train, 8, len(run_labels))
    assert notices and dp_train.norm == "group"
    run, rng = tmp_path / "run", np.random.default_rng(0)
    feats = {p: rng.normal(size=(n, 8)).astype(np.float32) for p, n in (("train", 30), ("val", 20), ("test", 20))}
    labels = {p: (rng.random((len(f), len(run_labels))) < 0.4).astype(np.float32) for p, f in feats.items()}
    mlb = fit_binarizer([run_labels])
    stage_arrays(run, feats, labels, iid_partition([()] * 30, 3, seed=0), iid_partition([()] * 20, 3, seed=1),
                 label_codes=mlb.classes_)
    save_binarizer(mlb, run / "labels.json")
    save_scaler(StandardScaler().fit(feats["train"]), run / "scaler.npz")
    stage_warm_start(cfg, run, input_dim=8, encoder=encoder, train=dp_train)
    round_zero = initial_arrays(dp_train, 8, len(run_labels), run)
    with np.load(run / INITIAL_MODEL) as saved:
        assert sorted(saved.files) == sorted(round_zero) and not any("running_mean" in k for k in saved.files)
    stage_warm_start(cfg, run, input_dim=8, encoder=encoder)  # the config's BatchNorm head: not the planned one
    with pytest.raises(ValueError, match="does not fit the run's head"):
        initial_arrays(dp_train, 8, len(run_labels), run)
