import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.errors import ShapeError
from fedicd.metrics import compute_metrics
from fedicd.train import TrainConfig, _batches, plain_step, predict_proba, run_epoch, shuffled_batches, train_central


def test_learns_a_separable_task(separable_task):
    x, y = separable_task
    result = train_central(x[:500], y[:500], TrainConfig(epochs=15, seed=0))
    m = compute_metrics(y[500:], predict_proba(result.model, x[500:]), threshold=0.5)
    assert m["micro_f1"] > 0.7 and m["micro_auc"] > 0.9
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("head", ["mlp", "deep_mlp", "deep_res_mlp"])
def test_same_seed_same_weights_and_global_rng_untouched(separable_task, head):
    x, y = separable_task
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    a = train_central(x, y, TrainConfig(head=head, epochs=2, seed=7)).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = train_central(x, y, TrainConfig(head=head, epochs=2, seed=7)).model.state_dict()
    c = train_central(x, y, TrainConfig(head=head, epochs=2, seed=8)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 300), st.integers(2, 64))
def test_batches_cover_every_row_once_and_never_leave_a_single_row(n, batch_size):
    order = torch.randperm(n)
    parts = _batches(order, batch_size)
    assert torch.equal(torch.cat(parts), order)
    if n > 1:
        assert all(len(p) > 1 for p in parts)


def test_batchnorm_head_trains_when_last_batch_has_one_row(separable_task):
    x, y = separable_task
    result = train_central(x[:65], y[:65], TrainConfig(head="deep_mlp", epochs=1, batch_size=64))
    assert np.isfinite(result.history[0]["train_loss"])


def test_bad_inputs_raise(separable_task):
    x, y = separable_task
    with pytest.raises(ShapeError, match="same number of rows"):
        train_central(x[:10], y[:9])
    bad = x[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ShapeError, match="NaN/Inf"):
        train_central(bad, y[:10])
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)


def test_shuffled_batches_cover_every_row_once_in_the_generators_order():
    x, y = torch.arange(10.0)[:, None], torch.arange(10.0)[:, None] * 2
    batches = list(shuffled_batches(x, y, 4, torch.Generator().manual_seed(3)))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches])[:, 0], order.float())
    assert all(torch.equal(by, 2 * bx) for bx, by in batches)


def test_run_epoch_averages_the_reported_losses_and_skips_batches_without_one():
    model = torch.nn.Linear(2, 1)
    model.eval()
    seen = []

    def step(x, y):
        seen.append(len(x))
        return None if len(x) == 0 else float(len(x))

    batches = [(torch.zeros(n, 2), torch.zeros(n, 1)) for n in (3, 0, 5)]
    assert run_epoch(model, step, batches) == 4.0 and seen == [3, 0, 5] and model.training
    assert run_epoch(model, step, []) == 0.0


def test_plain_step_hooks_run_in_order_around_backward():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    events = []

    def after_loss(loss):
        events.append(("after_loss", model.weight.grad))
        return loss + 1.0

    def before_update():
        events.append(("before_update", model.weight.grad.clone()))
        model.weight.grad.zero_()

    w = model.weight.detach().clone()
    loss = plain_step(model, opt, torch.nn.functional.mse_loss, after_loss=after_loss, before_update=before_update)(
        torch.randn(4, 3), torch.randn(4, 1))
    assert [e[0] for e in events] == ["after_loss", "before_update"]
    assert events[0][1] is None and events[1][1].abs().sum() > 0
    assert loss > 1.0 and torch.equal(model.weight.detach(), w)  # the update used the zeroed gradient
