"""Client-level DP with Poisson client sampling: the cohort, the aggregate's arithmetic, the empty round, the
ledger's ε against direct dp-accounting calls, adaptive clipping, and the named errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity

from fedicd.privacy.client_level import ServerSideAdaptiveClipping, client_dp_state, load_client_dp_state, wrap_client_dp
from fedicd.privacy.poisson_clients import AdaptiveClip, PoissonClientDP, poisson_cohort, update_noise
from fedicd.strategies import build_strategy
from tests.strategies.helpers import FakeGrid, arrays_record, numpy_of, reply

CURRENT = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(2, dtype=np.float32)}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)


def poisson_strategy(population=5, sampled=2, noise=0.8, clip=1.0, seed=7, **extra):
    settings = {"noise": noise, "clip": clip, "sampled": sampled, "population": population, "delta": 1e-5,
                "max_epsilon": None, "client_side": False, "poisson": True, "seed": seed, **extra}
    return build_strategy("fedavg", weighted_by_key="unit-weight", min_available_nodes=1, min_train_nodes=1,
                          min_evaluate_nodes=1,
                          inner_wrappers=[lambda s: wrap_client_dp(s, "fedavg", **settings)])


def train_messages(strategy, rnd, n_nodes):
    from flwr.app import ConfigRecord

    return list(strategy.configure_train(rnd, arrays_record(CURRENT), ConfigRecord(), FakeGrid(n_nodes)))


def client_reply(msg, scale):
    update = {"w": np.full((2, 3), scale, dtype=np.float32), "b": np.full(2, -scale, dtype=np.float32)}
    return reply(msg, {k: CURRENT[k] + update[k] for k in CURRENT}, None, metrics={"unit-weight": 1.0})


def test_cohort_is_each_client_independently_at_rate_q():
    draws = [len(poisson_cohort(range(1000), 0.1, np.random.default_rng([3, r, 0]))) for r in range(200)]
    assert abs(np.mean(draws) - 100) < 1.5 and 6 < np.std(draws) < 12  # Binomial(1000, 0.1): mean 100, sd 9.5
    assert poisson_cohort([5, 1, 3], 0.5, np.random.default_rng(0)) == poisson_cohort([1, 3, 5], 0.5,
                                                                                      np.random.default_rng(0))


def test_aggregate_is_the_clipped_sum_over_the_expected_cohort_plus_seeded_noise():
    strategy = poisson_strategy(population=6, sampled=3, noise=0.8, clip=1.0, seed=11)
    rnd = next(r for r in range(1, 50) if len(poisson_cohort(range(1, 7), 0.5, np.random.default_rng([11, r, 0]))) >= 2)
    msgs = train_messages(strategy, rnd, 6)
    want_nodes = poisson_cohort(range(1, 7), 0.5, np.random.default_rng([11, rnd, 0]))
    assert [m.metadata.dst_node_id for m in msgs] == want_nodes
    scales = [0.05 * (i + 1) if i % 2 else 2.0 for i in range(len(msgs))]  # norms above and below the clip
    new, _ = strategy.aggregate_train(rnd, [client_reply(m, s) for m, s in zip(msgs, scales)])
    total = {"w": np.zeros((2, 3)), "b": np.zeros(2)}
    for s in scales:
        norm = math.sqrt(8 * s * s)
        factor = min(1.0, 1.0 / norm)
        total["w"] += s * factor
        total["b"] += -s * factor
    rng = np.random.default_rng([11, rnd, 1])
    for k in ("w", "b"):  # noise array by array, in the model's order, std σ·C/(qN)
        want = CURRENT[k] + total[k] / 3 + rng.normal(0.0, 0.8 * 1.0 / 3, CURRENT[k].shape)
        np.testing.assert_allclose(numpy_of(new)[k], want.astype(np.float32), rtol=1e-6, atol=1e-7)
    assert strategy.strategy.accountant.events == [(0.8, 0.5, 1)]


def test_an_empty_cohort_still_releases_noise_and_is_counted():
    strategy = poisson_strategy(population=5, sampled=1, noise=1.5, clip=0.5, seed=3)
    rnd = next(r for r in range(1, 100) if not poisson_cohort(range(1, 6), 0.2, np.random.default_rng([3, r, 0])))
    assert train_messages(strategy, rnd, 5) == []
    new, _ = strategy.aggregate_train(rnd, [])  # through the UpdateValidator
    rng = np.random.default_rng([3, rnd, 1])
    for k in ("w", "b"):
        want = CURRENT[k] + rng.normal(0.0, 1.5 * 0.5 / 1, CURRENT[k].shape)
        np.testing.assert_allclose(numpy_of(new)[k], want.astype(np.float32), rtol=1e-6)
    assert strategy.strategy.accountant.num_releases == 1


def test_a_refused_update_is_left_out_but_the_round_is_released():
    strategy = poisson_strategy(population=4, sampled=4, seed=1)  # q = 1: everybody
    msgs = train_messages(strategy, 1, 4)
    bad = reply(msgs[0], {"w": np.full((2, 3), np.nan, dtype=np.float32), "b": CURRENT["b"]}, None,
                metrics={"unit-weight": 1.0})
    new, _ = strategy.aggregate_train(1, [bad])
    assert new is not None and np.isfinite(numpy_of(new)["w"]).all()
    assert strategy.rejections and strategy.strategy.accountant.num_releases == 1


def test_ledger_matches_direct_dp_accounting_for_poisson_events():
    import dp_accounting as dpa
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.rdp import RdpAccountant

    strategy = poisson_strategy(population=1000, sampled=100, noise=1.1)
    ledger = strategy.strategy.accountant
    for _ in range(30):
        ledger.add(1.1, 0.1)
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.1)), 30)
    rdp, pld = RdpAccountant(), PLDAccountant(value_discretization_interval=1e-3)
    rdp.compose(event)
    pld.compose(event)
    got = ledger.epsilons()
    assert ledger.events == [(1.1, 0.1, 30)]
    assert got["rdp"] == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-12)
    assert got["pld"] == pytest.approx(pld.get_epsilon(1e-5), rel=1e-12)
    assert got["pld"] < got["rdp"]


def test_fixed_ledger_matches_flowers_rdp_accountant_and_refuses_amplification():
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from fedicd.privacy.client_level import client_dp_accountant

    strategy = build_strategy("fedavg", weighted_by_key="unit-weight", min_available_nodes=2, min_train_nodes=2,
                              min_evaluate_nodes=1, inner_wrappers=[lambda s: wrap_client_dp(
                                  s, "fedavg", noise=1.3, clip=1.0, sampled=2, population=20, delta=1e-5,
                                  max_epsilon=None, client_side=False, accountant="pld")])
    ledger, flower = strategy.strategy.accountant, client_dp_accountant(20, 1e-5)
    event = GaussianPrivacyEvent(noise_multiplier=1.3, sample_size=2, population_size=20)
    ledger.compose(event, count=5)
    flower.compose(event, count=5)
    assert ledger.epsilons()["rdp"] == pytest.approx(flower.get_epsilon(1e-5), rel=1e-9)
    assert ledger.get_epsilon(1e-5) == ledger.epsilons()["pld"]  # the selected accountant
    with pytest.raises(ValueError, match="claims amplification.*client_sampling = 'poisson'"):
        ledger.add(1.3, 0.1)


def test_ledger_and_clip_norm_survive_a_checkpoint():
    a = poisson_strategy(adaptive=AdaptiveClip(0.5, 1.0))
    a.strategy.accountant.add(0.8, 0.4, 3)
    a.strategy.clipping_norm = 0.37
    b = poisson_strategy(adaptive=AdaptiveClip(0.5, 1.0))
    assert load_client_dp_state(b, client_dp_state(a)) == {}
    assert b.strategy.accountant.events == [(0.8, 0.4, 3)] and b.strategy.clipping_norm == 0.37
    other = poisson_strategy(noise=0.8, population=9)
    with pytest.raises(ValueError, match="differs from this run"):
        load_client_dp_state(other, client_dp_state(a))


def _norm_quantile_run(update, rounds=150):
    norms = np.random.default_rng(0).lognormal(0.0, 0.5, 400)
    clip = 0.05
    for _ in range(rounds):
        clip = update(clip, norms)
    return clip, norms


def test_adaptive_clip_tracks_the_target_quantile_of_update_norms():
    rule = AdaptiveClip(target_quantile=0.7, count_stddev=2.0)
    rng = np.random.default_rng(1)

    def poisson_round(clip, norms):
        joined = norms[rng.random(norms.size) < 0.25]
        return rule.next_clip(clip, int((joined <= clip).sum()), joined.size, 100.0, rng)

    clip, norms = _norm_quantile_run(poisson_round)
    assert np.mean(norms <= clip) == pytest.approx(0.7, abs=0.08)


def test_flowers_adaptive_update_runs_away_and_ours_converges():
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideAdaptiveClipping as Flower

    def step(method):
        def update(clip, norms):
            holder.clipping_norm = clip
            method(holder, float(np.mean(norms > clip)))  # the noiseless clipped fraction Flower passes
            return holder.clipping_norm
        return update

    holder = type("Holder", (), {"clip_norm_lr": 0.2, "target_clipped_quantile": 0.5})()
    ours, norms = _norm_quantile_run(step(ServerSideAdaptiveClipping._geometric_update))
    flowers, _ = _norm_quantile_run(step(Flower._geometric_update))
    assert np.mean(norms <= ours) == pytest.approx(0.5, abs=0.05)
    assert flowers < 0.01  # started below the median, moved further away


def test_poisson_wrapper_adapts_the_clip_norm_over_rounds():
    strategy = poisson_strategy(population=40, sampled=20, noise=0.5, clip=0.1, seed=5,
                                adaptive=AdaptiveClip(0.5, 1.0))
    dp = strategy.strategy
    scales = np.linspace(0.05, 0.5, 40)  # update norm = scale·√8
    for rnd in range(1, 41):
        msgs = train_messages(strategy, rnd, 40)
        strategy.aggregate_train(rnd, [client_reply(m, scales[m.metadata.dst_node_id - 1]) for m in msgs])
    norms = scales * math.sqrt(8)
    assert 0.3 < np.mean(norms <= dp.clipping_norm) < 0.7 and dp.accountant.num_releases == 40


def test_adaptive_noise_split_and_its_error():
    sigma, count = 1.0, 5.0
    assert update_noise(sigma, count) ** -2 + (2 * count) ** -2 == pytest.approx(sigma ** -2)
    with pytest.raises(ValueError, match="privacy.clip_count_stddev > σ/2"):
        update_noise(3.0, 1.0)
    from flwr.supercore.differential_privacy import compute_adaptive_noise_params

    assert compute_adaptive_noise_params(sigma, 100, count)[1] == pytest.approx(update_noise(sigma, count))


def test_poisson_wrapper_refuses_a_cohort_larger_than_the_federation():
    from fedicd.privacy.client_ledger import ClientLedger, ledger_config

    with pytest.raises(ValueError, match="privacy.clients_per_round = 9 must be in"):
        PoissonClientDP(object(), noise_multiplier=1.0, clip=1.0, expected=9,
                        accountant=ClientLedger(ledger_config(5, 1e-5, poisson=True)), seed=0)


def test_fixed_adaptive_wrapper_accounts_sigma_moves_the_clip_and_refuses_a_short_cohort():
    strategy = build_strategy("fedavg", weighted_by_key="unit-weight", min_available_nodes=4, min_train_nodes=4,
                              min_evaluate_nodes=1, inner_wrappers=[lambda s: wrap_client_dp(
                                  s, "fedavg", noise=0.6, clip=0.01, sampled=4, population=4, delta=1e-5,
                                  max_epsilon=None, client_side=False, adaptive=AdaptiveClip(0.5, 0.4))])
    dp = strategy.strategy
    assert isinstance(dp, ServerSideAdaptiveClipping) and dp.noise_multiplier > 0.6  # Flower's σ_Δ for the update
    msgs = sorted(train_messages(strategy, 1, 4), key=lambda m: m.metadata.dst_node_id)
    new, _ = strategy.aggregate_train(1, [client_reply(m, 1.0) for m in msgs])  # all clipped: the norm grows
    assert new is not None and dp.clipping_norm > 0.01 and dp.round_clip == 0.01
    assert dp.accountant.events == [(0.6, 1.0, 1)]
    msgs = train_messages(strategy, 2, 4)
    assert strategy.aggregate_train(2, [client_reply(m, 1.0) for m in msgs[:3]]) == (None, None)
    assert dp.accountant.num_releases == 1  # nothing released for the short cohort


def test_fixed_adaptive_wrapper_noises_with_the_norm_the_updates_were_clipped_to(monkeypatch):
    """Flower updates the norm before it noises; the release's sensitivity is the norm of this round's clipping."""
    import flwr.serverapp.strategy.dp_adaptive_clipping as flower_adaptive

    stds = []
    monkeypatch.setattr(flower_adaptive, "add_gaussian_noise_inplace", lambda arrays, std: stds.append(std))
    strategy = build_strategy("fedavg", weighted_by_key="unit-weight", min_available_nodes=4, min_train_nodes=4,
                              min_evaluate_nodes=1, inner_wrappers=[lambda s: wrap_client_dp(
                                  s, "fedavg", noise=0.6, clip=0.01, sampled=4, population=4, delta=1e-5,
                                  max_epsilon=None, client_side=False, adaptive=AdaptiveClip(0.5, 0.4))])
    dp = strategy.strategy
    np.random.seed(0)  # Flower's clipped-count noise
    strategy.aggregate_train(1, [client_reply(m, 1.0) for m in train_messages(strategy, 1, 4)])
    assert dp.clipping_norm > 0.0105  # all clipped: the next round's norm grew (about e^0.1 = 1.105 times)
    assert stds == [pytest.approx(dp.noise_multiplier * 0.01 / 4)]


def test_poisson_adaptive_clipping_with_client_side_clipping_is_refused():
    with pytest.raises(ValueError, match="set privacy.client_side_clipping = false"):
        poisson_strategy(client_side=True, adaptive=AdaptiveClip(0.5, 1.0))


def test_poisson_cohort_gets_fedprox_mu_like_flowers_sampler_would_send():
    settings = {"noise": 1.0, "clip": 1.0, "sampled": 5, "population": 5, "delta": 1e-5, "max_epsilon": None,
                "client_side": False, "poisson": True, "seed": 7}
    strategy = build_strategy("fedprox", proximal_mu=0.3, weighted_by_key="unit-weight", min_available_nodes=1,
                              min_train_nodes=1, min_evaluate_nodes=1,
                              inner_wrappers=[lambda s: wrap_client_dp(s, "fedprox", **settings)])
    msgs = train_messages(strategy, 1, 5)  # q = 1: everybody
    assert len(msgs) == 5 and all(m.content["config"]["proximal-mu"] == 0.3 for m in msgs)
