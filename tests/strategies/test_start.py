"""Flower's ``Strategy.start`` loop drives the wrapped strategies end to end (no simulation engine)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Message

from fedicd.strategies import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY, build_strategy

from .helpers import EchoGrid, arrays_record, error_reply, numpy_of, reply

TARGET = np.array([1.0, -2.0, 0.5], np.float32)


def _client(node_id: int, msg: Message) -> Message:
    """Each node pulls the model halfway to TARGET; node 3 raises, node 4 sends NaN."""
    if node_id == 3:
        return error_reply(msg, "RuntimeError: disk full")
    if msg.metadata.message_type.startswith("evaluate"):
        w = numpy_of(msg.content["arrays"])["w"]
        return reply(msg, None, 5, metrics={"loss": float(((w - TARGET) ** 2).sum())})
    w = numpy_of(msg.content["arrays"])["w"]
    new = w + 0.5 * (TARGET - w) if node_id != 4 else np.full(3, np.nan, np.float32)
    extra = {}
    if SERVER_CONTROL_KEY in msg.content:
        extra[DELTA_CONTROL_KEY] = arrays_record({"w": np.full(3, 0.1, np.float32)})
    return reply(msg, {"w": new.astype(np.float32)}, 10 * node_id, extra=extra)


@pytest.mark.parametrize("name", ["fedavg", "fedadam", "scaffold"])
def test_start_learns_and_survives_a_crashing_and_a_poisoning_client(name: str) -> None:
    strategy = build_strategy(name, min_available_nodes=4, min_train_nodes=4, min_evaluate_nodes=2, eta=0.3)
    result = strategy.start(EchoGrid(4, _client), arrays_record({"w": np.zeros(3, np.float32)}), num_rounds=4)
    final = numpy_of(result.arrays)["w"]
    assert np.isfinite(final).all()
    assert np.linalg.norm(final - TARGET) < 0.5 * np.linalg.norm(TARGET)
    reasons = [r["reason"] for r in strategy.rejections if r["stage"] == "train"]
    assert reasons.count("client error: RuntimeError: disk full") == 4
    assert sum("NaN/Inf" in r for r in reasons) == 4
