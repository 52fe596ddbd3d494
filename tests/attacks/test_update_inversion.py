"""Update inversion: exact analytic recovery, trap weights, the server's view and its named errors, the chain.

Random arrays only (no encoder). The client's step is torch SGD / AdamW on a head shaped like fedicd's MLP
(``net.0`` Linear → ReLU → Dropout → Linear), and once fedicd's own ``local_train`` (the glue).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from attacks.threat import ThreatModelError
from attacks.update_inversion import (AnalyticConfig, EmptyUpdateError, LocalRecipe, NameGuesser,
                                      NonFiniteUpdateError, TrapConfig, UpdateShapeError, UpdateView,
                                      activation_rate, craft_trap, deduplicate, estimate_scaler, match_to_truth,
                                      raw_candidates, recover_inputs, recovery_scores, score_views, text_scores,
                                      to_raw)

D, H, C = 32, 256, 6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These layers are tiny: one thread is ~5x faster than two on a shared 2-core machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Head(nn.Module):
    def __init__(self, d: int = D, h: int = H, c: int = C):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.Identity(), nn.ReLU(), nn.Dropout(0.1), nn.Linear(h, c))

    def forward(self, x):
        return self.net(x)


def global_state(seed: int = 1) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    return {k: v.detach().numpy().copy() for k, v in Head().state_dict().items()}


def local_step(state, x, y, *, opt="sgd", lr=0.1, wd=1e-5, steps=1, batch=None, seed=0):
    """The client's local training (``steps`` passes over ``x`` in batches of ``batch``); returned weights."""
    torch.manual_seed(seed)
    m = Head()
    m.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    o = torch.optim.SGD(m.parameters(), lr=lr, weight_decay=wd) if opt == "sgd" else \
        torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
    m.train()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(steps):
        for idx in torch.arange(len(x)).split(batch or len(x)):
            o.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(m(xt[idx]), yt[idx]).backward()
            o.step()
    return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)).astype(np.float32), (rng.random((n, C)) < 0.3).astype(np.float32)


def fraction(n: int, *, trap: bool, seed: int = 0) -> float:
    """Fraction of a batch of ``n`` recovered at cosine > 0.99 from one SGD step, averaged over 3 batches."""
    sent = global_state()
    aux, _ = data(400, seed=99)
    out = []
    for k in range(3):
        x, y = data(n, seed=seed + k)
        s = craft_trap(sent, aux, TrapConfig(target_batch=n, seed=k)) if trap else sent
        view = UpdateView(sent=s, returned=local_step(s, x, y), recipe=LocalRecipe("sgd", 0.1, 1e-5))
        out.append(np.mean(recovery_scores(recover_inputs(view).candidates, x)["recovered"]))
    return float(np.mean(out))


def test_exact_recovery_at_batch_one_from_one_sgd_step():
    x, y = data(1)
    sent = global_state()
    view = UpdateView(sent=sent, returned=local_step(sent, x, y, wd=1e-2), recipe=LocalRecipe("sgd", 0.1, 1e-2))
    rec = recover_inputs(view)
    cos, _ = match_to_truth(rec.candidates, x)
    assert cos[0] > 0.9999
    assert rec.n_candidates == 1  # every active unit gives the same vector: de-duplicated to one
    np.testing.assert_allclose(rec.candidates[0], x[0], rtol=1e-3, atol=1e-3)


def test_weight_decay_is_undone_only_with_the_recipe():
    x, y = data(1)
    sent = global_state()
    returned = local_step(sent, x, y, wd=0.5)
    with_recipe = recover_inputs(UpdateView(sent=sent, returned=returned, recipe=LocalRecipe("sgd", 0.1, 0.5)))
    without = recover_inputs(UpdateView(sent=sent, returned=returned))
    assert match_to_truth(with_recipe.candidates, x)[0][0] > 0.9999
    assert match_to_truth(without.candidates, x)[0][0] < 0.99


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
def test_batch_one_recovery_is_exact_for_any_input(seed, scale):
    x, y = data(1, seed=seed)
    x = x * np.float32(scale)
    sent = global_state()
    view = UpdateView(sent=sent, returned=local_step(sent, x, y), recipe=LocalRecipe("sgd", 0.1, 1e-5))
    assert match_to_truth(recover_inputs(view).candidates, x)[0][0] > 0.9999


def test_recovery_falls_with_batch_size_and_trap_weights_raise_it():
    passive = {n: fraction(n, trap=False) for n in (1, 8, 64)}
    trap = {n: fraction(n, trap=True) for n in (8, 64)}
    assert passive[1] == 1.0
    assert passive[1] > passive[8] + 0.05 > passive[64] + 0.3
    assert trap[8] >= passive[8] + 0.05
    assert trap[64] > passive[64] + 0.3


def test_trap_bias_is_calibrated_to_the_target_batch():
    aux, _ = data(2000, seed=5)
    fresh, _ = data(2000, seed=6)
    for b in (4, 32):
        state = craft_trap(global_state(), aux, TrapConfig(target_batch=b))
        assert abs(activation_rate(state, fresh) - 1 / b) < 0.25 / b
    assert activation_rate(global_state(), fresh) > 0.3  # the honest layer fires for about half


def test_negative_scaling_silences_units_only_on_non_negative_inputs():
    """Boenisch et al.'s trap rows: on pixels (>= 0) most units go quiet; on standardised inputs nothing changes."""
    zero_bias = {**global_state(), "net.0.bias": np.zeros(H, np.float32)}
    rng = np.random.default_rng(0)
    pixels = rng.random((2000, D))
    rates = {s: activation_rate(craft_trap(zero_bias, None, TrapConfig(negative_scale=s, calibrate_bias=False)),
                                pixels) for s in (1.0, 2.0, 4.0)}
    assert abs(rates[1.0] - 0.5) < 0.05
    assert rates[2.0] < 0.2 and rates[4.0] < 0.05
    centred = craft_trap(zero_bias, None, TrapConfig(negative_scale=4.0, calibrate_bias=False))
    assert abs(activation_rate(centred, pixels - 0.5) - 0.5) < 0.05


def test_batchnorm_after_the_first_layer_cancels_the_bias_gradient():
    """BatchNorm (deep_mlp's default) removes the batch mean, so g_b is ~0 and no sample is recovered; LayerNorm
    keeps batch 1 exact."""
    for norm, n, expect in ((nn.BatchNorm1d(H), 8, 0.0), (nn.LayerNorm(H), 1, 1.0)):
        torch.manual_seed(1)
        m = Head()
        m.net[1] = norm
        sent = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
        x, y = data(n)
        o = torch.optim.SGD(m.parameters(), lr=0.1)
        nn.functional.binary_cross_entropy_with_logits(m(torch.as_tensor(x)), torch.as_tensor(y)).backward()
        o.step()
        returned = {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
        view = UpdateView(sent=sent, returned=returned)
        if expect == 0.0:
            assert np.abs(view.gradients()[1]).max() < 1e-2 * np.abs(view.gradients()[0]).max()  # float32 rounding only
        assert np.mean(recovery_scores(recover_inputs(view).candidates, x)["recovered"]) == expect


def test_adamw_one_step_gives_signs_not_inputs():
    x, y = data(1)
    sent = global_state()
    view = UpdateView(sent=sent, returned=local_step(sent, x, y, opt="adamw", lr=1e-3),
                      recipe=LocalRecipe("adamw", 1e-3, 1e-5))
    cos = match_to_truth(recover_inputs(view).candidates, x)[0][0]
    assert cos < 0.95  # the ratio is about sign(x): cosine near sqrt(2/pi) ~ 0.8 for Gaussian inputs
    assert cos > 0.6


def test_one_epoch_of_sgd_recovers_less_than_one_step():
    x, y = data(16, seed=3)
    sent = global_state()
    step = UpdateView(sent=sent, returned=local_step(sent, x[:8], y[:8]))
    epoch = UpdateView(sent=sent, returned=local_step(sent, x, y, batch=1, steps=3))
    f_step = np.mean(recovery_scores(recover_inputs(step).candidates, x[:8])["recovered"])
    f_epoch = np.mean(recovery_scores(recover_inputs(epoch).candidates, x)["recovered"])
    assert f_step >= 0.75  # one step of 8: most samples isolated
    assert f_step - f_epoch > 0.5  # 48 steps at drifting weights: each unit's ratio mixes many samples


def test_aggregate_of_two_single_sample_clients():
    sent = global_state()
    (x1, y1), (x2, y2) = data(1, seed=1), data(1, seed=2)
    avg = {k: 0.5 * (local_step(sent, x1, y1)[k] + local_step(sent, x2, y2)[k]) for k in sent}
    view = UpdateView(sent=sent, returned=avg, n_clients=2)
    cos, _ = match_to_truth(recover_inputs(view).candidates, np.concatenate([x1, x2]))
    assert (cos > 0.999).all()


def test_view_refuses_client_rows_and_labels():
    sent = global_state()
    x, y = data(2)
    with pytest.raises(ThreatModelError, match="x_train"):
        UpdateView(sent=sent, returned=sent, x_train=x)
    with pytest.raises(ThreatModelError, match="labels"):
        UpdateView(sent=sent, returned=sent, labels=y)
    with pytest.raises(ThreatModelError, match="not parameters the server sent"):
        UpdateView(sent=sent, returned={**sent, "client_rows": x})


def test_missing_or_misshaped_first_layer_is_named():
    sent = global_state()
    no_layer = {k: v for k, v in sent.items() if not k.startswith("net.0")}
    with pytest.raises(UpdateShapeError, match="net.0.weight"):
        UpdateView(sent=no_layer, returned=no_layer)
    with pytest.raises(UpdateShapeError, match=r"returned\['net.0.weight'\] has shape \(256, 31\)"):
        UpdateView(sent=sent, returned={**sent, "net.0.weight": sent["net.0.weight"][:, :-1]})
    bad_bias = {**sent, "net.0.bias": np.zeros(3)}
    with pytest.raises(UpdateShapeError, match=r"\[h, d\].*\[h\]"):
        UpdateView(sent=bad_bias, returned=bad_bias)


def test_nan_and_zero_updates_are_named():
    sent = global_state()
    nan = {k: v.copy() for k, v in sent.items()}
    nan["net.0.bias"][3] = np.nan
    with pytest.raises(NonFiniteUpdateError, match=r"returned\['net.0.bias'\] holds NaN"):
        UpdateView(sent=sent, returned=nan)
    with pytest.raises(EmptyUpdateError, match="zero update"):
        recover_inputs(UpdateView(sent=sent, returned=sent))


def test_recipe_and_configs_check_their_fields():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        LocalRecipe("adam")
    with pytest.raises(ValueError, match="lr must be"):
        LocalRecipe("sgd", lr=0.0)
    with pytest.raises(ValueError, match="rel_tol"):
        AnalyticConfig(rel_tol=1.5)
    with pytest.raises(ValueError, match="target_batch"):
        TrapConfig(target_batch=0)
    with pytest.raises(ValueError, match="aux_inputs"):
        craft_trap(global_state(), None, TrapConfig())


def test_scaler_known_and_estimated():
    rng = np.random.default_rng(0)
    mean, scale = rng.standard_normal(D), rng.random(D) + 0.5
    raw_aux = rng.standard_normal((5000, D)) * scale + mean
    x, y = data(1)
    sent = global_state()
    view = UpdateView(sent=sent, returned=local_step(sent, x, y), scaler_mean=mean, scaler_scale=scale)
    rec = recover_inputs(view)
    np.testing.assert_allclose(raw_candidates(rec, view)[0], x[0] * scale + mean, rtol=1e-3, atol=1e-3)
    est = raw_candidates(rec, view, scaler="estimated", aux_raw=raw_aux)[0]
    assert np.abs(est - (x[0] * scale + mean)).max() < 0.2
    m, s = estimate_scaler(raw_aux)
    np.testing.assert_allclose(to_raw((raw_aux[:3] - m) / s, m, s), raw_aux[:3], rtol=1e-5, atol=1e-5)
    with pytest.raises(ThreatModelError, match="no scaler statistics"):
        raw_candidates(rec, UpdateView(sent=sent, returned=view.returned))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), copies=st.integers(1, 4), seed=st.integers(0, 1000))
def test_deduplicate_keeps_one_per_direction(n, copies, seed):
    base = np.random.default_rng(seed).standard_normal((n, 16)) + 0.0
    x = np.concatenate([base * (i + 1) for i in range(copies)])  # the same directions, rescaled
    assert sorted(deduplicate(x, 0.999).tolist()) == list(range(n))


def test_chain_scores_words_and_planted_names():
    class Planted:
        def __init__(self, first, last):
            self.first_name, self.last_name, self.mrn = first, last, "123 4567"

    best = np.array([0, -1])
    per = text_scores([{"fever", "silas", "castellanos"}], best, ["Silas Castellanos has fever", "cough"],
                      identifiers=[Planted("Silas", "Castellanos"), Planted("Ana", "Ruiz")])
    assert per["word_f1"] == [pytest.approx(2 * 0.75 / 1.75), 0.0]
    assert per["full_name_recovered"] == [1.0, 0.0]
    assert per["mrn_recovered"] == [0.0, 0.0]


def test_name_guesser_reads_names_off_recovered_vectors():
    rng = np.random.default_rng(0)
    firsts, lasts = ["ana", "bo", "cy"], ["ruiz", "lee"]
    f_vec, l_vec = rng.standard_normal((3, D)), rng.standard_normal((2, D))
    fi, li = rng.integers(0, 3, 300), rng.integers(0, 2, 300)
    raw = f_vec[fi] + l_vec[li] + 0.1 * rng.standard_normal((300, D))
    guesser = NameGuesser(raw[:250], [firsts[i] for i in fi[:250]], [lasts[i] for i in li[:250]])
    guesses = guesser(raw[250:])
    assert all(g == {firsts[a], lasts[b]} for g, a, b in zip(guesses, fi[250:], li[250:]))


def test_score_views_pools_updates_and_scores_an_empty_update_as_missed():
    sent = global_state()
    x, y = data(2)
    views = [(UpdateView(sent=sent, returned=local_step(sent, x[:1], y[:1])), x[:1], [(0, 0)]),
             (UpdateView(sent=sent, returned=sent), x[1:], [(0, 1)])]
    per = score_views(views)
    assert per["recovered"] == [1.0, 0.0]
    assert per["cosine"][1] == 0.0


def test_glue_recovers_exactly_from_fedicds_own_local_training():
    from fedicd.attack_runs.update_inversion import RoundSetting, client_update, observe_round
    from fedicd.train_config import TrainConfig

    cfg = TrainConfig(mode="federated", head="mlp", hidden=(64,), dropout=0.1)
    torch.manual_seed(0)
    state = {k: v.detach().numpy().copy() for k, v in cfg.build(D, C).state_dict().items()}
    x, y = data(4)
    returned = client_update(state, x[:1], y[:1], cfg, optimizer="sgd", lr=0.1, batch_size=1, seed=0)
    view = UpdateView(sent=state, returned=returned, recipe=LocalRecipe("sgd", 0.1, cfg.weight_decay))
    assert match_to_truth(recover_inputs(view).candidates, x[:1])[0][0] > 0.9999
    scaler = (np.zeros(D), np.ones(D))
    clipped = observe_round(state, [(x, y)], cfg, RoundSetting(batch_size=1, lr=0.1, defence="dp_client", clip=1e-3),
                            scaler=scaler)
    assert len(clipped) == 4
    assert np.mean(score_views(clipped)["recovered"]) == 1.0  # clipping rescales the update: the ratio survives


def test_glue_scores_only_the_attacked_client_of_an_aggregate():
    from fedicd.attack_runs.update_inversion import RoundSetting, observe_round
    from fedicd.errors import ConfigError
    from fedicd.train_config import TrainConfig

    cfg = TrainConfig(mode="federated", head="mlp", hidden=(64,), dropout=0.1)
    torch.manual_seed(0)
    state = {k: v.detach().numpy().copy() for k, v in cfg.build(D, C).state_dict().items()}
    clients = [data(2, seed=1), data(2, seed=2), data(2, seed=3)]
    scaler = (np.zeros(D), np.ones(D))
    views = observe_round(state, clients, cfg, RoundSetting(batch_size=1, lr=0.1, defence="ckks"), scaler=scaler)
    assert len(views) == 2
    for view, truth, rows in views:
        assert view.n_clients == 3 and truth.shape == (1, D) and rows[0][0] == 0
        assert any(np.array_equal(truth[0], clients[0][0][i]) for i in range(2))
    with pytest.raises(ConfigError, match="needs the round's clients"):
        observe_round(state, clients[:1], cfg, RoundSetting(defence="secagg_plus"), scaler=scaler)


def test_glue_aggregates_and_refuses_unknown_defences():
    from fedicd.attack_runs.update_inversion import RoundSetting, secagg_average, weighted_average
    from fedicd.errors import ConfigError

    rng = np.random.default_rng(0)
    states = [{"w": rng.standard_normal((4, 3)) * 0.1} for _ in range(3)]
    exact = weighted_average(states, [10, 20, 30])
    np.testing.assert_allclose(exact["w"], (10 * states[0]["w"] + 20 * states[1]["w"] + 30 * states[2]["w"]) / 60)
    quantised = secagg_average(states, [10, 20, 30], clipping_range=8.0, quantization_range=2**22, seed=1)
    step = 2 * 8.0 / 2**22  # one quantisation level per client, divided by the summed weights (< 3 levels)
    assert np.abs(quantised["w"] - exact["w"]).max() < 3 * step / (60 / 30) + 1e-12
    assert np.abs(quantised["w"] - exact["w"]).max() > 0  # Flower's stochastic rounding leaves a trace
    with pytest.raises(ConfigError, match="defence must be one of"):
        RoundSetting(defence="homomorphic")
    with pytest.raises(ConfigError, match="mode must be 'step' or 'epoch'"):
        RoundSetting(mode="round")


@pytest.mark.parametrize(("method", "defence"), [("secagg+", "secagg_plus"), ("ckks", "ckks"), ("none", "none")])
def test_battery_reads_fedicds_secure_method_names(method, defence):
    """A run staged with ``secure_aggregation.method = "secagg+"`` is attacked through the aggregate, not as a
    single client's update (fedicd names the method ``secagg+``)."""
    from types import SimpleNamespace

    from fedicd.attack_runs.update_inversion import _battery_setting
    from fedicd.run_plan import PrivacyPlan
    from fedicd.train_config import TrainConfig

    fed = SimpleNamespace(local_lr=0.0, rounds=3, local_epochs=1, local_optimizer="sgd")
    plan = SimpleNamespace(privacy=PrivacyPlan(), secure=SimpleNamespace(method=method), federated=fed,
                           train=TrainConfig(batch_size=8))
    run = SimpleNamespace(plan=plan, clients=[np.arange(3)] * 4)
    setting, dp, observed = _battery_setting(run, 0, seed=0)
    assert setting.defence == defence and dp is None
    assert observed == ("single client update" if method == "none" else "average of 4 clients")


def test_a_client_smaller_than_a_batch_trains_on_one_batch_of_all_its_rows():
    """fedicd's local loop gives such a client one batch of every row; the battery must observe that step
    (it used to observe nothing and report no metric)."""
    from fedicd.attack_runs.update_inversion import RoundSetting, _batches

    (only,) = _batches(20, RoundSetting(batch_size=64, mode="step"), max_rows=64)
    assert sorted(only.tolist()) == list(range(20))
    assert [len(b) for b in _batches(100, RoundSetting(batch_size=32, mode="step"), max_rows=64)] == [32, 32]
