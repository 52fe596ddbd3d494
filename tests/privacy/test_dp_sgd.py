"""DP-SGD steps: the three clipping paths agree, the noise has std σ·C, accounting composes over rounds."""

import math

import numpy as np
import pytest
import torch

from fedicd.heads import build_head
from fedicd.local_training import LocalTrainConfig
from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import (DPPlan, PrivacyBudgetExhausted, epsilon_of, load_history, plan_dp,
                                       save_history)
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import check_budget, dp_local_train
from fedicd.privacy.dp_sgd import DPStepper, make_private_head
from fedicd.train_config import TrainConfig


def _plan(n=40, sigma=0.0, q=0.5):
    return DPPlan(n=n, sample_rate=q, steps_per_epoch=2, total_steps=2, noise_multiplier=sigma, delta=1e-5,
                  target_epsilon=0.0)


@pytest.mark.parametrize("clipping", ["ghost", "hooks"])
def test_fused_clipping_step_equals_opacus_step_without_noise(clipping):
    torch.manual_seed(0)
    base = build_head("deep_mlp", 10, 6, hidden=(32, 32), norm="group", dropout=0.0)
    x, y = torch.randn(20, 10), (torch.rand(20, 6) < 0.3).float()
    updated = {}
    for mode in ("fused", clipping):
        model = build_head("deep_mlp", 10, 6, hidden=(32, 32), norm="group", dropout=0.0)
        model.load_state_dict(base.state_dict())
        stepper = DPStepper(model, torch.optim.SGD(model.parameters(), lr=1.0), HybridLoss(), _plan(), clip=0.01,
                            clipping=mode)
        loss = stepper.step(x, y)
        stepper.close()
        assert loss == pytest.approx(stepper.stats.loss_sum) and stepper.stats.loss_batches == 1
        updated[mode] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in updated["fused"]:
        torch.testing.assert_close(updated["fused"][k], updated[clipping][k], rtol=1e-4, atol=1e-7)
    assert any(not torch.equal(updated["fused"][k], base.state_dict()[k]) for k in updated["fused"])


def test_noise_has_std_sigma_times_clip_over_the_expected_batch():
    """An empty Poisson batch: the update is pure noise, N(0, (σC)²) divided by the expected batch size."""
    sigma, clip, n, q = 1.7, 0.3, 200, 0.25
    model = build_head("mlp", 256, 300, hidden=(512,), dropout=0.0)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    gen = torch.Generator().manual_seed(3)
    stepper = DPStepper(model, torch.optim.SGD(model.parameters(), lr=1.0), HybridLoss(),
                        _plan(n=n, sigma=sigma, q=q), clip=clip, noise_generator=gen)
    assert stepper.step(torch.zeros(0, 256), torch.zeros(0, 300)) is None  # no loss to report
    delta = (before - torch.cat([p.detach().flatten() for p in model.parameters()])).double()
    expected_std = sigma * clip / (q * n)
    m = delta.numel()  # ~285k draws: the sample std is within 1 % with overwhelming probability
    assert abs(float(delta.std()) / expected_std - 1) < 0.01
    assert abs(float(delta.mean())) < 5 * expected_std / math.sqrt(m)
    assert stepper.stats.empty_batches == 1 and stepper.history == [(sigma, q, 1)]


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_calibration_hits_the_target_epsilon_within_one_percent(target):
    plan = plan_dp(n=105, batch_size=64, rounds=100, local_epochs=1, noise=0.0, target_epsilon=target, delta=1e-5)
    assert plan.steps_per_epoch == 2 and plan.total_steps == 200 and plan.sample_rate == 64 / 105
    eps = epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], 1e-5)
    assert target * 0.99 <= eps <= target


def test_delta_must_be_below_one_over_n():
    with pytest.raises(ValueError, match=r"δ=0.01 is not below 1/n = 0.00952 for a client with 105 notes"):
        plan_dp(n=105, batch_size=64, rounds=1, local_epochs=1, noise=1.0, target_epsilon=0.0, delta=0.01)


def _client_rows(n=60, d=8, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), (rng.random((n, c)) < 0.3).astype(np.float32)


def test_epsilon_after_r_rounds_composes_the_whole_history(tmp_path):
    x, y = _client_rows()
    cfg = TrainConfig(seed=0, batch_size=16)
    privacy = PrivacyConfig(dp="sample", noise=1.1, clip=1.0)
    plan = plan_dp(n=60, batch_size=16, rounds=3, local_epochs=1, noise=1.1, target_epsilon=0.0, delta=1e-5)
    model = cfg.build(8, 5)
    per_round = []
    for rnd in (1, 2, 3):
        history = load_history(tmp_path, rnd)
        res = dp_local_train(model, x, y, cfg, LocalTrainConfig(server_round=rnd, total_rounds=3, local_epochs=1,
                                                                partition_id=0, seed=0), privacy, plan, history)
        save_history(tmp_path, rnd, res.history)
        per_round.append(res.epsilon)
    steps = 3 * plan.steps_per_epoch
    assert load_history(tmp_path, 4) == [(1.1, plan.sample_rate, steps)]
    assert per_round[2] == pytest.approx(epsilon_of([(1.1, plan.sample_rate, steps)], 1e-5), rel=1e-12)
    one_round = epsilon_of([(1.1, plan.sample_rate, plan.steps_per_epoch)], 1e-5)
    assert per_round[0] == pytest.approx(one_round) and per_round[2] > 1.5 * one_round
    # a resumed round 2 starts again from round 1's history, never counting round 2 twice
    assert load_history(tmp_path, 2) == [(1.1, plan.sample_rate, plan.steps_per_epoch)]
    save_history(tmp_path, 2, [(1.1, plan.sample_rate, 2 * plan.steps_per_epoch)])
    assert load_history(tmp_path, 4) == [(1.1, plan.sample_rate, 2 * plan.steps_per_epoch)]


def test_a_client_refuses_to_train_past_its_budget():
    plan = plan_dp(n=60, batch_size=16, rounds=2, local_epochs=1, noise=0.0, target_epsilon=2.0, delta=1e-5)
    spent = [(plan.noise_multiplier, plan.sample_rate, plan.total_steps)]
    assert check_budget(plan, [], plan.steps_per_epoch, partition_id=3, server_round=1) < 2.0
    with pytest.raises(PrivacyBudgetExhausted, match=r"client 3: training round 3 would raise ε from 1\.99\d+ to "
                                                     r"\d+\.\d+ at δ=1e-05, past its budget ε=2"):
        check_budget(plan, spent, plan.steps_per_epoch, partition_id=3, server_round=3)


def test_scaffold_is_refused_under_sample_dp():
    x, y = _client_rows()
    cfg = TrainConfig(seed=0, batch_size=16)
    plan = plan_dp(n=60, batch_size=16, rounds=1, local_epochs=1, noise=1.0, target_epsilon=0.0, delta=1e-5)
    with pytest.raises(ValueError, match="SCAFFOLD cannot run under sample-level DP"):
        dp_local_train(cfg.build(8, 5), x, y, cfg, LocalTrainConfig(1, 1, 1, 0, 0),
                       PrivacyConfig(dp="sample", noise=1.0), plan, [], scaffold=True)


def test_batchnorm_heads_are_converted_with_a_notice():
    model, notices = make_private_head(build_head("deep_mlp", 16, 4, hidden=(64, 32)))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "BatchNorm1d" not in kinds and "GroupNorm" in kinds
    assert notices and all("BatchNorm" in n for n in notices)
    same, none = make_private_head(build_head("mlp", 16, 4))
    assert none == [] and isinstance(same, type(build_head("mlp", 16, 4)))


def test_privacy_config_needs_exactly_one_of_noise_and_target():
    with pytest.raises(ValueError, match="needs exactly one of privacy.noise"):
        PrivacyConfig(dp="sample")
    with pytest.raises(ValueError, match="needs exactly one of privacy.noise"):
        PrivacyConfig(dp="client", noise=1.0, target_epsilon=3.0)
    with pytest.raises(ValueError, match="privacy.dp must be one of"):
        PrivacyConfig(dp="user")
    assert PrivacyConfig().resolved_delta == 1e-5 and not PrivacyConfig().enabled


def test_secure_runs_count_every_round_ever_trained(tmp_path):
    """A resumed secure round is a new release: the longer (crashed) history is kept and built on."""
    save_history(tmp_path, 1, [(1.0, 0.5, 2)], count_all=True)
    save_history(tmp_path, 2, [(1.0, 0.5, 4)], count_all=True)  # crashed after this round was trained
    assert load_history(tmp_path, 2, count_all=True) == [(1.0, 0.5, 4)]
    assert load_history(tmp_path, 2) == [(1.0, 0.5, 2)]  # a seeded replay is identical: not counted twice


def test_secure_rng_noise_is_not_reproducible():
    x, y = _client_rows()
    cfg = TrainConfig(seed=0, batch_size=16)
    plan = plan_dp(n=60, batch_size=16, rounds=1, local_epochs=1, noise=1.0, target_epsilon=0.0, delta=1e-5)
    results = {}
    for secure in (False, True):
        outs = []
        for _ in range(2):
            torch.manual_seed(0)
            model = cfg.build(8, 5)
            dp_local_train(model, x, y, cfg, LocalTrainConfig(1, 1, 1, 0, 0),
                           PrivacyConfig(dp="sample", noise=1.0, secure_rng=secure), plan, [])
            outs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        results[secure] = torch.equal(outs[0], outs[1])
    assert results == {False: True, True: False}
