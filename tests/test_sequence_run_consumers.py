"""Consumers of a run folder that read one pooled vector per note refuse a chunk-sequence run by name.

A chunk-sequence head's staged site files (``clients/<pid>/data.npz``, ``server/eval.npz``) hold flat chunk rows
and their offsets; the attacks on a
federation (``fedicd audit``, the privacy matrix) index ``x_train`` by note and would mis-read chunk rows as notes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fedicd.config import config_from_dict
from fedicd.errors import ConfigError
from fedicd.federated.data import stage_arrays
from fedicd.partition import iid_partition
from fedicd.run_plan import write_plan
from fedicd.runner.staging import build_plan
from tests.test_sequence_training import DIM, N_LABELS, chunk_task

SIZES = {"train": 12, "val": 6, "test": 6}


def _staged_sequence_run(run: Path, head: str) -> Path:
    """A tiny run folder: chunk sequences staged, the run plan of ``head`` written (no rounds run)."""
    parts = {p: chunk_task(n, seed=k) for k, (p, n) in enumerate(SIZES.items())}
    stage_arrays(run, {p: x for p, (x, _) in parts.items()}, {p: y for p, (_, y) in parts.items()},
                 iid_partition([()] * SIZES["train"], 2, seed=0), iid_partition([()] * SIZES["val"], 2, seed=1),
                 head=head)
    cfg = config_from_dict({"train": {"mode": "federated", "head": head}, "partition": {"n_clients": 2}})
    write_plan(run, build_plan(cfg, input_dim=DIM, n_labels=N_LABELS, client_sizes=[6, 6]))
    return run


@pytest.mark.parametrize("head", ["label_attention", "multires_cnn"])
def test_loading_a_chunk_sequence_run_for_the_attacks_is_refused_naming_head_and_folder(tmp_path, head) -> None:
    from fedicd.attack_runs.federation import load_federation_run

    run = _staged_sequence_run(tmp_path / "run", head)
    with pytest.raises(ConfigError, match=rf"run folder {run}.*train.head = '{head}'.*chunk sequences"):
        load_federation_run(run)


def test_auditing_a_chunk_sequence_run_folder_is_refused(tmp_path) -> None:
    from fedicd.attack_runs.audit_command import audit

    run = _staged_sequence_run(tmp_path / "run", "label_attention")
    with pytest.raises(ConfigError, match="read one pooled vector per note"):
        audit(run, tmp_path / "out", attacks=["membership"])
    assert not (tmp_path / "out").exists()


def test_auditing_a_config_of_a_chunk_sequence_head_is_refused_before_training(tmp_path) -> None:
    from fedicd.attack_runs.audit_command import audit
    from fedicd.cli import DEMO_CONFIG

    with pytest.raises(ConfigError, match=r"train.head = 'multires_cnn' trains on chunk sequences"):
        audit(DEMO_CONFIG, tmp_path / "out", overrides=['train.mode="federated"', 'train.head="multires_cnn"'])
    assert not (tmp_path / "out" / "run").exists()


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_in_process_sweep_refuses_a_chunk_sequence_run(tmp_path) -> None:
    run = _staged_sequence_run(tmp_path / "run", "label_attention")
    with pytest.raises(ConfigError, match=rf"'mlp' reads one pooled vector per note, but .*run folder {run}"):
        _script("fedavg_inprocess_sweep").load_data(run, None, 0)


def test_the_dp_sanity_check_refuses_a_chunk_sequence_run(tmp_path, monkeypatch) -> None:
    run = _staged_sequence_run(tmp_path / "run", "multires_cnn")
    monkeypatch.setattr("sys.argv", ["dp_sanity.py", "--run-dir", str(run), "--epochs", "1"])
    with pytest.raises(ConfigError, match=rf"'mlp' reads one pooled vector per note, but .*run folder {run}"):
        _script("dp_sanity").main()


def test_the_attack_sweep_refuses_a_chunk_sequence_head_before_loading_notes(tmp_path, monkeypatch) -> None:
    from fedicd.attack_runs import sweep

    def no_loading(*args, **kwargs):
        raise AssertionError("notes loaded before the refusal")

    monkeypatch.setattr(sweep, "load_attack_data", no_loading)
    cfg = config_from_dict({"train": {"head": "label_attention"}})
    with pytest.raises(ConfigError, match=r"train.head = 'label_attention' reads chunk sequences, but the attack sweep"):
        sweep.run_attack_sweep(cfg, "bow", tmp_path / "out", defences=["none"])
    assert not (tmp_path / "out").exists()


def test_assembling_chunks_of_another_count_than_the_cached_note_vector_is_refused() -> None:
    """A re-embedded note whose chunk count differs from its cached note vector's would overwrite its
    neighbour's rows; it is refused by name."""
    from fedicd.embedding.chunk_cache import ChunkStore, assemble_sequences

    store = ChunkStore()
    store.add(["a", "b"], np.arange(12, dtype=np.float32).reshape(4, 3), [3, 1])  # "a" now has 3 chunks
    with pytest.raises(RuntimeError, match="another chunk count than their cached note vectors"):
        assemble_sequences(["a", "b"], {"a": 2, "b": 1}, 3, store, None, lambda keys: ChunkStore())
    agreeing = ChunkStore()
    agreeing.add(["a", "b"], np.arange(12, dtype=np.float32).reshape(4, 3), [3, 1])
    sequences = assemble_sequences(["b", "a"], {"a": 3, "b": 1}, 3, agreeing, None, lambda keys: ChunkStore())
    np.testing.assert_array_equal(sequences.offsets, [0, 1, 4])
    np.testing.assert_array_equal(sequences.chunks, np.arange(12, dtype=np.float32).reshape(4, 3)[[3, 0, 1, 2]])


def test_the_privacy_matrix_refuses_a_chunk_sequence_head_before_training(tmp_path) -> None:
    from fedicd.cli import DEMO_CONFIG

    matrix = _script("privacy_matrix")
    with pytest.raises(SystemExit, match=r"train.head = 'label_attention' trains on chunk sequences"):
        matrix.main([str(DEMO_CONFIG), "--out", str(tmp_path / "out"), "--set", 'train.mode="federated"',
                     "--set", 'train.head="label_attention"'])
    assert not (tmp_path / "out").exists()
