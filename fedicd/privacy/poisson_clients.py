"""Client-level DP with Poisson client sampling (DP-FedAvg, McMahan et al. 2018) and adaptive clipping.

Each round every connected client joins the cohort independently with rate ``q = expected / population``
(seeded from ``(seed, round)``, or the OS's secure randomness). Each cohort member's update ``w_i − w`` is
clipped to L2 norm ``C`` (Flower's FlatClip arithmetic), the clipped updates are *summed* with unit weights
and divided by the fixed expected cohort ``qN`` (not the realised count, which is private under Poisson
sampling), and Gaussian noise of std ``σ_Δ · C / (qN)`` is added. A round whose cohort is empty (or whose
every reply failed) still releases noise, and is accounted: the release is the Poisson-subsampled
Gaussian event ``(σ, q)``. Flower's fixed-clipping wrappers assume a fixed-size cohort, so this wrapper
does its own sampling and aggregation.

Adaptive clipping (Andrew et al. 2021, "Differentially private learning with adaptive clipping"): each
cohort member reports ``b_i = 1`` when its update norm is at most ``C``; the server releases the centred
count ``Σ (b_i − ½) + N(0, σ_b²)`` (sensitivity ½), estimates the unclipped fraction as
``½ + that / (qN)`` and updates ``C ← C · exp(−η (fraction − γ))``, so that ``C`` tracks the γ-quantile
of the update norms. The two releases together are a Gaussian mechanism of multiplier ``σ`` when
``σ_Δ = (σ⁻² − (2σ_b)⁻²)^(−½)`` (Andrew et al., Thm. 1; Flower's ``compute_adaptive_noise_params``),
so the ledger accounts ``σ``.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import Strategy
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, get_norm

__all__ = ["AdaptiveClip", "PoissonClientDP", "poisson_cohort", "clip_update", "noised_mean", "update_noise"]

log = logging.getLogger(__name__)

ANDREW_LR = 0.2  # η of the geometric update (Andrew et al. 2021; Flower's default)


def poisson_cohort(node_ids: Iterable[int], rate: float, rng: np.random.Generator) -> list[int]:
    """The nodes that join this round: each of ``sorted(node_ids)`` independently with probability ``rate``."""
    nodes = sorted(node_ids)
    return [n for n, u in zip(nodes, rng.random(len(nodes))) if u < rate]


def clip_update(update: list[np.ndarray], clip: float) -> tuple[list[np.ndarray], bool]:
    """(``update`` scaled to L2 norm ≤ ``clip``, whether it was within ``clip`` already)."""
    norm = get_norm(update)
    scale = 1.0 if norm <= clip else clip / norm
    return [u * scale for u in update], norm <= clip


def noised_mean(updates: list[list[np.ndarray]], shapes: list[tuple], *, clip: float, noise_std: float,
                expected: float, rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """(Σ clip(update) / ``expected`` + N(0, noise_std²), how many updates were within ``clip``).

    Sums in float64; noise drawn array by array from ``rng`` (``rng.normal(0, noise_std, shape)``).
    """
    total = [np.zeros(s, dtype=np.float64) for s in shapes]
    unclipped = 0
    for update in updates:
        clipped, within = clip_update(update, clip)
        unclipped += within
        for t, c in zip(total, clipped, strict=True):
            t += c
    return [t / expected + rng.normal(0.0, noise_std, t.shape) for t in total], unclipped


def update_noise(sigma: float, count_stddev: float) -> float:
    """σ_Δ of the update when the clipped count takes noise ``count_stddev``: ``(σ⁻² − (2σ_b)⁻²)^(−½)``."""
    if not 2 * count_stddev > sigma:
        raise ValueError(f"adaptive clipping at noise multiplier σ={sigma:.4g} needs privacy.clip_count_stddev > σ/2 "
                         f"(got {count_stddev:.4g}; 0 = cohort / 20): raise privacy.clip_count_stddev or "
                         "privacy.clients_per_round")
    return (sigma ** -2 - (2 * count_stddev) ** -2) ** -0.5


@dataclass
class AdaptiveClip:
    """Andrew et al.'s geometric clip-norm update towards the ``target_quantile`` of update norms."""

    target_quantile: float
    count_stddev: float
    lr: float = ANDREW_LR

    def next_clip(self, clip: float, unclipped: int, cohort: int, expected: float, rng: np.random.Generator) -> float:
        """The next round's norm from this round's count of updates within ``clip`` (noised, centred)."""
        centred = unclipped - cohort / 2 + rng.normal(0.0, self.count_stddev)
        fraction = 0.5 + centred / expected
        return float(clip * math.exp(-self.lr * (fraction - self.target_quantile)))


class PoissonClientDP(Strategy):
    """Poisson-sampled, clipped, summed and noised client updates around ``strategy`` (FedAvg's evaluation).

    Parameters
    ----------
    strategy : Strategy
        The inner FedAvg/FedProx: it configures and aggregates evaluation and aggregates train metrics.
    noise_multiplier : float
        σ accounted per round (with adaptive clipping, the update itself gets σ_Δ > σ).
    clip : float
        The (initial) clipping norm C.
    expected : int
        The expected cohort qN (the fixed denominator).
    accountant : ClientLedger
        Poisson ledger of population N; its ``max_epsilon``, when set, is enforced before each round.
    seed : int or None
        Seed of the cohort and the noise (with the round); None with ``secure_rng`` only.
    """

    releases_without_replies = True  # UpdateValidator passes an empty round on: the noise is released anyway

    def __init__(self, strategy: Strategy, *, noise_multiplier: float, clip: float, expected: int, accountant,
                 seed: int | None = None, secure_rng: bool = False, client_side: bool = False,
                 adaptive: AdaptiveClip | None = None) -> None:
        super().__init__()
        if not 0 < expected <= accountant.config.population_size:
            raise ValueError(f"privacy.clients_per_round = {expected} must be in [1, the "
                             f"{accountant.config.population_size} clients of the federation]")
        self.strategy, self.accountant, self.seed, self.secure_rng = strategy, accountant, seed, secure_rng
        self.noise_multiplier, self.clipping_norm, self.expected = noise_multiplier, clip, expected
        self.client_side, self.adaptive = client_side, adaptive
        self.sample_rate = expected / accountant.config.population_size
        self.update_multiplier = (update_noise(noise_multiplier, adaptive.count_stddev) if adaptive is not None
                                  else noise_multiplier)
        self.round_clip = clip
        self.current_arrays: ArrayRecord | None = None
        self.arrayrecord_key = getattr(strategy, "arrayrecord_key", "arrays")
        self.weighted_by_key = getattr(strategy, "weighted_by_key", "num-examples")

    def __repr__(self) -> str:
        return f"PoissonClientDP(q={self.sample_rate:.4g}, sigma={self.noise_multiplier:.4g})"

    def summary(self) -> None:
        log.info("client-level DP, Poisson sampling q=%.4g, sigma=%.4g, clip=%.4g", self.sample_rate,
                 self.noise_multiplier, self.clipping_norm)
        self.strategy.summary()

    def rng(self, server_round: int, stream: int) -> np.random.Generator:
        """Stream 0: the cohort; 1: the update noise; 2: the clipped-count noise."""
        if self.secure_rng:
            return np.random.default_rng(secrets.randbits(128))
        if self.seed is None:
            raise ValueError("PoissonClientDP needs the experiment seed (or privacy.secure_rng = true)")
        return np.random.default_rng([int(self.seed), int(server_round), stream])

    def _event(self):
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        return GaussianPrivacyEvent(noise_multiplier=self.noise_multiplier, sample_size=self.expected,
                                    population_size=self.accountant.config.population_size)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The Poisson cohort's train messages (none when nobody joins: the round still releases noise)."""
        if self.accountant.config.max_epsilon is not None and self.accountant.would_exceed(self._event()):
            raise PrivacyBudgetExhausted(f"round {server_round} would spend more than the client-level budget "
                                         f"ε={self.accountant.config.max_epsilon}")
        self.current_arrays = arrays
        cohort = poisson_cohort(grid.get_node_ids(), self.sample_rate, self.rng(server_round, 0))
        config["server-round"] = server_round
        mu = getattr(self.strategy, "proximal_mu", None)  # FedProx's configure_train, bypassed here, sends it
        if mu is not None:
            config["proximal-mu"] = mu
        if self.client_side:
            config[KEY_CLIPPING_NORM] = self.clipping_norm
        log.info("round %d: Poisson cohort of %d (expected %d)", server_round, len(cohort), self.expected)
        record = RecordDict({self.arrayrecord_key: arrays, getattr(self.strategy, "configrecord_key", "config"):
                             config})
        return [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=n) for n in cohort]

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The noised mean over the expected cohort; released (and accounted) whatever arrived."""
        if self.current_arrays is None:
            raise ValueError("aggregate_train before configure_train")
        answered = [r for r in replies if not r.has_error()]
        names = list(self.current_arrays.keys())
        current = self.current_arrays.to_numpy_ndarrays()
        updates = [[np.asarray(x, dtype=np.float64) - c
                    for x, c in zip(r.content[self.arrayrecord_key].to_numpy_ndarrays(), current, strict=True)]
                   for r in answered]
        clip = self.round_clip = self.clipping_norm
        std = self.update_multiplier * clip / self.expected
        mean, unclipped = noised_mean(updates, [c.shape for c in current], clip=clip, noise_std=std,
                                      expected=self.expected, rng=self.rng(server_round, 1))
        new = ArrayRecord({k: Array(np.asarray(c + m, dtype=c.dtype))
                           for k, c, m in zip(names, current, mean, strict=True)})
        self.accountant.add(self.noise_multiplier, self.sample_rate)
        if self.adaptive is not None:
            self.clipping_norm = self.adaptive.next_clip(clip, unclipped, len(answered), self.expected,
                                                         self.rng(server_round, 2))
        metrics = (self.strategy.train_metrics_aggr_fn([r.content for r in answered], self.weighted_by_key)
                   if answered else MetricRecord())
        return new, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)
