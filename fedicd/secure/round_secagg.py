"""SecAgg+ in the round loop: Flower's SecAgg+ workflow as the train round's aggregator.

The strategy's ``configure_train`` picks the clients and builds the config (e.g. FedProx's mu);
Flower's workflow runs the four SecAgg+ stages (the clients run ``secaggplus_client_mod``); the
unmasked average goes through the strategy's ``aggregate_train`` as one reply, so server optimizers
step from it. The server learns only the weighted sum.

Under distributed DP (``ddp``, a :class:`fedicd.privacy.distributed_dp.DistributedDP`) the clients mask
their clipped, noised updates with unit weights; the server checks the cohort and the budget first, logs
and composes the release as soon as the noised sum is unmasked, and hands the strategy ``w + sum / m``.
"""

from __future__ import annotations

from flwr.app import ConfigRecord

from fedicd.federated.records import to_record
from fedicd.federated.rounds import RoundAggregator, RoundResult, client_epsilons

__all__ = ["SecAggAggregator", "secagg_round"]


class SecAggAggregator(RoundAggregator):
    """Train rounds through Flower's SecAgg+ workflow with ``settings`` (a ``SecAggPlusConfig``)."""

    def __init__(self, settings, seed: int, timeout: float, ddp=None) -> None:
        super().__init__(timeout)
        self.settings, self.seed, self.ddp = settings, seed, ddp

    def train_round(self, strategy, grid, rnd: int, arrays, config: ConfigRecord,
                    rejections: list[dict]) -> RoundResult:
        return secagg_round(strategy, grid, rnd, arrays, config, self.settings, self.seed, rejections, self.ddp)

    def row_extras(self) -> dict:
        return {} if self.ddp is None else self.ddp.history_row()


def secagg_round(strategy, grid, rnd: int, arrays, config: ConfigRecord, settings, seed: int,
                 rejections: list[dict], ddp=None) -> RoundResult:
    """One SecAgg+ round. Every dropout is a failure (its reason appended to ``rejections``); a halted round
    (too many dropouts) has no update, and the survivors' discarded contributions count as refused."""
    from fedicd.secure.secagg import SecAggDropoutError, secagg_train_round, strategy_reply

    messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
    wkey = getattr(strategy, "weighted_by_key", "num-examples")
    round_config = messages[0].content["config"]
    if ddp is not None:
        ddp.check_round(rnd, len(messages))
        round_config = {**dict(round_config), **ddp.client_config()}
    try:
        new, info = secagg_train_round(grid, rnd, arrays, round_config, settings,
                                       node_ids=[m.metadata.dst_node_id for m in messages], weight_key=wkey,
                                       rounding_seed=seed * 1_000_003 + rnd)
        if ddp is not None:  # the server now holds the noised sum: count it before anything else
            ddp.release(rnd, info["survivors"])
            new = ddp.model_from_sum(arrays, new, info["survivors"])
        agg, metrics = strategy.aggregate_train(rnd, [strategy_reply(messages[0], new, info, wkey)])
        refused = info["survivors"] if agg is None else 0
    except SecAggDropoutError as exc:
        info, agg, metrics = exc.info, None, None
        refused = min(info["active_per_stage"].values(), default=0)
        rejections.append({"round": rnd, "reason": f"SecAggDropoutError: {exc}"})
    rejections.extend({"round": rnd, "reason": f"client error: {f}"} for f in info["failures"])
    metrics = {**(metrics or {}), "secagg_survivors": float(info["survivors"]),
               "secagg_clipped_entries": float(info["clipped_entries"])}
    # halted: every sampled client is a dropout already; else the survivors' refused average adds to them
    failures = info["dropouts"] if info.get("halted_stage") else info["dropouts"] + refused
    return RoundResult(agg, metrics, info["bytes_sent"], info["bytes_received"], info["clients_sampled"],
                       failures=failures, refused=refused, epsilons=client_epsilons(info["client_metrics"]))
