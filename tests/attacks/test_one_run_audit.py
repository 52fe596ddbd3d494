"""The one-run audit bound (Steinke, Nasr & Jagielski 2023) and the canary scores."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from attacks.audit import (CanaryCountError, CanaryDirections, audit_scores, canary_rows, cosine_scores,
                           default_grid, epsilon_cap, epsilon_lower_bound, guess_counts, inclusion_coins,
                           loss_scores, p_value, step_likelihood_scores)


@pytest.mark.parametrize("r", [1, 5, 10, 50, 300])
def test_all_correct_pure_dp_solves_p_to_the_r(r):
    # δ = 0, every guess right: P[Bin(r, p) >= r] = p^r = 0.05 with p = e^ε / (1 + e^ε)
    p = 0.05 ** (1 / r)
    # (r = 1: the solution is negative, so nothing is rejected and ε̂ = 0)
    want = max(0.0, math.log(p / (1 - p)))
    assert epsilon_lower_bound(max(r, 2), r, r) == pytest.approx(want, abs=1e-7)


def test_p_value_delta_term_by_hand():
    # m=10, r=4, v=3, ε=0: q=1/2; beta = P[Bin(4,.5)>=3] = 5/16;
    # alpha = max(pmf(2)/1, (pmf(2)+pmf(1))/2, (pmf(2)+pmf(1)+pmf(0))/3) = max(6/16, 10/32, 11/48) = 6/16
    assert p_value(10, 4, 3, 0.0, 0.0) == pytest.approx(5 / 16)
    assert p_value(10, 4, 3, 0.0, 1e-3) == pytest.approx(5 / 16 + 6 / 16 * 1e-3 * 2 * 10)
    assert p_value(10, 4, 3, 0.0, 0.5) == 1.0


def test_p_value_matches_binomial_tail():
    q = 1 / (1 + math.exp(-2.0))
    assert p_value(500, 200, 150, 2.0, 0.0) == pytest.approx(stats.binom.sf(149, 200, q))


def test_chance_gives_zero():
    assert epsilon_lower_bound(1000, 1000, 500) == 0.0
    assert epsilon_lower_bound(1000, 200, 100, delta=1e-5) == 0.0
    inc = inclusion_coins(2000, seed=0)
    scores = np.random.default_rng(1).standard_normal(2000)  # scores carry no information
    assert audit_scores(scores, inc, delta=1e-5).epsilon_lower_bound == 0.0


@settings(deadline=None, max_examples=40)
@given(r=st.integers(2, 400), data=st.data(), delta=st.sampled_from([0.0, 1e-6, 1e-4]))
def test_monotone_in_correct_guesses(r, data, delta):
    v = data.draw(st.integers(0, r - 1))
    m = r + data.draw(st.integers(0, 100))
    assert epsilon_lower_bound(m, r, v, delta=delta) <= epsilon_lower_bound(m, r, v + 1, delta=delta)


@settings(deadline=None, max_examples=30)
@given(v=st.integers(0, 50), eps=st.floats(0, 6))
def test_p_value_rises_with_epsilon(v, eps):
    assert p_value(100, 50, v, eps, 1e-5) <= p_value(100, 50, v, eps + 0.5, 1e-5) + 1e-12


def test_delta_lowers_the_bound_and_cap_grows_with_m():
    assert epsilon_lower_bound(1000, 200, 190, delta=1e-4) < epsilon_lower_bound(1000, 200, 190)
    assert epsilon_cap(100) < epsilon_cap(1000) < epsilon_cap(10000)
    # Bonferroni over the grid costs something
    assert epsilon_cap(1000, grid_size=8) < epsilon_cap(1000)


def test_named_errors():
    with pytest.raises(CanaryCountError, match="m .* >= 2"):
        epsilon_lower_bound(1, 1, 1)
    with pytest.raises(CanaryCountError, match="v <= r <= m"):
        p_value(10, 4, 5, 1.0, 0.0)
    with pytest.raises(CanaryCountError, match=">= 2"):
        inclusion_coins(1, seed=0)
    with pytest.raises(CanaryCountError, match="k_plus"):
        guess_counts(np.zeros(4), np.zeros(4, bool), 3, 2)
    with pytest.raises(CanaryCountError, match="distinct coordinates"):
        CanaryDirections.make(10, 11)


def test_guess_counts_and_perfect_scores():
    inc = np.array([True, False, True, False, True, False])
    scores = np.array([5.0, -1, 3, 0, 4, -2])
    assert guess_counts(scores, inc, 2, 2) == (4, 4)
    assert guess_counts(-scores, inc, 2, 2) == (4, 0)
    res = audit_scores(scores, inc, delta=0.0, grid=[(1, 1), (3, 3)])
    assert (res.k_plus, res.guesses, res.correct, res.grid_size) == (3, 6, 6, 2)
    assert res.epsilon_lower_bound == pytest.approx(epsilon_lower_bound(6, 6, 6, alpha=0.025), abs=1e-8)
    assert all(k_plus == k_minus and 2 * k_plus <= 1000 for k_plus, k_minus in default_grid(1000))


def test_directions_project_and_combine():
    d = CanaryDirections.make(50, 7, sparsity=4, seed=3)
    assert np.allclose(np.linalg.norm(np.stack([d.combine(np.eye(7)[j]) for j in range(7)]), axis=1), 1.0)
    w = np.arange(7.0)
    x = d.combine(w)
    assert np.allclose(d.project(np.stack([d.combine(np.eye(7)[j]) for j in range(7)])).diagonal(), 1.0)
    dirac = CanaryDirections.make(50, 7, seed=3)
    assert np.allclose(dirac.project(dirac.combine(w)), w)  # Dirac canaries never overlap
    assert cosine_scores(x * 0, d).tolist() == [0.0] * 7


def test_likelihood_scores_rank_included_canaries_first():
    rng = np.random.default_rng(0)
    inc = inclusion_coins(400, seed=1)
    present = (rng.random((20, 400)) < 0.3) & inc
    obs = present * 1.0 + rng.standard_normal((20, 400)) * 0.3
    s = step_likelihood_scores(obs, signal=1.0, noise_std=0.3, sample_rate=0.3)
    assert audit_scores(s, inc, delta=1e-5).epsilon_lower_bound > 2.0
    with pytest.raises(ValueError, match="noise_std"):
        step_likelihood_scores(obs, signal=1.0, noise_std=0.0, sample_rate=0.3)


def test_canary_rows_and_loss_scores():
    x, y = canary_rows(5, 16, 30, labels_per_canary=3, seed=0)
    assert x.shape == (5, 16) and np.allclose(np.linalg.norm(x, axis=1), 4.0, atol=1e-5)
    assert (y.sum(1) == 3).all()
    good = np.where(y > 0, 8.0, -8.0)
    assert (loss_scores(good, y) > loss_scores(-good, y)).all()


def test_reproduces_the_papers_appendix_d_examples():
    # Steinke, Nasr & Jagielski 2023, Appendix D: p-value(m=100, r=100, v=75, ε=ln 3, δ=0) ≈ 0.553 and
    # get_eps_audit(100, 100, 75, δ=0, p=0.05) ≈ 0.702
    assert p_value(100, 100, 75, math.log(3), 0.0) == pytest.approx(0.553, abs=5e-4)
    assert epsilon_lower_bound(100, 100, 75) == pytest.approx(0.702, abs=5e-4)


def test_grid_maximum_keeps_its_confidence_under_randomized_response():
    # ε0-DP randomized response on every canary (the mechanism the bound compares with): the reported maximum
    # over the grid must exceed ε0 in at most ~5 % of runs. 200 seeded runs; Binomial(200, 0.05) exceeds 18
    # with probability < 0.1 %, and the Bonferroni grid is conservative, so this is far from the edge.
    eps0, m, over = 1.0, 400, 0
    keep = math.exp(eps0) / (1 + math.exp(eps0))
    for seed in range(200):
        rng = np.random.default_rng(seed)
        inc = rng.random(m) < 0.5
        said = np.where(rng.random(m) < keep, inc, ~inc)  # the released bit, ε0-DP for each canary
        scores = said + rng.random(m) * 1e-3  # tie-break independent of the coins (post-processing)
        over += audit_scores(scores, inc, delta=0.0).epsilon_lower_bound > eps0
    assert over <= 18
