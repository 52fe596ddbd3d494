"""The server's side of a round under secure aggregation: CKKS ciphertexts, or Flower's SecAgg+ workflow.

Both return what the round loop (:mod:`fedicd.federated.server`) records: the new global model (or
None), train metrics, and a :class:`RoundResult` whose ``failures`` counts every sampled client whose
update did not reach the aggregate and ``refused`` those the server rejected (a refused ciphertext,
the survivors of a halted SecAgg+ round). TenSEAL is imported only by CKKS runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Message

from fedicd.federated.outcome import KeyMismatchError
from fedicd.federated.records import to_record

__all__ = ["RoundResult", "model_record", "attach_encrypted_model", "ckks_aggregate", "ckks_parties",
           "check_resumed_key", "secagg_round", "secagg_settings", "reply_metrics"]

log = logging.getLogger(__name__)


@dataclass
class RoundResult:
    """One train round as the history records it."""

    arrays: object | None  # the new global model (ArrayRecord, or {STATE_KEY: bytes} under CKKS); None: unchanged
    metrics: dict
    sent: int
    received: int
    sampled: int
    failures: int  # sampled clients whose update did not reach the aggregate (errors, no reply, refused)
    refused: int = 0  # of those, updates that arrived and the server rejected
    epsilons: dict = field(default_factory=dict)


def reply_metrics(msg: Message) -> dict:
    """The first MetricRecord of a reply (empty for an error)."""
    return {} if msg.has_error() else dict(next(iter(msg.content.metric_records.values()), {}))


def model_record(arrays: dict[str, np.ndarray]):
    """What a message carries as the global model: the plain arrays, or nothing plain under CKKS."""
    from flwr.app import ArrayRecord

    from fedicd.secure.ckks_round import STATE_KEY

    return ArrayRecord() if STATE_KEY in arrays else to_record(arrays)


def attach_encrypted_model(messages: list[Message], arrays: dict[str, np.ndarray]) -> None:
    """Under CKKS, every message carries the encrypted global model (the last aggregate)."""
    from flwr.app import Array, ArrayRecord

    from fedicd.secure.ckks_round import CKKS_RECORD, STATE_KEY

    if STATE_KEY in arrays:
        for msg in messages:
            msg.content[CKKS_RECORD] = ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])})


def ckks_aggregate(ckks, rnd: int, replies: list[Message]) -> tuple[dict | None, dict, list[dict], int]:
    """Add the clients' encrypted updates (the server cannot decrypt them).

    Returns (encrypted aggregate or None, metrics, rejection entries, number of refused updates);
    client errors are entries too (``"client error: ..."``), but not refusals.
    """
    from fedicd.secure.ckks_round import CKKS_RECORD, STATE_KEY

    updates, rejected = [], []
    for msg in replies:
        pid = int(reply_metrics(msg).get("partition-id", -1))
        if msg.has_error():
            rejected.append({"node_id": msg.metadata.src_node_id, "reason": f"client error: {msg.error.reason}"})
        elif CKKS_RECORD not in msg.content.array_records:
            rejected.append({"partition-id": pid, "reason": "no encrypted update in the reply (a client without "
                                                            "the key, or not running CKKS)"})
        else:
            updates.append((pid, msg.content[CKKS_RECORD]))
    t0 = time.perf_counter()
    aggregate, bad = ckks.aggregate(updates)
    seconds = time.perf_counter() - t0
    refused = len(rejected) - sum(r["reason"].startswith("client error") for r in rejected) + len(bad)
    rejected = [{"round": rnd, **r} for r in rejected + bad]
    accepted = {u for u, _ in updates} - {r["partition-id"] for r in bad}
    ok = [m for m in map(reply_metrics, replies) if int(m.get("partition-id", -1)) in accepted]
    # unweighted means: the example counts travel encrypted
    metrics = {k: float(np.mean(vals)) for k in ("train_loss", "encrypt_seconds", "decrypt_seconds")
               if (vals := [float(m[k]) for m in ok if k in m])}
    metrics["aggregate_seconds"] = seconds
    if aggregate is None:
        return None, metrics, rejected, refused
    metrics["clipped_values"] = float(aggregate.n_clipped)
    metrics["clients_aggregated"] = float(aggregate.n_clients)
    return {STATE_KEY: np.frombuffer(aggregate.to_bytes(), dtype=np.uint8).copy()}, metrics, rejected, refused


def ckks_parties(meta: dict, train_cfg, secret_path: str | None = None):
    """Under CKKS: the server's aggregator (public context only) and the evaluator, or (None, None).

    The evaluator turns the encrypted global model into plain arrays; it exists only when
    ``secure_aggregation.evaluator_key`` (or ``secret_path``, the driver's own key after the run)
    names a secret context — otherwise it returns None for an encrypted model and nothing here
    opens a secret context (see :mod:`fedicd.secure.ckks_round`).
    """
    secure = meta["config"].get("secure_aggregation", {})
    if secure.get("method", "none") != "ckks":
        return None, None
    from fedicd.federated.server import initial_arrays
    from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer, STATE_KEY

    init = initial_arrays(train_cfg, meta["input_dim"], meta["n_labels"])
    layout = tuple((k, tuple(int(s) for s in v.shape)) for k, v in init.items())
    key_dir = Path(secure["key_dir"])
    server = CkksServer(key_dir, layout)
    secret_path = secret_path or secure.get("evaluator_key") or None
    holder = CkksKeyHolder(secret_path, key_dir) if secret_path else None
    dtypes = {k: v.dtype for k, v in init.items()}

    def evaluator(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        evaluator.last_seconds = 0.0
        if STATE_KEY not in arrays:
            return arrays
        if holder is None:
            return None
        from flwr.app import Array, ArrayRecord

        t0 = time.perf_counter()
        plain = holder.decrypt(ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])}), dtypes)
        evaluator.last_seconds = time.perf_counter() - t0
        return plain

    evaluator.last_seconds = 0.0
    return server, evaluator


def check_resumed_key(ckks, arrays: dict[str, np.ndarray]) -> None:
    """A checkpointed encrypted model must be under the key the run now has (:class:`KeyMismatchError`)."""
    if ckks is None:
        return
    from fedicd.secure.ckks import EncryptedUpdate
    from fedicd.secure.ckks_round import STATE_KEY

    if STATE_KEY not in arrays:
        return
    key = EncryptedUpdate.from_bytes(arrays[STATE_KEY].tobytes()).key_id
    if key != ckks.key:
        raise KeyMismatchError(f"the checkpoint's encrypted global model was made under key {key}, but the key "
                               f"folder now holds key {ckks.key}: the keys were regenerated, and this run cannot "
                               "resume (start a new run)")


def secagg_round(strategy, grid, rnd: int, arrays, config: ConfigRecord, meta: dict, sa_cfg,
                 rejections: list[dict]) -> RoundResult:
    """One round through Flower's SecAgg+ workflow: the server learns only the weighted sum.

    The strategy's ``configure_train`` picks the clients and builds the config (e.g. FedProx's
    mu); Flower's workflow runs the four SecAgg+ stages; the unmasked average goes through the
    strategy's ``aggregate_train`` as one reply. Every dropout is a failure (its reason appended to
    ``rejections``); a halted round (too many dropouts) has no update, and the survivors' discarded
    contributions count as refused.
    """
    from fedicd.secure.secagg import SecAggDropoutError, secagg_train_round, strategy_reply

    messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
    wkey = getattr(strategy, "weighted_by_key", "num-examples")
    try:
        new, info = secagg_train_round(grid, rnd, arrays, messages[0].content["config"], sa_cfg,
                                       node_ids=[m.metadata.dst_node_id for m in messages], weight_key=wkey,
                                       rounding_seed=meta["seed"] * 1_000_003 + rnd)
        agg, metrics = strategy.aggregate_train(rnd, [strategy_reply(messages[0], new, info, wkey)])
        refused = info["survivors"] if agg is None else 0
    except SecAggDropoutError as exc:
        info, agg, metrics = exc.info, None, None
        refused = min(info["active_per_stage"].values(), default=0)
        rejections.append({"round": rnd, "reason": f"SecAggDropoutError: {exc}"})
    rejections.extend({"round": rnd, "reason": f"client error: {f}"} for f in info["failures"])
    per_client = {f"epsilon_client_{int(m['partition-id'])}": float(m["epsilon"])
                  for m in info["client_metrics"] if "epsilon" in m and "partition-id" in m}
    metrics = {**(metrics or {}), "secagg_survivors": float(info["survivors"]),
               "secagg_clipped_entries": float(info["clipped_entries"])}
    # halted: every sampled client is a dropout already; else the survivors' refused average adds to them
    failures = info["dropouts"] if info.get("halted_stage") else info["dropouts"] + refused
    return RoundResult(agg, metrics, info["bytes_sent"], info["bytes_received"], info["clients_sampled"],
                       failures=failures, refused=refused, epsilons=per_client)


def secagg_settings(meta: dict):
    """Flower's SecAgg+ parameters of the run (``max_weight = 0`` → the largest client)."""
    from fedicd.secure.config import SecureAggConfig

    secure = SecureAggConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in meta["config"]["secure_aggregation"].items()})
    return secure.secagg(largest_client=max(meta["client_sizes"]))
