""":func:`build_strategy`: a registered strategy, checked, wrapped and ready for the ServerApp."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig

from ._params import Sampling
from .config import SAMPLING_KEYS, check_hyper_parameters, hyper_parameters, strategy_spec
from .validation import UpdateValidator

__all__ = ["STRATEGY_NAME_ATTR", "build_strategy", "strategy_defaults"]

STRATEGY_NAME_ATTR = "fedicd_strategy"
"""Attribute naming the registry entry on the built (innermost) strategy; the state handler is found by it."""

Wrapper = Callable[[Strategy], Strategy]


def build_strategy(name: str, *, validate_updates: bool = True, weighted_by_key: str = "num-examples",
                   inner_wrappers: Iterable[Wrapper] = (), **params: Any) -> Strategy:
    """Build a registered server strategy (defaults: ``FedConfig``'s, min nodes 10/10/5 as the paper's 20 clients).

    Parameters
    ----------
    name : str
        A registered name (:data:`fedicd.strategies.STRATEGIES`): ``fedavg``, ``fedprox``,
        ``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``, ``scaffold``.
    validate_updates : bool
        Wrap the strategy in :class:`UpdateValidator` (recommended).
    weighted_by_key : str
        The reply metric that weights the average (``"num-examples"``).
    inner_wrappers : iterable of callables
        ``Strategy -> Strategy``, applied in order before :class:`UpdateValidator`
        (client-level DP: Flower's fixed-clipping wrapper, built by :mod:`fedicd.privacy`).
    **params
        Sampling (``fraction_train``, ``fraction_evaluate``, ``min_available_nodes``,
        ``min_train_nodes``, ``min_evaluate_nodes``) and the registered strategies'
        hyper-parameters (``proximal_mu``, ``server_lr``, ``server_momentum``, ``eta``,
        ``eta_l``, ``beta_1``, ``beta_2``, ``tau``); each one is checked, used or not.

    Raises
    ------
    ValueError
        For an unknown ``name`` (the message lists the valid ones) or any parameter
        out of range (:class:`fedicd.errors.ConfigError`, naming it).
    TypeError
        For a keyword that is neither a sampling setting nor a registered hyper-parameter.
    """
    spec = strategy_spec(name)
    values = _parameters(params)
    sampling = Sampling(**{k: values[k] for k in SAMPLING_KEYS if k in values})
    check_hyper_parameters({k: v for k, v in values.items() if k not in SAMPLING_KEYS})
    strategy = spec.builder()(sampling, **{key: values[key] for key in spec.params})
    strategy.weighted_by_key = weighted_by_key
    setattr(strategy, STRATEGY_NAME_ATTR, name)
    for wrap in inner_wrappers:
        strategy = wrap(strategy)
    if validate_updates:
        return UpdateValidator(strategy, extra_array_keys=spec.extra_array_keys)
    return strategy


def strategy_defaults() -> dict[str, Any]:
    """Defaults of the sampling fractions and every hyper-parameter: ``FedConfig``'s fields (the one source)."""
    fields = FedConfig.__dataclass_fields__
    missing = [p for p in hyper_parameters() if p not in fields]
    if missing:
        raise ConfigError(f"strategy hyper-parameters {missing} have no default: add them to FedConfig")
    return {k: fields[k].default for k in ("fraction_train", "fraction_evaluate", *hyper_parameters())}


def _parameters(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` over the defaults; unknown keywords raise ``TypeError`` as a plain signature would."""
    allowed = set(SAMPLING_KEYS) | set(hyper_parameters())
    for key in params:
        if key not in allowed:
            raise TypeError(f"build_strategy() got an unexpected keyword argument {key!r}")
    return {**strategy_defaults(), **params}
