"""Client-level (user-level) central DP: Flower's fixed-clipping wrappers and Flower's RDP accountant.

Each round every sampled client's model update ``w_i − w`` is clipped to L2
norm ``clip`` (on the server: ``DifferentialPrivacyServerSideFixedClipping``;
or on the client by Flower's ``fixedclipping_mod``:
``DifferentialPrivacyClientSideFixedClipping``), the clipped updates are
averaged with *equal* weights, and the server adds Gaussian noise of std
``noise · clip / n_sampled``. The unit of privacy is a whole client (hospital).

Accounting uses Flower's ``RdpAccountant`` (``flwr[dp]``, Google's
``dp-accounting``) under the assumptions it states and checks: no sampling
amplification (clients are sampled by Flower's fixed-size sampler, which the
accountant does not credit), add-or-remove-one neighbouring, FedAvg's
aggregation with equal client weights. Anything else fails with an explicit
error here or in Flower: server-side optimisers (FedAvgM, FedAdam, FedYogi,
FedAdagrad), SCAFFOLD, or unequal weights. A round with a failed client
releases nothing and is not counted.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    SamplingMethod,
)
from flwr.supercore.privacy_accounting import PrivacyConfig as FlowerPrivacyConfig
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

__all__ = ["UNIT_WEIGHT_KEY", "client_dp_accountant", "calibrate_client_noise",
           "wrap_client_dp", "client_dp_state", "load_client_dp_state", "find_client_dp"]

UNIT_WEIGHT_KEY = "unit-weight"  # clients report 1.0 here; FedAvg weights by it under client-level DP


def client_dp_accountant(population: int, delta: float, max_epsilon: float | None = None) -> RdpAccountant:
    return RdpAccountant(FlowerPrivacyConfig(target_delta=delta, population_size=population,
                                             neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             sampling_method=SamplingMethod.NO_AMPLIFICATION,
                                             max_epsilon=max_epsilon))


def _epsilon(sigma: float, rounds: int, sampled: int, population: int, delta: float) -> float:
    acc = client_dp_accountant(population, delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=sigma, sample_size=sampled, population_size=population),
                count=rounds)
    return acc.get_epsilon(delta)


def calibrate_client_noise(target_epsilon: float, delta: float, rounds: int, sampled: int, population: int,
                           *, rel_tol: float = 1e-3) -> float:
    """Smallest σ (to ``rel_tol`` in ε) whose ``rounds`` releases spend at most ``target_epsilon``."""
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    lo, hi = 0.0, 1.0
    while _epsilon(hi, rounds, sampled, population, delta) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"cannot reach client-level ε={target_epsilon} at δ={delta} over {rounds} rounds")
    while True:
        mid = (lo + hi) / 2
        eps = _epsilon(mid, rounds, sampled, population, delta)
        if eps > target_epsilon:
            lo = mid
        else:
            hi = mid
            if target_epsilon - eps <= rel_tol * target_epsilon:
                return hi


def wrap_client_dp(strategy: Strategy, name: str, *, noise: float, clip: float, sampled: int, population: int,
                   delta: float, max_epsilon: float | None, client_side: bool) -> Strategy:
    """Flower's fixed-clipping DP wrapper around ``strategy`` (FedAvg or FedProx), with an accountant."""
    from fedicd.strategies import client_dp_strategies

    allowed = client_dp_strategies()
    if name not in allowed:
        raise ValueError(f"client-level DP with an accountant needs equally weighted FedAvg aggregation; strategy "
                         f"{name!r} changes the aggregate on the server (choose one of {list(allowed)})")
    if getattr(strategy, "weighted_by_key", None) != UNIT_WEIGHT_KEY:
        raise ValueError(f"client-level DP needs the strategy to weight clients by {UNIT_WEIGHT_KEY!r} (equal weights)")
    from fedicd.strategies.state import WRAPPER_STATE_ATTR, StateHandler

    cls = DifferentialPrivacyClientSideFixedClipping if client_side else DifferentialPrivacyServerSideFixedClipping
    wrapped = cls(strategy, noise_multiplier=noise, clipping_norm=clip, num_sampled_clients=sampled,
                  accountant=client_dp_accountant(population, delta, max_epsilon))
    # the accountant is server state: saved in every checkpoint, restored on resume
    setattr(wrapped, WRAPPER_STATE_ATTR, StateHandler(client_dp_state, load_client_dp_state, "client_dp/"))
    return wrapped


def find_client_dp(strategy: Strategy):
    """The Flower DP wrapper inside ``strategy``'s wrapper chain, or None."""
    while strategy is not None:
        if isinstance(strategy, (DifferentialPrivacyServerSideFixedClipping,
                                 DifferentialPrivacyClientSideFixedClipping)):
            return strategy
        strategy = getattr(strategy, "strategy", None)
    return None


def client_dp_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The accountant's state as one JSON string array (for the round checkpoint)."""
    dp = find_client_dp(strategy)
    if dp is None or dp.accountant is None:
        return {}
    return {"client_dp/accountant": np.array(json.dumps(dp.accountant.state_dict()))}


def load_client_dp_state(strategy: Strategy, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Restore the accountant from ``state``; returns the remaining (inner strategy) entries."""
    rest = {k: v for k, v in state.items() if not k.startswith("client_dp/")}
    if "client_dp/accountant" in state:
        dp = find_client_dp(strategy)
        if dp is None or dp.accountant is None:
            raise ValueError("the checkpoint holds a client-level DP accountant but the strategy has none")
        dp.accountant.load_state_dict(json.loads(str(state["client_dp/accountant"])))
    return rest
