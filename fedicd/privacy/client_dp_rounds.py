"""Client-level DP in the round loop: the strategy wrapper, the clients' clipping mod, the release log.

* :func:`client_dp_wrapper`: Flower's fixed-clipping wrapper (server- or client-side clipping) with
  its accountant, for :func:`fedicd.strategies.build_strategy`'s ``inner_wrappers``.
* :func:`clip_update_when_asked`: Flower's ``fixedclipping_mod`` on train messages that carry a clipping
  norm (sent by ``DifferentialPrivacyClientSideFixedClipping``); other runs pass through.
* :class:`ClientDPObserver`: records every noised aggregate the moment it exists
  (``client_dp_releases.jsonl``, before any checkpoint), composes the releases lost to a crash into the
  restored accountant on resume, and writes ε and the release count into each round's history row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fedicd.federated.rounds import RoundObserver
from fedicd.privacy.client_level import find_client_dp, wrap_client_dp
from fedicd.run_plan import PrivacyPlan

__all__ = ["RELEASE_LOG", "ClientDPObserver", "client_dp_wrapper", "clip_update_when_asked"]

log = logging.getLogger(__name__)

RELEASE_LOG = "client_dp_releases.jsonl"


def client_dp_wrapper(plan: PrivacyPlan, strategy_name: str):
    """``Strategy -> Strategy``: Flower's fixed-clipping DP wrapper of ``plan`` (client level)."""
    settings = {"noise": plan.noise_multiplier, "clip": plan.clip, "sampled": plan.sampled_clients,
                "population": plan.population, "delta": plan.delta, "max_epsilon": plan.target_epsilon or None,
                "client_side": plan.client_side_clipping}

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


class ClientDPObserver(RoundObserver):
    """The release log and the accountant of the Flower DP wrapper in ``strategy``."""

    def __init__(self, strategy, run_dir: str | Path) -> None:
        self.strategy, self.path = strategy, Path(run_dir) / RELEASE_LOG

    def _dp(self):
        dp = find_client_dp(self.strategy)
        return None if dp is None or dp.accountant is None else dp

    def on_update(self, rnd: int) -> None:
        dp = self._dp()
        if dp is None:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"round": rnd, "noise_multiplier": dp.noise_multiplier,
                                 "sample_size": dp.num_sampled_clients}) + "\n")

    def on_resume(self, ckpt_round: int) -> None:
        self.recount_lost_releases(ckpt_round)

    def recount_lost_releases(self, ckpt_round: int) -> int:
        """Compose the releases made after the checkpoint into the restored accountant; returns how many.

        Flower's noise is unseeded, so a crashed round that had already released its noised
        aggregate is a different release from the one the resumed run will make: both count.
        """
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        dp = self._dp()
        if dp is None or not self.path.exists():
            return 0
        logged = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        lost = [r for r in logged if r["round"] > ckpt_round]
        for r in lost:
            dp.accountant.compose(GaussianPrivacyEvent(noise_multiplier=r["noise_multiplier"],
                                                       sample_size=r["sample_size"],
                                                       population_size=dp.accountant.config.population_size))
        if lost:
            log.warning("client-level DP: %d release(s) after the round-%d checkpoint were made before the crash; "
                        "counted in ε", len(lost), ckpt_round)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in logged if r["round"] <= ckpt_round))
        return len(lost)

    def history_row(self) -> dict:
        dp = self._dp()
        if dp is None:
            return {}
        spent = dp.accountant.get_privacy_spent()
        return {"client_dp_epsilon": spent.epsilon if spent.num_releases else 0.0,
                "client_dp_releases": spent.num_releases}
