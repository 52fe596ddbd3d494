"""Membership inference (attacks.membership, fedicd.attack_runs.membership): ROC arithmetic, LiRA and RMIA on
toys whose answer is known, named errors, and the battery on a tiny federated run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from attacks.membership import (MembershipInputError, MembershipView, NoReferenceModelsError, auc_score,
                                lira_offline, lira_online, log_label_probability, membership_metrics,
                                membership_scores, reference_keep, rmia_scores, roc_curve, scaled_logit,
                                tpr_at_fpr)
from attacks.membership.rmia import log_marginal
from attacks.membership.roc import _point, _points
from attacks.threat import ThreatModelError

# ---------------------------------------------------------------- roc.py: exact small cases


def test_roc_curve_exact_on_a_hand_built_example():
    s = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    m = np.array([True, True, False, False, True])
    fpr, tpr, thr = roc_curve(s, m)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.3, 0.1])
    assert auc_score(s, m) == pytest.approx(7 / 12)  # pairs won 3.5 of 6 (the 0.8 tie counts 1/2)
    assert tpr_at_fpr(fpr, tpr, 0.01) == pytest.approx(1 / 3)
    assert tpr_at_fpr(fpr, tpr, 0.5) == pytest.approx(2 / 3)
    assert tpr_at_fpr(fpr, tpr, 1.0) == 1.0


def test_tpr_at_fpr_counts_false_positives_exactly():
    # 1000 non-members: 0.1 % FPR allows exactly one false positive; the member above it is found, the one
    # below the second-highest non-member is not.
    out = np.linspace(0, 1, 1000)
    s = np.r_[2.0, 0.9995, 0.5, out]
    m = np.r_[True, True, True, np.zeros(1000, bool)]
    metrics = membership_metrics(s, m, n_boot=50)
    assert metrics["tpr_at_0.1pct_fpr"]["value"] == pytest.approx(2 / 3)
    assert metrics["tpr_at_1pct_fpr"]["value"] == pytest.approx(2 / 3)
    assert (metrics["auc"]["n"], metrics["auc"]["n_members"], metrics["auc"]["n_nonmembers"]) == (1003, 3, 1000)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=2, max_size=40), st.integers(0, 2**31 - 1))
def test_batched_bootstrap_statistics_equal_the_roc_curve(values, seed):
    s = np.asarray(values, dtype=float)
    m = np.random.default_rng(seed).permutation(np.arange(s.size) < max(1, s.size // 3))
    point, batch = _point(s, m), _points(s[m][None], s[~m][None])
    for k, v in point.items():
        assert batch[k][0] == pytest.approx(v, abs=1e-12)
    assert point["auc"] == pytest.approx(roc_auc_score(m, s))


def test_random_scores_give_chance():
    rng = np.random.default_rng(0)
    m = rng.random(4000) < 0.5
    metrics = membership_metrics(rng.random(4000), m, n_boot=200)
    # AUC's standard error at 2000/2000 is about 0.0065; 0.03 is > 4 standard errors.
    assert abs(metrics["auc"]["value"] - 0.5) < 0.03
    assert metrics["auc"]["ci_low"] < 0.5 < metrics["auc"]["ci_high"]
    assert abs(metrics["tpr_at_1pct_fpr"]["value"] - 0.01) < 0.01


# ---------------------------------------------------------------- signals


def test_signal_exact_values():
    z = np.array([[2.0], [2.0]])
    y = np.array([[1], [0]])
    np.testing.assert_allclose(scaled_logit(z, y), [2.0, -2.0])  # one label: the logit of the true class
    np.testing.assert_allclose(log_label_probability(np.zeros((1, 2)), np.array([[1, 0]])), [np.log(0.25)])
    np.testing.assert_allclose(scaled_logit(np.zeros((1, 2)), np.array([[1, 0]])), [-np.log(3.0)])
    assert np.isfinite(scaled_logit(np.array([[800.0, -800.0]]), np.array([[1, 0]]))).all()


# ---------------------------------------------------------------- LiRA on a Gaussian toy


def _gaussian_toy(n=2000, n_refs=64, shift=1.0, sd=1.0, spread=3.0, seed=0):
    """Statistic of candidate i: N(mu_i + shift, sd^2) when trained on, N(mu_i, sd^2) otherwise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, spread, n)
    member = rng.random(n) < 0.5
    keep = reference_keep(n_refs, n, seed=seed + 1)
    refs = mu + shift * keep + rng.normal(0, sd, (n_refs, n))
    target = mu + shift * member + rng.normal(0, sd, n)
    return target, refs, keep, member, mu


def test_online_lira_recovers_the_known_likelihood_ratio():
    target, refs, keep, member, mu = _gaussian_toy()
    scores = lira_online(target, refs, keep)
    oracle = norm.logpdf(target, mu + 1.0, 1.0) - norm.logpdf(target, mu, 1.0)
    assert np.corrcoef(scores, oracle)[0, 1] > 0.85  # 32 IN / 32 OUT models per note: noisy per-note variances
    assert np.corrcoef(lira_online(target, refs, keep, fix_variance=True), oracle)[0, 1] > 0.93
    best = norm.cdf(1.0 / np.sqrt(2))  # AUC of the Neyman-Pearson test: Phi(shift / (sd sqrt 2)) = 0.760
    assert auc_score(scores, member) == pytest.approx(best, abs=0.03)
    assert auc_score(lira_online(target, refs, keep, fix_variance=True), member) == pytest.approx(best, abs=0.03)
    assert auc_score(lira_offline(target, refs, keep), member) == pytest.approx(best, abs=0.03)
    # Without per-note calibration the note's own mean (spread 3) drowns the shift: Phi(1 / sqrt(2 * 10)).
    assert auc_score(target, member) == pytest.approx(norm.cdf(1 / np.sqrt(20)), abs=0.04)
    assert auc_score(scores, member) > auc_score(target, member) + 0.12


def test_rmia_offline_correction_exact():
    log_p = np.log(np.array([[0.2], [0.9]]))
    keep = np.array([[False], [True]])  # one OUT model (p = 0.2), one IN model
    assert np.exp(log_marginal(log_p, keep, offline=True, a=0.5))[0] == pytest.approx(0.5 * (1.5 * 0.2 + 0.5))
    assert np.exp(log_marginal(log_p, keep, offline=True, a=1.0))[0] == pytest.approx(0.2)
    assert np.exp(log_marginal(log_p, keep, offline=False))[0] == pytest.approx(0.55)
    # gamma = 1: a candidate's score is the share of population ratios below its own.
    scores = rmia_scores(np.log([0.5, 0.1]), np.log([[0.25, 0.1]]), np.array([[False, False]]), offline=True, a=1.0,
                         pop_target=np.log([0.1, 0.15, 0.3, 0.4]), pop_refs=np.log([[0.1, 0.1, 0.1, 0.1]]))
    np.testing.assert_allclose(scores, [0.5, 0.0])  # LR 2 beats z with LR 1 and 1.5; LR 1 beats none


# ---------------------------------------------------------------- an overfit toy head


def _toy_head_logits(h, y, seed, steps=2000, lr=1.0):
    """A head with a frozen random ReLU layer and a trained multi-label logistic output layer (full-batch GD)."""
    rng = np.random.default_rng(seed)
    w, b = rng.normal(scale=0.01, size=(h.shape[1], y.shape[1])), np.zeros(y.shape[1])
    for _ in range(steps):
        g = (1 / (1 + np.exp(-(h @ w + b))) - y) / len(h)
        w, b = w - lr * h.T @ g, b - lr * g.sum(0)
    return lambda hh: hh @ w + b


def test_overfit_toy_head_lira_and_rmia_beat_the_loss_attack():
    rng = np.random.default_rng(0)
    n, d, c = 400, 8, 3
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(d, c)) > 0).astype(float)
    hard = rng.random(n) < 0.5  # half the notes carry random codes: only memorisation fits them
    y[hard] = rng.random((hard.sum(), c)) < 0.5
    h = np.maximum(x @ (rng.normal(size=(d, 256)) / np.sqrt(d)), 0.0)
    member = rng.permutation(n) < n // 2
    target = _toy_head_logits(h[member], y[member], 1)(h)
    keep = reference_keep(16, n, seed=2)
    refs = np.stack([_toy_head_logits(h[k], y[k], 10 + j)(h) for j, k in enumerate(keep)])
    scores = membership_scores(MembershipView(target, y, refs, keep))
    m = {k: membership_metrics(s, member, n_boot=100) for k, s in scores.items()}
    assert m["lira_online"]["auc"]["value"] > 0.85
    assert m["loss"]["auc"]["value"] > 0.8  # the head is overfit: even the loss attack sees it, but not at low FPR
    loss_tpr = m["loss"]["tpr_at_1pct_fpr"]["value"]
    assert loss_tpr < 0.05
    for attack, margin in (("lira_online", 0.1), ("lira_offline", 0.05), ("rmia_online", 0.1), ("rmia_offline", 0.1)):
        assert m[attack]["tpr_at_1pct_fpr"]["value"] > loss_tpr + margin, attack


# ---------------------------------------------------------------- named errors


def _view(**kw):
    rng = np.random.default_rng(0)
    args = dict(target_logits=rng.normal(size=(6, 2)), labels=rng.integers(0, 2, (6, 2)),
                ref_logits=rng.normal(size=(2, 6, 2)), ref_keep=reference_keep(2, 6, seed=0))
    return MembershipView(**{**args, **kw})


def test_named_errors():
    with pytest.raises(NoReferenceModelsError, match="train reference models first"):
        _view(ref_logits=np.zeros((0, 6, 2)), ref_keep=np.zeros((0, 6), bool))
    with pytest.raises(NoReferenceModelsError, match=r"\[n_refs >= 1, 4\]"):
        lira_online(np.zeros(4), np.zeros((0, 4)), np.zeros((0, 4), bool))
    with pytest.raises(MembershipInputError, match=r"must both be \[n_refs, 4\]"):
        lira_online(np.zeros(4), np.zeros((2, 5)), np.zeros((2, 5), bool))
    with pytest.raises(MembershipInputError, match=r"ref_logits must end in the labels' shape \(6, 2\)"):
        _view(ref_logits=np.zeros((2, 6, 3)))
    with pytest.raises(MembershipInputError, match="NaN"):
        _view(target_logits=np.full((6, 2), np.nan))
    with pytest.raises(MembershipInputError, match="NaN"):
        membership_metrics(np.array([np.nan, 1.0]), np.array([True, False]))


def test_a_view_refuses_the_membership_truth():
    with pytest.raises(ThreatModelError, match="only the scoring side"):
        _view(settings={"members": np.ones(6, bool)})
    with pytest.raises(ThreatModelError, match="membership truth"):
        _view(ref_keep=np.ones(6, bool))


def test_reference_counts():
    keep = reference_keep(6, 50, seed=3)
    assert (keep.sum(axis=0) == 3).all()  # every candidate IN for exactly half
    assert reference_keep(3, 5, seed=0, online=False).shape == (3, 5)  # offline: any n_refs >= 1
    for bad, online in ((0, False), (-2, True), (3, True), (1, True)):
        with pytest.raises(NoReferenceModelsError, match="n_refs must be"):
            reference_keep(bad, 5, seed=0, online=online)
    with pytest.raises(NoReferenceModelsError, match="no OUT reference"):
        lira_offline(np.zeros(2), np.zeros((1, 2)), np.ones((1, 2), bool))


# ---------------------------------------------------------------- the battery on a tiny federated run


def _tiny_run(dp: str = "none"):
    """A FederationRun of 2 clients x 12 notes (8-dim features, 3 codes), its final model from 1 round."""
    from types import SimpleNamespace

    from fedicd.attack_runs.federation import FederationRun
    from fedicd.federated.config import FedConfig
    from fedicd.privacy.config import PrivacyConfig
    from fedicd.run_plan import PrivacyPlan
    from fedicd.secure.config import SecureAggConfig
    from fedicd.train_config import TrainConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    y = (rng.random((40, 3)) < 0.4).astype(np.float32)
    privacy = (PrivacyPlan(dp="client", clip=1.0, noise_multiplier=0.5, sampled_clients=2, population=2)
               if dp == "client" else PrivacyPlan())
    train = TrainConfig(mode="federated", hidden=(16,), batch_size=8, seed=0)
    plan = SimpleNamespace(train=train, federated=FedConfig(rounds=1, engine="inprocess"), privacy=privacy,
                           secure=SecureAggConfig(), n_clients=2, input_dim=8, n_labels=3, seed=0,
                           privacy_config=PrivacyConfig())
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = {k: v.numpy().copy() for k, v in train.build(8, 3).state_dict().items()}
    feats = {"x_train": x[:24], "y_train": y[:24], "x_val": x[24:32], "y_val": y[24:32], "x_test": x[32:],
             "y_test": y[32:]}
    return FederationRun(None, plan, feats, [np.arange(12), np.arange(12, 24)], np.zeros(8), np.ones(8), state)


@pytest.mark.parametrize("dp", ["none", "client"])
def test_battery_reports_every_attack_and_target(dp, tmp_path):
    from attacks.report import AttackReport
    from fedicd.attack_runs.membership import battery_membership

    reports = battery_membership(_tiny_run(dp), seed=1, quick=True, out=tmp_path if dp == "none" else None)
    assert [(r.settings["target"], r.settings["attack"]) for r in reports] == [
        (t, a) for t in ("global", "client") for a in ("lira_online", "lira_offline", "rmia_online", "rmia_offline")]
    for r in reports:
        assert isinstance(r, AttackReport) and r.attack == "membership_inference"
        assert set(r.metrics) == {"auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr"}
        assert {"loss_auc", "random_auc", "loss_tpr_at_1pct_fpr"} <= set(r.baselines)
        assert r.settings["n_refs"] == 4 and r.settings["defence"]["dp"] == dp
        for m in r.metrics.values():  # percentile intervals need not hold the point, but lie in [0, 1] in order
            assert 0.0 <= m["ci_low"] <= m["ci_high"] <= 1.0 and 0.0 <= m["value"] <= 1.0
    g, c = reports[0].settings, reports[4].settings
    assert (g["n_members"], g["n_nonmembers"]) == (24, 16)
    assert (c["n_members"], c["n_nonmembers"]) == (12, 12)
    # 16 and 12 non-members: neither 0.1 % nor 1 % FPR allows a false positive, and the report says so.
    assert "TPR at 0.1 % and 1 % FPR means TPR with no false positive" in g["low_fpr_note"]
    if dp == "none":  # plotting once is enough (matplotlib is the slow part)
        assert (tmp_path / "membership_roc_global.png").stat().st_size > 1000
        assert (tmp_path / "membership_roc_client.png").exists()
        assert reports[0].settings["roc_png"] == str(tmp_path / "membership_roc_global.png")
    else:
        assert not list(tmp_path.iterdir()) and "roc_png" not in reports[0].settings


def test_low_fpr_note_names_the_levels_the_non_members_cannot_resolve():
    from fedicd.attack_runs.membership import _low_fpr_note

    assert _low_fpr_note(1000) == ""
    assert "TPR at 0.1 % FPR means" in _low_fpr_note(184) and "and 1 %" not in _low_fpr_note(184)
    assert "0.1 % and 1 % FPR" in _low_fpr_note(84)


def test_reference_heads_train_only_on_their_half_and_restore_torch_threads(monkeypatch):
    import torch

    from fedicd.attack_runs import membership as mod

    seen = []
    real = mod._local_round

    def spy(run, state, x, y, **kw):
        seen.append(x.copy())
        return real(run, state, x, y, **kw)

    monkeypatch.setattr(mod, "_local_round", spy)
    run = _tiny_run()
    x = np.concatenate([run.features["x_train"], run.features["x_val"]])
    y = np.concatenate([run.features["y_train"], run.features["y_val"]])
    keep = reference_keep(4, len(x), seed=5)
    threads = torch.get_num_threads()
    with mod._one_thread():
        assert torch.get_num_threads() == 1
        mod.train_reference_heads(run, x, y, keep, seed=0, start=run.final_state)
    assert torch.get_num_threads() == threads
    assert len(seen) == 4
    for rows, got in zip(keep, seen):  # reference j sees exactly x[keep[j]]: an OUT note never reaches it
        np.testing.assert_array_equal(got, x[rows])


def test_battery_refuses_options_it_cannot_run():
    from fedicd.attack_runs.membership import MembershipConfigError, battery_membership
    from fedicd.errors import ConfigError

    assert issubclass(MembershipConfigError, ConfigError)
    run = _tiny_run()
    with pytest.raises(MembershipConfigError, match="n_refs must be an even integer >= 2"):
        battery_membership(run, n_refs=3)
    with pytest.raises(MembershipConfigError, match="unknown membership option"):
        battery_membership(run, n_ref=4)
    with pytest.raises(MembershipConfigError, match=r"client must be in \[0, 2\)"):
        battery_membership(run, quick=True, client=5)
    from types import SimpleNamespace

    run.plan.secure = SimpleNamespace(enabled=True, method="secagg+")
    with pytest.raises(MembershipConfigError, match="hides single client updates"):
        battery_membership(run, quick=True, targets=("client",))


def test_client_level_clipping_matches_flower():
    from fedicd.attack_runs.membership import _clipped

    big = {"w": np.full((2, 2), 3.0), "b": np.array([4.0])}  # L2 norm sqrt(4 * 9 + 16) = sqrt(52)
    out = _clipped(big, 1.0)
    assert np.sqrt(sum((v ** 2).sum() for v in out.values())) == pytest.approx(1.0)
    np.testing.assert_allclose(out["w"] / out["b"][0], big["w"] / 4.0)  # direction kept
    small = {"w": np.array([0.1])}
    assert _clipped(small, 1.0)["w"][0] == pytest.approx(0.1)
