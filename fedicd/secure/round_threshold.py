"""Threshold CKKS in the round loop: joint key generation, encrypted updates, a jointly decrypted average.

:class:`ThresholdAggregator` (the server), before its first round, asks every node for its key (``status``); when
the key holders' keys are not the run's stored joint key it runs the key generation through the federation's own
messages (sequentially over the clients, then the joint key to everyone; with ``threshold`` t < n also the Shamir
shares of every key, sealed pairwise). A train round then: the strategy's train messages (the global model is
public: it was decrypted for everyone), the clients' encrypted n_k·x_k and n_k, their sum, the decrypt stage (the
aggregate to every key holder; missing holders' parts recovered from t shares), the fused plain average handed to
the strategy as one reply, so FedAvg, FedProx and the server optimizers step from it. Too few partial decryptions
end the round with a :class:`~fedicd.secure.threshold.errors.QuorumError` rejection and the model unchanged.

:class:`ThresholdCodec` is the client's side of the train round; :func:`handle_threshold` answers the stage
messages (``@app.query("threshold")`` in both ClientApps). A client's key share stays in its own state folder
(``<run_dir>/clients/<partition-id>/threshold``: the run folder in simulation, the node's state folder in a
deployment).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedicd.federated.local import ClientSetup, PlainCodec
from fedicd.federated.model import initial_arrays
from fedicd.federated.records import message_bytes, to_record
from fedicd.federated.rounds import RoundAggregator, RoundResult, reply_metrics
from fedicd.run_plan import RunPlan
from fedicd.secure.threshold.errors import QuorumError, ThresholdError
from fedicd.secure.threshold.messages import MESSAGE_TYPE, UPDATE_RECORD, blobs_of, request, threshold_params

__all__ = ["ThresholdAggregator", "ThresholdCodec", "handle_threshold", "bind_threshold_party"]

log = logging.getLogger(__name__)

# as under shared-key CKKS: these would give a client's example count away
_REVEALING = ("num-examples", "train_seconds", "epsilon", "epsilon_rdp", "epsilon_pld", "dp_steps", "dp_empty_batches")


def _params(plan: RunPlan):
    return threshold_params(plan.n_clients, max(plan.client_sizes))


class ThresholdAggregator(RoundAggregator):
    """The server's side; ``run_dir`` keeps the key chain (public) so a resumed run reuses the joint key."""

    def __init__(self, plan: RunPlan, run_dir: str | Path | None = None) -> None:
        from fedicd.secure.threshold.packing import Layout
        from fedicd.secure.threshold.server import ThresholdServer

        super().__init__(plan.secure.timeout_s)
        self.plan, self.threshold = plan, int(plan.secure.threshold)
        layout = Layout.of(initial_arrays(plan.train, plan.input_dim, plan.n_labels))
        # the server adds and fuses in this process: shipping every update's ciphertexts to worker processes
        # costs more than the additions (measured 2x slower with 2 workers, experiments/bench_threshold_ckks.py);
        # ``secure_aggregation.workers`` spreads the clients' encryption and partial decryption
        self.server = ThresholdServer(_params(plan), layout, workers=1)
        self.key_file = Path(run_dir) / "threshold_keys.json" if run_dir is not None else None
        self.nodes: dict[int, int] = {}  # party id -> node id
        self.publics: dict[int, bytes] = {}
        self.bytes = [0, 0]

    # -- messaging ---------------------------------------------------------------------------
    def _ask(self, grid, stage: str, asks: dict[int, tuple[dict, dict]]) -> dict[int, Message]:
        """Send ``stage`` to the parties in ``asks`` (party id → (config, blobs)); their non-error replies."""
        by_node = {self.nodes[p]: p for p in asks}
        messages = [Message(request(stage, cfg, blobs), dst_node_id=self.nodes[p], message_type=MESSAGE_TYPE)
                    for p, (cfg, blobs) in asks.items()]
        replies = list(grid.send_and_receive(messages, timeout=self.timeout))
        self.bytes[0] += message_bytes(messages)
        self.bytes[1] += message_bytes(replies)
        out = {}
        for r in replies:
            pid = by_node.get(r.metadata.src_node_id)
            if r.has_error():
                log.warning("threshold CKKS: party %s failed stage %s: %s", pid, stage, r.error.reason)
            elif pid is not None:
                out[pid] = r
        return out

    def _publics_config(self) -> dict:
        return {f"seal-{p}": v for p, v in self.publics.items()}

    # -- key generation ----------------------------------------------------------------------
    def ensure_keys(self, grid) -> None:
        """Reuse the stored joint key when every key holder still holds it, else generate a new one."""
        status = {}
        messages = [Message(request("status"), dst_node_id=nid, message_type=MESSAGE_TYPE)
                    for nid in grid.get_node_ids()]
        replies = list(grid.send_and_receive(messages, timeout=self.timeout))
        self.bytes[0] += message_bytes(messages)
        self.bytes[1] += message_bytes(replies)
        for r in replies:
            if not r.has_error():
                cfg = r.content["threshold"]
                status[int(cfg["partition-id"])] = (r.metadata.src_node_id, str(cfg["key"]))
        self.nodes = {p: nid for p, (nid, _) in status.items()}
        stored = self._load()
        if stored and set(stored["holders"]) <= set(status) and all(
                status[p][1] == stored["key"] for p in stored["holders"]):
            log.info("threshold CKKS: reusing the joint key %s of %d holders", stored["key"], len(stored["holders"]))
            return
        self._keygen(grid, sorted(status))

    def _keygen(self, grid, parties: list[int]) -> None:
        from fedicd.secure.threshold.server import check_threshold

        if len(parties) < 2:
            raise ThresholdError(f"threshold CKKS needs at least two key holders, {len(parties)} answered")
        check_threshold(self.threshold, len(parties))
        if 1 < self.threshold < len(parties):
            from fedicd.secure.threshold.backend import require_shamir

            require_shamir()
        self.server.chain, previous = [], {}
        for p in parties:  # sequential: each link builds on the previous public key
            reply = self._ask(grid, "keygen", {p: ({}, previous)}).get(p)
            if reply is None:
                raise ThresholdError(f"party {p} failed the key generation; no joint key (run again)")
            link = blobs_of(reply.content)["link"]
            self.server.add_link(p, link)
            self.publics[p] = bytes(reply.content["threshold"]["seal-public"])
            previous = {"previous": link}
        cfg = {"key": self.server.key_fp, "n": len(parties), "threshold": self.threshold, **self._publics_config()}
        joint = self._ask(grid, "joint", {p: (cfg, {"joint": self.server.joint_envelope}) for p in parties})
        if set(joint) != set(parties):
            raise ThresholdError(f"parties {sorted(set(parties) - set(joint))} did not take the joint key")
        if 1 < self.threshold < len(parties):
            shares = {p: blobs_of(r.content) for p, r in joint.items()}
            asks = {h: (self._publics_config(), {f"from-{o}": s[f"share-{h}"] for o, s in shares.items() if o != h})
                    for h in parties}
            if set(self._ask(grid, "hold", asks)) != set(parties):
                raise ThresholdError("not every party kept the key shares sealed for it; no joint key (run again)")
        self._save()
        log.info("threshold CKKS: joint key %s generated by %d parties (threshold %d)", self.server.key_fp,
                 len(parties), self.threshold or len(parties))

    def _save(self) -> None:
        if self.key_file is None:
            return
        chain = [[p, env.hex()] for p, env in self.server.chain]
        self.key_file.write_text(json.dumps({"params": self.server.params.to_dict(), "key": self.server.key_fp,
                                             "holders": self.server.holders, "chain": chain,
                                             "publics": {str(p): v.hex() for p, v in self.publics.items()}}))

    def _load(self) -> dict | None:
        if self.key_file is None or not self.key_file.exists():
            return None
        stored = json.loads(self.key_file.read_text())
        if stored["params"] != self.server.params.to_dict():
            return None
        self.server.restore([(int(p), bytes.fromhex(h)) for p, h in stored["chain"]])
        self.publics = {int(p): bytes.fromhex(v) for p, v in stored["publics"].items()}
        return stored

    # -- a train round -----------------------------------------------------------------------
    def train_round(self, strategy, grid, rnd: int, arrays, config: ConfigRecord, rejections: list[dict]
                    ) -> RoundResult:
        self.bytes = [0, 0]  # the stages' bytes count into the round (the key generation into the first)
        if not self.server.key_fp or not self.nodes:
            self.ensure_keys(grid)
        messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
        replies = list(grid.send_and_receive(messages, timeout=self.timeout))
        sent, received = message_bytes(messages), message_bytes(replies)
        updates, failures = [], max(0, len(messages) - len(replies))
        rejections.extend({"round": rnd, "reason": "no reply within secure_aggregation.timeout_s"}
                          for _ in range(failures))
        for r in replies:
            if r.has_error():
                rejections.append({"round": rnd, "reason": f"client error: {r.error.reason}"})
                failures += 1
            elif UPDATE_RECORD not in r.content.array_records:
                rejections.append({"round": rnd, "reason": "no encrypted update in the reply"})
                failures += 1
            else:
                pid = int(reply_metrics(r).get("partition-id", -1))
                updates.append((pid, r.content[UPDATE_RECORD]["bytes"].numpy().tobytes()))
        t0 = time.perf_counter()
        aggregate, bad = self.server.add(sorted(updates), round=rnd)
        metrics = {"aggregate_seconds": time.perf_counter() - t0}
        rejections.extend({"round": rnd, **b} for b in bad)
        refused = len(bad)
        ok = {p for p, _ in updates} - {b["partition-id"] for b in bad}
        losses = [float(m["train_loss"]) for m in map(reply_metrics, replies)
                  if int(m.get("partition-id", -1)) in ok and "train_loss" in m]
        if losses:
            metrics["train_loss"] = float(np.mean(losses))  # unweighted: the counts travel encrypted
        new = None
        if aggregate is not None:
            new, refused_now = self._decrypt(strategy, grid, rnd, aggregate, messages[0], metrics, rejections)
            refused += refused_now
        metrics["clients_aggregated"] = float(len(ok)) if new is not None else 0.0
        return RoundResult(new, metrics, sent + self.bytes[0], received + self.bytes[1], len(messages),
                           failures=failures + refused, refused=refused)

    def _decrypt(self, strategy, grid, rnd, aggregate, template, metrics, rejections):
        """(the strategy's new model or None, refused updates): partial decryptions, recovery, fusion."""
        from fedicd.secure.secagg import strategy_reply

        holders = self.server.holders
        t0 = time.perf_counter()
        replies = self._ask(grid, "decrypt", {p: ({"round": rnd}, {"aggregate": aggregate})
                                              for p in holders if p in self.nodes})
        parts = {p: blobs_of(r.content)["partial"] for p, r in replies.items()}
        missing = sorted(set(holders) - set(parts))
        if missing and 1 < self.threshold < len(holders) and len(parts) >= self.threshold:
            parts.update(self._recover(grid, rnd, aggregate, sorted(parts), missing))
        metrics["partial_decryptions"] = float(len(replies))
        parties = len(self.server.last_parties)
        try:
            avg = self.server.fuse(aggregate, parts, round=rnd, threshold=self.threshold)
        except (QuorumError, ThresholdError, ValueError) as exc:
            rejections.append({"round": rnd, "reason": f"{type(exc).__name__}: {exc}"})
            return None, parties
        metrics["decrypt_seconds"] = time.perf_counter() - t0
        info = {"weight_total": self.server.last_total, "metrics": {k: v for k, v in metrics.items()}}
        wkey = getattr(strategy, "weighted_by_key", "num-examples")
        new, agg_metrics = strategy.aggregate_train(rnd, [strategy_reply(template, avg, info, wkey)])
        metrics.update(agg_metrics or {})
        return new, (parties if new is None else 0)

    def _recover(self, grid, rnd, aggregate, survivors, missing) -> dict[int, bytes]:
        """The missing holders' partial decryptions, made by the first survivor from t shares of their keys."""
        recipient, others = survivors[0], survivors[1:]
        cfg = {"round": rnd, "missing": missing, "recipient": recipient,
               "recipient-public": self.publics[recipient]}
        resealed = self._ask(grid, "reseal", {p: (cfg, {}) for p in others})
        blobs = {"aggregate": aggregate}
        for holder, r in resealed.items():
            for key, value in blobs_of(r.content).items():
                blobs[f"share-{key.split('-', 1)[1]}-{holder}"] = value
        cfg = {"round": rnd, "n": len(self.server.holders), "threshold": self.threshold, **self._publics_config()}
        reply = self._ask(grid, "recover", {recipient: (cfg, blobs)}).get(recipient)
        if reply is None:
            return {}
        return {int(k.split("-", 1)[1]): v for k, v in blobs_of(reply.content).items()}

    def row_extras(self) -> dict:
        return {"threshold_key": self.server.key_fp}


class ThresholdCodec(PlainCodec):
    """A client's train-round side: the global model arrives in plain text (it is public), the update leaves
    encrypted under the joint key with its count, and metrics that would reveal the count stay home."""

    def __init__(self, plan: RunPlan) -> None:
        super().__init__(plan)
        self.party = None
        self.round = 0

    def bind(self, setup: ClientSetup):
        """This client's key holder (its key share in ``<run_dir>/clients/<pid>/threshold``)."""
        from fedicd.secure.threshold.party import ThresholdParty

        if self.party is None or self.party.party_id != setup.pid:
            state = Path(setup.run_dir) / "clients" / str(setup.pid) / "threshold"
            self.party = ThresholdParty(_params(self.plan), setup.pid, state_dir=state,
                                        workers=int(self.plan.secure.workers))
        self.party.refresh()  # another worker process of this client may have changed its key share
        return self.party

    def global_arrays(self, msg: Message) -> ArrayRecord:
        self.round = int(msg.content["config"]["server-round"])
        return super().global_arrays(msg)

    def eval_weight(self, n_val: int) -> int:
        return 1  # a validation count would hint at the client's size

    def train_reply(self, arrays: dict[str, np.ndarray], n_examples: int, metrics: dict) -> RecordDict:
        from fedicd.secure.threshold.errors import KeyGenerationError

        if self.party is None:
            raise KeyGenerationError("this client holds no threshold-CKKS key share (the key generation never "
                                     "reached it)")
        t0 = time.perf_counter()
        data, clipped = self.party.encrypt(arrays, n_examples, round=self.round,
                                           clip=bool(self.plan.secure.clip_values))
        for key in _REVEALING:
            metrics.pop(key, None)
        metrics.update({"encrypt_seconds": time.perf_counter() - t0, "clipped_values": clipped})
        record = ArrayRecord(array_dict={"bytes": Array(np.frombuffer(data, dtype=np.uint8).copy())})
        return RecordDict({UPDATE_RECORD: record, "metrics": MetricRecord(metrics)})


def handle_threshold(msg: Message, setup: ClientSetup) -> Message:
    """Answer a threshold-CKKS stage message (key generation, decryption) with this client's key holder."""
    from fedicd.secure.threshold.messages import answer

    if not isinstance(setup.codec, ThresholdCodec):
        raise ThresholdError("a threshold-CKKS message reached a client whose run does not use "
                             "secure_aggregation.method = 'ckks-threshold'")
    return Message(content=answer(setup.codec.bind(setup), msg.content), reply_to=msg)


def bind_threshold_party(setup_of):
    """A ClientApp mod binding a threshold run's codec to its key holder before a train message (any worker
    process may receive it); ``setup_of(context)`` is the app's client setup. Other runs pass through."""
    def mod(msg: Message, context, call_next) -> Message:
        setup = setup_of(context)
        if isinstance(setup.codec, ThresholdCodec):
            setup.codec.bind(setup)
        return call_next(msg, context)
    return mod
