"""FedAvg arithmetic: example-weighted mean, weights summing to 1, order invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.strategies import build_strategy

from .helpers import configure, numpy_of, reply


def _fedavg(n_nodes: int, validate: bool = True):
    return build_strategy("fedavg", min_available_nodes=n_nodes, min_train_nodes=n_nodes, validate_updates=validate)


def test_aggregate_equals_hand_computed_weighted_mean() -> None:
    # prepare: three clients with 10, 30 and 60 examples
    strategy = _fedavg(3)
    msgs = configure(strategy, {"w": np.zeros((2, 2), np.float32), "b": np.zeros(2, np.float32)}, n_nodes=3)
    updates = [
        {"w": np.array([[1, 2], [3, 4]], np.float32), "b": np.array([1, -1], np.float32)},
        {"w": np.array([[0, 0], [0, 0]], np.float32), "b": np.array([2, 2], np.float32)},
        {"w": np.array([[2, 2], [2, 2]], np.float32), "b": np.array([0, 4], np.float32)},
    ]
    replies = [reply(m, u, n, metrics={"loss": loss}) for m, u, n, loss in zip(msgs, updates, [10, 30, 60], [1.0, 2.0, 3.0])]
    # execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # assert: 0.1*u1 + 0.3*u2 + 0.6*u3, by hand
    got = numpy_of(arrays)
    np.testing.assert_allclose(got["w"], [[1.3, 1.4], [1.5, 1.6]], rtol=1e-6)
    np.testing.assert_allclose(got["b"], [0.7, 2.9], rtol=1e-6)
    assert metrics["loss"] == pytest.approx(0.1 * 1.0 + 0.3 * 2.0 + 0.6 * 3.0)


weights_lists = st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=8)


@settings(deadline=None, max_examples=40)
@given(weights=weights_lists, data=st.data())
def test_weights_sum_to_one_and_order_does_not_matter(weights: list[int], data: st.DataObject) -> None:
    # Client i sends the i-th unit vector, so the aggregate *is* the weight vector.
    k = len(weights)
    strategy = _fedavg(k, validate=False)
    msgs = configure(strategy, {"e": np.zeros(k)}, n_nodes=k)
    replies = [reply(m, {"e": np.eye(k)[i]}, w) for i, (m, w) in enumerate(zip(msgs, weights))]
    aggregate = numpy_of(strategy.aggregate_train(1, replies)[0])["e"]
    np.testing.assert_allclose(aggregate, np.array(weights) / sum(weights), rtol=1e-12)
    np.testing.assert_allclose(aggregate.sum(), 1.0, rtol=1e-12)
    permuted = data.draw(st.permutations(replies))
    np.testing.assert_allclose(numpy_of(strategy.aggregate_train(1, permuted)[0])["e"], aggregate, rtol=1e-12)


@settings(deadline=None, max_examples=25)
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=2, max_size=6),
    weights=st.lists(st.integers(1, 500), min_size=6, max_size=6),
    data=st.data(),
)
def test_validated_fedavg_is_bitwise_order_invariant(values: list[float], weights: list[int], data: st.DataObject) -> None:
    # UpdateValidator sorts replies by node id, so float summation order is fixed.
    k = len(values)
    strategy = _fedavg(k)
    msgs = configure(strategy, {"w": np.zeros(3, np.float32)}, n_nodes=k)
    replies = [reply(m, {"w": np.full(3, v, np.float32)}, w) for m, v, w in zip(msgs, values, weights)]
    first = numpy_of(strategy.aggregate_train(1, replies)[0])["w"]
    second = numpy_of(strategy.aggregate_train(1, data.draw(st.permutations(replies)))[0])["w"]
    assert np.array_equal(first, second)
