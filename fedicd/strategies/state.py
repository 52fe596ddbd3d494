"""Save and restore the server-side state of a strategy, for checkpoint/resume.

State is a flat ``dict[str, numpy.ndarray]`` (ready for ``numpy.savez``) with keys
``"<strategy>/<field>/<array name>"``:

* FedAdam / FedYogi / FedAdagrad (Flower's ``FedOpt``): ``fedopt/m_t/*``, ``fedopt/v_t/*``
  and ``fedopt/current_arrays/*`` (Flower keeps them as ``dict[str, ndarray]`` attributes;
  the bias correction of FedAdam uses ``server_round``, which the caller passes again);
* FedAvgM: ``fedavgm/current_arrays/*``, ``fedavgm/momentum_vector/*`` and
  ``fedavgm/key_order`` (Flower keeps the momentum as a *list* aligned by position with
  ``current_arrays``, so the order is saved explicitly);
* SCAFFOLD: ``scaffold/c/*`` (the server control; client controls live on the clients);
* FedAvg / FedProx: ``{}``;
* client-level DP (Flower's fixed-clipping wrapper): ``client_dp/accountant``, the
  accountant's state as a JSON string.

Wrappers that expose the wrapped strategy as ``.strategy`` (:class:`UpdateValidator`,
Flower's DP wrappers) are looked through.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from .scaffold import Scaffold

__all__ = ["load_strategy_state", "strategy_state"]

State = dict[str, np.ndarray]


def strategy_state(strategy: Strategy) -> State:
    """Everything a fresh strategy of the same kind needs to continue where this one stopped.

    Parameters
    ----------
    strategy : Strategy
        A strategy built by :func:`fedicd.strategies.build_strategy` (wrapped or not).

    Returns
    -------
    dict[str, numpy.ndarray]
        Copies of the state arrays; empty for stateless strategies or before round 1.

    Raises
    ------
    ValueError
        If the strategy type is not one of the supported ones.
    """
    from fedicd.privacy.client_level import client_dp_state

    inner = _unwrap(strategy)
    state = {**_handler(inner)[0](inner), **client_dp_state(strategy)}
    return {k: np.array(v, copy=True) for k, v in state.items()}


def load_strategy_state(strategy: Strategy, state: State) -> None:
    """Restore a state produced by :func:`strategy_state` into a fresh strategy, in place.

    Raises
    ------
    ValueError
        If ``state`` holds keys that do not belong to this strategy type.
    """
    from fedicd.privacy.client_level import load_client_dp_state

    state = load_client_dp_state(strategy, state)
    inner = _unwrap(strategy)
    _, load, prefix = _handler(inner)
    foreign = sorted(k for k in state if not k.startswith(prefix) or not prefix)
    if foreign:
        raise ValueError(
            f"state keys {foreign[:5]} do not belong to {type(inner).__name__} (expected prefix {prefix!r})"
        )
    load(inner, {k: np.array(v, copy=True) for k, v in state.items()})


# -------------------------------------------------------------------- per type
def _fields(state: State, prefix: str) -> dict[str, np.ndarray] | None:
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return picked or None


def _flatten(prefix: str, arrays: dict[str, np.ndarray] | None) -> State:
    return {f"{prefix}{name}": value for name, value in (arrays or {}).items()}


def _save_fedopt(s: FedOpt) -> State:
    return {**_flatten("fedopt/m_t/", s.m_t), **_flatten("fedopt/v_t/", s.v_t),
            **_flatten("fedopt/current_arrays/", s.current_arrays)}


def _load_fedopt(s: FedOpt, state: State) -> None:
    s.m_t = _fields(state, "fedopt/m_t/")
    s.v_t = _fields(state, "fedopt/v_t/")
    s.current_arrays = _fields(state, "fedopt/current_arrays/")


def _save_fedavgm(s: FedAvgM) -> State:
    if s.current_arrays is None:
        return {}
    names = list(s.current_arrays.keys())
    state = _flatten("fedavgm/current_arrays/", dict(zip(names, s.current_arrays.to_numpy_ndarrays(), strict=True)))
    if s.momentum_vector is not None:
        state.update(_flatten("fedavgm/momentum_vector/", dict(zip(names, s.momentum_vector, strict=True))))
    return {**state, "fedavgm/key_order": np.array(names, dtype=str)}


def _load_fedavgm(s: FedAvgM, state: State) -> None:
    if "fedavgm/key_order" not in state:
        s.current_arrays, s.momentum_vector = None, None
        return
    names = [str(n) for n in state["fedavgm/key_order"]]
    current = _fields(state, "fedavgm/current_arrays/") or {}
    momentum = _fields(state, "fedavgm/momentum_vector/")
    s.current_arrays = ArrayRecord({n: Array(current[n]) for n in names})
    s.momentum_vector = None if momentum is None else [momentum[n] for n in names]


def _save_scaffold(s: Scaffold) -> State:
    return _flatten("scaffold/c/", s.control)


def _load_scaffold(s: Scaffold, state: State) -> None:
    s.control = _fields(state, "scaffold/c/")


def _no_state(_: Strategy) -> State:
    return {}


def _load_nothing(_: Strategy, __: State) -> None:
    return None


_Handler = tuple[Callable[..., State], Callable[..., None], str]


def _handler(strategy: Strategy) -> _Handler:
    if isinstance(strategy, Scaffold):
        return _save_scaffold, _load_scaffold, "scaffold/"
    if isinstance(strategy, FedOpt):
        return _save_fedopt, _load_fedopt, "fedopt/"
    if isinstance(strategy, FedAvgM):
        return _save_fedavgm, _load_fedavgm, "fedavgm/"
    if type(strategy) in (FedAvg, FedProx):
        return _no_state, _load_nothing, ""
    raise ValueError(
        f"no state handler for strategy type {type(strategy).__name__}; supported: "
        "FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, Scaffold"
    )


def _unwrap(strategy: Strategy) -> Strategy:
    while isinstance(getattr(strategy, "strategy", None), Strategy):
        strategy = strategy.strategy  # type: ignore[attr-defined]
    return strategy
