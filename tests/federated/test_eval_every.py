"""federated.eval_every: the global model is scored (server notes and client evaluation) every k rounds and after
the last; the rounds in between train only, and training is the same as with evaluation every round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedicd.errors import ConfigError
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.config import FedConfig
from fedicd.runner.simulation import simulate
from tests.deploy.test_study import stage_run


def test_rounds_between_evaluations_train_only_and_train_the_same(tmp_path: Path) -> None:
    every = stage_run(tmp_path / "every", "federated.rounds=3")
    sparse = stage_run(tmp_path / "sparse", "federated.rounds=3", "federated.eval_every=2")
    simulate(tmp_path / "every", every, verbose=False)
    simulate(tmp_path / "sparse", sparse, verbose=False)
    dense, thin = load_checkpoint(tmp_path / "every"), load_checkpoint(tmp_path / "sparse")
    scored = [("val_loss" in r, "client_eval_loss" in r, r["bytes_sent"] > 0) for r in thin["history"]]
    assert scored == [(False, False, True), (True, True, True), (True, True, True)]  # round 2, and the last
    assert all("val_loss" in r and "client_eval_loss" in r for r in dense["history"])
    assert thin["history"][0]["bytes_sent"] < dense["history"][0]["bytes_sent"]  # no evaluation messages sent
    for key, value in dense["arrays"].items():
        np.testing.assert_array_equal(thin["arrays"][key], value)
    for r in (1, 2):  # the scored rounds agree with the every-round run
        assert thin["history"][r]["val_loss"] == pytest.approx(dense["history"][r]["val_loss"], rel=1e-12)


def test_eval_every_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="federated.eval_every must be >= 1, got 0"):
        FedConfig(eval_every=0)
