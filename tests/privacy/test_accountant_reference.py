"""fedicd's accountant reproduces published ε and σ values.

Source: Opacus' accountant tests, ``opacus/tests/accountants_test.py`` in https://github.com/pytorch/opacus
(read at commit 030b723fb89aabf3cde663018bb63e5bb95f197a):

* ``test_rdp_accountant``: RDP accountant, σ = 1.5, sample rate q = 0.04, ``int(90 / 0.04)`` = 2250 steps
  (90 epochs), δ = 1e-5 → ε = 7.32911117143, checked there with ``assertAlmostEqual`` (7 decimal places);
* ``test_get_noise_multiplier_rdp_steps``: ε = 8, δ = 1e-5, q = 0.04, 2000 steps → σ = 1.3562, checked there
  to 4 decimal places.

The same settings are reached here through fedicd's own planning: a client with n = 2500 notes and an expected
batch of 100 has q = 0.04 and 25 steps per epoch.
"""

import pytest

from fedicd.privacy.accounting import epsilon_of, plan_dp


def test_epsilon_of_ninety_epochs_matches_opacus_published_value():
    plan = plan_dp(n=2500, batch_size=100, rounds=90, local_epochs=1, noise=1.5, target_epsilon=0.0, delta=1e-5)
    assert (plan.sample_rate, plan.steps_per_epoch, plan.total_steps) == (0.04, 25, 2250)
    eps = epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], plan.delta)
    assert eps == pytest.approx(7.32911117143, abs=5e-8)  # assertAlmostEqual's 7 places


def test_epsilon_composes_over_rounds_to_the_same_published_value():
    """Ninety 25-step entries (one per one-epoch round) compose to the ε of one 2250-step entry."""
    history = [(1.5, 0.04, 25)] * 90
    assert epsilon_of(history, 1e-5) == pytest.approx(7.32911117143, abs=5e-8)


def test_calibrated_noise_matches_opacus_published_value():
    plan = plan_dp(n=2500, batch_size=100, rounds=80, local_epochs=1, noise=0.0, target_epsilon=8.0, delta=1e-5)
    assert plan.total_steps == 2000
    assert plan.noise_multiplier == pytest.approx(1.3562, abs=5e-5)  # 4 places, as in the source
    assert epsilon_of([(plan.noise_multiplier, 0.04, 2000)], 1e-5) <= 8.0
