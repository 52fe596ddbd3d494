"""Threshold CKKS in fedicd's rounds (needs torch and Flower): the tiny 3-client run trains plain FedAvg's model,
a key holder lost in the decrypt stage ends that round with a QuorumError rejection and the model unchanged, and
sample-level DP-SGD composes with it. The run's parameters are the default ones (N = 8192, HEStd_128_classic)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr")

from tests.tiny_run import N_CLIENTS, stage_tiny_run  # noqa: E402

THRESHOLD = ['secure_aggregation.method="ckks-threshold"']
BASE = ["federated.rounds=3", "federated.fraction_evaluate=1.0", "train.hidden=[8]"]


def _run(run, overrides, **grid_kwargs):
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.federated.inprocess import run_inprocess
    from fedicd.runner.apps import make_client_app, make_server_app
    from fedicd.runner.results import finalize

    plan = stage_tiny_run(run, [*BASE, *overrides])
    run_inprocess(make_server_app(str(run)), make_client_app(str(run)), plan.n_clients, **grid_kwargs)
    ckpt = load_checkpoint(run)
    return finalize("tiny", run, plan, ckpt, 0.0), ckpt


@pytest.fixture(scope="module")
def plain_and_threshold(tmp_path_factory):
    return (_run(tmp_path_factory.mktemp("plain"), []),
            _run(tmp_path_factory.mktemp("threshold"), THRESHOLD))


def test_threshold_run_trains_plain_fedavg_model_every_round(plain_and_threshold):
    from fedicd.secure.threshold.messages import threshold_params
    from fedicd.secure.threshold.params import precision_bound

    (plain, plain_ckpt), (res, ckpt) = plain_and_threshold
    assert res["secure_aggregation"]["method"] == "ckks-threshold"
    assert [r["updated"] for r in res["history"]] == [True, True, True]
    assert [r["train_clients_aggregated"] for r in res["history"]] == [3.0] * 3
    assert [r["train_partial_decryptions"] for r in res["history"]] == [3.0] * 3
    # the weights are FedAvg's within the fixed-point bound, every round (the first round from the same model)
    params = threshold_params(N_CLIENTS, max(res["client_sizes"]))
    bound = precision_bound(params, N_CLIENTS, total_count=sum(res["client_sizes"]))
    for a, b in zip(plain["history"], res["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    drift = max(float(np.max(np.abs(plain_ckpt["arrays"][k] - ckpt["arrays"][k]))) for k in ckpt["arrays"])
    assert drift <= 50 * bound, (drift, bound)  # 3 rounds of local training amplify the per-round error
    # the replies carried no example count in the clear; the key chain is public and stays with the run
    assert not any(k.startswith("epsilon_client") for r in res["history"] for k in r)
    assert len({r["threshold_key"] for r in res["history"]}) == 1


def test_a_key_holder_lost_in_the_decrypt_stage_ends_the_round_unchanged(tmp_path):
    dropped = {}

    def silent(msg) -> bool:  # the first key holder asked to decrypt in round 2 never answers that round
        content = msg.content
        if msg.metadata.message_type != "query.threshold" or "threshold" not in content.config_records:
            return False
        cfg = content["threshold"]
        if cfg["stage"] != "decrypt" or int(cfg["round"]) != 2:
            return False
        dropped.setdefault("node", msg.metadata.dst_node_id)
        return msg.metadata.dst_node_id == dropped["node"]

    res, ckpt = _run(tmp_path / "run", THRESHOLD, unresponsive=silent)
    history = res["history"]
    assert [r["updated"] for r in history] == [True, False, True]
    assert history[1]["val_loss"] == history[0]["val_loss"]  # round 2 left the model as round 1 made it
    reasons = [r["reason"] for r in res["rejections"] if r["round"] == 2]
    assert any(r.startswith("QuorumError") and "are missing (2 of 3 arrived, 3 needed)" in r for r in reasons)
    assert history[1]["client_failures"] == 3 and history[1]["updates_rejected"] == 3


def test_sample_level_dp_sgd_composes_with_threshold_ckks(tmp_path):
    dp = ['privacy.dp="sample"', "privacy.noise=1.0", "federated.rounds=2"]
    plain, _ = _run(tmp_path / "plain", dp)
    res, _ = _run(tmp_path / "threshold", [*dp, *THRESHOLD])
    assert [r["updated"] for r in res["history"]] == [True, True]
    assert res["privacy"]["dp"] == "sample" and res["privacy"]["epsilon"] > 0
    assert res["privacy"]["epsilon"] == pytest.approx(plain["privacy"]["epsilon"])
    for a, b in zip(plain["history"], res["history"]):  # DP-SGD's noise is seeded: the same noisy updates
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_with_a_threshold_a_lost_key_holder_is_recovered_from_the_others_shares(tmp_path, plain_and_threshold,
                                                                              shamir):
    (plain, _), _ = plain_and_threshold
    dropped = {}

    def silent(msg) -> bool:  # one key holder never answers round 2's decrypt stage
        if msg.metadata.message_type != "query.threshold":
            return False
        cfg = msg.content["threshold"]
        if cfg["stage"] != "decrypt" or int(cfg["round"]) != 2:
            return False
        dropped.setdefault("node", msg.metadata.dst_node_id)
        return msg.metadata.dst_node_id == dropped["node"]

    res, _ = _run(tmp_path / "run", [*THRESHOLD, "secure_aggregation.threshold=2"], unresponsive=silent)
    assert [r["updated"] for r in res["history"]] == [True, True, True]
    assert res["history"][1]["train_partial_decryptions"] == 2.0  # the third part was recovered (2 of 3 shares)
    for a, b in zip(plain["history"], res["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)


def test_a_resumed_run_reuses_the_joint_key_and_a_lost_key_share_gets_a_new_one(tmp_path):
    import json
    import shutil

    from fedicd.federated.inprocess import run_inprocess
    from fedicd.run_plan import read_plan
    from fedicd.runner import apps
    from fedicd.secure.round_threshold import ThresholdAggregator

    run = tmp_path / "run"
    _run(run, [*THRESHOLD, "federated.rounds=1"])
    stored = json.loads((run / "threshold_keys.json").read_text())["key"]
    plan, keys = read_plan(run), []

    def main(grid, context):
        apps._SETUPS.clear()  # a restarted client process: the key share is read back from its state folder
        again = ThresholdAggregator(plan, run)
        again.ensure_keys(grid)
        keys.append(again.server.key_fp)
        shutil.rmtree(run / "clients" / "1" / "threshold")  # one client lost its share: a new joint key
        apps._SETUPS.clear()
        fresh = ThresholdAggregator(plan, run)
        fresh.ensure_keys(grid)
        keys.append(fresh.server.key_fp)

    run_inprocess(main, apps.make_client_app(str(run)), plan.n_clients)
    assert keys[0] == stored and keys[1] != stored
    assert json.loads((run / "threshold_keys.json").read_text())["key"] == keys[1]
