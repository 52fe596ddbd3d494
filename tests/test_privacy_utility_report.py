"""The privacy–utility page and the frontier script's bookkeeping (no federated run here)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from fedicd.report.privacy_utility import goal_checks, render_privacy_utility

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("privacy_utility", ROOT / "experiments" / "privacy_utility.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _row(lever, eps, micro, **kw):
    return {"suite": "toy", "lever": lever, "target_epsilon": eps, "micro_f1": micro, "macro_f1": micro / 2,
            "epsilon_rdp": None if math.isinf(eps) else eps * 0.999, "epsilon_pld": None if math.isinf(eps) else
            eps * 0.9, "accountant": "pld", "sigma": 1.0, "seconds": 12.4, **kw}


def _doc(goals):
    return {"suite": "toy", "title": "Toy suite", "config": "toy.toml", "dp": "sample", "base_overrides": ["a=1"],
            "levers": [{"name": "paper", "what": "baseline", "overrides": []},
                       {"name": "linear", "what": "linear head", "overrides": ['train.head="linear"']}],
            "goals": goals,
            "rows": [_row("paper", math.inf, 0.60), _row("paper", 8.0, 0.20), _row("linear", 8.0, 0.47,
                                                                                 zero_shot_micro_f1=0.31),
                     _row("linear", 1.0, 0.25)],
            "failures": [{"lever": "paper", "target_epsilon": 1.0, "error": "ValueError: cannot reach ε=1"}]}


def test_goal_checks_take_the_best_lever_at_each_epsilon():
    checks = {g["epsilon"]: g for g in goal_checks(_doc({"8.0": 0.45, "1.0": 0.30}))}
    assert checks[8.0] == {"epsilon": 8.0, "goal": 0.45, "goal_text": 0.45, "best": 0.47, "lever": "linear",
                           "met": True}
    assert checks[1.0]["met"] is False and checks[1.0]["best"] == 0.25


def test_half_goal_is_half_the_best_non_private_score():
    (check,) = goal_checks(_doc({"8.0": "half"}))
    assert check["goal"] == pytest.approx(0.30) and check["met"] is True


def test_goal_without_a_run_at_that_epsilon_is_not_measured():
    (check,) = goal_checks(_doc({"3.0": 0.4}))
    assert check["met"] is None and check["best"] is None


def test_page_renders_rows_goals_failures_and_plot(tmp_path):
    folder = tmp_path / "privacy_utility"
    folder.mkdir()
    (folder / "toy.json").write_text(json.dumps(_doc({"8.0": 0.45, "1.0": 0.30})))
    (folder / "toy.png").write_bytes(b"png")
    page = render_privacy_utility(tmp_path)
    assert "- ε = 8: goal micro-F1 ≥ 0.45: **met**; best 0.4700 (linear)" in page
    assert "- ε = 1: goal micro-F1 ≥ 0.30: **missed**; best 0.2500 (linear)" in page
    assert "| linear | 8.00 | 7.9920 | 7.2000 | pld | 1.0000 | 0.4700 | 0.2350 | 0.3100 | 12 | — |" in page
    assert "| paper | ∞ |" in page
    assert "| linear: zero-shot | no private step | 0.0000 | 0.0000 | — | — | 0.3100 |" in page
    assert "paper at ε = 1.00: ValueError: cannot reach ε=1" in page
    assert "../../experiments/results/privacy_utility/toy.png" in page
    assert '- **linear**: linear head — `train.head="linear"`' in page


def test_empty_archive_says_so(tmp_path):
    assert "No privacy–utility frontier is archived yet." in render_privacy_utility(tmp_path / "nothing")


def test_script_strips_privacy_overrides_for_the_non_private_row():
    mod = _script()
    assert mod.strip_private(('privacy.accountant="pld"', 'train.head="linear"', 'secure_aggregation.method="x"')) \
        == ['train.head="linear"']
    assert mod.dp_overrides("sample", math.inf) == ['privacy.dp="none"']
    assert mod.dp_overrides("client", 8.0) == ['privacy.dp="client"', "privacy.target_epsilon=8"]


def test_every_suite_lever_names_are_unique_and_goals_are_on_its_grid():
    mod = _script()
    for suite in mod.SUITES.values():
        names = [lv.name for lv in suite.levers]
        assert len(names) == len(set(names)), suite.name
        assert set(suite.private_only) <= set(names)
        assert all(float(e) in suite.epsilons for e in suite.goals), suite.name


def test_row_of_reads_both_epsilons_and_the_zero_shot_score(tmp_path):
    mod = _script()
    suite = mod.SUITES["sample24k"]
    res = {"privacy": {"epsilon": 7.99, "epsilon_rdp": 8.6, "epsilon_pld": 7.99, "accountant": "pld", "clip": 0.1,
                       "clients": [{"noise_multiplier": 1.1}, {"noise_multiplier": 1.3}]},
           "test": {"micro_f1": 0.5, "macro_f1": 0.2}, "val": {"micro_f1": 0.52},
           "warm_start": {"zero_shot": {"test": {"micro_f1": 0.3, "macro_f1": 0.1}}},
           "client_sizes": [840] * 20, "history": [{}] * 20, "seconds": {"simulation": 60.0}}
    row = mod.row_of(suite, suite.levers[0], 8.0, res, tmp_path)
    assert (row["epsilon_rdp"], row["epsilon_pld"], row["sigma"], row["zero_shot_micro_f1"]) == (8.6, 7.99, 1.3, 0.3)
    assert (row["dp"], row["clients"], row["rounds"], row["val_micro_f1"]) == ("sample", 20, 20, 0.52)


def _suites_to_check(mod):
    """Every suite; CodiEsp's only where its data folder exists (its config checks the path)."""
    for suite in mod.SUITES.values():
        if suite.name == "codiesp" and not (ROOT / "../shared/data/codiesp").is_dir():
            continue
        yield suite


@pytest.mark.skipif(not (ROOT / "../shared/data/codiesp").is_dir(),
                    reason="../shared/data/codiesp is absent: the CodiEsp suite's levers are not checked")
def test_codiesp_suite_levers_are_checked_here():
    assert "codiesp" in [s.name for s in _suites_to_check(_script())]


def test_every_lever_of_every_suite_is_a_valid_config_and_plan():
    """Each (suite, lever, ε) loads as a config; its warm start fits its head; its privacy plan builds."""
    from fedicd.privacy.plan import plan_privacy
    from fedicd.warm_start.stage import check_warm_start

    mod = _script()
    for suite in _suites_to_check(mod):
        for lever, eps in mod.run_grid(suite):
            cfg = mod.lever_config(suite, lever, eps)
            check_warm_start(cfg)
            assert cfg.privacy.dp == ("none" if math.isinf(eps) else suite.dp), (suite.name, lever.name, eps)
            assert math.isinf(eps) or cfg.privacy.target_epsilon == eps
            if eps == max(suite.epsilons) or math.isinf(eps):  # σ calibration is slow: one private ε per lever
                n = cfg.partition.n_clients
                plan_privacy(cfg.privacy, cfg.federated, cfg.train, [16_800 // n] * n, 384, 60)
    client = mod.SUITES["client1000"]
    fixed = mod.lever_config(client, client.levers[0], 8.0)
    assert (fixed.privacy.client_sampling, fixed.privacy.clients_per_round) == ("fixed", 100)
    assert fixed.federated.node_minimums(1000)[1] == 100 == int(1000 * fixed.federated.fraction_train)
    descriptions = mod.lever_config(mod.SUITES["sample24k"], mod.ZERO, 8.0)
    assert (descriptions.warm_start.init, descriptions.train.head) == ("descriptions", "linear")
