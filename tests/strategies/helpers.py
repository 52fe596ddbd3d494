"""Hand-built Flower messages and a fake Grid for strategy tests (no simulation engine)."""

from __future__ import annotations

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import Strategy


class FakeGrid:
    """The part of ``flwr.serverapp.Grid`` that ``configure_train`` uses."""

    def __init__(self, n_nodes: int) -> None:
        self.node_ids = list(range(1, n_nodes + 1))

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)


def arrays_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()})


def numpy_of(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def configure(strategy: Strategy, arrays: dict[str, np.ndarray], n_nodes: int, server_round: int = 1) -> list[Message]:
    """Run ``configure_train`` and return the train messages, sorted by destination node."""
    msgs = strategy.configure_train(server_round, arrays_record(arrays), ConfigRecord(), FakeGrid(n_nodes))
    return sorted(msgs, key=lambda m: m.metadata.dst_node_id)


def reply(
    to: Message,
    arrays: dict[str, np.ndarray] | None,
    num_examples: float | None,
    *,
    extra: dict[str, ArrayRecord] | None = None,
    metrics: dict[str, float] | None = None,
) -> Message:
    """A client's train reply: model under "arrays", weight under "num-examples"."""
    content = RecordDict()
    if arrays is not None:
        content["arrays"] = arrays_record(arrays)
    metric_values = dict(metrics or {})
    if num_examples is not None:
        metric_values["num-examples"] = num_examples
    content["metrics"] = MetricRecord(metric_values)
    for key, record in (extra or {}).items():
        content[key] = record
    return Message(content, reply_to=to)


def error_reply(to: Message, reason: str) -> Message:
    return Message(Error(code=1, reason=reason), reply_to=to)


class EchoGrid(FakeGrid):
    """A FakeGrid whose nodes answer every message with ``client(node_id, message) -> Message``."""

    def __init__(self, n_nodes: int, client) -> None:
        super().__init__(n_nodes)
        self.client = client

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        return [self.client(m.metadata.dst_node_id, m) for m in messages]
