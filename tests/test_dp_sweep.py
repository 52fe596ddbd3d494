"""experiments/dp_sweep.py's pure parts: grid expansion, overrides, selection on validation only, the search."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fedicd.config import load_config

DP = ['train.mode="federated"', 'privacy.dp="sample"', "privacy.target_epsilon=8.0"]
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dp_sweep", ROOT / "experiments" / "dp_sweep.py")
dp_sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dp_sweep)


def test_trial_overrides_resolve_lr_and_schedule_and_load():
    settings = {"train.head": "bottleneck", "train.hidden": [16], "train.input_norm": "l2",
                "federated.local_optimizer": "sgd", "federated.local_momentum": 0.9, "lr": 1.0, "lr_mult": 10.0,
                "privacy.clip": 0.1, "train.batch_size": dp_sweep.FULL_BATCH, "rounds_div": 4}
    got = dp_sweep.trial_overrides(settings, base_rounds=20, base_local_epochs=1)
    assert got == ['federated.local_momentum=0.9', 'federated.local_optimizer="sgd"', "privacy.clip=0.1",
                   "train.batch_size=1000000", 'train.head="bottleneck"', "train.hidden=[16]",
                   'train.input_norm="l2"', "federated.local_lr=10.0", "federated.rounds=5",
                   "federated.local_epochs=4"]
    cfg = load_config(None, [*DP, *got])
    assert (cfg.train.head, cfg.train.hidden, cfg.federated.local_lr, cfg.federated.rounds) == \
        ("bottleneck", (16,), 10.0, 5)
    with pytest.raises(ValueError, match="rounds_div=40 leaves no round of the config's 20"):
        dp_sweep.trial_overrides({"rounds_div": 40}, 20, 1)


@pytest.mark.parametrize("grid", sorted(dp_sweep.GRIDS))
def test_every_grid_value_is_a_valid_config(grid):
    for axis in dp_sweep.AXES:
        for value in dp_sweep.GRIDS[grid][axis]:
            choice = {a: dp_sweep.GRIDS[grid][a][0] for a in dp_sweep.AXES} | {axis: value}
            overrides = dp_sweep.trial_overrides(dp_sweep.merge(choice), 20, 1)
            load_config(None, [*DP, *overrides])


def test_product_counts_and_cap():
    grid = dp_sweep.GRIDS["small"]
    n = 1
    for axis in dp_sweep.AXES:
        n *= len(grid[axis])
    assert len(dp_sweep.product_choices(grid)) == n == 3 * 2 * 3 * 2 * 2 * 2
    assert len(dp_sweep.product_choices(grid, max_trials=5)) == 5


def _trial(index, val, test, error=None):
    return {"index": index, "error": error, "val": {"micro_f1": val, "macro_f1": val / 2},
            "test": {"micro_f1": test, "macro_f1": test / 2}}


def test_selection_reads_validation_never_test():
    trials = [_trial(0, 0.30, 0.90), _trial(1, 0.50, 0.10), _trial(2, 0.99, 0.99, error="boom"),
              _trial(3, 0.50, 0.95)]
    assert dp_sweep.select(trials)["index"] == 1  # best validation; the tie goes to the earlier trial
    with pytest.raises(RuntimeError, match="every trial failed"):
        dp_sweep.select([_trial(0, 0.5, 0.5, error="x")])


def test_coordinate_search_tunes_one_axis_at_a_time_on_validation():
    grid = {axis: [{f"{axis}.v": 0}, {f"{axis}.v": 1}] for axis in dp_sweep.AXES}
    runs = []

    def run(choice):
        settings = dp_sweep.merge(choice)
        ones = sum(settings.values())
        # validation rewards 1 on every axis but "batch"; test rewards the opposite (selection must ignore it)
        val = ones - 2 * settings["batch.v"]
        runs.append(settings)
        return _trial(len(runs) - 1, val, -val)

    trials = dp_sweep.coordinate_search(grid, run)
    assert len(trials) == len(runs) == 1 + len(dp_sweep.AXES)  # the current best is not run twice
    best = dp_sweep.select(trials)
    assert runs[best["index"]] == {f"{a}.v": int(a != "batch") for a in dp_sweep.AXES}


def test_tuning_set_names_the_data():
    assert "public stand-in" in dp_sweep.tuning_set("c.toml", 1, 0)
    assert "Papernot & Steinke" in dp_sweep.tuning_set("c.toml", 0, 0)
    public = dp_sweep.tuning_set("eval.toml", 1, 0, tuning_config="public.toml")
    assert "public.toml at seed 1 (a public stand-in corpus" in public and "Papernot" not in public
    same = dp_sweep.tuning_set("eval.toml", 0, 0, tuning_config="copy.toml", same_data=True)
    assert "evaluation federation itself" in same and "Papernot & Steinke" in same and "public" not in same
