"""SCAFFOLD (Karimireddy et al. 2020, Algorithm 1): server control update and client helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedicd.errors import ShapeError
from fedicd.strategies import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY, build_strategy
from fedicd.strategies.scaffold import (
    Scaffold,
    control_from_arrayrecord,
    control_to_arrayrecord,
    scaffold_client_control,
    scaffold_correct_gradients_,
)

from .helpers import arrays_record, configure, numpy_of, reply

GLOBAL = {"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float32)}


def _scaffold() -> Scaffold:
    # 4 nodes available, 3 sampled per round: N = 4 in the control update.
    return Scaffold(fraction_train=0.75, min_train_nodes=3, min_available_nodes=4)


def _delta(w: list[float], b: list[float]):
    return {DELTA_CONTROL_KEY: arrays_record({"w": np.array(w, np.float32), "b": np.array(b, np.float32)})}


def test_configure_train_sends_zero_control_on_first_use() -> None:
    msgs = configure(_scaffold(), GLOBAL, n_nodes=4)
    assert len(msgs) == 3
    for msg in msgs:
        c = numpy_of(msg.content[SERVER_CONTROL_KEY])
        assert set(c) == {"w", "b"} and all(not v.any() for v in c.values())
        assert set(numpy_of(msg.content["arrays"])) == {"w", "b"}


def test_control_and_model_updates_match_hand_computation_over_two_rounds() -> None:
    strategy = _scaffold()
    # round 1: three clients reply, weights 1, 1, 2
    msgs = configure(strategy, GLOBAL, n_nodes=4)
    models = [{"w": np.array([1, 1], np.float32), "b": np.array([0], np.float32)},
              {"w": np.array([3, 1], np.float32), "b": np.array([4], np.float32)},
              {"w": np.array([0, 2], np.float32), "b": np.array([2], np.float32)}]
    deltas = [_delta([1, 2], [4]), _delta([3, 0], [-2]), _delta([-1, 1], [1])]
    replies = [reply(m, x, n, extra=d) for m, x, n, d in zip(msgs, models, [1, 1, 2], deltas)]
    arrays, _ = strategy.aggregate_train(1, replies)
    # model: (1*[1,1] + 1*[3,1] + 2*[0,2]) / 4 = [1, 1.5]; b = (0 + 4 + 4) / 4 = 2 (deltas not mixed in)
    np.testing.assert_allclose(numpy_of(arrays)["w"], [1.0, 1.5])
    np.testing.assert_allclose(numpy_of(arrays)["b"], [2.0])
    # c = 0 + (3/4) * mean(delta) = sum(delta) / 4 = [3/4, 3/4], [3/4]
    np.testing.assert_allclose(strategy.control["w"], [0.75, 0.75])
    np.testing.assert_allclose(strategy.control["b"], [0.75])

    # round 2: c travels to clients; one reply lacks its delta and is dropped
    msgs = configure(strategy, numpy_of(arrays), n_nodes=4, server_round=2)
    np.testing.assert_allclose(numpy_of(msgs[0].content[SERVER_CONTROL_KEY])["w"], [0.75, 0.75])
    replies = [reply(msgs[0], models[0], 1, extra=_delta([2, 2], [0])),
               reply(msgs[1], models[1], 3, extra=_delta([0, 4], [2])),
               reply(msgs[2], models[2], 5)]
    arrays, _ = strategy.aggregate_train(2, replies)
    np.testing.assert_allclose(numpy_of(arrays)["w"], [(1 * 1 + 3 * 3) / 4, (1 * 1 + 3 * 1) / 4])
    # c = c + (2/4) * mean([2,2],[0,4]) = [0.75, 0.75] + 0.5 * [1, 3]
    np.testing.assert_allclose(strategy.control["w"], [1.25, 2.25])
    np.testing.assert_allclose(strategy.control["b"], [0.75 + 0.5 * 1.0])


def test_no_usable_reply_keeps_model_and_control() -> None:
    strategy = _scaffold()
    msgs = configure(strategy, GLOBAL, n_nodes=4)
    assert strategy.aggregate_train(1, [reply(m, GLOBAL, 1) for m in msgs]) == (None, None)
    assert not strategy.control["w"].any()


def test_wrong_delta_shape_is_dropped() -> None:
    strategy = _scaffold()
    msgs = configure(strategy, GLOBAL, n_nodes=4)
    good = reply(msgs[0], {"w": np.ones(2, np.float32), "b": np.ones(1, np.float32)}, 1, extra=_delta([4, 4], [4]))
    bad = reply(msgs[1], GLOBAL, 1, extra={DELTA_CONTROL_KEY: arrays_record({"w": np.ones(3, np.float32)})})
    arrays, _ = strategy.aggregate_train(1, [good, bad])
    np.testing.assert_allclose(numpy_of(arrays)["w"], [1, 1])
    np.testing.assert_allclose(strategy.control["w"], [1, 1])  # (1/4) * [4, 4]


def test_validator_lets_the_delta_through_but_rejects_nan_in_it() -> None:
    strategy = build_strategy("scaffold", fraction_train=0.75, min_train_nodes=3, min_available_nodes=4)
    msgs = configure(strategy, GLOBAL, n_nodes=4)
    replies = [reply(msgs[0], GLOBAL, 1, extra=_delta([4, 0], [0])),
               reply(msgs[1], GLOBAL, 1, extra=_delta([float("nan"), 0], [0]))]
    strategy.aggregate_train(1, replies)
    assert [r["node_id"] for r in strategy.rejections] == [msgs[1].metadata.dst_node_id]
    assert "scaffold-delta-c" in strategy.rejections[0]["reason"]
    np.testing.assert_allclose(strategy.strategy.control["w"], [1, 0])


# ------------------------------------------------------------------ client side
def test_corrected_gradient_is_g_minus_ci_plus_c() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model(torch.randn(5, 3)).pow(2).mean().backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    c = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    c_i = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    scaffold_correct_gradients_(model, c, c_i)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g[n] - c_i[n] + c[n])


def test_correction_covers_unused_parameters_and_checks_names() -> None:
    model = torch.nn.Linear(2, 1)
    c = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    c_i = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    scaffold_correct_gradients_(model, c, c_i)  # no backward yet: grad = c - c_i
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    with pytest.raises(ShapeError, match="'bias'"):
        scaffold_correct_gradients_(model, {"weight": c["weight"]}, c_i)


def test_client_control_is_the_full_batch_mean_loss_gradient() -> None:
    # prepare: y_hat = X w + b, loss = mean((y_hat - y)^2) -> grad_w = 2/n X^T r, grad_b = 2/n sum(r)
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(10, 3), torch.randn(10, 1)
    with torch.no_grad():
        r = x @ model.weight.T + model.bias - y
    # execute: chunks of 3, 3, 3, 1 must give the same full-batch mean
    control = scaffold_client_control(model, x, y, torch.nn.functional.mse_loss, batch_size=3)
    # assert
    torch.testing.assert_close(control["weight"], (2 / 10) * (x.T @ r).T)
    torch.testing.assert_close(control["bias"], (2 / 10) * r.sum(0))
    assert all(p.grad is None for p in model.parameters())


def test_client_control_restores_mode_and_batchnorm_buffers() -> None:
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    model.eval()
    before = {k: b.clone() for k, b in model.state_dict().items()}
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    control = scaffold_client_control(model, x, y, torch.nn.functional.mse_loss)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(control) == {n for n, _ in model.named_parameters()}  # parameters only, no buffers
    eval_a = scaffold_client_control(model, x, y, torch.nn.functional.mse_loss, train_mode=False)
    eval_b = scaffold_client_control(model, x, y, torch.nn.functional.mse_loss, train_mode=False)
    assert all(torch.equal(eval_a[k], eval_b[k]) for k in eval_a)


def test_control_arrayrecord_round_trip_ignores_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    control = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    record = control_to_arrayrecord({**control, "1.running_mean": torch.zeros(4)})
    back = control_from_arrayrecord(record, model)
    assert set(back) == set(control)
    assert all(torch.equal(back[k], control[k]) for k in control)
    assert not control_from_arrayrecord(control_to_arrayrecord({}), model)["0.weight"].any()
