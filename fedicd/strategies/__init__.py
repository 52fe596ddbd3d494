"""Federated server strategies, one per module, registered by name.

FedAvg, FedProx, FedAvgM, FedAdam, FedYogi and FedAdagrad are Flower's own
strategies built with checked parameters; SCAFFOLD is written here
(:mod:`fedicd.strategies.scaffold`). Each has a :class:`StrategySpec` in
:mod:`fedicd.strategies.config` (builder, hyper-parameters, what it composes
with, its resume state); the registry imports no Flower, so configs are checked
without it. :func:`build_strategy` wraps the result in :class:`UpdateValidator`,
which drops NaN/Inf, mis-shaped or unweighted client updates before they are
averaged. :func:`strategy_state` and :func:`load_strategy_state` save and restore
server-side state for resume.

All strategies weight by the clients' ``"num-examples"`` metric and use Flower's
default record keys: model under ``"arrays"``, config under ``"config"``.

The registry's names are imported eagerly; the Flower-backed ones (``build_strategy``,
``UpdateValidator``, ``Scaffold``, state functions) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._params import Sampling
from .keys import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY
from .config import (
    STRATEGIES,
    StrategySpec,
    check_compatible,
    client_dp_strategies,
    register_strategy,
    secure_strategies,
    strategy_args,
    strategy_names,
    strategy_spec,
    unregister_strategy,
)

__all__ = [
    "DELTA_CONTROL_KEY",
    "SERVER_CONTROL_KEY",
    "STRATEGIES",
    "Sampling",
    "Scaffold",
    "StateHandler",
    "StrategySpec",
    "UpdateValidator",
    "build_strategy",
    "check_compatible",
    "client_dp_strategies",
    "load_strategy_state",
    "proximal_term",
    "register_strategy",
    "secure_strategies",
    "strategy_args",
    "strategy_names",
    "strategy_spec",
    "strategy_state",
    "unregister_strategy",
]

_LAZY = {
    "build_strategy": ".build",
    "UpdateValidator": ".validation",
    "Scaffold": ".scaffold",
    "proximal_term": ".fedprox",
    "StateHandler": ".state",
    "strategy_state": ".state",
    "load_strategy_state": ".state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
