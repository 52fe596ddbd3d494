"""SecAgg+ secure aggregation for fedicd's round loop, run by Flower's own protocol code.

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

Nothing cryptographic is written here. Per round:

* server — :func:`secagg_train_round` runs Flower's
  :class:`~flwr.server.workflow.SecAggPlusWorkflow` once (its four stages:
  setup, share keys, collect masked vectors, unmask) on a fresh
  :class:`~flwr.server.compat.LegacyContext` holding the round number, the
  global arrays and a legacy :class:`~flwr.server.strategy.FedAvg` that samples
  exactly the given nodes. The workflow unmasks and dequantises the weighted
  sum, divides it by the summed weights and hands the resulting average to
  ``strategy.aggregate_fit`` (every ``FitRes`` then carries that same average);
  the strategy here keeps it as the round's aggregate instead of averaging
  copies of it again.
* client — :func:`secaggplus_client_mod` (first in ``@app.train(mods=[...])``)
  runs Flower's :func:`~flwr.client.mod.secaggplus_mod` on the SecAgg+ messages
  and passes every other message through. In the masking stage the mod calls
  the train handler with a legacy ``fitins`` message and expects a legacy
  ``fitres`` reply; the mod's ``call_next`` is bridged so that fedicd's Message-API
  handler sees its usual ``{"arrays", "config"}`` message and its
  ``{"arrays", "metrics"}`` reply is handed to the mod as ``FitRes``
  (parameters in the order of the server's array names, ``num_examples`` = the
  weight metric).

Weighting and quantisation (Flower's mod and workflow): client ``i`` with weight
``n_i`` uses ``dq_i = round(n_i / max_weight * Q) / Q``, clips ``dq_i * x_i`` to
``[-c, c]`` (``c = clipping_range``), quantises it stochastically to integers in
``[0, Q]`` (``Q = quantization_range``), prepends ``round(dq_i * Q)`` and masks.
The server recovers ``sum_i dq_i x_i`` and ``sum_i dq_i`` and returns their
ratio. With ``k`` survivors and ``D = sum_i dq_i``, every entry differs from the
exactly weighted average by at most :meth:`SecAggPlusConfig.error_bound`::

    k * (2c/Q + 8c*u) / D  +  k * spread / (2 Q D)  +  |average| * u

(stochastic rounding < 1 step of ``2c/Q`` per client, float rounding of the
input dtype's unit roundoff ``u`` before quantising, the weights' own
quantisation acting on the spread ``max_i x_i - min_i x_i`` of the entry, and
the final cast). Entries with ``|dq_i x_i| > c`` are clipped: the client bridge
counts them (``secagg-clipped-entries``) and the server reports the total.

Stochastic rounding uses numpy's global RNG on the client; ``rounding_seed``
makes it, and so the aggregate, reproducible (masks cancel exactly anyway).

What the server still sees in plaintext (Flower's design): every survivor's
weight (``FitRes.num_examples``) and its scalar metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.client.mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE
from flwr.compat.common import recorddict_compat as compat
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

__all__ = ["SecAggPlusConfig", "SecAggDropoutError", "SecAggClientError", "secagg_train_round",
           "secaggplus_client_mod", "strategy_reply", "ARRAY_NAMES_KEY", "WEIGHT_KEY_KEY", "ROUNDING_SEED_KEY", "CLIPPED_KEY", "STAGES"]

log = logging.getLogger(__name__)

ARRAY_NAMES_KEY = "secagg-array-names"  # config: the names of the arrays, in the order they are masked
WEIGHT_KEY_KEY = "secagg-weight-key"  # config: which reply metric weighs the client (default "num-examples")
ROUNDING_SEED_KEY = "secagg-rounding-seed"  # config: seeds the clients' stochastic rounding (reproducible sums)
CLIPPED_KEY = "secagg-clipped-entries"  # FitRes metric: entries the client's quantiser clipped
STAGES = ("setup", "share_keys", "collect_masked_vectors", "unmask")
_SCALARS = (bool, int, float, str, bytes)


# --------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class SecAggPlusConfig:
    """The parameters of Flower's ``SecAggPlusWorkflow`` (validated here, with readable messages).

    ``num_shares``: each client's secrets are split among itself and ``num_shares - 1`` neighbours (an int
    >= 3), or a fraction in (0, 1] of the sampled clients (``1.0``: everyone). ``reconstruction_threshold``:
    shares needed to rebuild a secret (an int >= 2 and < ``num_shares``, or a fraction in (0, 1] of the
    shares); every sampled client must keep at least that many surviving neighbours (itself included),
    so at most ``shares - threshold`` neighbours of any client may drop out. ``max_weight``: the largest
    client weight (``num-examples``) — keep it close to the largest client for precision; a client whose
    weight exceeds it refuses to take part. ``clipping_range`` ``c`` and ``quantization_range`` ``Q``: see
    the module docstring. ``timeout``: seconds to wait for replies in each of the four stages (None: wait
    for every reply); a client that does not answer in time counts as dropped out.
    """

    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.5
    max_weight: float = 1000.0
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    timeout: float | None = None

    def __post_init__(self) -> None:
        shares, thr = self.num_shares, self.reconstruction_threshold
        if isinstance(shares, bool) or not isinstance(shares, (int, float)):
            raise ValueError(f"secure_aggregation.num_shares must be an int or a float, got {shares!r}")
        if isinstance(shares, int) and shares < 3:
            raise ValueError(f"secure_aggregation.num_shares = {shares}: an integer number of shares must be "
                             ">= 3 (or give a fraction of the sampled clients in (0, 1], e.g. 1.0 for all)")
        if isinstance(shares, float) and not 0.0 < shares <= 1.0:
            raise ValueError(f"secure_aggregation.num_shares = {shares}: a fraction of the sampled clients "
                             "must lie in (0, 1]")
        if isinstance(thr, bool) or not isinstance(thr, (int, float)):
            raise ValueError(f"secure_aggregation.reconstruction_threshold must be an int or a float, got {thr!r}")
        if isinstance(thr, int):
            if thr < 2:
                raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr}: an integer threshold "
                                 "must be >= 2 (Flower reads 1 as 'all shares'; write 1.0 for that)")
            if isinstance(shares, int) and thr >= shares:
                raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr} must be smaller than "
                                 f"num_shares = {shares} (a secret split into {shares} shares cannot need "
                                 f"{thr} of them and still tolerate a dropout)")
        elif not 0.0 < thr <= 1.0:
            raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr}: a fraction of the shares "
                             "must lie in (0, 1]")
        if not (isinstance(self.max_weight, (int, float)) and math.isfinite(self.max_weight)
                and self.max_weight > 0):
            raise ValueError(f"secure_aggregation.max_weight = {self.max_weight!r} must be a finite number > 0")
        if not (isinstance(self.clipping_range, (int, float)) and math.isfinite(self.clipping_range)
                and self.clipping_range > 0):
            raise ValueError(f"secure_aggregation.clipping_range = {self.clipping_range!r} must be a finite "
                             "number > 0")
        q, m = self.quantization_range, self.modulus_range
        if isinstance(q, bool) or not isinstance(q, int) or q < 2:
            raise ValueError(f"secure_aggregation.quantization_range = {q!r} must be an integer >= 2")
        if isinstance(m, bool) or not isinstance(m, int) or m <= q or m & (m - 1) or m > 2**32:
            raise ValueError(f"secure_aggregation.modulus_range = {m!r} must be a power of 2, greater than "
                             f"quantization_range = {q} and at most 2**32")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"secure_aggregation.timeout = {self.timeout!r} must be None or seconds > 0")
        object.__setattr__(self, "clipping_range", float(self.clipping_range))  # Flower's mod wants a float
        object.__setattr__(self, "max_weight", float(self.max_weight))

    # -- what Flower resolves at run time (mirrors SecAggPlusWorkflow.setup_stage)
    def resolved(self, num_sampled: int) -> tuple[int, int]:
        """(shares, threshold) Flower uses for ``num_sampled`` clients."""
        if isinstance(self.num_shares, float):
            shares = round(self.num_shares * num_sampled)
            if shares < num_sampled and shares & 1 == 0:
                shares += 1
            if shares <= 2:
                shares = num_sampled
        else:
            shares = self.num_shares
        if isinstance(self.reconstruction_threshold, float):
            threshold = max(round(self.reconstruction_threshold * shares), 2)
        else:
            threshold = self.reconstruction_threshold
        return shares, threshold

    def check_round(self, num_sampled: int) -> tuple[int, int]:
        """Refuse a round Flower would run into trouble with; returns the resolved (shares, threshold)."""
        if num_sampled < 2:
            raise ValueError(f"SecAgg+ needs at least 2 sampled clients, got {num_sampled}")
        shares, threshold = self.resolved(num_sampled)
        if shares > num_sampled:
            raise ValueError(f"secure_aggregation.num_shares = {shares} exceeds the {num_sampled} sampled clients")
        if threshold > shares:
            raise ValueError(f"secure_aggregation.reconstruction_threshold resolves to {threshold} shares, more "
                             f"than the {shares} shares each secret is split into")
        if num_sampled * self.quantization_range >= self.modulus_range:
            raise ValueError(f"{num_sampled} clients x quantization_range {self.quantization_range} would overflow "
                             f"modulus_range {self.modulus_range}; lower quantization_range")
        return shares, threshold

    def check_weights(self, weights: Iterable[float]) -> None:
        """Refuse client weights above ``max_weight`` (e.g. the staged client sizes, before a run)."""
        too_big = [w for w in weights if w > self.max_weight]
        if too_big:
            raise ValueError(f"secure_aggregation.max_weight = {self.max_weight:g} is below client weight(s) "
                             f"{sorted(too_big)[-3:]}; set it to at least the largest client's num-examples")

    def weight_factor(self, weight: float) -> float:
        """``dq``: the quantised weight factor Flower's mod multiplies a client's arrays by."""
        return round(weight / self.max_weight * self.quantization_range) / self.quantization_range

    def error_bound(self, weights: Iterable[float], value_spread: float | np.ndarray = 0.0,
                    value_abs: float | np.ndarray = 0.0, dtype: Any = np.float32) -> float | np.ndarray:
        """Largest |SecAgg+ average - exactly weighted average| of an entry (see the module docstring).

        ``weights``: the survivors' weights; ``value_spread``: max_i x_i - min_i x_i of the entry (or a
        bound); ``value_abs``: |average| (or a bound), for the final cast to ``dtype``.
        """
        weights = list(weights)
        k, q, c = len(weights), self.quantization_range, self.clipping_range
        d = sum(self.weight_factor(w) for w in weights)
        if k == 0 or d <= 0:
            raise ValueError("error_bound needs at least one client with a weight factor > 0")
        if np.issubdtype(np.dtype(dtype), np.floating):
            u = float(np.finfo(dtype).eps) / 2
            cast = np.asarray(value_abs) * u
        else:  # integers are quantised as float64 and rounded back
            u, cast = float(np.finfo(np.float64).eps) / 2, 0.5
        return k * (2 * c / q + 8 * c * u) / d + k * np.asarray(value_spread) / (2 * q * d) + cast


class SecAggDropoutError(ValueError):
    """Flower halted the SecAgg+ round (too few clients left for the threshold): no aggregate exists.

    ``info`` is the round's report (:func:`secagg_train_round`); the global model must stay unchanged.
    """

    def __init__(self, message: str, info: dict) -> None:
        super().__init__(message)
        self.info = info


class SecAggClientError(ValueError):
    """A client's train reply cannot be securely aggregated (raised on the client, so it drops out)."""


# --------------------------------------------------------------------------- client side
def secaggplus_client_mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower's ``secaggplus_mod`` on SecAgg+ train messages, bridged to a Message-API train handler.

    Put it first in ``@app.train(mods=[secaggplus_client_mod, ...])``: mods after it (e.g. client-side
    clipping) and the handler see an ordinary ``{"arrays", "config"}`` train message. Messages without
    SecAgg+ configs (plain rounds) pass through untouched.

    Flower's quantiser rounds stochastically with numpy's global RNG; when the server sends a rounding seed
    (:func:`secagg_train_round`'s ``rounding_seed``) that RNG is seeded from (seed, partition-id) for the
    masking stage and restored afterwards, so the unmasked sum is reproducible (the masks, drawn from
    private random seeds, cancel exactly whatever they are).
    """
    if not msg.has_content() or RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    rng_state = np.random.get_state()
    try:
        return secaggplus_mod(msg, context, _bridge(call_next))
    finally:
        np.random.set_state(rng_state)


def _bridge(call_next: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    def bridged(msg: Message, context: Context) -> Message:
        params = msg.content.array_records["fitins.parameters"]
        fit_cfg = msg.content.config_records["fitins.config"]
        names = [str(n) for n in fit_cfg.get(ARRAY_NAMES_KEY, [])]
        ndarrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(params, keep_input=True))
        if len(names) != len(ndarrays):
            raise SecAggClientError(f"the SecAgg+ train message names {len(names)} arrays but carries "
                                    f"{len(ndarrays)} (config key {ARRAY_NAMES_KEY!r} missing?)")
        weight_key = str(fit_cfg.get(WEIGHT_KEY_KEY, "num-examples"))
        ours = (ARRAY_NAMES_KEY, WEIGHT_KEY_KEY, ROUNDING_SEED_KEY)
        config = ConfigRecord({k: v for k, v in fit_cfg.items() if k not in ours})
        arrays = ArrayRecord(array_dict={n: Array(np.ascontiguousarray(a)) for n, a in zip(names, ndarrays)})
        inner = make_message(metadata=msg.metadata, content=RecordDict({"arrays": arrays, "config": config}))
        reply = call_next(inner, context)
        if reply.has_error():
            raise SecAggClientError(f"the train handler replied with an error: {reply.error.reason}")
        shapes = {n: a.shape for n, a in zip(names, ndarrays)}
        if ROUNDING_SEED_KEY in fit_cfg:  # the mod quantises right after this returns
            who = int(context.node_config.get("partition-id", msg.metadata.dst_node_id))
            np.random.seed(int(np.random.SeedSequence([int(fit_cfg[ROUNDING_SEED_KEY]), who]).generate_state(1)[0]))
        return Message(_to_fitres(reply.content, shapes, weight_key, context), reply_to=msg)

    return bridged


def _to_fitres(content: RecordDict, shapes: dict[str, tuple], weight_key: str, context: Context) -> RecordDict:
    names = list(shapes)
    extra = [k for k in content.array_records if k != "arrays"]
    if extra or "arrays" not in content.array_records:
        raise SecAggClientError(f"SecAgg+ aggregates exactly one ArrayRecord 'arrays'; the reply holds "
                                f"{sorted(content.array_records)} (e.g. SCAFFOLD controls cannot be sent this way)")
    record = content.array_records["arrays"]
    if sorted(record) != sorted(names):
        raise SecAggClientError(f"the reply's arrays {sorted(record)[:5]}... differ from the global model's "
                                f"{sorted(names)[:5]}...")
    ndarrays = [record[n].numpy() for n in names]
    for name, a in zip(names, ndarrays):
        if a.shape != shapes[name]:
            raise SecAggClientError(f"array {name!r} has shape {a.shape}, the global model's is {shapes[name]}")
        if not np.all(np.isfinite(a)):
            raise SecAggClientError(f"array {name!r} holds non-finite values; refusing to mask it into the sum")
    metrics: dict[str, Any] = {}
    for rec in content.metric_records.values():
        metrics.update({k: v for k, v in rec.items() if isinstance(v, _SCALARS)})
    if weight_key not in metrics:
        raise SecAggClientError(f"the reply's metrics lack the weight {weight_key!r}")
    weight = metrics[weight_key]
    state = context.state.config_records[RECORD_KEY_STATE]  # written by secaggplus_mod's setup stage
    sa = SecAggPlusConfig(max_weight=float(state["max_weight"]), clipping_range=float(state["clipping_range"]),
                          quantization_range=int(state["target_range"]), modulus_range=int(state["mod_range"]))
    if not 0 < weight <= sa.max_weight:
        raise SecAggClientError(f"client weight {weight_key} = {weight} is outside (0, max_weight = "
                                f"{sa.max_weight:g}]; raise secure_aggregation.max_weight")
    dq = sa.weight_factor(weight)
    clipped = int(sum(np.count_nonzero(~(np.abs(a.astype(np.float64) * dq) <= sa.clipping_range))
                      for a in ndarrays))
    if clipped:
        log.warning("SecAgg+: %d entries of this client's update exceed clipping_range %g after weighting by %g "
                    "and are clipped", clipped, sa.clipping_range, dq)
    metrics[CLIPPED_KEY] = clipped
    fitres = FitRes(status=Status(code=Code.OK, message="Success"), parameters=ndarrays_to_parameters(ndarrays),
                    num_examples=weight, metrics=metrics)
    return compat.fitres_to_recorddict(fitres, keep_input=False)


# --------------------------------------------------------------------------- server side
class _KeepAggregate(FedAvg):
    """Legacy FedAvg that samples every registered node and keeps the workflow's average as it is."""

    def __init__(self, n: int, config: dict) -> None:
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_evaluate_clients=0,
                         min_available_clients=n, on_fit_config_fn=lambda _rnd: dict(config))
        self.results: list | None = None
        self.failures: list = []

    def aggregate_fit(self, server_round, results, failures):
        # SecAggPlusWorkflow.unmask_stage has set every FitRes's parameters to the unmasked average.
        self.results, self.failures = list(results), list(failures)
        if not results:
            return None, {}
        return results[0][1].parameters, {}


class _ObservedSecAggPlus(SecAggPlusWorkflow):
    """Flower's workflow unchanged; after each stage the number of clients still in is recorded."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trace: dict = {"active": {}, "halted_stage": None, "sampled": [], "aggregated": [],
                            "failures": [], "shares": None, "threshold": None}

    def _observe(self, stage: str, ok: bool, state) -> bool:
        self.trace["active"][stage] = len(state.active_node_ids)
        # Flower appends a stage-2 failure twice (two loops over the replies); keep each once
        self.trace["failures"] = list(dict.fromkeys(str(f) for f in state.failures))
        if stage == "setup":
            self.trace.update(sampled=sorted(state.sampled_node_ids), shares=state.num_shares,
                              threshold=state.threshold)
        if stage == "collect_masked_vectors":
            self.trace["aggregated"] = sorted(state.active_node_ids)
        if not ok:
            self.trace["halted_stage"] = stage
        return ok

    def setup_stage(self, grid, context, state) -> bool:
        return self._observe("setup", super().setup_stage(grid, context, state), state)

    def share_keys_stage(self, grid, context, state) -> bool:
        return self._observe("share_keys", super().share_keys_stage(grid, context, state), state)

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:
        return self._observe("collect_masked_vectors", super().collect_masked_vectors_stage(grid, context, state),
                             state)

    def unmask_stage(self, grid, context, state) -> bool:
        return self._observe("unmask", super().unmask_stage(grid, context, state), state)


def _value_bytes(value: Any) -> int:
    if isinstance(value, (bytes, str)):
        return len(value.encode() if isinstance(value, str) else value)
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    return 8


def _content_bytes(msg: Message) -> int:
    """Bytes of every record's values and keys (``ConfigRecord.count_bytes`` fails on empty lists in flwr 1.42)."""
    if not msg.has_content():
        return 0
    content = msg.content
    total = sum(r.count_bytes() for recs in (content.array_records, content.metric_records) for r in recs.values())
    return total + sum(len(k) + _value_bytes(v) for r in content.config_records.values() for k, v in r.items())


class _MeteredGrid:
    """The grid, with the bytes of every record sent and received counted."""

    def __init__(self, grid) -> None:
        self._grid = grid
        self.sent = 0
        self.received = 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += sum(_content_bytes(m) for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.received += sum(_content_bytes(m) for m in replies)
        return replies

    def __getattr__(self, name):
        return getattr(self._grid, name)


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
                       rounding_seed: int | None = None, raise_on_failure: bool = True) -> tuple[dict[str, np.ndarray] | None, dict]:
    """One training round aggregated by Flower's SecAgg+ workflow; returns (weighted average, report).

    ``node_ids``: the clients to sample (all of them take part; default: every connected node), e.g. the
    ``dst_node_id`` of the messages ``strategy.configure_train`` built. ``config`` reaches the clients' train
    handler as ``msg.content["config"]`` (plus ``server-round``). ``weight_key``: the reply metric that
    weighs a client. ``rounding_seed`` (e.g. derived from the experiment seed and the round): makes the
    clients' stochastic rounding, and so the aggregate, reproducible; None leaves it unseeded. The average has ``arrays``' names, shapes
    and dtypes (integer arrays are rounded).

    The report: ``round``, ``clients_sampled``, ``survivors``, ``dropouts`` (sampled but not aggregated),
    ``sampled_nodes`` and ``aggregated_nodes`` (node ids), ``active_per_stage``, ``num_shares``,
    ``threshold``, ``weights`` (survivors' weights, known to the server), ``weight_total``, ``metrics``
    (weighted like Flower's FedAvg), ``client_metrics`` (each survivor's scalar metrics, which Flower sends in
    plaintext, e.g. ``partition-id`` and ``epsilon``), ``clipped_entries``, ``failures`` (reasons), ``halted_stage``,
    ``bytes_sent``, ``bytes_received``, ``seconds``.

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

    cfg = {k: v for k, v in dict(config).items()}
    cfg.update({"server-round": int(server_round), ARRAY_NAMES_KEY: names, WEIGHT_KEY_KEY: weight_key})
    if rounding_seed is not None:
        cfg[ROUNDING_SEED_KEY] = int(rounding_seed) % 2**63
    strategy = _KeepAggregate(len(nodes), cfg)
    manager = SimpleClientManager()
    run_id = int(getattr(getattr(grid, "run", None), "run_id", 0) or 0)
    for nid in nodes:
        manager.register(GridClientProxy(node_id=nid, grid=grid, run_id=run_id))
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            strategy=strategy, client_manager=manager)
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: int(server_round)})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters([like[n] for n in names]), keep_input=True)

    workflow = _ObservedSecAggPlus(sa_cfg.num_shares, sa_cfg.reconstruction_threshold, max_weight=sa_cfg.max_weight,
                                   clipping_range=sa_cfg.clipping_range,
                                   quantization_range=sa_cfg.quantization_range,
                                   modulus_range=sa_cfg.modulus_range, timeout=sa_cfg.timeout)
    metered = _MeteredGrid(grid)
    workflow(metered, context)

    trace = workflow.trace
    results = strategy.results or []
    weights = [float(r.num_examples) for _, r in results]
    halted = trace["halted_stage"] or (None if strategy.results is not None else "unmask")
    sampled = trace["sampled"] or nodes
    aggregated = [] if halted else [p.node_id for p, _ in results]
    info = {"round": int(server_round), "clients_sampled": len(sampled), "survivors": len(aggregated),
            "dropouts": len(sampled) - len(aggregated), "sampled_nodes": list(sampled),
            "aggregated_nodes": sorted(aggregated), "active_per_stage": dict(trace["active"]),
            "num_shares": trace["shares"] or shares, "threshold": trace["threshold"] or threshold,
            "weights": weights if not halted else [], "weight_total": sum(weights) if not halted else 0.0,
            "metrics": _weighted_metrics(results, weight_key) if not halted else {},
            "client_metrics": [] if halted else [dict(r.metrics) for _, r in results],
            "clipped_entries": int(sum(int(r.metrics.get(CLIPPED_KEY, 0)) for _, r in results)),
            "failures": list(trace["failures"]), "halted_stage": halted,
            "bytes_sent": metered.sent, "bytes_received": metered.received}
    if halted:
        info["seconds"] = time.perf_counter() - t0
        per_stage = ", ".join(f"{k} {v}" for k, v in trace["active"].items())
        act = trace["active"]
        early = [k for k, before in (("setup", len(sampled)), ("share_keys", act.get("setup", len(sampled))))
                 if act.get(k, before) < before]
        hint = (f"; clients lost in {'/'.join(early)} cannot be recovered by Flower's SecAgg+ (their neighbours "
                "hold no shares of them), so such a round halts" if early else "")
        reasons = "; ".join(_short_reason(f) for f in info["failures"][:3]) or "none reported"
        msg = (f"SecAgg+ round {server_round} halted in stage {halted!r}: of {len(sampled)} sampled clients "
               f"{per_stage} were still in after each stage, and every client needs {info['threshold']} surviving "
               f"neighbours among its {info['num_shares']} share holders{hint}; no aggregate, the global model "
               f"must stay unchanged (failures: {reasons})")
        log.error("%s", msg)
        if raise_on_failure:
            raise SecAggDropoutError(msg, info)
        return None, info

    agg = parameters_to_ndarrays(compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                                  keep_input=True))
    new: dict[str, np.ndarray] = {}
    for name, value in zip(names, agg, strict=True):
        ref = like[name]
        value = np.asarray(value).reshape(ref.shape)
        if np.issubdtype(ref.dtype, np.integer) or ref.dtype == np.bool_:
            value = np.rint(value)
        new[name] = value.astype(ref.dtype)
    if info["clipped_entries"]:
        log.warning("SecAgg+ round %d: %d entries were clipped to clipping_range %g by the clients' quantisers",
                    server_round, info["clipped_entries"], sa_cfg.clipping_range)
    info["seconds"] = time.perf_counter() - t0
    return new, info


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
