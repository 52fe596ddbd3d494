"""One SecAgg+ training round on the server, run by Flower's own protocol code.

The server learns only the weighted sum of the sampled clients' arrays (and the
sum of their weights); a client dropping out after the key exchange (e.g. it
crashes or times out while training) is tolerated: its pairwise masks are
rebuilt from the Shamir shares its neighbours hold, as long as every sampled
client keeps ``reconstruction_threshold`` surviving share holders. Otherwise
Flower halts the round without an aggregate (it logs "Insufficient available
nodes" / "Not enough shares" and returns; no exception), which is raised here as
:class:`SecAggDropoutError`. A client lost *before* it shared its keys (setup or
share-keys stage) always halts the round in Flower 1.42: its neighbours are
asked for key shares they never received.

Nothing cryptographic is written here. Per round, :func:`secagg_train_round` runs Flower's
:class:`~flwr.server.workflow.SecAggPlusWorkflow` once (its four stages: setup, share keys,
collect masked vectors, unmask) on a fresh :class:`~flwr.server.compat.LegacyContext` holding
the round number, the global arrays and a legacy :class:`~flwr.server.strategy.FedAvg` that
samples exactly the given nodes (:mod:`fedicd.secure.secagg_workflow`). The workflow unmasks
and dequantises the weighted sum, divides it by the summed weights and hands the resulting
average to ``strategy.aggregate_fit`` (every ``FitRes`` then carries that same average); the
strategy here keeps it as the round's aggregate instead of averaging copies of it again.
:func:`strategy_reply` hands that average to fedicd's strategy as a single train reply.

The clients run :func:`~fedicd.secure.secagg_client.secaggplus_client_mod`; the parameters,
the weighting and quantisation and the resulting error bound are in
:mod:`fedicd.secure.secagg_config`.

What the server still sees in plaintext (Flower's design): every survivor's
weight (``FitRes.num_examples``) and its scalar metrics. Under distributed DP
(:mod:`fedicd.privacy.distributed_dp`) the clients mask clipped, noised updates
with unit weights and send only their id and clip count in the clear.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from fedicd.secure.secagg_config import SecAggPlusConfig
from fedicd.secure.secagg_messages import ARRAY_NAMES_KEY, CLIPPED_KEY, ROUNDING_SEED_KEY, WEIGHT_KEY_KEY
from fedicd.secure.secagg_workflow import KeepAggregate, MeteredGrid, ObservedSecAggPlus

__all__ = ["SecAggDropoutError", "secagg_train_round", "strategy_reply"]

log = logging.getLogger(__name__)


class SecAggDropoutError(ValueError):
    """Flower halted the SecAgg+ round (too few clients left for the threshold): no aggregate exists.

    ``info`` is the round's report (:func:`secagg_train_round`); the global model must stay unchanged.
    """

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


def _short_reason(failure: str) -> str:
    """The client's own exception message out of a (Ray) error reply, else its tail."""
    if "Message: " in failure:
        return failure.rsplit("Message: ", 1)[1].rstrip("'\\>)\n ")[:160]
    return failure[-160:]


def _weighted_metrics(results: list, weight_key: str) -> dict[str, float]:
    """Flower's weighting of train metrics (``aggregate_metricrecords``), over the FitRes metrics."""
    total = sum(float(r.num_examples) for _, r in results)
    out: dict[str, float] = {}
    if total <= 0:
        return out
    for _, res in results:
        for key, value in res.metrics.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in (CLIPPED_KEY, weight_key):
                out[key] = out.get(key, 0.0) + float(value) * float(res.num_examples) / total
    return out


def secagg_train_round(grid, server_round: int, arrays: Mapping[str, np.ndarray],
                       config: Mapping[str, Any] | ConfigRecord, sa_cfg: SecAggPlusConfig, *,
                       node_ids: Iterable[int] | None = None, weight_key: str = "num-examples",
                       rounding_seed: int | None = None,
                       raise_on_failure: bool = True) -> tuple[dict[str, np.ndarray] | None, dict]:
    """One training round aggregated by Flower's SecAgg+ workflow; returns (weighted average, report).

    ``node_ids``: the clients to sample (all of them take part; default: every connected node), e.g. the
    ``dst_node_id`` of the messages ``strategy.configure_train`` built. ``config`` reaches the clients' train
    handler as ``msg.content["config"]`` (plus ``server-round``). ``weight_key``: the reply metric that
    weighs a client. ``rounding_seed`` (e.g. derived from the experiment seed and the round): makes the
    clients' stochastic rounding, and so the aggregate, reproducible; None leaves it unseeded. The average
    has ``arrays``' names, shapes and dtypes (integer arrays are rounded).

    The report: ``round``, ``clients_sampled``, ``survivors``, ``dropouts`` (sampled but not aggregated),
    ``sampled_nodes`` and ``aggregated_nodes`` (node ids), ``active_per_stage``, ``num_shares``,
    ``threshold``, ``weights`` (survivors' weights, known to the server), ``weight_total``, ``metrics``
    (weighted like Flower's FedAvg), ``client_metrics`` (each survivor's scalar metrics, which Flower sends
    in plaintext, e.g. ``partition-id`` and ``epsilon``), ``clipped_entries``, ``failures`` (reasons),
    ``halted_stage``, ``bytes_sent``, ``bytes_received``, ``seconds``.

    When Flower halts the round (fewer clients left than the reconstruction threshold needs) there is no
    aggregate: :class:`SecAggDropoutError` (with ``.info``) is raised, or ``(None, report)`` is returned
    when ``raise_on_failure`` is false.
    """
    t0 = time.perf_counter()
    names = list(arrays)
    if not names:
        raise ValueError("secagg_train_round: no arrays to aggregate")
    like = {k: np.asarray(v) for k, v in arrays.items()}
    nodes = sorted(set(int(n) for n in (node_ids if node_ids is not None else grid.get_node_ids())))
    shares, threshold = sa_cfg.check_round(len(nodes))
    strategy = KeepAggregate(len(nodes), _round_config(config, server_round, names, weight_key, rounding_seed))
    context = _legacy_context(grid, nodes, strategy, server_round, [like[n] for n in names])
    workflow = _workflow(sa_cfg)
    metered = MeteredGrid(grid)
    workflow(metered, context)
    info = _report(server_round, workflow.trace, strategy, nodes, (shares, threshold), weight_key, metered)
    if info["halted_stage"]:
        info["seconds"] = time.perf_counter() - t0
        msg = _halt_message(server_round, workflow.trace, info)
        log.error("%s", msg)
        if raise_on_failure:
            raise SecAggDropoutError(msg, info)
        return None, info
    new = _aggregate_like(context, names, like)
    if info["clipped_entries"]:
        log.warning("SecAgg+ round %d: %d entries were clipped to clipping_range %g by the clients' quantisers",
                    server_round, info["clipped_entries"], sa_cfg.clipping_range)
    info["seconds"] = time.perf_counter() - t0
    return new, info


def _round_config(config: Mapping[str, Any] | ConfigRecord, server_round: int, names: list[str], weight_key: str,
                  rounding_seed: int | None) -> dict:
    """The train config the clients get: ``config``, the round, and the keys the client mod reads."""
    cfg = {k: v for k, v in dict(config).items()}
    cfg.update({"server-round": int(server_round), ARRAY_NAMES_KEY: names, WEIGHT_KEY_KEY: weight_key})
    if rounding_seed is not None:
        cfg[ROUNDING_SEED_KEY] = int(rounding_seed) % 2**63
    return cfg


def _legacy_context(grid, nodes: list[int], strategy: KeepAggregate, server_round: int,
                    ndarrays: list[np.ndarray]) -> LegacyContext:
    """The workflow's context: a client manager holding ``nodes``, the round number and the global arrays."""
    manager = SimpleClientManager()
    run_id = int(getattr(getattr(grid, "run", None), "run_id", 0) or 0)
    for nid in nodes:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=run_id))
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=strategy, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: int(server_round)})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(ndarrays), keep_input=True)
    return context


def _workflow(sa_cfg: SecAggPlusConfig) -> ObservedSecAggPlus:
    return ObservedSecAggPlus(sa_cfg.num_shares, sa_cfg.reconstruction_threshold, max_weight=sa_cfg.max_weight,
                              clipping_range=sa_cfg.clipping_range,
                              quantization_range=sa_cfg.quantization_range,
                              modulus_range=sa_cfg.modulus_range, timeout=sa_cfg.timeout)


def _report(server_round: int, trace: dict, strategy: KeepAggregate, nodes: list[int], resolved: tuple[int, int],
            weight_key: str, metered: MeteredGrid) -> dict:
    """The round's report (see :func:`secagg_train_round`), without ``seconds``."""
    shares, threshold = resolved
    # in client order: the weighted metric means are float sums, and replies arrive in any order
    results = sorted(strategy.results or [], key=lambda pr: int(pr[1].metrics.get("partition-id", -1)))
    weights = [float(r.num_examples) for _, r in results]
    halted = trace["halted_stage"] or (None if strategy.results is not None else "unmask")
    sampled = trace["sampled"] or nodes
    aggregated = [] if halted else [p.node_id for p, _ in results]
    return {"round": int(server_round), "clients_sampled": len(sampled), "survivors": len(aggregated),
            "dropouts": len(sampled) - len(aggregated), "sampled_nodes": list(sampled),
            "aggregated_nodes": sorted(aggregated), "active_per_stage": dict(trace["active"]),
            "num_shares": trace["shares"] or shares, "threshold": trace["threshold"] or threshold,
            "weights": weights if not halted else [], "weight_total": sum(weights) if not halted else 0.0,
            "metrics": _weighted_metrics(results, weight_key) if not halted else {},
            "client_metrics": [] if halted else [dict(r.metrics) for _, r in results],
            "clipped_entries": int(sum(int(r.metrics.get(CLIPPED_KEY, 0)) for _, r in results)),
            "failures": list(trace["failures"]), "halted_stage": halted,
            "bytes_sent": metered.sent, "bytes_received": metered.received}


def _halt_message(server_round: int, trace: dict, info: dict) -> str:
    """Why the round halted: the clients left after each stage, the threshold, the clients' reasons."""
    sampled, halted = info["sampled_nodes"], info["halted_stage"]
    per_stage = ", ".join(f"{k} {v}" for k, v in trace["active"].items())
    act = trace["active"]
    early = [k for k, before in (("setup", len(sampled)), ("share_keys", act.get("setup", len(sampled))))
             if act.get(k, before) < before]
    hint = (f"; clients lost in {'/'.join(early)} cannot be recovered by Flower's SecAgg+ (their neighbours "
            "hold no shares of them), so such a round halts" if early else "")
    reasons = "; ".join(_short_reason(f) for f in info["failures"][:3]) or "none reported"
    return (f"SecAgg+ round {server_round} halted in stage {halted!r}: of {len(sampled)} sampled clients "
            f"{per_stage} were still in after each stage, and every client needs {info['threshold']} surviving "
            f"neighbours among its {info['num_shares']} share holders{hint}; no aggregate, the global model "
            f"must stay unchanged (failures: {reasons})")


def _aggregate_like(context: LegacyContext, names: list[str], like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The workflow's average, with the names, shapes and dtypes of the global arrays (integers rounded)."""
    agg = parameters_to_ndarrays(compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                                  keep_input=True))
    new: dict[str, np.ndarray] = {}
    for name, value in zip(names, agg, strict=True):
        ref = like[name]
        value = np.asarray(value).reshape(ref.shape)
        if np.issubdtype(ref.dtype, np.integer) or ref.dtype == np.bool_:
            value = np.rint(value)
        new[name] = value.astype(ref.dtype)
    return new


def strategy_reply(template: Message, arrays: Mapping[str, np.ndarray], info: dict,
                   weight_key: str = "num-examples") -> Message:
    """The secure average as ONE train reply, for ``strategy.aggregate_train(rnd, [reply])``.

    ``template``: one of the messages ``strategy.configure_train`` built this round (never sent; only its
    metadata is used). The reply carries ``arrays`` and a MetricRecord with ``weight_key`` = the survivors'
    total weight plus the weighted train metrics, so a strategy that averages and then takes a server step
    (FedAvg, FedProx, FedAvgM, FedAdam/FedYogi/FedAdagrad, fedicd's UpdateValidator around them) returns
    the secure average, or its server step from it. Not meaningful for strategies that need the individual
    updates (robust aggregators, server-side DP clipping, SCAFFOLD).
    """
    metrics = {k: float(v) for k, v in info.get("metrics", {}).items() if k != weight_key}
    metrics[weight_key] = float(info["weight_total"])
    record = ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})
    return Message(RecordDict({"arrays": record, "metrics": MetricRecord(metrics)}), reply_to=template)
