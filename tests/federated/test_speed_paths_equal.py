"""The faster codec and model build leave a federated run's numbers unchanged, bit for bit.

The same tiny in-process run twice: with fedicd's paths (one-copy ``.npy`` encoding and decoding in
:mod:`fedicd.federated.records`, heads copied from a cached template in :func:`fedicd.local_training.build_model`)
and with the paths they replaced (Flower's ``Array(ndarray)`` / ``Array.numpy()``, a fresh randomly initialised
build per call); every round's global model and history must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array

from tests.tiny_run import N_CLIENTS, stage_tiny_run

ROUNDS = 2


def _stage(run, overrides: list[str]):
    return stage_tiny_run(run, [f"federated.rounds={ROUNDS}", "federated.fraction_evaluate=1.0", "train.hidden=[8]",
                                *overrides])


def _run(run, overrides: list[str]) -> dict:
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.runner.simulation import simulate

    simulate(run, _stage(run, overrides), verbose=False)
    return load_checkpoint(run)


def _old_paths(monkeypatch) -> list[str]:
    """Swap in what the speed-ups replaced; returns what build_model built (to show the old path ran)."""
    import fedicd.federated.records as records
    import fedicd.local_training as local_training

    built: list[str] = []

    def fresh(train_cfg, input_dim, n_labels):  # no cache: a fresh random build per call, as before
        built.append(train_cfg.head)
        with torch.random.fork_rng(devices=[]):
            return train_cfg.build(input_dim, n_labels)

    monkeypatch.setattr(records, "encode_array", lambda value: Array(np.ascontiguousarray(value)))
    monkeypatch.setattr(records, "decode_array", lambda array, copy=True: array.numpy())
    monkeypatch.setattr(local_training, "_template", fresh)
    return built


@pytest.mark.parametrize("overrides", [[], ['federated.strategy="scaffold"', "federated.checkpoint_every=2"]],
                         ids=["fedavg", "scaffold"])
def test_a_run_on_the_fast_paths_equals_one_on_the_paths_they_replaced(tmp_path, monkeypatch, overrides):
    fast = _run(tmp_path / "fast", overrides)
    with monkeypatch.context() as patch:
        built = _old_paths(patch)
        old = _run(tmp_path / "old", overrides)
    assert len(built) >= N_CLIENTS * ROUNDS  # every client call built a fresh head
    assert fast["round"] == old["round"] == ROUNDS
    for part in ("arrays", "strategy_state"):
        assert fast[part].keys() == old[part].keys()
        for k in fast[part]:
            assert fast[part][k].dtype == old[part][k].dtype and fast[part][k].tobytes() == old[part][k].tobytes(), k
    timing = ("seconds", "train_train_seconds")
    strip = [{k: v for k, v in row.items() if k not in timing} for row in fast["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in old["history"]]
    assert all(np.isfinite(row["val_loss"]) for row in fast["history"])
