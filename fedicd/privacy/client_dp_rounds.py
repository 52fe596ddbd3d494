"""Client-level DP in the round loop: the strategy wrapper, the clients' clipping mod, the release log.

* :func:`client_dp_wrapper`: the plan's wrapper (Flower's fixed or adaptive clipping, or fedicd's Poisson
  wrapper) with its ledger, for :func:`fedicd.strategies.build_strategy`'s ``inner_wrappers``.
* :func:`clip_update_when_asked`: Flower's ``fixedclipping_mod`` on train messages that carry a clipping
  norm (client-side clipping); other runs pass through.
* :class:`ClientDPObserver`: records every noised aggregate the moment it exists
  (``client_dp_releases.jsonl``, before any checkpoint), composes the releases lost to a crash into the
  restored ledger on resume, and writes both accountants' ε, the release count and the clipping norm into
  each round's history row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fedicd.federated.rounds import RoundObserver
from fedicd.privacy.client_level import find_client_dp, wrap_client_dp
from fedicd.privacy.poisson_clients import AdaptiveClip
from fedicd.run_plan import PrivacyPlan

__all__ = ["RELEASE_LOG", "ClientDPObserver", "client_dp_wrapper", "clip_update_when_asked"]

log = logging.getLogger(__name__)

RELEASE_LOG = "client_dp_releases.jsonl"


def client_dp_wrapper(plan: PrivacyPlan, strategy_name: str, seed: int | None = None):
    """``Strategy -> Strategy``: the client-level DP wrapper of ``plan``."""
    poisson = plan.client_sampling == "poisson"
    adaptive = (AdaptiveClip(plan.target_quantile, plan.clip_count_stddev) if plan.adaptive_clipping else None)
    settings = {"noise": plan.noise_multiplier, "clip": plan.clip, "sampled": plan.sampled_clients,
                "population": plan.population, "delta": plan.delta, "max_epsilon": plan.target_epsilon or None,
                "client_side": plan.client_side_clipping, "accountant": plan.calibrated_with or "rdp",
                "poisson": poisson, "adaptive": adaptive, "seed": seed, "secure_rng": plan.secure_rng}

    def wrap(strategy):
        return wrap_client_dp(strategy, strategy_name, **settings)

    return wrap


def clip_update_when_asked(msg, context, call_next):
    """Flower's ``fixedclipping_mod`` on train messages whose config carries a clipping norm."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if any(KEY_CLIPPING_NORM in rec for rec in msg.content.config_records.values()):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def _sampling_rate(dp) -> float:
    return getattr(dp, "sample_rate", 1.0)


class ClientDPObserver(RoundObserver):
    """The release log and the ledger of the client-level DP wrapper in ``strategy``.

    ``seed``: the experiment seed, installed in a Poisson wrapper that has none (its cohort and noise).
    """

    def __init__(self, strategy, run_dir: str | Path, seed: int | None = None) -> None:
        self.strategy, self.path = strategy, Path(run_dir) / RELEASE_LOG
        dp = find_client_dp(strategy)
        if dp is not None and getattr(dp, "seed", 0) is None and seed is not None:
            dp.seed = seed

    def _dp(self):
        dp = find_client_dp(self.strategy)
        return None if dp is None or dp.accountant is None else dp

    def on_update(self, rnd: int) -> None:
        dp = self._dp()
        if dp is None:
            return
        sigma = getattr(dp, "accounted_noise_multiplier", dp.noise_multiplier)
        sampled = getattr(dp, "expected", getattr(dp, "num_sampled_clients", 0))
        with self.path.open("a") as fh:
            fh.write(json.dumps({"round": rnd, "noise_multiplier": sigma, "sample_size": sampled,
                                 "sample_rate": _sampling_rate(dp)}) + "\n")

    def on_resume(self, ckpt_round: int) -> None:
        self.recount_lost_releases(ckpt_round)

    def recount_lost_releases(self, ckpt_round: int) -> int:
        """Compose the releases made after the checkpoint into the restored ledger; returns how many.

        A crashed round that had already released its noised aggregate is a release the adversary may
        have seen (Flower's noise is unseeded; a resumed round may differ): both count.
        """
        dp = self._dp()
        if dp is None or not self.path.exists():
            return 0
        logged = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        lost = [r for r in logged if r["round"] > ckpt_round]
        for r in lost:
            dp.accountant.add(float(r["noise_multiplier"]), float(r.get("sample_rate", 1.0)))
        if lost:
            log.warning("client-level DP: %d release(s) after the round-%d checkpoint were made before the crash; "
                        "counted in ε", len(lost), ckpt_round)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in logged if r["round"] <= ckpt_round))
        return len(lost)

    def history_row(self) -> dict:
        """``client_dp_epsilon`` (the selected accountant's), ``epsilon_rdp``/``epsilon_pld`` (both, also as
        ``client_dp_epsilon_rdp``/``_pld``), ``client_dp_releases`` and the round's ``clip_norm``."""
        dp = self._dp()
        if dp is None:
            return {}
        ledger = dp.accountant
        both = ledger.epsilons() if ledger.num_releases else {"rdp": 0.0, "pld": 0.0}
        return {"client_dp_epsilon": both[ledger.accountant], "client_dp_epsilon_rdp": both["rdp"],
                "client_dp_epsilon_pld": both["pld"], "epsilon_rdp": both["rdp"], "epsilon_pld": both["pld"],
                "client_dp_releases": ledger.num_releases,
                "clip_norm": float(getattr(dp, "round_clip", dp.clipping_norm))}
