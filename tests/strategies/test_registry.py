"""build_strategy: registry, parameter checks, and what reaches Flower's constructors."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
)

from fedicd.errors import ConfigError
from fedicd.strategies import STRATEGIES, Scaffold, UpdateValidator, build_strategy

from .helpers import configure

EXPECTED = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam,
            "fedyogi": FedYogi, "fedadagrad": FedAdagrad, "scaffold": Scaffold}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_builds_the_right_flower_class_wrapped_by_the_validator(name: str) -> None:
    strategy = build_strategy(name)
    assert isinstance(strategy, UpdateValidator)
    assert type(strategy.strategy) is EXPECTED[name]
    inner = strategy.strategy
    assert (inner.weighted_by_key, inner.arrayrecord_key, inner.configrecord_key) == ("num-examples", "arrays", "config")
    # Paper defaults: fraction_train 1.0, fraction_evaluate 0.5, min 10/10/5.
    assert (inner.fraction_train, inner.fraction_evaluate) == (1.0, 0.5)
    assert (inner.min_available_nodes, inner.min_train_nodes, inner.min_evaluate_nodes) == (10, 10, 5)


def test_registry_lists_the_seven_strategies() -> None:
    assert set(STRATEGIES) == set(EXPECTED)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'") as info:
        build_strategy("fedsgd")
    for name in EXPECTED:
        assert name in str(info.value)


def test_validate_updates_false_returns_the_bare_strategy() -> None:
    assert type(build_strategy("fedadam", validate_updates=False)) is FedAdam


def test_hyper_parameters_reach_flower() -> None:
    adam = build_strategy("fedadam", eta=0.5, eta_l=0.25, beta_1=0.8, beta_2=0.9, tau=1e-4).strategy
    assert (adam.eta, adam.eta_l, adam.beta_1, adam.beta_2, adam.tau) == (0.5, 0.25, 0.8, 0.9, 1e-4)
    avgm = build_strategy("fedavgm", server_lr=0.7, server_momentum=0.5).strategy
    assert (avgm.server_learning_rate, avgm.server_momentum) == (0.7, 0.5)
    assert build_strategy("fedprox", proximal_mu=0.3).strategy.proximal_mu == 0.3


def test_fedprox_sends_mu_to_clients() -> None:
    strategy = build_strategy("fedprox", proximal_mu=0.3, min_available_nodes=2, min_train_nodes=2)
    msgs = configure(strategy, {"w": np.zeros(3, np.float32)}, n_nodes=2)
    assert all(m.content["config"]["proximal-mu"] == 0.3 for m in msgs)


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"fraction_train": 1.5}, "fraction_train"),
        ({"fraction_evaluate": -0.1}, "fraction_evaluate"),
        ({"min_available_nodes": 0}, "min_available_nodes"),
        ({"min_train_nodes": 2.5}, "min_train_nodes"),
        ({"proximal_mu": -0.01}, "proximal_mu"),
        ({"server_lr": 0.0}, "server_lr"),
        ({"server_momentum": 1.0}, "server_momentum"),
        ({"eta": float("nan")}, "eta"),
        ({"beta_2": 1.2}, "beta_2"),
        ({"tau": -1.0}, "tau"),
    ],
)
def test_bad_parameters_raise_naming_the_parameter_and_value(kwargs: dict, parameter: str) -> None:
    with pytest.raises(ConfigError, match=parameter) as info:
        build_strategy("fedavg", **kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)
    assert isinstance(info.value, ValueError)
