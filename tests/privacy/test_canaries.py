"""Audit instrumentation of fedicd's DP mechanisms: the DPStepper canary hook, Flower's client-level
arithmetic, and the one-run audit catching honest and broken DP-SGD (small scale)."""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update, compute_stdv
from torch import nn

from attacks.audit import CanaryCountError
from fedicd.attack_runs.audit import (CanaryPartitionError, NoDPError, audit_sample_black_box,
                                      audit_sample_white_box, battery_audit)
from fedicd.privacy.accounting import epsilon_of, plan_dp
from fedicd.privacy.canaries import GradientCanaries, NoisedStepRecorder, canary_stream_seed, client_dp_release
from fedicd.privacy.dp_sgd import DPStepper
from fedicd.run_plan import DPPlan
from fedicd.train_config import TrainConfig

PLAN = DPPlan(n=12, sample_rate=0.5, steps_per_epoch=2, total_steps=4, noise_multiplier=0.0, delta=1e-5,
              target_epsilon=0.0)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _noised_grads(clipping, canaries, noise=0.0):
    model = _model()
    torch.manual_seed(1)
    x, y = torch.randn(5, 6), (torch.rand(5, 3) < 0.5).float()
    plan = DPPlan(**{**PLAN.to_dict(), "noise_multiplier": noise})
    stepper = DPStepper(model, torch.optim.SGD(model.parameters(), lr=0.1), TrainConfig().loss(), plan, clip=0.5,
                        clipping=clipping, noise_generator=torch.Generator().manual_seed(3),
                        canary_gradients=canaries)
    seen = {}
    stepper.step(x, y, lambda: seen.update({k: p.grad.clone() for k, p in model.named_parameters()}))
    stepper.close()
    return seen, {k: p.detach().clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("clipping, noise", [("fused", 0.0), ("ghost", 0.0), ("hooks", 0.0), ("fused", 1.3),
                                             ("hooks", 1.3)])
def test_canary_gradients_join_the_clipped_sum_before_noise(clipping, noise):
    extra = torch.zeros(8, 6)
    extra[2, 3], extra[5, 0] = 0.5, -0.5
    plain, _ = _noised_grads(clipping, None, noise)
    with_canary, _ = _noised_grads(clipping, lambda: {"0.weight": extra}, noise)
    b = round(PLAN.sample_rate * PLAN.n)  # Opacus divides the (noised) sum by the expected batch size
    # the canary is one more clipped sample: it shifts the noised mean by extra / b and leaves the noise draws alone
    torch.testing.assert_close(with_canary["0.weight"] - plain["0.weight"], extra / b, atol=1e-6, rtol=0)
    for k in ("0.bias", "2.weight", "2.bias"):
        torch.testing.assert_close(with_canary[k], plain[k], atol=0, rtol=0)
    if noise:  # and the noise is really there (σ·C / b per coordinate)
        silent, _ = _noised_grads(clipping, None, 0.0)
        assert float((plain["0.bias"] - silent["0.bias"]).abs().max()) > 0.05


def test_default_path_unchanged_by_a_silent_callback():
    # a callback that never adds anything leaves noise, gradients and weights bit for bit as without one
    g0, w0 = _noised_grads("fused", None, noise=1.3)
    g1, w1 = _noised_grads("fused", lambda: None, noise=1.3)
    for k in w0:
        assert torch.equal(g0[k], g1[k]) and torch.equal(w0[k], w1[k])


def test_gradient_canaries_sample_only_included_and_recorder_projects():
    model = _model()
    coords = np.array([[0], [7], [20], [33]])
    signs = np.ones((4, 1))
    inc = np.array([True, False, True, True])
    can = GradientCanaries(model, "0.weight", coords, signs, inc, clip=2.0, sample_rate=1.0, seed=0)
    g = can()["0.weight"].reshape(-1)
    assert g[[0, 20, 33]].tolist() == [2.0, 2.0, 2.0] and float(g.abs().sum()) == 6.0
    assert can.draws.tolist() == [1, 0, 1, 1]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[0].weight.grad.view(-1)[7] = 0.25
    rec = NoisedStepRecorder(model, "0.weight", coords, signs, expected_batch_size=4)
    rec()
    assert rec.projections.tolist() == [[0.0, 1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="no parameter"):
        GradientCanaries(model, "nope", coords, signs, inc, clip=1.0, sample_rate=0.5, seed=0)
    with pytest.raises(ValueError, match="unit norm"):
        GradientCanaries(model, "0.weight", coords, signs * 2, inc, clip=1.0, sample_rate=0.5, seed=0)


def test_canary_sampling_is_independent_of_fedicds_small_seeds():
    # the data sampler, the noise and dropout are seeded with small integers derived from the run's seed; the
    # canaries' Poisson coins must not replay any of those streams (else canary j is in a batch exactly when note
    # j is, which the subsampling analysis does not allow)
    model, m, q = _model(), 40, 0.5
    coords, signs = np.arange(m)[:, None], np.ones((m, 1))
    for seed in range(4):
        can = GradientCanaries(model, "0.weight", coords, signs, np.ones(m, bool), clip=1.0, sample_rate=q,
                               seed=seed)
        canary_mask = (can()["0.weight"].reshape(-1)[:m] > 0).numpy()
        for small in range(64):
            data_mask = (torch.rand(m, generator=torch.Generator().manual_seed(small)) < q).numpy()
            assert not np.array_equal(canary_mask, data_mask), (seed, small)
    assert len({canary_stream_seed(s) for s in range(1000)}) == 1000 and min(canary_stream_seed(s)
                                                                             for s in range(1000)) > 2 ** 32


def test_client_dp_release_matches_flower_arithmetic():
    rng = np.random.default_rng(0)
    current = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    replies = [[c + rng.standard_normal(c.shape).astype(np.float32) * s for c in current] for s in (0.1, 3.0, 1.0)]
    ours = client_dp_release(current, replies, clip=1.0, noise_multiplier=0.7, rng=np.random.RandomState(5))
    # Flower: clip each reply (in place), FedAvg with equal weights, then its noise from numpy's global RNG
    flw = [[np.array(a, dtype=np.float64) for a in r] for r in replies]
    for r in flw:
        compute_clip_model_update(r, [c.astype(np.float64) for c in current], 1.0)
    agg = [np.mean([r[i] for r in flw], axis=0).astype(np.float32) for i in range(2)]
    np.random.seed(5)
    add_gaussian_noise_inplace(agg, compute_stdv(0.7, 1.0, 3))
    for a, b in zip(ours, agg):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # canary updates summed beforehand give the same release as passing them one by one
    canary = [np.zeros((3, 4)), np.zeros(5)]
    canary[1][2] = 1.0
    one = client_dp_release(current, replies + [[c + d for c, d in zip(current, canary)]], clip=1.0,
                            noise_multiplier=0.7, rng=np.random.RandomState(9))
    two = client_dp_release(current, replies, clip=1.0, noise_multiplier=0.7, rng=np.random.RandomState(9),
                            extra_sum=canary, extra_count=1)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, atol=1e-6)


def _client(n=40, d=32, labels=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (rng.random((n, labels)) < 0.3).astype(np.float32)
    return x, y


TRAIN = TrainConfig(head="mlp", hidden=(64,), batch_size=10, lr=0.05)


@functools.lru_cache(maxsize=None)
def _plan(eps):  # calibrating σ (Opacus) takes seconds: once per ε
    return plan_dp(40, 10, 2, 1, noise=0.0, target_epsilon=eps, delta=1e-5)


def _white(eps, noise_scale=1.0, m=1000):
    x, y = _client()
    return audit_sample_white_box(x, y, TRAIN, _plan(eps), clip=1.0, clipping="fused", rounds=2, local_epochs=1,
                                  lr=0.05, m=m, seed=0, noise_scale=noise_scale)


def test_honest_dp_sgd_audit_stays_below_the_accounted_epsilon():
    plan = _plan(1.0)
    accounted = epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], plan.delta)
    res = _white(1.0)
    assert res["steps"] == plan.total_steps and res["canary_draws"] > 0
    for key in ("step", "update"):
        assert res[key].epsilon_lower_bound <= accounted <= 1.0


@pytest.mark.parametrize("noise_scale", [0.0, 0.1])
def test_broken_mechanism_is_caught(noise_scale):
    # noise off, or σ under-scaled 10×, while ε = 1 is still claimed: ε̂ must exceed the claim
    res = _white(1.0, noise_scale=noise_scale)
    assert res["step"].epsilon_lower_bound > 1.0
    assert res["update"].epsilon_lower_bound > 1.0


def test_named_errors():
    with pytest.raises(NoDPError, match='privacy.dp = "sample" or "client"'):
        battery_audit(SimpleNamespace(dp="none", run_dir="/tmp/run"))
    x, y = _client(n=20)
    with pytest.raises(CanaryPartitionError, match="swamp the client's n=20"):
        audit_sample_black_box(x, y, TRAIN, _plan(1.0), clip=1.0, clipping="fused", rounds=1, local_epochs=1,
                               optimizer="adamw", lr=1e-3, m=30)
    with pytest.raises(CanaryPartitionError, match="n=0"):
        audit_sample_black_box(x[:0], y[:0], TRAIN, _plan(1.0), clip=1.0, clipping="fused", rounds=1,
                               local_epochs=1, optimizer="adamw", lr=1e-3, m=2)
    with pytest.raises(CanaryCountError, match=">= 2"):
        _white(1.0, m=1)


def _client_run(noise_multiplier):
    from fedicd.federated.model import load_global_model

    x, y = _client(n=60, seed=4)
    parts = [np.arange(0, 20), np.arange(20, 40), np.arange(40, 60)]
    privacy = SimpleNamespace(dp="client", clip=1.0, noise_multiplier=noise_multiplier, delta=1e-5,
                              sampled_clients=3, population=3, target_epsilon=1.0)
    fed = SimpleNamespace(rounds=2, local_epochs=1, local_optimizer="sgd", local_lr=0.0, local_momentum=0.0)
    plan = SimpleNamespace(privacy=privacy, federated=fed, train=TRAIN, input_dim=32, n_labels=5)
    return SimpleNamespace(dp="client", run_dir="fake", plan=plan, clients=parts,
                           client_rows=lambda pid: (x[parts[pid]], y[parts[pid]]),
                           build_head=lambda state: load_global_model(TRAIN, 32, 5, state))


@pytest.mark.parametrize("noise_scale, honest", [(1.0, True), (0.0, False)])
def test_client_level_audit_honest_and_noise_off(noise_scale, honest):
    from fedicd.attack_runs.audit import audit_client_level
    from fedicd.privacy.client_level import calibrate_client_noise

    sigma = calibrate_client_noise(1.0, 1e-5, 2, 3, 3)
    res = audit_client_level(_client_run(sigma), m=600, seed=0, noise_scale=noise_scale, sparsity=2)
    assert (res.epsilon_lower_bound <= 1.0) if honest else (res.epsilon_lower_bound > 1.0)
