"""Federated server strategies, one per module, registered by name.

FedAvg, FedProx, FedAvgM, FedAdam, FedYogi and FedAdagrad are Flower's own
strategies built with checked parameters; SCAFFOLD is written here
(:mod:`fedicd.strategies.scaffold`). :func:`build_strategy` wraps the result in
:class:`UpdateValidator`, which drops NaN/Inf, mis-shaped or unweighted client
updates before they are averaged. :func:`strategy_state` and
:func:`load_strategy_state` save and restore server-side state for resume.

All strategies weight by the clients' ``"num-examples"`` metric and use Flower's
default record keys: model under ``"arrays"``, config under ``"config"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.serverapp.strategy import Strategy

from ._params import (
    Sampling,
    check_non_negative,
    check_positive,
    check_unit_interval_open,
)
from .fedadagrad import build_fedadagrad
from .fedadam import build_fedadam
from .fedavg import build_fedavg
from .fedavgm import build_fedavgm
from .fedprox import build_fedprox, proximal_term
from .fedyogi import build_fedyogi
from .scaffold import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY, Scaffold, build_scaffold
from .state import load_strategy_state, strategy_state
from .validation import UpdateValidator

__all__ = [
    "DELTA_CONTROL_KEY",
    "SERVER_CONTROL_KEY",
    "STRATEGIES",
    "Sampling",
    "Scaffold",
    "StrategySpec",
    "UpdateValidator",
    "build_strategy",
    "load_strategy_state",
    "proximal_term",
    "strategy_state",
]


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its builder and the hyper-parameters it takes besides sampling.

    Attributes
    ----------
    build : callable
        ``build(sampling, **params) -> Strategy``.
    params : tuple[str, ...]
        Names of the :func:`build_strategy` keyword arguments the builder uses.
    extra_array_keys : tuple[str, ...]
        ArrayRecords that replies may carry besides ``"arrays"`` (for UpdateValidator).
    """

    build: Callable[..., Strategy]
    params: tuple[str, ...] = ()
    extra_array_keys: tuple[str, ...] = ()


_FEDOPT = ("eta", "eta_l", "beta_1", "beta_2", "tau")

STRATEGIES: dict[str, StrategySpec] = {
    "fedavg": StrategySpec(build_fedavg),
    "fedprox": StrategySpec(build_fedprox, ("proximal_mu",)),
    "fedavgm": StrategySpec(build_fedavgm, ("server_lr", "server_momentum")),
    "fedadam": StrategySpec(build_fedadam, _FEDOPT),
    "fedyogi": StrategySpec(build_fedyogi, _FEDOPT),
    "fedadagrad": StrategySpec(build_fedadagrad, ("eta", "eta_l", "tau")),
    "scaffold": StrategySpec(build_scaffold, (), (DELTA_CONTROL_KEY,)),
}
"""Registered strategies by name."""


def build_strategy(
    name: str,
    *,
    fraction_train: float = 1.0,
    fraction_evaluate: float = 0.5,
    min_available_nodes: int = 10,
    min_train_nodes: int = 10,
    min_evaluate_nodes: int = 5,
    proximal_mu: float = 0.01,
    server_lr: float = 1.0,
    server_momentum: float = 0.9,
    eta: float = 1e-2,
    eta_l: float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
    validate_updates: bool = True,
    weighted_by_key: str = "num-examples",
    client_dp: dict | None = None,
) -> Strategy:
    """Build a registered server strategy (defaults: the paper's sampling protocol).

    Parameters
    ----------
    name : str
        One of :data:`STRATEGIES`: ``fedavg``, ``fedprox``, ``fedavgm``, ``fedadam``,
        ``fedyogi``, ``fedadagrad``, ``scaffold``.
    fraction_train, fraction_evaluate : float
        Fractions of connected nodes sampled per round, in [0, 1].
    min_available_nodes, min_train_nodes, min_evaluate_nodes : int
        Minimum node counts (Flower's meaning); ``min_available_nodes >= 1``.
    proximal_mu : float
        FedProx ``mu >= 0``.
    server_lr, server_momentum : float
        FedAvgM server learning rate (> 0) and momentum (in [0, 1)).
    eta, eta_l, beta_1, beta_2, tau : float
        FedOpt family (FedAdam, FedYogi, FedAdagrad): server and client learning
        rates (> 0), moment decays (in [0, 1)) and adaptivity (> 0).
    validate_updates : bool
        Wrap the strategy in :class:`UpdateValidator` (recommended).
    weighted_by_key : str
        The reply metric that weights the average (``"num-examples"``).
    client_dp : dict or None
        Client-level central DP: keyword arguments of
        :func:`fedicd.privacy.client_level.wrap_client_dp` (``noise``, ``clip``,
        ``sampled``, ``population``, ``delta``, ``max_epsilon``, ``client_side``);
        Flower's fixed-clipping wrapper goes inside the validator.

    Returns
    -------
    Strategy
        The strategy, wrapped in :class:`UpdateValidator` when ``validate_updates``.

    Raises
    ------
    ValueError
        For an unknown ``name`` (the message lists the valid ones) or any parameter
        out of range (:class:`fedicd.errors.ConfigError`, naming it), whether or not
        the chosen strategy uses it.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; valid names: {sorted(STRATEGIES)}")
    sampling = Sampling(fraction_train, fraction_evaluate, min_available_nodes, min_train_nodes, min_evaluate_nodes)
    hyper = {"proximal_mu": proximal_mu, "server_lr": server_lr, "server_momentum": server_momentum,
             "eta": eta, "eta_l": eta_l, "beta_1": beta_1, "beta_2": beta_2, "tau": tau}
    _check_all(hyper)
    spec = STRATEGIES[name]
    strategy = spec.build(sampling, **{key: hyper[key] for key in spec.params})
    strategy.weighted_by_key = weighted_by_key
    if client_dp is not None:
        from fedicd.privacy.client_level import wrap_client_dp

        strategy = wrap_client_dp(strategy, name, **client_dp)
    if validate_updates:
        return UpdateValidator(strategy, extra_array_keys=spec.extra_array_keys)
    return strategy


def _check_all(hyper: dict[str, float]) -> None:
    """Check every hyper-parameter, so a bad config value fails even if unused."""
    check_non_negative("proximal_mu", hyper["proximal_mu"])
    for key in ("server_lr", "eta", "eta_l", "tau"):
        check_positive(key, hyper[key])
    for key in ("server_momentum", "beta_1", "beta_2"):
        check_unit_interval_open(key, hyper[key])
