"""CKKS in the round loop: the server's aggregator (ciphertexts only) and the clients' model codec.

:class:`CkksAggregator` sends the encrypted global model with every message (round 1: the public,
seeded initial model in plain text), adds the clients' encrypted, example-weighted updates and
refuses those it cannot add (:class:`~fedicd.secure.ckks_round.CkksServer`). Only an evaluator with
the secret key (``secure_aggregation.evaluator_key``, or the experiment driver after the run) reads
the global model. :class:`CkksCodec` is the client's side: decrypt the global model, encrypt
n_k·x_k, and keep out of the clear every metric that would reveal n_k.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedicd.federated.local import PlainCodec
from fedicd.federated.model import initial_arrays
from fedicd.federated.outcome import KeyMismatchError
from fedicd.federated.rounds import RoundAggregator, reply_metrics
from fedicd.run_plan import RunPlan
from fedicd.secure.ckks_round import CKKS_RECORD, PARAMS_FILE, STATE_KEY, CkksKeyHolder, CkksServer

__all__ = ["CkksAggregator", "CkksCodec"]

# steps = ⌈n/B⌉·epochs and ε (through q = B/n) would give n away; the count travels encrypted
_REVEALING = ("num-examples", "train_seconds", "epsilon", "epsilon_rdp", "epsilon_pld", "dp_steps", "dp_empty_batches")


class CkksAggregator(RoundAggregator):
    """The server adds ciphertexts; ``secret_path`` (an evaluator's key) lets it read the global model."""

    def __init__(self, plan: RunPlan, secret_path: str | None = None) -> None:
        super().__init__(plan.federated.timeout_s)
        init = initial_arrays(plan.train, plan.input_dim, plan.n_labels)
        key_dir = Path(plan.secure.key_dir)
        workers = _workers(plan)
        self.server = CkksServer(key_dir, tuple((k, tuple(int(s) for s in v.shape)) for k, v in init.items()),
                                 workers=workers)
        secret_path = secret_path or plan.secure.evaluator_key or None
        self.holder = CkksKeyHolder(secret_path, key_dir, workers=workers) if secret_path else None
        self.dtypes = {k: v.dtype for k, v in init.items()}
        self.last_seconds = 0.0

    def model_record(self, arrays: dict[str, np.ndarray]) -> ArrayRecord:
        return ArrayRecord() if STATE_KEY in arrays else super().model_record(arrays)

    def prepare(self, messages: list[Message], arrays: dict[str, np.ndarray]) -> None:
        if STATE_KEY in arrays:
            for msg in messages:
                msg.content[CKKS_RECORD] = ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])})

    def check_resume(self, arrays: dict[str, np.ndarray]) -> None:
        """A checkpointed encrypted model must be under the key the run now has (:class:`KeyMismatchError`)."""
        check_resumed_key(self.server, arrays)

    def readable(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        self.last_seconds = 0.0
        if STATE_KEY not in arrays:
            return arrays
        if self.holder is None:
            return None
        t0 = time.perf_counter()
        plain = self.holder.decrypt(ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])}), self.dtypes)
        self.last_seconds = time.perf_counter() - t0
        return plain

    def row_extras(self) -> dict:
        return {"evaluator_decrypt_seconds": self.last_seconds} if self.holder is not None else {}

    def aggregate(self, strategy, rnd: int, replies: list[Message], rejections: list[dict]):
        new, metrics, entries, refused = ckks_aggregate(self.server, rnd, replies)
        rejections.extend(entries)
        return new, metrics, refused


def _workers(plan: RunPlan) -> int:
    """``secure_aggregation.workers`` (0 = every core this process may use)."""
    return int(getattr(plan.secure, "workers", 0))


def check_resumed_key(server: CkksServer | None, arrays: dict[str, np.ndarray]) -> None:
    """Refuse an encrypted global model made under another key than ``server``'s, or in an older wire format
    (:class:`KeyMismatchError`; ``server`` None: not a CKKS run)."""
    from fedicd.secure.ckks_errors import CiphertextError
    from fedicd.secure.ckks_update import EncryptedUpdate

    if server is None or STATE_KEY not in arrays:
        return
    try:
        key = EncryptedUpdate.from_bytes(arrays[STATE_KEY].tobytes()).key_id
    except CiphertextError as exc:
        raise KeyMismatchError(f"the checkpoint's encrypted global model cannot be read: {exc}") from exc
    if key != server.key:
        raise KeyMismatchError(f"the checkpoint's encrypted global model was made under key {key}, but the key "
                               f"folder now holds key {server.key}: the keys were regenerated, and this run cannot "
                               "resume (start a new run)")


def _split(replies: list[Message]) -> tuple[list, list[dict]]:
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
    return updates, rejected


def ckks_aggregate(server: CkksServer, rnd: int, replies: list[Message]) -> tuple[dict | None, dict, list[dict], int]:
    """Add the clients' encrypted updates (the server cannot decrypt them).

    Returns (encrypted aggregate or None, metrics, rejection entries, number of refused updates);
    client errors are entries too (``"client error: ..."``), but not refusals.
    """
    updates, rejected = _split(replies)
    t0 = time.perf_counter()
    aggregate, bad = server.aggregate(updates)
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


@functools.lru_cache(maxsize=4)
def _key_holder(secret_path: str, key_dir: str, clip_values: bool, workers: int) -> CkksKeyHolder:
    return CkksKeyHolder(secret_path, key_dir, clip_values=clip_values, workers=workers)


class CkksCodec(PlainCodec):
    """A client's CKKS side. The secret context is node config ``ckks-secret-key`` (a deployment) or, in
    simulation, ``<key_dir>/secret.ctx``. The public parameters (``params.json``) are read beside the node's
    secret context when they are there (a site's own copy of the key folder), else from the plan's ``key_dir``."""

    def __init__(self, plan: RunPlan, node_secret: str | None = None) -> None:
        super().__init__(plan)
        self.secret_path = str(node_secret or Path(plan.secure.key_dir) / "secret.ctx")
        beside = Path(self.secret_path).parent
        self.key_dir = str(beside if (beside / PARAMS_FILE).exists() else plan.secure.key_dir)
        self.decrypt_seconds = 0.0

    @property
    def holder(self) -> CkksKeyHolder:
        """The secret context, opened on first use (a node without it fails the message that needs it)."""
        return _key_holder(self.secret_path, self.key_dir, bool(self.plan.secure.clip_values), _workers(self.plan))

    def global_arrays(self, msg: Message) -> ArrayRecord:
        """The decrypted global model (round 1: the public initial model in plain text)."""
        t0 = time.perf_counter()
        if CKKS_RECORD in msg.content.array_records:
            record = _plain_record(self.holder.decrypt(msg.content[CKKS_RECORD]))  # float32: no integer buffers
        else:
            record = msg.content["arrays"]
        self.decrypt_seconds = time.perf_counter() - t0
        return record

    def eval_weight(self, n_val: int) -> int:
        return 1  # a validation count would hint at the client's size

    def train_reply(self, arrays: dict[str, np.ndarray], n_examples: int, metrics: dict) -> RecordDict:
        t1 = time.perf_counter()
        record, clipped = self.holder.encrypt(arrays, n_examples)
        for key in _REVEALING:
            metrics.pop(key, None)
        metrics.update({"encrypt_seconds": time.perf_counter() - t1, "decrypt_seconds": self.decrypt_seconds,
                        "clipped_values": clipped})
        return RecordDict({CKKS_RECORD: record, "metrics": MetricRecord(metrics)})


def _plain_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    from fedicd.federated.records import to_record

    return to_record(arrays)
