"""The interfaces of the round loop: how a train round aggregates, and who watches the rounds.

* :class:`RoundAggregator`: sends a train round's messages and turns the replies into the new global
  model. :class:`PlainAggregator` lets the strategy average the plain updates; secure aggregation
  (:mod:`fedicd.secure`) subclasses it (CKKS ciphertexts) or replaces the exchange (SecAgg+).
* :class:`RoundObserver`: hooks the loop calls on resume, when a new global model exists, and when a
  round's history row is written (client-level DP's release log and accountant, :mod:`fedicd.privacy`).
* :class:`ServerSetup`: the strategy (wrappers included), the aggregator and the observers of a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message

from fedicd.federated.records import message_bytes, to_record

__all__ = ["RoundResult", "RoundAggregator", "PlainAggregator", "RoundObserver", "ServerSetup", "reply_metrics",
           "sorted_replies", "validator_log", "client_epsilons", "epsilons_so_far", "BOTH_EPSILONS"]

log = logging.getLogger(__name__)

BOTH_EPSILONS = ("epsilon_rdp", "epsilon_pld")  # every DP history row reports both accountants


@dataclass
class RoundResult:
    """One train round as the history records it."""

    arrays: object | None  # the new global model (ArrayRecord or a dict of arrays); None: unchanged
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


def sorted_replies(replies: list[Message]) -> list[Message]:
    """Replies in partition order, errors last: float sums depend on the order."""
    def key(msg: Message) -> tuple[int, int]:
        if msg.has_error():
            return (1, msg.metadata.src_node_id)
        metrics = next(iter(msg.content.metric_records.values()), {})
        return (0, int(metrics.get("partition-id", 0)))
    return sorted(replies, key=key)


def validator_log(strategy) -> list[dict]:
    """The ``rejections`` list of the UpdateValidator in ``strategy``'s wrapper chain (a fresh list if none)."""
    while strategy is not None:
        if isinstance(getattr(strategy, "rejections", None), list):
            return strategy.rejections
        strategy = getattr(strategy, "strategy", None)
    return []


def client_epsilons(metrics: list[dict]) -> dict[str, float]:
    """Every replying client's sample-level ε so far (``epsilon_client_<partition-id>``, the accountant the run
    selected) and the largest of the replies under each accountant (``epsilon_rdp``, ``epsilon_pld``)."""
    out = {f"epsilon_client_{int(m['partition-id'])}": float(m["epsilon"])
           for m in metrics if "epsilon" in m and "partition-id" in m}
    for key in BOTH_EPSILONS:
        values = [float(m[key]) for m in metrics if key in m]
        if values:
            out[key] = max(values)
    return out


def epsilons_so_far(history: list[dict], row: dict) -> dict[str, float]:
    """``epsilon_rdp`` and ``epsilon_pld`` of a round's row: the largest over the clients so far.

    A client's ε never falls, so the largest over every client that has trained is the larger of this round's
    replies and the previous rows (clients not sampled this round keep theirs). Only keys some row carries are
    returned (none when the replies carry no ε, e.g. under CKKS, where ε would reveal a client's size).
    """
    out = {}
    for key in BOTH_EPSILONS:
        values = [float(r[key]) for r in (*history, row) if r.get(key) is not None]
        if values:
            out[key] = max(values)
    return out


class RoundAggregator:
    """How a train round reaches the new global model; the plain exchange by default."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def model_record(self, arrays: dict[str, np.ndarray]) -> ArrayRecord:
        """What a message carries as the global model in the strategy's ``"arrays"`` record."""
        return to_record(arrays)

    def prepare(self, messages: list[Message], arrays: dict[str, np.ndarray]) -> None:
        """Add what the clients need besides the strategy's content (train and evaluate messages)."""

    def check_resume(self, arrays: dict[str, np.ndarray]) -> None:
        """Refuse a checkpointed global model this run cannot continue from."""

    def readable(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The global model in plain arrays, or None when nobody here can read it."""
        return arrays

    def row_extras(self) -> dict:
        """What the round's history row records about the aggregator's own work."""
        return {}

    def train_round(self, strategy, grid, rnd: int, arrays: dict[str, np.ndarray], config: ConfigRecord,
                    rejections: list[dict]) -> RoundResult:
        """Send the round's train messages, aggregate the replies; lost replies go to ``rejections``."""
        messages = list(strategy.configure_train(rnd, self.model_record(arrays), config, grid))
        self.prepare(messages, arrays)
        replies = sorted_replies(list(grid.send_and_receive(messages, timeout=self.timeout)))
        new_arrays, metrics, refused = self.aggregate(strategy, rnd, replies, rejections)
        missing = max(0, len(messages) - len(replies))
        if missing:
            log.warning("round %d: %d of %d train messages got no reply; counted as client failures", rnd, missing,
                        len(messages))
            rejections.extend({"round": rnd, "reason": "no reply within federated.timeout_s"}
                              for _ in range(missing))
        failures = sum(m.has_error() for m in replies) + missing + refused
        return RoundResult(new_arrays, metrics or {}, message_bytes(messages), message_bytes(replies),
                           len(messages), failures=failures, refused=refused,
                           epsilons=client_epsilons(list(map(reply_metrics, replies))))

    def aggregate(self, strategy, rnd: int, replies: list[Message], rejections: list[dict]):
        """(new global model or None, metrics, refused updates) of the sorted replies."""
        raise NotImplementedError


class PlainAggregator(RoundAggregator):
    """The strategy averages the plain updates (the UpdateValidator's refusals are counted from its log; the
    round loop copies them into the run's rejections after evaluation)."""

    def aggregate(self, strategy, rnd: int, replies: list[Message], rejections: list[dict]):
        validator = validator_log(strategy)
        before = len(validator)
        new_arrays, metrics = strategy.aggregate_train(rnd, replies)
        refused = sum(not str(r["reason"]).startswith("client error") for r in validator[before:])
        return new_arrays, metrics, refused


class RoundObserver:
    """Hooks of the round loop; the defaults do nothing."""

    def on_resume(self, ckpt_round: int) -> None:
        """The run continues after the checkpoint of ``ckpt_round`` (the strategy's state is restored)."""

    def on_update(self, rnd: int) -> None:
        """Round ``rnd`` produced a new global model (called before any checkpoint)."""

    def history_row(self) -> dict:
        """Entries for the round's history row."""
        return {}


@dataclass
class ServerSetup:
    """What the round loop runs with: the strategy, its aggregator, the observers."""

    strategy: object
    aggregator: RoundAggregator
    observers: tuple[RoundObserver, ...] = ()
