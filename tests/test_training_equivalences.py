"""Behaviour that must hold across training modes: FedAvg with one client is central training; DP-SGD
without noise is clipped SGD."""

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedicd.local_training import LocalTrainConfig, build_model, local_train, round_lr, round_seed
from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import DPPlan
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import dp_local_train
from fedicd.train import TrainConfig, train_central, train_epoch

from tests.training_rows import Rows, seeded_rows


def _fedavg_one_client(global_model, cfg, local, x, y):
    """Server sends the global arrays, the client trains, Flower's FedAvg aggregates its single reply."""
    client = build_model(cfg, x.shape[1], y.shape[1], ArrayRecord(global_model.state_dict()))
    local_train(client, Rows(x, y), cfg, local)
    reply = RecordDict({"arrays": ArrayRecord(client.state_dict()),
                        "metrics": MetricRecord({"num-examples": len(x)})})
    return aggregate_arrayrecords([reply], "num-examples").to_torch_state_dict()


def _assert_same_weights(aggregated, model):
    expected = model.state_dict()
    assert aggregated.keys() == expected.keys()
    for k, v in expected.items():
        assert torch.equal(aggregated[k], v), k


def test_fedavg_one_client_one_sgd_epoch_equals_one_central_sgd_epoch():
    """Exact equality. Lined up: the client's round seed seeds dropout and its generator (seed + 1) the batch
    order, so the central epoch below uses the same two seeds; with 1 round of 1 epoch the cosine rate is the
    peak rate exactly (0.5·lr·(1 + cos 0)); weight decay 0 in both. Flower's FedAvg weights the single reply by
    n / n = 1.0, and x · 1.0 is exact, so the aggregate is the client's model bit for bit."""
    x, y = seeded_rows()
    cfg = TrainConfig(head="mlp", batch_size=16, weight_decay=0.0, seed=0)  # dropout 0.1: its draws line up too
    local = LocalTrainConfig(server_round=1, total_rounds=1, local_epochs=1, partition_id=0, seed=0,
                             optimizer="sgd", lr=0.5)
    torch.manual_seed(0)
    global_model = cfg.build(12, 5)
    aggregated = _fedavg_one_client(global_model, cfg, local, x, y)

    central = cfg.build(12, 5)
    central.load_state_dict(global_model.state_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(round_seed(local))
        gen = torch.Generator().manual_seed(round_seed(local) + 1)
        train_epoch(central, torch.optim.SGD(central.parameters(), lr=0.5), cfg.loss(), torch.as_tensor(x),
                    torch.as_tensor(y), batch_size=16, generator=gen)
    _assert_same_weights(aggregated, central)
    assert any(not torch.equal(a, b) for a, b in zip(central.parameters(), global_model.parameters()))


def test_fedavg_one_client_one_adamw_round_equals_train_central_for_one_epoch():
    """Exact equality with :func:`train_central` itself: experiment seed 0, round 1, client 0 give the round
    seed 1009, so the central run uses seed 1009 (initialisation) and 1010 (batch order); dropout 0 because
    central training draws its dropout after the initialisation, the client from a fresh seed."""
    x, y = seeded_rows()
    cfg = TrainConfig(head="mlp", dropout=0.0, epochs=1, batch_size=16, seed=1009)
    local = LocalTrainConfig(server_round=1, total_rounds=1, local_epochs=1, partition_id=0, seed=0)
    assert round_seed(local) == cfg.resolved_seed and round_lr(cfg.lr, 0, 1) == cfg.lr
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1009)
        global_model = cfg.build(12, 5)
    aggregated = _fedavg_one_client(global_model, cfg, local, x, y)
    _assert_same_weights(aggregated, train_central(x, y, cfg).model)


def _clipped_sgd_reference(model, x, y, batches, *, clip, lr_per_epoch, expected_batch):
    """Per sample: gradient of its loss, scaled by min(1, C / (‖g‖ + 1e-6)); sum, divide by the expected batch
    size (Opacus' mean under Poisson sampling), ``w -= lr · g``. Returns the share of clipped samples."""
    loss_fn, params = HybridLoss(reduction="per_sample"), list(model.parameters())
    clipped = total = 0
    for lr, epoch in zip(lr_per_epoch, batches):
        for idx in epoch:
            summed = [torch.zeros_like(p) for p in params]
            for i in idx.tolist():
                grads = torch.autograd.grad(loss_fn(model(x[i:i + 1]), y[i:i + 1]).sum(), params)
                norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
                factor = min(1.0, clip / (float(norm) + 1e-6))
                clipped, total = clipped + (factor < 1.0), total + 1
                summed = [s + factor * g for s, g in zip(summed, grads)]
            with torch.no_grad():
                for p, s in zip(params, summed):
                    p -= lr * s / expected_batch
    return clipped / max(total, 1)


@pytest.mark.parametrize("clipping", ["fused", "ghost", "hooks"])
def test_dp_sgd_without_noise_is_clipped_sgd_on_the_same_poisson_batches(clipping):
    """σ = 0 (the plan's noise multiplier; the PrivacyConfig's σ is not read by the step). Not bit-exact: the
    clipped sum is formed in another order than the reference's loop, so float32 tolerances."""
    x, y = seeded_rows(n=60)
    cfg = TrainConfig(head="deep_mlp", norm="layer", hidden=(16,), dropout=0.0, batch_size=12, weight_decay=0.0)
    plan = DPPlan(n=60, sample_rate=0.2, steps_per_epoch=5, total_steps=10, noise_multiplier=0.0, delta=1e-5,
                  target_epsilon=0.0)
    local = LocalTrainConfig(server_round=1, total_rounds=1, local_epochs=2, partition_id=0, seed=2,
                             optimizer="sgd", lr=0.5)
    torch.manual_seed(0)
    model = cfg.build(12, 5)
    ref = cfg.build(12, 5)
    ref.load_state_dict(model.state_dict())
    start = [p.detach().clone() for p in model.parameters()]
    dp_local_train(model, x, y, cfg, local, PrivacyConfig(dp="sample", noise=1.0, clip=0.05, clipping=clipping),
                   plan, [])

    sampler = torch.Generator().manual_seed(round_seed(local) + 11)  # the seed dp_local_train samples with
    batches = [[(torch.rand(60, generator=sampler) < 0.2).nonzero().squeeze(1) for _ in range(5)] for _ in range(2)]
    share = _clipped_sgd_reference(ref, torch.as_tensor(x), torch.as_tensor(y), batches, clip=0.05,
                                   lr_per_epoch=[round_lr(0.5, e, 2) for e in range(2)], expected_batch=12)
    assert share > 0.5  # the clip binds: this is not plain SGD in disguise
    for (name, got), want in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start))
