"""Client-side pieces without Flower: the cosine schedule, local training, faults, checkpoints."""

import numpy as np
import pytest
import torch

from fedicd.federated.checkpoint import load_checkpoint, save_checkpoint
from fedicd.local_training import LocalTrainConfig, local_train, round_lr
from fedicd.federated.config import FedConfig
from fedicd.federated.data import ClientData
from fedicd.federated.faults import InjectedClientFault, inject_fault, should_fail
from fedicd.train_config import TrainConfig


def test_round_lr_matches_torch_cosine_schedule():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for epoch in range(7):
        assert round_lr(1e-3, epoch, 7) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def _data(separable_task):
    x, y = separable_task
    return ClientData(x[:200], y[:200], x[200:260], y[200:260])


def test_local_train_is_deterministic_per_round_and_client(separable_task):
    cfg = TrainConfig(seed=0)
    data = _data(separable_task)

    def run(round_, pid):
        torch.manual_seed(0)
        model = cfg.build(64, 8)
        local_train(model, data, cfg, LocalTrainConfig(server_round=round_, total_rounds=5, local_epochs=1,
                                                       partition_id=pid, seed=0))
        return model.state_dict()

    a, b, c = run(1, 0), run(1, 0), run(1, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_proximal_term_keeps_the_model_closer_to_the_global_one(separable_task):
    cfg = TrainConfig(seed=0)
    data = _data(separable_task)
    distances = []
    for mu in (0.0, 10.0):
        torch.manual_seed(0)
        model = cfg.build(64, 8)
        start = [p.detach().clone() for p in model.parameters()]
        local_train(model, data, cfg, LocalTrainConfig(server_round=1, total_rounds=1, local_epochs=3,
                                                       partition_id=0, seed=0, proximal_mu=mu))
        distances.append(sum(float((p - s).pow(2).sum()) for p, s in zip(model.parameters(), start)))
    assert distances[1] < distances[0]


def test_local_sgd_step_is_plain_gradient_descent_at_the_round_lr(separable_task):
    """One batch, SGD: w_new = w - lr_round * (grad + wd * w), with lr_round the cosine rate at round 2 of 4."""
    cfg = TrainConfig(seed=0, batch_size=500, dropout=0.0, weight_decay=1e-4)
    data = _data(separable_task)
    torch.manual_seed(0)
    model = cfg.build(64, 8)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    expected_model = cfg.build(64, 8)
    expected_model.load_state_dict(model.state_dict())
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    cfg.loss()(expected_model(x), y).backward()
    lr = round_lr(0.5, 1, 4)
    local_train(model, data, cfg, LocalTrainConfig(server_round=2, total_rounds=4, local_epochs=1, partition_id=0,
                                                   seed=0, optimizer="sgd", lr=0.5))
    for name, p in expected_model.named_parameters():
        want = start[name] - lr * (p.grad + 1e-4 * start[name])
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), want, rtol=1e-5, atol=1e-7)


def test_local_optimizer_and_lr_are_checked():
    with pytest.raises(ValueError, match="local_optimizer must be one of \\['adamw', 'sgd'\\], got 'adam'"):
        FedConfig(local_optimizer="adam")
    with pytest.raises(ValueError, match="local_lr must be >= 0"):
        FedConfig(local_lr=-1.0)
    with pytest.raises(ValueError, match="local_lr must be >= 0"):
        FedConfig(local_lr=float("nan"))


def test_faults():
    fed = FedConfig(fault_clients=(2,), fault_rounds=(3,), fault_kind="nan")
    assert should_fail(fed, 2, 3) and not should_fail(fed, 2, 2) and not should_fail(fed, 1, 3)
    arrays = {"w": np.ones((3, 2), np.float32), "b": np.ones(2, np.float32)}
    assert np.isnan(inject_fault("nan", arrays, 2)["w"]).all()
    assert inject_fault("shape", arrays, 2)["w"].shape == (2, 2)
    with pytest.raises(InjectedClientFault, match="client 2: injected crash"):
        inject_fault("raise", arrays, 2)


def test_node_minimums_follow_the_paper_and_reject_impossible_values():
    assert FedConfig().node_minimums(20) == (10, 10, 5)
    assert FedConfig().node_minimums(5) == (2, 2, 1)
    with pytest.raises(ValueError, match="min_train=10 exceeds the 5 clients"):
        FedConfig(min_train=10).node_minimums(5)


def test_checkpoint_round_trip(tmp_path):
    arrays = {"net.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    save_checkpoint(tmp_path, server_round=4, arrays=arrays, strategy_state={"m/x": np.ones(2)},
                    history=[{"round": 4}], rejections=[{"round": 2, "reason": "nan"}])
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["round"] == 4 and ckpt["history"] == [{"round": 4}]
    np.testing.assert_array_equal(ckpt["arrays"]["net.0.weight"], arrays["net.0.weight"])
    np.testing.assert_array_equal(ckpt["strategy_state"]["m/x"], np.ones(2))
    assert load_checkpoint(tmp_path / "none") is None


def test_config_strategy_names_come_from_the_registry():
    from fedicd.strategies import STRATEGIES

    assert all(FedConfig(strategy=name).strategy == name for name in STRATEGIES)
    with pytest.raises(ValueError, match="federated.strategy must be one of"):
        FedConfig(strategy="fedsgd")
