"""Client-level (user-level) central DP: the strategy wrappers, σ calibration under RDP or PLD, resume state.

Each round every sampled client's model update ``w_i − w`` is clipped to L2 norm ``clip`` and the server adds
Gaussian noise to the equally weighted average. Three wrappers, one accountant
(:class:`~fedicd.privacy.client_ledger.ClientLedger`, RDP and PLD over the same release list):

* ``client_sampling = "fixed"``: Flower's fixed-size sampler and its fixed-clipping wrappers
  (``DifferentialPrivacyServerSideFixedClipping``, or ``…ClientSideFixedClipping`` with Flower's
  ``fixedclipping_mod``); no amplification is credited (``q = 1``); noise std ``σ · clip / n_sampled``.
* ``adaptive_clipping`` with fixed sampling: Flower's ``DifferentialPrivacyServerSideAdaptiveClipping``, with
  the geometric update's sign corrected (:class:`ServerSideAdaptiveClipping`) and the σ it splits accounted.
* ``client_sampling = "poisson"``: fedicd's :class:`~fedicd.privacy.poisson_clients.PoissonClientDP`
  (amplification by Poisson sampling accounted, adaptive clipping optional).

Every mode needs FedAvg's equally weighted aggregation (FedAvg, FedProx); server-side optimisers and
SCAFFOLD are refused. A fixed-sampling round with a failed client releases nothing and is not counted.
"""

from __future__ import annotations

import json
import math

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.serverapp.strategy.dp_fixed_clipping import validate_replies

from fedicd.privacy import accountants
from fedicd.privacy.client_ledger import ClientLedger, ledger_config
from fedicd.privacy.poisson_clients import AdaptiveClip, PoissonClientDP, update_noise

__all__ = ["UNIT_WEIGHT_KEY", "client_dp_accountant", "client_epsilon", "calibrate_client_noise",
           "ServerSideAdaptiveClipping", "wrap_client_dp", "client_dp_state", "load_client_dp_state",
           "find_client_dp"]

UNIT_WEIGHT_KEY = "unit-weight"  # clients report 1.0 here; FedAvg weights by it under client-level DP
_WRAPPERS = (DifferentialPrivacyServerSideFixedClipping, DifferentialPrivacyClientSideFixedClipping)


def client_dp_accountant(population: int, delta: float, max_epsilon: float | None = None):
    """Flower's own ``RdpAccountant`` (no amplification): the reference the ledger's RDP value matches."""
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(ledger_config(population, delta, poisson=False, max_epsilon=max_epsilon))


def client_epsilon(sigma: float, rounds: int, delta: float, *, sample_rate: float = 1.0,
                   accountant: str = "rdp") -> float:
    """ε of ``rounds`` client-level releases of σ, each on a Poisson cohort of rate ``sample_rate`` (1: none)."""
    return accountants.epsilon([(sigma, sample_rate, rounds)], delta, accountant, level="client")


def calibrate_client_noise(target_epsilon: float, delta: float, rounds: int, sampled: int, population: int,
                           *, accountant: str = "rdp", poisson: bool = False) -> float:
    """Smallest σ whose ``rounds`` releases spend ε in ``[target·(1 − 1e-3), target]`` under ``accountant``.

    ``poisson``: each round's cohort is a Poisson sample of rate ``sampled / population`` (amplification
    credited); otherwise every release is accounted as if every client took part (``q = 1``).
    """
    q = sampled / population if poisson else 1.0
    return accountants.calibrate(lambda s: client_epsilon(s, rounds, delta, sample_rate=q, accountant=accountant),
                                 target_epsilon, what=f"client-level DP over {rounds} rounds at δ={delta}")


class ServerSideAdaptiveClipping(DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping, with the ledger, a strict cohort, the update's sign fixed and
    the noise scaled by the norm the round clipped to.

    Flower 1.42 feeds ``_geometric_update`` the noised fraction of *clipped* updates and applies
    ``C ← C·exp(−η (clipped − γ))``: the norm shrinks when too many updates are clipped, which drives it away
    from the quantile. Andrew et al.'s rule uses the *unclipped* fraction; this subclass applies it. Flower
    splits σ into the update's σ_Δ and the count's σ_b; the ledger accounts the σ given.

    Not used by fedicd's runs: their plan refuses adaptive clipping with a fixed cohort, because Flower's
    count is not centred (one client moves it by 1) while the σ split assumes sensitivity 1/2, so the σ
    charged here understates ε. Kept to compare with Flower's wrapper; use Poisson sampling instead.
    """

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clip: float, sampled: int,
                 target_quantile: float, count_stddev: float, accountant: ClientLedger) -> None:
        update_noise(noise_multiplier, count_stddev)  # the named error before Flower's
        super().__init__(strategy, noise_multiplier, sampled, initial_clipping_norm=clip,
                         target_clipped_quantile=target_quantile, clipped_count_stddev=count_stddev)
        self.accountant, self.accounted_noise_multiplier, self.round_clip = accountant, noise_multiplier, clip
        self.weighted_by_key = getattr(strategy, "weighted_by_key", "num-examples")  # what UpdateValidator checks

    def _geometric_update(self, clipped_fraction: float) -> None:
        unclipped = 1.0 - clipped_fraction
        self.clipping_norm *= math.exp(-self.clip_norm_lr * (unclipped - self.target_clipped_quantile))

    def _add_noise_to_aggregated_arrays(self, aggregated):
        """Flower's noise at the norm this round's updates were clipped to (``round_clip``): Flower 1.42 calls
        this after ``_geometric_update``, so it would scale the noise by the next round's norm instead."""
        next_norm, self.clipping_norm = self.clipping_norm, self.round_clip
        try:
            return super()._add_noise_to_aggregated_arrays(aggregated)
        finally:
            self.clipping_norm = next_norm

    def configure_train(self, server_round, arrays, config, grid):
        from flwr.serverapp.exception import PrivacyBudgetExhausted
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        limit = self.accountant.config.max_epsilon
        event = GaussianPrivacyEvent(noise_multiplier=self.accounted_noise_multiplier,
                                     sample_size=self.num_sampled_clients,
                                     population_size=self.accountant.config.population_size)
        if limit is not None and self.accountant.would_exceed(event):
            raise PrivacyBudgetExhausted(f"round {server_round} would spend more than the client-level budget ε={limit}")
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        if not validate_replies(replies, self.num_sampled_clients, strict=True):
            return None, None  # a short cohort would get too little noise for its mean: nothing released
        self.round_clip = self.clipping_norm
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays:
            self.accountant.add(self.accounted_noise_multiplier, 1.0)
        return arrays, metrics


def _check_strategy(strategy: Strategy, name: str) -> None:
    from fedicd.strategies import client_dp_strategies

    allowed = client_dp_strategies()
    if name not in allowed:
        raise ValueError(f"client-level DP with an accountant needs equally weighted FedAvg aggregation; strategy "
                         f"{name!r} changes the aggregate on the server (choose one of {list(allowed)})")
    if getattr(strategy, "weighted_by_key", None) != UNIT_WEIGHT_KEY:
        raise ValueError(f"client-level DP needs the strategy to weight clients by {UNIT_WEIGHT_KEY!r} (equal weights)")


def wrap_client_dp(strategy: Strategy, name: str, *, noise: float, clip: float, sampled: int, population: int,
                   delta: float, max_epsilon: float | None, client_side: bool, accountant: str = "rdp",
                   poisson: bool = False, adaptive: AdaptiveClip | None = None, seed: int | None = None,
                   secure_rng: bool = False) -> Strategy:
    """The client-level DP wrapper of these settings around ``strategy`` (FedAvg or FedProx), with its ledger."""
    _check_strategy(strategy, name)
    from fedicd.strategies.state import WRAPPER_STATE_ATTR, StateHandler

    if adaptive is not None and client_side:  # clients clipping to C would make every update look unclipped
        raise ValueError("privacy.adaptive_clipping with privacy.client_side_clipping is not supported: set "
                         "privacy.client_side_clipping = false (the server clips and counts the clipped updates)")
    ledger = ClientLedger(ledger_config(population, delta, poisson=poisson, max_epsilon=max_epsilon), accountant)
    if poisson:
        wrapped = PoissonClientDP(strategy, noise_multiplier=noise, clip=clip, expected=sampled, accountant=ledger,
                                  seed=seed, secure_rng=secure_rng, client_side=client_side, adaptive=adaptive)
    elif adaptive is not None:
        wrapped = ServerSideAdaptiveClipping(strategy, noise_multiplier=noise, clip=clip, sampled=sampled,
                                             target_quantile=adaptive.target_quantile,
                                             count_stddev=adaptive.count_stddev, accountant=ledger)
    else:
        cls = DifferentialPrivacyClientSideFixedClipping if client_side else DifferentialPrivacyServerSideFixedClipping
        wrapped = cls(strategy, noise_multiplier=noise, clipping_norm=clip, num_sampled_clients=sampled,
                      accountant=ledger)
    wrapped.weighted_by_key = strategy.weighted_by_key  # UpdateValidator checks the weight the average uses
    # the ledger (and an adaptive clip norm) is server state: saved in every checkpoint, restored on resume
    setattr(wrapped, WRAPPER_STATE_ATTR, StateHandler(client_dp_state, load_client_dp_state, "client_dp/"))
    return wrapped


def find_client_dp(strategy: Strategy):
    """The client-level DP wrapper inside ``strategy``'s wrapper chain, or None."""
    while strategy is not None:
        if isinstance(strategy, (*_WRAPPERS, ServerSideAdaptiveClipping, PoissonClientDP)):
            return strategy
        strategy = getattr(strategy, "strategy", None)
    return None


def client_dp_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The ledger (one JSON string array) and the clipping norm, for the round checkpoint."""
    dp = find_client_dp(strategy)
    if dp is None or dp.accountant is None:
        return {}
    return {"client_dp/accountant": np.array(json.dumps(dp.accountant.state_dict())),
            "client_dp/clip": np.array(float(dp.clipping_norm))}


def load_client_dp_state(strategy: Strategy, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Restore the ledger and the clipping norm from ``state``; returns the remaining (inner strategy) entries."""
    rest = {k: v for k, v in state.items() if not k.startswith("client_dp/")}
    if "client_dp/accountant" in state:
        dp = find_client_dp(strategy)
        if dp is None or dp.accountant is None:
            raise ValueError("the checkpoint holds a client-level DP accountant but the strategy has none")
        dp.accountant.load_state_dict(json.loads(str(state["client_dp/accountant"])))
        if "client_dp/clip" in state:
            dp.clipping_norm = float(state["client_dp/clip"])
    return rest
