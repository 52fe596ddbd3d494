"""partition.min_per_client / drop_infeasible, client counts and client validation in `fedicd run` staging
and `fedicd partition` (one shared helper), with a fake encoder: every refusal comes before embedding."""

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

import fedicd.prepare as prepare
from fedicd.config import config_from_dict
from fedicd.data.labels import load_binarizer
from fedicd.data.notes import CodedNotes
from fedicd.errors import ConfigError
from fedicd.federated.data import load_client_data, load_server_data, stage_data
from fedicd.partition import PartitionError, iid_partition, natural_partition, read_manifest
from fedicd.partition.config import PartitionConfig
from fedicd.partition.rules import enforce_feasibility
from fedicd.partition_run import run_partition
from fedicd.partition.validation import validation_partition


def _codes(i: int) -> tuple[str, ...]:
    """A01 on every note, B02 on every third, R50.9 on 3 of 60 (too rare for 2 notes on each of 3 clients)."""
    return ("A01",) + (("B02",) if i % 3 == 0 else ()) + (("R50.9",) if i % 20 == 0 else ())


def _corpus(tmp_path, n=60, sites=None):
    notes = CodedNotes(ids=[f"n{i}" for i in range(n)], texts=[f"text {i}" for i in range(n)],
                       codes=[_codes(i) for i in range(n)], icd_version=[10] * n, sites=sites)
    return notes.save(tmp_path / "notes.jsonl.gz")


def _cfg(path, partition=None, federated=None, **data):
    return config_from_dict({"seed": 0, "train": {"mode": "federated"},
                             "data": {"source": "notes", "path": str(path), **data},
                             "partition": {"n_clients": 3, **(partition or {})},
                             "federated": {"fraction_evaluate": 1.0, **(federated or {})}})


@pytest.fixture
def embedded(monkeypatch):
    """A fake encoder (4-dim vectors) that counts its calls."""
    calls = []

    def fake(texts, *args, **kwargs):
        calls.append(len(texts))
        vectors = np.random.default_rng(0).normal(size=(len(texts), 4)).astype(np.float32)
        return SimpleNamespace(vectors=vectors, model_id="fake", dim=4, n_chunked=0, n_chunks=len(texts), n_cached=0,
                               n_reembedded=0, n_corrupt=0, cache_problems=[], language_check={})

    monkeypatch.setattr(prepare, "embed_texts", fake)
    return calls


# ---------------------------------------------------------------- partition.min_per_client in `fedicd run`

def test_infeasible_codes_are_refused_before_embedding(tmp_path, embedded):
    cfg = _cfg(_corpus(tmp_path), partition={"min_per_client": 2})
    with pytest.raises(ConfigError, match=r"^partition.min_per_client=2 \(every code needs >= 2 notes on each of the 3 "
                                          r"clients\): 1 of 3 label-space codes break it \(e.g. R50.9: .*\); set "
                                          r"partition.drop_infeasible = true to remove them from the label space"):
        stage_data(cfg, tmp_path / "run")
    assert embedded == [] and not (tmp_path / "run" / "clients").exists() and not (tmp_path / "run" / "server").exists()


def test_drop_infeasible_removes_codes_from_the_label_space_and_rebinarizes(tmp_path, embedded):
    run = tmp_path / "run"
    staged = stage_data(_cfg(_corpus(tmp_path), partition={"min_per_client": 2, "drop_infeasible": True}), run)
    assert list(staged.data.binarizer.classes_) == ["A01", "B02"] and staged.n_labels == 2
    assert load_binarizer(run / "labels.json").classes_.tolist() == ["A01", "B02"]
    server = load_server_data(run)
    assert server["train_label_counts"].shape == (2,) and server["y_val"].shape[1] == server["y_test"].shape[1] == 2
    assert server["labels"] == ("A01", "B02") and load_client_data(run, 0).y_train.shape[1] == 2
    info = staged.data.label_info
    assert info["n_labels"] == 2 and info["codes_removed"] == ["R50.9"]
    assert info["partition_feasibility"]["dropped_codes"] == ["R50.9"]
    assert staged.partition_info["feasibility"]["n_violating_codes"] == 1
    _, doc = read_manifest(run / "partition.json")
    assert doc["feasibility"]["dropped_codes"] == ["R50.9"] and "R50.9" in doc["feasibility"]["violations"]
    assert embedded == [60]


def test_every_code_infeasible_is_refused_even_with_drop(tmp_path, embedded):
    cfg = _cfg(_corpus(tmp_path), partition={"min_per_client": 100, "drop_infeasible": True})
    with pytest.raises(ConfigError, match=r"partition.min_per_client=100 .*: all 3 label-space codes break it"):
        stage_data(cfg, tmp_path / "run")
    assert embedded == []


def test_label_rule_client_count_must_match_the_partition(tmp_path, embedded):
    cfg = _cfg(_corpus(tmp_path), min_per_client=1, n_clients=20)
    with pytest.raises(ConfigError, match=r"^data.n_clients=20 \(the label rule data.min_per_client=1 × "
                                          r"data.n_clients keeps codes with >= 20 notes\) but partition.n_clients=3: "
                                          r"set data.n_clients = 3"):
        stage_data(cfg, tmp_path / "run")
    sites = [f"s{i % 2}" for i in range(60)]
    cfg = _cfg(_corpus(tmp_path, sites=sites), partition={"scheme": "natural"}, min_per_client=1, n_clients=3)
    with pytest.raises(ConfigError, match=r"data.n_clients=3 .* but the natural partition has 2 sites \(one client "
                                          r"each\): set data.n_clients = 2"):
        stage_data(cfg, tmp_path / "run")
    assert embedded == []


def test_fedicd_partition_shares_the_rule_and_reports_without_refusing(tmp_path, embedded, caplog):
    path = _corpus(tmp_path)
    with caplog.at_level(logging.WARNING):
        extra = run_partition(_cfg(path, partition={"min_per_client": 2}), tmp_path / "a")
    assert extra["feasibility"]["n_violating_codes"] == 1 and "dropped_codes" not in extra["feasibility"]
    assert "set partition.drop_infeasible = true" in caplog.text
    extra = run_partition(_cfg(path, partition={"min_per_client": 2, "drop_infeasible": True}), tmp_path / "b")
    assert extra["feasibility"]["dropped_codes"] == ["R50.9"] and extra["source"]["n_labels"] == 2
    with pytest.raises(ConfigError, match="data.n_clients=20 .* but partition.n_clients=3"):
        run_partition(_cfg(path, min_per_client=1), tmp_path / "c")
    assert embedded == []


def test_enforce_feasibility_off_and_ok():
    labels = [("A",), ("A",), ("A",), ("A",)]
    part = iid_partition(labels, 2, seed=0)
    assert enforce_feasibility(labels, part, PartitionConfig(), strict=True).report == {}
    ok = enforce_feasibility(labels, part, PartitionConfig(min_per_client=2), strict=True)
    assert ok.dropped == [] and ok.summary["n_violating_codes"] == 0


def test_partition_config_refusals():
    with pytest.raises(ConfigError, match="partition.drop_infeasible = true drops the codes that break "
                                          "partition.min_per_client; set partition.min_per_client >= 1 too"):
        PartitionConfig(drop_infeasible=True)
    with pytest.raises(ConfigError, match="partition.client_validation = 'per_site' needs partition.scheme = "
                                          "'natural'"):
        PartitionConfig(client_validation="per_site")


# ---------------------------------------------------------------- client validation

def _sited(tmp_path):
    """Sites s0..s2 (19-20 notes each) and two single-note sites."""
    sites = [f"s{i % 3}" for i in range(58)] + ["solo-a", "solo-b"]
    return _corpus(tmp_path, sites=sites), sites


def test_natural_partition_with_single_note_sites_stages_under_auto(tmp_path, embedded):
    path, _ = _sited(tmp_path)
    run = tmp_path / "run"
    staged = stage_data(_cfg(path, partition={"scheme": "natural"}, fractions=[0.5, 0.25, 0.25]), run)
    val_info = staged.partition_info["client_validation"]
    names = staged.partition.names
    # solo-a's one note is a training note: before, "validation notes cover sites ..." refused the run
    assert val_info["resolved"] == "per_site" and val_info["clients_without_validation"] == ["solo-a"]
    val_part, doc = read_manifest(run / "partition_val.json")
    assert val_part.names == names and doc["n_notes"] == len(staged.data.parts["val"])
    val_sites = [staged.data.notes.sites[i] for i in staged.data.parts["val"]]
    for k, name in enumerate(names):  # each client evaluates on its own site's validation notes only
        assert [val_sites[i] for i in val_part.clients[k]] == [name] * len(val_part.clients[k])
        assert len(load_client_data(run, k).x_val) == len(val_part.clients[k])
    assert load_server_data(run)["x_val"].shape[0] == len(staged.data.parts["val"])  # the server holds all of val


def test_per_site_staging_refuses_before_embedding(tmp_path, embedded):
    path, _ = _sited(tmp_path)
    cfg = _cfg(path, partition={"scheme": "natural", "client_validation": "per_site"}, fractions=[0.5, 0.25, 0.25])
    with pytest.raises(PartitionError, match=r"training sites \['solo-a'\] have no validation notes"):
        stage_data(cfg, tmp_path / "run")
    assert embedded == []


def test_per_site_refuses_a_training_site_without_validation_notes():
    train = natural_partition([()] * 5, sites=["a", "a", "b", "c", "c"])
    with pytest.raises(PartitionError, match=r"partition.client_validation = 'per_site': training sites \['b'\] have "
                                             r"no validation notes \(3 validation notes in all\); use 'iid' .*, "
                                             r"'auto' .* or 'none'"):
        validation_partition(3, train, mode="per_site", sites=["a", "c", "c"])
    part, info = validation_partition(4, train, mode="auto", sites=["a", "c", "c", "z"])
    assert [c.tolist() for c in part.clients] == [[0], [], [1, 2]] and part.dropped.tolist() == [3]
    assert info["clients_without_validation"] == ["b"] and info["val_notes_server_only"] == 1


def test_iid_and_none_modes():
    train = iid_partition([()] * 30, 3, seed=0)
    part, info = validation_partition(10, train, mode="auto", seed=1)
    expected = iid_partition([()] * 10, 3, seed=1).clients  # what staging always did for non-natural schemes
    assert [c.tolist() for c in part.clients] == [c.tolist() for c in expected] and info["resolved"] == "iid"
    part, info = validation_partition(2, train, mode="auto", seed=1)
    assert sorted(len(c) for c in part.clients) == [0, 1, 1] and len(info["clients_without_validation"]) == 1
    with pytest.raises(PartitionError, match="'iid' shares 2 validation notes among 3 clients: fewer notes than "
                                             "clients"):
        validation_partition(2, train, mode="iid")
    part, info = validation_partition(10, train, mode="none")
    assert all(len(c) == 0 for c in part.clients) and part.dropped.tolist() == list(range(10))
    assert info["val_notes_server_only"] == 10


def test_no_client_validation_needs_no_client_evaluation(tmp_path, embedded):
    path = _corpus(tmp_path)
    with pytest.raises(ConfigError, match=r"partition.client_validation = 'none' gives the clients no validation "
                                          r"notes, but federated.fraction_evaluate = 1.0 asks clients to evaluate: "
                                          r"set federated.fraction_evaluate = 0"):
        stage_data(_cfg(path, partition={"client_validation": "none"}), tmp_path / "run")
    assert embedded == []
    staged = stage_data(_cfg(path, partition={"client_validation": "none"}, federated={"fraction_evaluate": 0.0}),
                        tmp_path / "ok")
    assert len(load_client_data(tmp_path / "ok", 0).x_val) == 0
    assert staged.partition_info["client_validation"]["val_notes_server_only"] == len(staged.data.parts["val"])
    assert json.loads((tmp_path / "ok" / "partition.json").read_text())["client_validation"]["resolved"] == "none"
