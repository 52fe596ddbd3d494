"""The strategy registry: one :class:`StrategySpec` per strategy, importable without Flower.

It is the strategies' section of the configuration: ``FedConfig`` and the secure
aggregation and privacy sections check names against it at config load, so it
imports foundations and this package's Flower-free modules only.

A spec names its builder (``"module:function"``, imported on first build, so configs
are checked without importing Flower), the hyper-parameters the builder takes (their
defaults are :class:`fedicd.federated.config.FedConfig`'s fields, the one source of
defaults), what it composes with (secure aggregation methods, client-level and
sample-level DP), its server-side state handler for resume, and the extra
ArrayRecords its clients' replies carry.

Adding a strategy: write its module (a ``build_x(sampling, **params)`` function) and
add one :class:`StrategySpec` to :data:`_BUILT_IN` below, or call
:func:`register_strategy` from your own module. A new hyper-parameter also needs a
``FedConfig`` field (its default; :func:`fedicd.strategies.build_strategy` reads it
there) and, if it needs one, a check in ``spec.checks``.

Callers ask the registry instead of keeping their own tables:
:func:`check_compatible` (secure aggregation, DP), :func:`secure_strategies`,
:func:`client_dp_strategies`, :func:`strategy_args` (what ``run_plan.json`` records
and :func:`fedicd.strategies.build_strategy` receives).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fedicd.errors import ConfigError

from ._params import check_non_negative, check_positive, check_unit_interval_open
from .keys import DELTA_CONTROL_KEY

__all__ = ["STRATEGIES", "SAMPLING_KEYS", "SECURE_METHODS", "StrategySpec", "register_strategy",
           "unregister_strategy", "strategy_spec", "strategy_names", "secure_strategies", "client_dp_strategies",
           "check_compatible", "hyper_parameters", "check_hyper_parameters",
           "strategy_args", "resolve"]

SECURE_METHODS = ("ckks", "ckks-threshold", "secagg+")
SAMPLING_KEYS = ("fraction_train", "fraction_evaluate", "min_available_nodes", "min_train_nodes",
                 "min_evaluate_nodes")
# why a strategy outside a method's list is refused (the method decides what the server can see)
_SECURE_WHY = {"ckks": "the server never holds the plain aggregate its step needs",
               "ckks-threshold": "its per-client control variates would need their own secure sum",
               "secagg+": "its per-client control variates would need their own secure sum"}
_PARAM_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "proximal_mu": check_non_negative, "server_lr": check_positive, "server_momentum": check_unit_interval_open,
    "eta": check_positive, "eta_l": check_positive, "beta_1": check_unit_interval_open,
    "beta_2": check_unit_interval_open, "tau": check_positive}


def resolve(ref: str | Callable) -> Any:
    """``"package.module:attr"`` → that attribute (imported now); anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    Attributes
    ----------
    name : str
        Registry name (``federated.strategy``).
    build : str or callable
        ``build(sampling, **params) -> Strategy``, or ``"module:function"`` naming it.
    params : tuple[str, ...]
        Hyper-parameters the builder takes (``FedConfig`` field names; defaults from there).
    checks : mapping
        ``param -> check(name, value)`` for hyper-parameters without a built-in check.
    secure_aggregation : tuple[str, ...]
        Secure-aggregation methods it runs under (``"ckks"``, ``"ckks-threshold"``, ``"secagg+"``).
    client_dp : bool
        Runs under client-level DP (its server step is the equally weighted mean).
    sample_dp : bool
        Runs under sample-level DP-SGD; ``sample_dp_refusal`` says why not.
    state : str, callable or None
        Its :class:`fedicd.strategies.state.StateHandler` (or ``"module:attr"``); None = stateless.
    extra_array_keys : tuple[str, ...]
        ArrayRecords replies may carry besides ``"arrays"`` (checked by UpdateValidator).
    title : str
        How messages name it (default: the name).
    """

    name: str
    build: str | Callable[..., Any]
    params: tuple[str, ...] = ()
    checks: Mapping[str, Callable[[str, Any], Any]] = field(default_factory=dict)
    secure_aggregation: tuple[str, ...] = ()
    client_dp: bool = False
    sample_dp: bool = True
    sample_dp_refusal: str = ""
    state: str | Callable[..., Any] | None = None
    extra_array_keys: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.secure_aggregation) - set(SECURE_METHODS))
        if unknown:
            raise ValueError(f"strategy {self.name!r}: unknown secure aggregation methods {unknown}; "
                             f"known: {list(SECURE_METHODS)}")
        if not self.sample_dp and not self.sample_dp_refusal:
            raise ValueError(f"strategy {self.name!r} refuses sample-level DP: say why (sample_dp_refusal)")

    @property
    def stateful(self) -> bool:
        """Whether :func:`fedicd.strategies.strategy_state` saves anything for it."""
        return self.state is not None

    @property
    def label(self) -> str:
        return self.title or self.name

    def builder(self) -> Callable[..., Any]:
        return resolve(self.build)

    def state_handler(self) -> Any:
        return None if self.state is None else resolve(self.state)


_REGISTRY: dict[str, StrategySpec] = {}
STRATEGIES: Mapping[str, StrategySpec] = MappingProxyType(_REGISTRY)
"""Registered strategies by name (read-only view; add with :func:`register_strategy`)."""


def register_strategy(spec: StrategySpec, *, replace: bool = False) -> StrategySpec:
    """Add ``spec`` to the registry (``replace=True`` to overwrite a name); returns it."""
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"strategy {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_strategy(name: str) -> None:
    """Remove ``name`` from the registry (tests and plug-ins that clean up)."""
    _REGISTRY.pop(name, None)


def strategy_names() -> tuple[str, ...]:
    """Registered names, in registration order."""
    return tuple(_REGISTRY)


def strategy_spec(name: str) -> StrategySpec:
    """The spec registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; valid names: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def secure_strategies(method: str) -> tuple[str, ...]:
    """Strategies that run under secure aggregation ``method`` (``"ckks"``, ``"ckks-threshold"`` or ``"secagg+"``)."""
    return tuple(n for n, s in _REGISTRY.items() if method in s.secure_aggregation)


def client_dp_strategies() -> tuple[str, ...]:
    """Strategies that run under client-level DP (equally weighted FedAvg aggregation)."""
    return tuple(n for n, s in _REGISTRY.items() if s.client_dp)


def check_compatible(name: str, *, secure_method: str = "none", dp: str = "none") -> None:
    """Refuse ``name`` under a secure-aggregation method or a DP level it cannot serve.

    Raises :class:`ConfigError` (a ``ValueError``) with the messages fedicd has always
    given: ``federated.strategy = ... cannot run under secure aggregation (...)``,
    ``client-level DP with an accountant needs ...``, ``X cannot run under sample-level DP``.
    """
    spec = strategy_spec(name)
    if secure_method != "none" and secure_method not in spec.secure_aggregation:
        why = _SECURE_WHY.get(secure_method, "the strategy does not support it")
        raise ConfigError(f"federated.strategy = {name!r} cannot run under secure aggregation "
                          f"({secure_method}): {why}; use one of {list(secure_strategies(secure_method))}")
    if dp == "client" and not spec.client_dp:
        raise ConfigError(f"client-level DP with an accountant needs equally weighted FedAvg aggregation; strategy "
                          f"{name!r} changes the aggregate on the server (choose one of "
                          f"{list(client_dp_strategies())})")
    if dp == "sample" and not spec.sample_dp:
        raise ConfigError(f"{spec.label} cannot run under sample-level DP ({spec.sample_dp_refusal}); "
                          f"use {' or '.join(client_dp_strategies())}")


def hyper_parameters() -> tuple[str, ...]:
    """Every registered strategy's hyper-parameters, in order of first appearance."""
    return tuple(dict.fromkeys(p for s in _REGISTRY.values() for p in s.params))


def check_hyper_parameters(values: Mapping[str, Any]) -> None:
    """Check every hyper-parameter in ``values``, so a bad config value fails even if unused."""
    checks = {**{k: c for s in _REGISTRY.values() for k, c in s.checks.items()}, **_PARAM_CHECKS}
    for key, value in values.items():
        if key in checks:
            checks[key](key, value)


def strategy_args(fed: Any, n_clients: int) -> dict[str, Any]:
    """:func:`fedicd.strategies.build_strategy`'s keywords for ``fed`` (a FedConfig) and ``n_clients``."""
    min_available, min_train, min_evaluate = fed.node_minimums(n_clients)
    return {"fraction_train": fed.fraction_train, "fraction_evaluate": fed.fraction_evaluate,
            "min_available_nodes": min_available, "min_train_nodes": min_train, "min_evaluate_nodes": min_evaluate,
            **{p: getattr(fed, p) for p in hyper_parameters()}, "validate_updates": fed.validate_updates}


_M = "fedicd.strategies."
_FEDOPT = ("eta", "eta_l", "beta_1", "beta_2", "tau")
_MEAN = ("ckks", "ckks-threshold", "secagg+")  # the server step is the weighted mean: CKKS can compute it encrypted
_PLAIN_AVERAGE = ("ckks-threshold", "secagg+")  # the server steps from the (unmasked or jointly decrypted) average

_BUILT_IN = (
    StrategySpec("fedavg", _M + "fedavg:build_fedavg", secure_aggregation=_MEAN, client_dp=True),
    StrategySpec("fedprox", _M + "fedprox:build_fedprox", ("proximal_mu",), secure_aggregation=_MEAN,
                 client_dp=True),
    StrategySpec("fedavgm", _M + "fedavgm:build_fedavgm", ("server_lr", "server_momentum"),
                 secure_aggregation=_PLAIN_AVERAGE, state=_M + "state:FEDAVGM_STATE"),
    StrategySpec("fedadam", _M + "fedadam:build_fedadam", _FEDOPT, secure_aggregation=_PLAIN_AVERAGE,
                 state=_M + "state:FEDOPT_STATE"),
    StrategySpec("fedyogi", _M + "fedyogi:build_fedyogi", _FEDOPT, secure_aggregation=_PLAIN_AVERAGE,
                 state=_M + "state:FEDOPT_STATE"),
    StrategySpec("fedadagrad", _M + "fedadagrad:build_fedadagrad", ("eta", "eta_l", "tau"),
                 secure_aggregation=_PLAIN_AVERAGE, state=_M + "state:FEDOPT_STATE"),
    StrategySpec("scaffold", _M + "scaffold:build_scaffold", extra_array_keys=(DELTA_CONTROL_KEY,),
                 sample_dp=False, sample_dp_refusal="its control variates are non-private full-batch gradients",
                 state=_M + "state:SCAFFOLD_STATE", title="SCAFFOLD"),
)
for _spec in _BUILT_IN:
    register_strategy(_spec)
