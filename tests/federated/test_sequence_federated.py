"""The federated path on chunk sequences: staging (per-role files with chunks + offsets), the clients' and the
server's rows, in-process rounds with a chunk-sequence head, and the refusals of heads that cannot read the
staged features.

``ToyAttention`` (tests/test_sequence_training.py) stands in for the registry's "label_attention".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedicd.config import config_from_dict
from fedicd.errors import ConfigError
from fedicd.federated.data import stage_arrays
from fedicd.federated.site_data import client_data_path, server_eval_path
from fedicd.federated.staged import check_staged_features, load_client_data, load_server_data
from fedicd.heads import HEADS, count_parameters
from fedicd.partition import iid_partition
from fedicd.sequences import ChunkSequences, ChunksMissingError
from tests.test_sequence_training import DIM, N_LABELS, ToyAttention, chunk_task

SIZES = {"train": 45, "val": 15, "test": 15}


@pytest.fixture
def toy_head(monkeypatch):
    monkeypatch.setitem(HEADS, "label_attention", ToyAttention)
    return "label_attention"


def _features() -> tuple[dict[str, ChunkSequences], dict[str, np.ndarray]]:
    parts = {p: chunk_task(n, seed=k) for k, (p, n) in enumerate(SIZES.items())}
    return {p: x for p, (x, _) in parts.items()}, {p: y for p, (_, y) in parts.items()}


def _stage(run: Path, features, labels, **kwargs) -> None:
    stage_arrays(run, features, labels, iid_partition([()] * SIZES["train"], 3, seed=0),
                 iid_partition([()] * SIZES["val"], 3, seed=1), **kwargs)


def _cfg(head: str, strategy: str = "fedavg"):
    return config_from_dict({"train": {"mode": "federated", "head": head, "dropout": 0.0, "lr": 1e-2},
                             "federated": {"rounds": 2, "engine": "inprocess", "strategy": strategy,
                                           "fraction_evaluate": 1.0},
                             "partition": {"n_clients": 3}})


def test_staged_chunk_sequences_come_back_per_client_and_for_the_server(tmp_path, toy_head) -> None:
    features, labels = _features()
    _stage(tmp_path, features, labels, head=toy_head)
    for pid in range(3):
        with np.load(client_data_path(tmp_path, pid)) as z:
            assert {"x_train_offsets", "x_val_offsets"} <= set(z.files) and "x_test" not in z.files
    with np.load(server_eval_path(tmp_path)) as z:
        assert {"x_val_offsets", "x_test_offsets"} <= set(z.files) and "x_train" not in z.files
    partition = iid_partition([()] * SIZES["train"], 3, seed=0)
    for pid, rows in enumerate(partition.clients):
        client = load_client_data(tmp_path, pid)
        expected = features["train"].take(rows)
        assert isinstance(client.x_train, ChunkSequences) and isinstance(client.x_val, ChunkSequences)
        np.testing.assert_array_equal(client.x_train.chunks, expected.chunks)
        np.testing.assert_array_equal(client.x_train.offsets, expected.offsets)
        np.testing.assert_array_equal(client.y_train, labels["train"][rows])
    server = load_server_data(tmp_path)
    np.testing.assert_array_equal(server["x_test"].chunks, features["test"].chunks)
    np.testing.assert_array_equal(server["x_val"].lengths, features["val"].lengths)


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])
def test_two_in_process_rounds_train_a_sequence_head_and_record_the_model(tmp_path, toy_head, strategy,
                                                                            monkeypatch) -> None:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.run_plan import write_plan
    from fedicd.runner.results import finalize
    from fedicd.runner.simulation import simulate
    from fedicd.runner.staging import build_plan

    monkeypatch.setattr("fedicd.plots.plot_learning_curves", lambda *args, **kwargs: None)
    features, labels = _features()
    _stage(tmp_path, features, labels, head=toy_head)
    plan = build_plan(_cfg(toy_head, strategy), input_dim=DIM, n_labels=N_LABELS, client_sizes=[15, 15, 15])
    write_plan(tmp_path, plan)
    seconds = simulate(tmp_path, plan, verbose=False)
    ckpt = load_checkpoint(tmp_path)
    history = ckpt["history"]
    assert [row["round"] for row in history] == [1, 2] and all(row["updated"] for row in history)
    assert all(row["bytes_sent"] > 0 and row["bytes_received"] > 0 for row in history)
    assert history[1]["val_loss"] < history[0]["val_loss"] and np.isfinite(history[1]["client_eval_loss"])
    results = finalize("seq", tmp_path, plan, ckpt, seconds)
    n_values = sum(np.asarray(v).size for v in ckpt["arrays"].values())
    assert results["model"] == {"head": "label_attention", "parameters": count_parameters(ToyAttention(DIM, N_LABELS)),
                                "parameter_bytes": 4 * n_values}
    assert results["test"]["n_notes"] == SIZES["test"] and 0.0 <= results["test"]["micro_f1"] <= 1.0


def test_a_sequence_head_on_pooled_features_is_refused_naming_them(tmp_path, toy_head) -> None:
    features, labels = _features()
    pooled = {p: x.mean_pooled() for p, x in features.items()}
    with pytest.raises(ChunksMissingError, match=r"train.head = 'label_attention' reads chunk sequences, but the "
                                                  r"training features staged into .* holds one pooled vector"):
        _stage(tmp_path / "a", pooled, labels, head=toy_head)
    _stage(tmp_path / "b", pooled, labels)  # staged earlier for a pooled head
    with pytest.raises(ChunksMissingError, match=r"the staged features .*eval.npz holds one pooled vector.*"
                                                  r"stage the run folder .*b again with train.head = 'label_attention'"):
        check_staged_features(tmp_path / "b", toy_head)
    check_staged_features(tmp_path / "b", "mlp")


def test_a_pooled_head_on_chunk_sequences_and_mixed_features_are_refused(tmp_path, toy_head) -> None:
    features, labels = _features()
    with pytest.raises(ConfigError, match=r"train.head = 'mlp' reads one pooled vector per note, but the training "
                                          r"features staged into .* holds chunk sequences"):
        _stage(tmp_path / "a", features, labels, head="mlp")
    _stage(tmp_path / "b", features, labels)
    with pytest.raises(ConfigError, match=r"staged features .*eval.npz holds chunk sequences.*stage it again with this train.head"):
        check_staged_features(tmp_path / "b", "linear")
    check_staged_features(tmp_path / "b", toy_head)
    mixed = {**features, "test": features["test"].mean_pooled()}
    with pytest.raises(ValueError, match=r"all pooled vectors or all chunk sequences.*\['train', 'val'\]"):
        _stage(tmp_path / "c", mixed, labels)


def test_the_server_refuses_a_head_that_cannot_read_the_staged_run_before_round_one(tmp_path, toy_head) -> None:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.run_plan import write_plan
    from fedicd.runner.simulation import simulate
    from fedicd.runner.staging import build_plan

    features, labels = _features()
    _stage(tmp_path, {p: x.mean_pooled() for p, x in features.items()}, labels)
    plan = build_plan(_cfg(toy_head), input_dim=DIM, n_labels=N_LABELS, client_sizes=[15, 15, 15])
    write_plan(tmp_path, plan)
    with pytest.raises(ChunksMissingError, match="stage the run folder"):
        simulate(tmp_path, plan, verbose=False)
    assert load_checkpoint(tmp_path) is None  # refused before any round
