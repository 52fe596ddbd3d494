"""The strategy specs: Flower-free, and the same compatibility tables and messages fedicd has always had."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.strategies import (STRATEGIES, check_compatible, client_dp_strategies, secure_strategies,
                               strategy_spec)

ALL = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold")


def test_the_registry_and_config_checks_import_no_flower():
    code = ("import sys; from fedicd.federated.config import FedConfig; FedConfig(strategy='scaffold'); "
            "import fedicd.strategies; assert 'flwr' not in sys.modules, sorted(m for m in sys.modules if 'flwr' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compatibility_tables_are_the_old_ones():
    assert tuple(STRATEGIES) == ALL
    assert secure_strategies("ckks") == ("fedavg", "fedprox")
    assert secure_strategies("secagg+") == ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad")
    assert client_dp_strategies() == ("fedavg", "fedprox")
    assert [n for n in ALL if not strategy_spec(n).sample_dp] == ["scaffold"]
    assert [n for n in ALL if strategy_spec(n).stateful] == ["fedavgm", "fedadam", "fedyogi", "fedadagrad", "scaffold"]
    assert strategy_spec("scaffold").extra_array_keys == ("scaffold-delta-c",)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("fedadam", {"secure_method": "ckks"},
     "federated.strategy = 'fedadam' cannot run under secure aggregation (ckks): the server never holds the plain "
     "aggregate its step needs; use one of ['fedavg', 'fedprox']"),
    ("scaffold", {"secure_method": "secagg+"},
     "federated.strategy = 'scaffold' cannot run under secure aggregation (secagg+): its per-client control "
     "variates would need their own secure sum; use one of ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', "
     "'fedadagrad']"),
    ("fedadam", {"dp": "client"},
     "client-level DP with an accountant needs equally weighted FedAvg aggregation; strategy 'fedadam' changes the "
     "aggregate on the server (choose one of ['fedavg', 'fedprox'])"),
    ("scaffold", {"dp": "sample"},
     "SCAFFOLD cannot run under sample-level DP (its control variates are non-private full-batch gradients); use "
     "fedavg or fedprox"),
])
def test_refusals_keep_their_messages(name, kwargs, message):
    with pytest.raises(ConfigError) as info:
        check_compatible(name, **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ALL)
def test_compatible_combinations_pass(name):
    for method in ("ckks", "secagg+"):
        if name in secure_strategies(method):
            check_compatible(name, secure_method=method)
    check_compatible(name)


def test_strategy_args_are_the_old_ones():
    fed = FedConfig(min_available=3, proximal_mu=0.2, eta=0.5)
    assert fed.strategy_args(8) == {
        "fraction_train": 1.0, "fraction_evaluate": 0.5, "min_available_nodes": 3, "min_train_nodes": 4,
        "min_evaluate_nodes": 2, "proximal_mu": 0.2, "server_lr": 1.0, "server_momentum": 0.9, "eta": 0.5,
        "eta_l": 1e-3, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3, "validate_updates": True}


def test_unknown_keyword_is_a_type_error():
    from fedicd.strategies import build_strategy

    with pytest.raises(TypeError, match="unexpected keyword argument 'mu'"):
        build_strategy("fedprox", mu=0.1)


def test_inner_wrappers_go_inside_the_validator():
    from fedicd.strategies import UpdateValidator, build_strategy

    seen = []

    def wrap(strategy):
        seen.append(type(strategy).__name__)
        return strategy

    built = build_strategy("fedavg", inner_wrappers=[wrap])
    assert seen == ["FedAvg"] and isinstance(built, UpdateValidator)
