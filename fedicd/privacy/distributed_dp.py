"""Distributed client-level DP under SecAgg+: the clients add the noise, the server unmasks only the noised sum.

Mechanism (``privacy.dp = "client"``, ``privacy.distributed = true``, ``secure_aggregation.method = "secagg+"``).
Each round the server samples a fixed cohort of ``m`` clients (``PrivacyPlan.sampled_clients``). Client ``i``
trains, then, inside fedicd's SecAgg+ client mod (:mod:`fedicd.secure.secagg_client`) and before Flower's
``secaggplus_mod`` quantises and masks anything, it

1. clips its update ``Δ_i = w_i − w`` to L2 norm ``C = privacy.clip`` (Flower's ``clip_inputs_inplace`` rule,
   all arrays as one vector), and
2. adds its *share* of the noise, ``N(0, σ²C²/m · I)`` with ``σ = PrivacyPlan.noise_multiplier``,

and masks ``Δ̃_i`` with unit weight. The server unmasks ``S = Σ_i Δ̃_i`` only and steps to ``w + S/m``. With
every client in, ``S/m = mean_i clip(Δ_i) + N(0, (σC/m)² I)``: exactly the noise central client-level DP
(Flower's ``DifferentialPrivacyServerSideFixedClipping``) adds at the same σ, so each round is the same
Gaussian release, accounted as the same event ``(σ, q = 1)`` by :mod:`fedicd.privacy.accountants`
(``level = "client"``, both RDP and PLD; :class:`fedicd.privacy.client_ledger.ClientLedger`).

Threat model. The server is honest-but-curious: it runs the protocol as written (the clipping norm and noise
share it sends in the train config included; a client that distrusts it can compare them with its own copy of
the run plan) and tries to learn from what it sees. Under SecAgg+ it sees one masked vector per client (uniform
modulo ``modulus_range`` without the masks), the unmasked sum ``S``, and in plaintext each client's id, unit
weight and the count of its entries the quantiser clipped; the train metrics a plain SecAgg+ run shows (loss,
example counts) are withheld here, since they are not noised. Any single client's noise share alone is far
too small (σ/√m); the guarantee needs the shares of the *other* clients in the sum, so colluding clients that
reveal their own shares reduce it (the usual distributed-DP caveat). Client evaluation replies
(``federated.fraction_evaluate`` > 0) still carry each client's scores of the released model on its own
validation notes in plaintext, as under central DP; set it to 0 for a server that sees the noised sums only.

Dropouts. SecAgg+ rebuilds the masks of a client lost after the key exchange, but its noise share is gone:
with ``s`` survivors ``S`` carries noise ``N(0, s·σ²C²/m · I)``, std ``σC·√(s/m)``, while one client still
moves ``S`` by at most ``C``. The round is therefore a Gaussian release with noise multiplier
``σ_eff = σ·√(s/m)`` and is composed as such (no compensation: ε grows, and the history reports
``distributed_dp_survivors`` and ``distributed_dp_noise_multiplier``). The budget check before each round
(``privacy.target_epsilon`` > 0) assumes full participation, so a round with dropouts can end the run above
the target; the next round that would exceed it raises :class:`~fedicd.privacy.accounting.PrivacyBudgetExhausted`.
A halted round (too few survivors to unmask) releases nothing and is not counted. Every release is appended to
``client_dp_releases.jsonl`` before the server uses it, and every logged release counts, including a
round made again after a crash (its first noised sum did reach the server).

Quantisation. SecAgg+ clips each masked entry to ``±c`` and quantises it to ``Q`` levels. A clipped update
entry lies within ``±C``; the noise entry is within ``±k·σC/√m`` except with probability
``erfc(k/√2)`` (``k = RANGE_STDS = 8``: 1.2e-15 per entry; for 10⁶ parameters × 100 clients × 100 rounds the
union bound is 1.2e-5). So ``c = C·(1 + k·σ/√m)`` (:func:`clipping_range`), ``max_weight = 1``; a clipped
entry is still counted and reported (``secagg_clipped_entries``). The stochastic rounding adds unbiased
noise below one step ``2c/Q`` per entry and client, which only adds to the privacy noise.

Randomness. The shares are drawn per (seed, round, client) from ``run.seed`` (reproducible, but anybody who
knows the seed can regenerate and subtract them: a simulation setting), or with ``privacy.secure_rng = true``
from the OS's entropy (numpy's generator seeded by ``SeedSequence()``: not hardened against floating-point
attacks on the Gaussian sampler).

Not supported (named errors): Poisson client sampling (the realised cohort would change the noise per round
with the sample) and adaptive clipping (its clipped-count estimate is a separate server-side release).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedicd.errors import ConfigError
from fedicd.run_plan import PrivacyPlan

__all__ = ["CLIP_KEY", "SHARE_STD_KEY", "SEED_KEY", "CLIENT_KEYS", "RANGE_STDS", "RELEASE_LOG", "DistributedDP",
           "check_distributed_plan", "clipping_range", "effective_noise_multiplier", "noise_share_std",
           "privatise_update", "share_rng"]

log = logging.getLogger(__name__)

CLIP_KEY = "ddp-clip"  # train config: the L2 clipping norm C of a client's update
SHARE_STD_KEY = "ddp-share-std"  # train config: the std σC/√m of each client's noise share
SEED_KEY = "ddp-seed"  # train config: the run seed of the shares (absent under privacy.secure_rng: OS entropy)
CLIENT_KEYS = (CLIP_KEY, SHARE_STD_KEY, SEED_KEY)
RANGE_STDS = 8.0
RELEASE_LOG = "client_dp_releases.jsonl"  # central client-level DP's log name (an output-folder artifact)


def noise_share_std(sigma: float, clip: float, cohort: int) -> float:
    """Std ``σ·C/√m`` of one client's noise share: ``m`` shares sum to the central ``N(0, σ²C²)``."""
    return float(sigma * clip / math.sqrt(cohort))


def effective_noise_multiplier(sigma: float, survivors: int, cohort: int) -> float:
    """Noise multiplier ``σ·√(s/m)`` of a sum holding the shares of ``s`` of the ``m`` sampled clients."""
    if not 0 < survivors <= cohort:
        raise ValueError(f"survivors must be in [1, cohort = {cohort}], got {survivors}")
    return float(sigma * math.sqrt(survivors / cohort))


def clipping_range(sigma: float, clip: float, cohort: int, stds: float = RANGE_STDS) -> float:
    """SecAgg+'s ``clipping_range`` ``C·(1 + k·σ/√m)``: a clipped entry plus ``k`` share stds."""
    return float(clip + stds * noise_share_std(sigma, clip, cohort))


def share_rng(seed: int | None, server_round: int, partition_id: int) -> np.random.Generator:
    """The generator of a client's share: from (seed, round, client), or from OS entropy when ``seed`` is None."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(server_round), int(partition_id), 0xD9]))


def privatise_update(global_arrays: Sequence[np.ndarray], trained: Sequence[np.ndarray], clip: float,
                     share_std: float, rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """(``clip_C(trained − global) + N(0, share_std² I)`` as float64 arrays, the update's norm before clipping).

    Parameters
    ----------
    global_arrays, trained : sequences of arrays
        The round's global model and this client's trained model, in the same order and shapes.
    clip : float
        The L2 norm ``C`` the whole update (every array as one vector) is scaled down to.
    share_std : float
        Std of this client's Gaussian noise share (:func:`noise_share_std`).
    rng : numpy Generator
        Where the share comes from (:func:`share_rng`).
    """
    update = [np.asarray(t, np.float64) - np.asarray(g, np.float64) for g, t in zip(global_arrays, trained,
                                                                                     strict=True)]
    norm = math.sqrt(sum(float(np.sum(u * u)) for u in update))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    return [u * scale + rng.normal(0.0, share_std, u.shape) for u in update], norm


def check_distributed_plan(plan: PrivacyPlan) -> None:
    """Refuse the settings distributed DP does not implement, naming the setting to change."""
    if plan.dp != "client":
        raise ConfigError(f"privacy.distributed = true needs privacy.dp = 'client', got {plan.dp!r}")
    if not (plan.noise_multiplier > 0 and plan.clip > 0 and plan.sampled_clients >= 2):
        raise ConfigError(f"distributed DP needs privacy noise > 0, clip > 0 and a cohort of >= 2 clients, got "
                          f"σ = {plan.noise_multiplier}, clip = {plan.clip}, cohort = {plan.sampled_clients}")
    if plan.client_sampling == "poisson":
        raise ConfigError("privacy.distributed = true supports privacy.client_sampling = 'fixed' only: under Poisson "
                          "sampling the realised cohort, and so the summed noise, would vary with the sample")
    if plan.adaptive_clipping:
        raise ConfigError("privacy.distributed = true cannot use privacy.adaptive_clipping (its clipped-count "
                          "estimate is a separate server-side release); set adaptive_clipping = false")


class DistributedDP:
    """The server's side of distributed DP: what the clients are told, the release log and its ledger.

    ``run_dir`` None keeps the releases in memory only (e.g. when an aggregator is built to read a model).
    """

    def __init__(self, plan: PrivacyPlan, seed: int, run_dir: str | Path | None = None) -> None:
        from fedicd.privacy.client_ledger import ClientLedger, ledger_config

        check_distributed_plan(plan)
        self.plan, self.seed = plan, int(seed)
        self.cohort, self.sigma = int(plan.sampled_clients), float(plan.noise_multiplier)
        self.path = None if run_dir is None else Path(run_dir) / RELEASE_LOG
        accountant = plan.calibrated_with or "rdp"
        self.ledger = ClientLedger(ledger_config(plan.population, plan.delta, poisson=False,
                                                 max_epsilon=plan.target_epsilon or None), accountant)
        self.this_round: dict = {}  # the current round's release (empty: none yet, or the round halted)
        for rec in self._logged():
            self.ledger.add(rec["noise_multiplier"], 1.0, 1)

    def _logged(self) -> list[dict]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def secagg_settings(self, settings):
        """SecAgg+ settings for the noised updates: unit weights, ``clipping_range`` from :func:`clipping_range`."""
        c = clipping_range(self.sigma, self.plan.clip, self.cohort)
        out = dataclasses.replace(settings, max_weight=1.0, clipping_range=c)
        out.check_round(self.cohort)
        return out

    def client_config(self) -> dict:
        """What the train config tells the clients (the seed only without ``privacy.secure_rng``)."""
        cfg = {CLIP_KEY: float(self.plan.clip), SHARE_STD_KEY: noise_share_std(self.sigma, self.plan.clip,
                                                                               self.cohort)}
        if not self.plan.secure_rng:
            cfg[SEED_KEY] = self.seed % 2**63
        return cfg

    def check_round(self, server_round: int, sampled: int) -> None:
        """Before a round: the cohort is the planned one, and a full release stays within the budget."""
        from fedicd.privacy.accounting import PrivacyBudgetExhausted

        self.this_round = {}
        if sampled != self.cohort:
            raise ValueError(f"round {server_round}: the strategy sampled {sampled} clients but distributed DP "
                             f"planned each noise share for a cohort of {self.cohort}")
        limit = self.plan.target_epsilon
        if limit > 0:
            after = self.ledger.epsilon_after(self.sigma, 1.0)
            if after > limit:
                raise PrivacyBudgetExhausted(
                    f"distributed DP: round {server_round} would raise ε ({self.ledger.accountant}) to {after:.4f}, "
                    f"above privacy.target_epsilon = {limit} (rounds with dropouts spent more than planned)")

    def release(self, server_round: int, survivors: int) -> float:
        """Log and compose the noised sum of ``survivors`` clients; returns its noise multiplier."""
        sigma_eff = effective_noise_multiplier(self.sigma, survivors, self.cohort)
        rec = {"round": int(server_round), "noise_multiplier": sigma_eff, "sample_size": self.cohort,
               "survivors": int(survivors), "distributed": True}
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
        self.ledger.add(sigma_eff, 1.0, 1)
        self.this_round = rec
        if survivors < self.cohort:
            log.warning("distributed DP round %d: %d of %d noise shares (dropouts): composed at σ_eff = %.4f",
                        server_round, survivors, self.cohort, sigma_eff)
        return sigma_eff

    def model_from_sum(self, global_arrays: dict, mean_update: dict, survivors: int) -> dict:
        """``w + S/m`` from SecAgg+'s average ``S/s`` of the survivors' noised updates."""
        factor = survivors / self.cohort
        out = {}
        for name, ref in global_arrays.items():
            ref = np.asarray(ref)
            value = ref.astype(np.float64) + factor * np.asarray(mean_update[name], np.float64)
            out[name] = (np.rint(value) if ref.dtype.kind in "iub" else value).astype(ref.dtype)
        return out

    def history_row(self) -> dict:
        """ε after the releases so far (selected and both accountants); this round's survivors (0: no release)."""
        eps = self.ledger.epsilons() if self.ledger.num_releases else {"rdp": 0.0, "pld": 0.0}
        row = {"client_dp_epsilon": eps[self.ledger.accountant], "client_dp_epsilon_rdp": eps["rdp"],
               "client_dp_epsilon_pld": eps["pld"], "epsilon_rdp": eps["rdp"], "epsilon_pld": eps["pld"],
               "client_dp_releases": self.ledger.num_releases}
        row["distributed_dp_survivors"] = self.this_round.get("survivors", 0)
        row["distributed_dp_noise_multiplier"] = self.this_round.get("noise_multiplier", 0.0)
        return row
