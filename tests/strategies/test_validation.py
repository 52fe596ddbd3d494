"""UpdateValidator: poisoned or malformed updates are rejected, logged and never averaged."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedicd.strategies import build_strategy

from .helpers import FakeGrid, arrays_record, configure, error_reply, numpy_of, reply

GLOBAL = {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}


def _update(value: float) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 2), value, np.float32), "b": np.full(2, value, np.float32)}


def _strategy(n: int, name: str = "fedavg"):
    return build_strategy(name, min_available_nodes=n, min_train_nodes=n, min_evaluate_nodes=n, fraction_evaluate=1.0)


def test_bad_replies_are_rejected_with_reasons_and_never_averaged(caplog: pytest.LogCaptureFixture) -> None:
    # prepare: 2 good replies and 5 bad ones
    strategy = _strategy(7)
    msgs = configure(strategy, GLOBAL, n_nodes=7)
    nan, inf = _update(1.0), _update(1.0)
    nan["w"][0, 0], inf["b"][1] = np.nan, np.inf
    bad = [
        reply(msgs[2], nan, 10),
        reply(msgs[3], inf, 10),
        reply(msgs[4], {"w": np.ones((2, 3), np.float32), "b": np.ones(2, np.float32)}, 10),
        reply(msgs[5], {"w": np.ones((2, 2), np.float32)}, 10),
        reply(msgs[6], _update(9.0), 0),
    ]
    good = [reply(msgs[0], _update(1.0), 10), reply(msgs[1], _update(4.0), 30)]
    # execute
    with caplog.at_level(logging.WARNING, logger="fedicd.strategies.validation"):
        arrays, _ = strategy.aggregate_train(3, bad[:3] + good + bad[3:])
    # assert: aggregate of the good replies only, (10*1 + 30*4) / 40 = 3.25
    np.testing.assert_allclose(numpy_of(arrays)["w"], np.full((2, 2), 3.25))
    reasons = {r["node_id"]: r["reason"] for r in strategy.rejections}
    node = [m.metadata.dst_node_id for m in msgs]
    assert "NaN/Inf" in reasons[node[2]] and "arrays['w']" in reasons[node[2]]
    assert "NaN/Inf" in reasons[node[3]] and "arrays['b']" in reasons[node[3]]
    assert "shape (2, 3), expected (2, 2)" in reasons[node[4]]
    assert "missing ['b']" in reasons[node[5]]
    assert "'num-examples'" in reasons[node[6]] and "got 0" in reasons[node[6]]
    assert all(r["round"] == 3 and r["stage"] == "train" for r in strategy.rejections)
    assert len(strategy.rejections) == 5
    assert all(f"node {node[i]}" in caplog.text for i in range(2, 7))


@pytest.mark.parametrize("weight", [None, -3, float("nan"), float("inf")])
def test_missing_or_bad_num_examples_is_rejected(weight: float | None) -> None:
    strategy = _strategy(2)
    msgs = configure(strategy, GLOBAL, n_nodes=2)
    arrays, _ = strategy.aggregate_train(1, [reply(msgs[0], _update(2.0), 5), reply(msgs[1], _update(7.0), weight)])
    np.testing.assert_allclose(numpy_of(arrays)["b"], [2.0, 2.0])
    assert "num-examples" in strategy.rejections[0]["reason"]


def test_all_bad_returns_none_none_so_the_previous_model_is_kept() -> None:
    strategy = _strategy(2, "fedadam")
    msgs = configure(strategy, GLOBAL, n_nodes=2)
    nan = _update(0.0)
    nan["b"][0] = np.nan
    replies = [reply(msgs[0], nan, 5), error_reply(msgs[1], "ValueError: empty partition")]
    assert strategy.aggregate_train(1, replies) == (None, None)
    assert strategy.strategy.m_t is None  # FedAdam's moments untouched
    assert {r["reason"] for r in strategy.rejections} >= {"client error: ValueError: empty partition"}


def test_client_error_is_recorded_and_round_proceeds() -> None:
    strategy = _strategy(3)
    msgs = configure(strategy, GLOBAL, n_nodes=3)
    replies = [reply(msgs[0], _update(1.0), 1), error_reply(msgs[1], "boom"), reply(msgs[2], _update(3.0), 1)]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(numpy_of(arrays)["w"], np.full((2, 2), 2.0))
    assert strategy.rejections == [{"round": 1, "node_id": msgs[1].metadata.dst_node_id,
                                    "reason": "client error: boom", "stage": "train"}]


def test_unexpected_array_record_and_odd_metric_names_are_rejected() -> None:
    strategy = _strategy(4)
    msgs = configure(strategy, GLOBAL, n_nodes=4)
    replies = [
        reply(msgs[0], _update(1.0), 1, metrics={"loss": 0.5}),
        reply(msgs[1], _update(1.0), 1, metrics={"loss": 0.7}),
        reply(msgs[2], _update(5.0), 1, metrics={"acc": 0.9}),  # Flower would refuse the round
        reply(msgs[3], _update(5.0), 1, metrics={"loss": 0.1}, extra={"stray": arrays_record({"x": np.ones(1)})}),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(numpy_of(arrays)["w"], np.ones((2, 2)))
    assert metrics["loss"] == pytest.approx(0.6)
    reasons = sorted(r["reason"] for r in strategy.rejections)
    assert "differ from" in reasons[0] and "unexpected ArrayRecord(s) ['stray']" in reasons[1]


def test_evaluate_replies_with_bad_weights_are_dropped() -> None:
    strategy = _strategy(2)
    msgs = list(strategy.configure_evaluate(1, arrays_record(GLOBAL), ConfigRecord(), FakeGrid(2)))
    replies = [reply(m, None, n, metrics={"loss": loss}) for m, n, loss in zip(msgs, [4, -1], [1.0, 9.0])]
    assert strategy.aggregate_evaluate(1, replies)["loss"] == pytest.approx(1.0)
    assert strategy.rejections[0]["stage"] == "evaluate"
    assert strategy.aggregate_evaluate(1, [error_reply(msgs[0], "x")]) is None


def test_evaluate_reply_of_a_client_without_validation_notes_is_set_aside_not_rejected() -> None:
    """partition.client_validation can leave a client without validation notes: it reports 0 examples."""
    strategy = _strategy(2)
    msgs = list(strategy.configure_evaluate(1, arrays_record(GLOBAL), ConfigRecord(), FakeGrid(2)))
    replies = [reply(m, None, n, metrics={"loss": loss}) for m, n, loss in zip(msgs, [4, 0], [1.0, 9.0])]
    assert strategy.aggregate_evaluate(1, replies)["loss"] == pytest.approx(1.0)
    assert strategy.rejections == []
    assert strategy.aggregate_evaluate(1, replies[1:]) is None and strategy.rejections == []
