"""Client-level DP planning: σ calibrated under RDP or PLD, both planned ε, the cohort rules and their named
errors, and the distributed-DP options."""

from __future__ import annotations

import pytest

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.privacy.client_level import calibrate_client_noise, client_epsilon
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.plan import client_cohort, plan_privacy
from fedicd.train_config import TrainConfig


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize(("sampled", "population", "poisson", "rounds"), [(100, 1000, True, 20), (5, 20, False, 10)])
def test_calibration_lands_within_a_tenth_of_a_percent_below_the_target(accountant, sampled, population, poisson,
                                                                         rounds):
    sigma = calibrate_client_noise(4.0, 1e-5, rounds, sampled, population, accountant=accountant, poisson=poisson)
    q = sampled / population if poisson else 1.0
    eps = client_epsilon(sigma, rounds, 1e-5, sample_rate=q, accountant=accountant)
    assert 4.0 * (1 - 1e-3) <= eps <= 4.0


def _plan(fed=(), **privacy):
    fed_cfg = FedConfig(**dict(fed))
    p = PrivacyConfig(dp="client", **privacy)
    return plan_privacy(p, fed_cfg, TrainConfig(), [10] * 1000 if "poisson" in str(privacy) else [10] * 20, 8, 4)[1]


def test_poisson_plan_records_both_accountants_and_the_sampling():
    plan = _plan(fed={"rounds": 10}, noise=0.7, client_sampling="poisson", clients_per_round=100, accountant="pld",
                 adaptive_clipping=True, clip=0.1)
    assert plan.sample_rate == 0.1 and plan.sampled_clients == 100 and plan.population == 1000
    assert plan.calibrated_with == "pld" and plan.client_sampling == "poisson" and plan.adaptive_clipping
    assert plan.clip_count_stddev == 5.0 and plan.target_quantile == 0.5
    assert plan.planned_epsilon_pld < plan.planned_epsilon_rdp
    assert plan.planned_epsilon_pld == pytest.approx(client_epsilon(0.7, 10, 1e-5, sample_rate=0.1, accountant="pld"))
    assert plan.planned_epsilon_rdp == pytest.approx(client_epsilon(plan.noise_multiplier, 10, 1e-5,
                                                                    sample_rate=0.1, accountant="rdp"))
    assert plan.noise_std > plan.noise_multiplier * 0.1 / 100  # the update's σ_Δ exceeds σ (the count takes some)


def test_fraction_train_derives_the_poisson_cohort():
    plan = _plan(fed={"fraction_train": 0.05}, noise=1.0, client_sampling="poisson")
    assert plan.sampled_clients == 50 and plan.sample_rate == 0.05


@pytest.mark.parametrize(("fed", "privacy", "message"), [
    ({}, {"clients_per_round": 1001, "client_sampling": "poisson"},
     r"clients_per_round = 1001 is larger than the federation \(1000 clients"),
    ({"fraction_train": 0.0005}, {"client_sampling": "poisson"}, "rounds to an empty cohort; raise federated.fraction"),
    ({"min_train": 10}, {"client_sampling": "poisson"}, "federated.min_train = 10 fixes its size"),
    ({}, {"clients_per_round": 7}, "Flower's sampler draws 20 clients"),
    ({}, {"clients_per_round": 100, "client_sampling": "poisson", "adaptive_clipping": True,
          "clip_count_stddev": 0.1}, "needs privacy.clip_count_stddev > σ/2"),
    ({}, {"distributed": True, "client_sampling": "poisson"}, "set privacy.client_sampling = 'fixed'"),
])
def test_contradicting_cohort_settings_get_named_errors(fed, privacy, message):
    with pytest.raises(ConfigError, match=message):
        _plan(fed=fed, noise=1.0, **privacy)


def test_cohort_of_the_fixed_sampler_is_flowers():
    fed = FedConfig(fraction_train=0.5)
    assert client_cohort(PrivacyConfig(dp="client", noise=1.0), fed, 20) == 10
    assert client_cohort(PrivacyConfig(dp="client", noise=1.0, clients_per_round=10), fed, 20) == 10


def test_distributed_dp_gets_unit_weights_and_no_server_noise(tmp_path):
    from fedicd.privacy.defences import round_observers, strategy_options

    plan = _plan(noise=1.0, distributed=True)
    assert plan.distributed and strategy_options(plan, "fedavg") == {"weighted_by_key": "unit-weight"}
    assert round_observers(plan, object(), tmp_path) == ()
    central = strategy_options(_plan(noise=1.0), "fedavg")
    assert len(central["inner_wrappers"]) == 1


def test_adaptive_clipping_with_client_side_clipping_is_refused():
    from fedicd.privacy.client_level import wrap_client_dp
    from fedicd.privacy.poisson_clients import AdaptiveClip
    from fedicd.strategies import build_strategy

    with pytest.raises(ValueError, match="set privacy.client_side_clipping = false"):
        build_strategy("fedavg", weighted_by_key="unit-weight", min_available_nodes=2, min_train_nodes=2,
                       min_evaluate_nodes=1, inner_wrappers=[lambda s: wrap_client_dp(
                           s, "fedavg", noise=1.0, clip=1.0, sampled=2, population=4, delta=1e-5, max_epsilon=None,
                           client_side=True, adaptive=AdaptiveClip(0.5, 1.0))])


def test_adaptive_clipping_with_a_fixed_cohort_is_refused():
    with pytest.raises(ConfigError, match="privacy.adaptive_clipping needs privacy.client_sampling = 'poisson'"):
        _plan(fed={"rounds": 3}, noise=1.0, adaptive_clipping=True)
