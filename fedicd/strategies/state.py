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
* any other registered strategy: what its spec's :class:`StateHandler` saves;
* wrappers that carry state (client-level DP: Flower's fixed-clipping wrapper and its
  accountant, ``client_dp/accountant``) save and load it through the
  :class:`StateHandler` they set as :data:`WRAPPER_STATE_ATTR`.

Wrappers that expose the wrapped strategy as ``.strategy`` (:class:`UpdateValidator`,
Flower's DP wrappers) are looked through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAvgM, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from .build import STRATEGY_NAME_ATTR
from .config import STRATEGIES, strategy_spec
from .scaffold import Scaffold

__all__ = ["FEDAVGM_STATE", "FEDOPT_STATE", "NO_STATE", "SCAFFOLD_STATE", "WRAPPER_STATE_ATTR", "StateHandler",
           "load_strategy_state", "strategy_state"]

State = dict[str, np.ndarray]

WRAPPER_STATE_ATTR = "fedicd_wrapper_state"
"""A wrapper (an ``inner_wrappers`` result) that carries state sets this attribute to its :class:`StateHandler`:
``save(wrapper) -> State`` (keys under ``prefix``) and ``load(wrapper, its own entries)``."""


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
        If the strategy was not built by :func:`fedicd.strategies.build_strategy`.
    """
    inner = _unwrap(strategy)
    state = dict(_handler(inner)[0](inner))
    for wrapper, hook in _wrapper_hooks(strategy):
        state.update(hook.save(wrapper))
    return {k: np.array(v, copy=True) for k, v in state.items()}


def load_strategy_state(strategy: Strategy, state: State) -> None:
    """Restore a state produced by :func:`strategy_state` into a fresh strategy, in place.

    Raises
    ------
    ValueError
        If ``state`` holds keys that do not belong to this strategy type.
    """
    for wrapper, hook in _wrapper_hooks(strategy):
        mine = {k: v for k, v in state.items() if k.startswith(hook.prefix)}
        state = {k: v for k, v in state.items() if not k.startswith(hook.prefix)}
        hook.load(wrapper, mine)
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


@dataclass(frozen=True)
class StateHandler:
    """How one kind of strategy saves and restores its state (a spec's ``state``).

    ``save(strategy) -> State``, ``load(strategy, state)``; every key starts with ``prefix``.
    """

    save: Callable[..., State]
    load: Callable[..., None]
    prefix: str


NO_STATE = StateHandler(_no_state, _load_nothing, "")
FEDOPT_STATE = StateHandler(_save_fedopt, _load_fedopt, "fedopt/")
FEDAVGM_STATE = StateHandler(_save_fedavgm, _load_fedavgm, "fedavgm/")
SCAFFOLD_STATE = StateHandler(_save_scaffold, _load_scaffold, "scaffold/")


def _handler(strategy: Strategy) -> tuple[Callable[..., State], Callable[..., None], str]:
    """The state handler of the registered strategy ``build_strategy`` made (tagged with its name)."""
    name = getattr(strategy, STRATEGY_NAME_ATTR, None)
    if name not in STRATEGIES:
        raise ValueError(f"no state handler for strategy type {type(strategy).__name__}: build it with "
                         f"fedicd.strategies.build_strategy (registered: {sorted(STRATEGIES)})")
    handler = strategy_spec(name).state_handler() or NO_STATE
    return handler.save, handler.load, handler.prefix


def _wrapper_hooks(strategy: Strategy) -> list[tuple[Strategy, StateHandler]]:
    """The wrappers around the strategy that carry state (their :data:`WRAPPER_STATE_ATTR`), outermost first."""
    found, node = [], strategy
    while isinstance(node, Strategy):
        hook = getattr(node, WRAPPER_STATE_ATTR, None)
        if hook is not None:
            found.append((node, hook))
        node = getattr(node, "strategy", None)
    return found


def _unwrap(strategy: Strategy) -> Strategy:
    while isinstance(getattr(strategy, "strategy", None), Strategy):
        strategy = strategy.strategy  # type: ignore[attr-defined]
    return strategy
