"""SecAgg+ through Flower's own workflow and mod: exact-within-bound FedAvg, dropout tolerance, halted rounds.

One simulation (5 clients, on fedicd's in-process grid, which delivers Flower's messages and a raising ClientApp's
error replies as Flower's Ray simulation does; tests/federated/test_inprocess.py runs SecAgg+ rounds on both and
compares them) runs eight SecAgg+ rounds from a single ServerApp:

1. everyone answers → the weighted FedAvg of all five clients (within the quantisation bound);
2. client 2 crashes in its train handler, i.e. after the key exchange → the average over the other four;
3. clients 0, 1 and 3 crash → 2 of 5 left, threshold 3 → ``SecAggDropoutError``, no aggregate;
4. everyone again → the clients' SecAgg+ state recovers after the halted round;
5. a coarse quantiser (Q = 2**10) → visibly inexact, yet inside the derived bound;
6. client 2 crashes in the key-sharing stage → Flower cannot recover it (its neighbours hold no shares of it):
   the round halts in the unmask stage, ``SecAggDropoutError`` again;
7. and 8. the coarse quantiser twice with the same rounding seed → bit-identical aggregates.

Round 1 goes the way fedicd's loop would: its strategy samples and configures, SecAgg+ aggregates, and the
strategy is fed the secure average as a single reply.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedicd.secure.secagg import SecAggDropoutError, secagg_train_round, strategy_reply
from fedicd.secure.secagg_client import secaggplus_client_mod
from fedicd.secure.secagg_config import SecAggPlusConfig

N_CLIENTS = 5
SA = SecAggPlusConfig(num_shares=5, reconstruction_threshold=3, max_weight=100.0, timeout=60.0)
COARSE = SecAggPlusConfig(num_shares=5, reconstruction_threshold=3, max_weight=100.0, quantization_range=2**10,
                          timeout=60.0)
GLOBAL = {"w": np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(6, 4), "b": np.full(4, 0.25, np.float32)}


def weight(pid: int) -> int:
    return 10 * (pid + 1)


def delta(pid: int) -> dict[str, np.ndarray]:
    """Client ``pid``'s update: a constant ``pid`` plus seeded noise in [-0.5, 0.5)."""
    rng = np.random.default_rng(pid)
    return {k: (pid + rng.uniform(-0.5, 0.5, v.shape)).astype(np.float32) for k, v in GLOBAL.items()}


def client_arrays(pid: int) -> dict[str, np.ndarray]:
    return {k: GLOBAL[k] + d for k, d in delta(pid).items()}


def crash_in_key_sharing(msg: Message, context: Context, call_next) -> Message:
    """Round 6 only: client 2 fails Flower's 'share_keys' stage (before any training)."""
    stage = msg.content.config_records.get("secaggplus_configs", {}).get("stage")
    if msg.metadata.group_id == "6" and stage == "share_keys" and int(context.node_config["partition-id"]) == 2:
        raise RuntimeError("client 2: simulated crash while sharing keys")
    return call_next(msg, context)


def make_client_app() -> ClientApp:
    app = ClientApp()

    @app.train(mods=[crash_in_key_sharing, secaggplus_client_mod])
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        config = msg.content["config"]
        if pid in list(config.get("crash-partitions", [])):
            raise RuntimeError(f"client {pid}: simulated crash after the key exchange")
        received = {k: v.numpy() for k, v in msg.content["arrays"].items()}
        assert set(received) == set(GLOBAL) and int(config["server-round"]) >= 1
        arrays = {k: received[k] + d for k, d in delta(pid).items()}  # trained = global + this client's update
        metrics = {"num-examples": weight(pid), "partition-id": pid, "train_loss": float(pid)}
        return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                                   "metrics": MetricRecord(metrics)}), reply_to=msg)

    return app


ROUNDS = [(1, SA, []), (2, SA, [2]), (3, SA, [0, 1, 3]), (4, SA, []), (5, COARSE, []), (6, SA, []), (7, COARSE, []),
          (8, COARSE, [])]


def strategy_round(grid: Grid) -> tuple[dict, dict]:
    """Round 1 as fedicd's loop would run it: the strategy samples and configures, SecAgg+ aggregates,
    the strategy takes its step from the secure average (FedAvg: the average itself)."""
    from fedicd.federated.records import from_record, to_record
    from fedicd.strategies import build_strategy

    strategy = build_strategy("fedavg", fraction_train=1.0, min_available_nodes=N_CLIENTS, min_train_nodes=N_CLIENTS,
                              min_evaluate_nodes=1)
    messages = list(strategy.configure_train(1, to_record(GLOBAL), ConfigRecord({"crash-partitions": [-1]}), grid))
    config = messages[0].content["config"]
    new, info = secagg_train_round(grid, 1, GLOBAL, config, SA,
                                   node_ids=[m.metadata.dst_node_id for m in messages])
    agg, metrics = strategy.aggregate_train(1, [strategy_reply(messages[0], new, info)])
    info["strategy_arrays"], info["strategy_metrics"] = from_record(agg), dict(metrics)
    return new, info


def make_server_app(out: dict) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        deadline = time.monotonic() + 60
        while len(list(grid.get_node_ids())) < N_CLIENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        for rnd, cfg, crash in ROUNDS:
            try:
                if rnd == 1:
                    out[rnd] = strategy_round(grid)
                else:
                    out[rnd] = secagg_train_round(grid, rnd, GLOBAL, {"crash-partitions": crash}, cfg,
                                                  rounding_seed=42 if rnd >= 7 else None)
            except Exception as exc:  # noqa: BLE001 - the assertions below look at it
                out[rnd] = exc

    return app


@pytest.fixture(scope="module")
def rounds() -> dict:
    from fedicd.federated.inprocess import run_inprocess

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    out: dict = {}
    t0 = time.perf_counter()
    run_inprocess(make_server_app(out), make_client_app(), N_CLIENTS)
    out["seconds"] = time.perf_counter() - t0
    return out


def expected(pids: list[int]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(exact weighted average, per-entry spread max - min) over the clients ``pids``."""
    ws = np.array([weight(p) for p in pids], dtype=np.float64)
    stacks = {k: np.stack([client_arrays(p)[k].astype(np.float64) for p in pids]) for k in GLOBAL}
    avg = {k: np.tensordot(ws, s, axes=1) / ws.sum() for k, s in stacks.items()}
    return avg, {k: s.max(axis=0) - s.min(axis=0) for k, s in stacks.items()}


def check_within_bound(new: dict, pids: list[int], cfg: SecAggPlusConfig) -> float:
    avg, spread = expected(pids)
    worst = 0.0
    for k in GLOBAL:
        assert new[k].dtype == GLOBAL[k].dtype and new[k].shape == GLOBAL[k].shape
        err = np.abs(new[k].astype(np.float64) - avg[k])
        bound = cfg.error_bound([weight(p) for p in pids], spread[k], np.abs(avg[k]), dtype=np.float32)
        assert np.all(err <= bound), (k, float(err.max()), float(np.min(bound)))
        worst = max(worst, float(err.max()))
    return worst


def test_all_clients_give_the_weighted_fedavg_within_the_quantisation_bound(rounds):
    new, info = rounds[1]
    check_within_bound(new, list(range(N_CLIENTS)), SA)
    assert info["clients_sampled"] == info["survivors"] == N_CLIENTS and info["dropouts"] == 0
    assert info["num_shares"] == 5 and info["threshold"] == 3 and info["halted_stage"] is None
    assert info["weight_total"] == sum(weight(p) for p in range(N_CLIENTS)) and info["clipped_entries"] == 0
    assert info["metrics"]["train_loss"] == pytest.approx(sum(p * weight(p) for p in range(5)) / 150)
    assert info["bytes_sent"] > 0 and info["bytes_received"] > 0 and info["seconds"] > 0
    # fedicd's FedAvg (UpdateValidator-wrapped), fed the secure average as one reply, returns it unchanged
    assert all(np.array_equal(info["strategy_arrays"][k], new[k]) for k in GLOBAL)
    assert info["strategy_metrics"]["train_loss"] == pytest.approx(info["metrics"]["train_loss"])
    # the bound is tight enough to mean something: at Q = 2**22 it is below 1e-4 here
    assert SA.error_bound([weight(p) for p in range(5)], 1.0, 3.0) < 1e-4


def test_a_client_crashing_after_the_key_exchange_is_tolerated(rounds):
    new, info = rounds[2]
    check_within_bound(new, [0, 1, 3, 4], SA)
    assert info["clients_sampled"] == 5 and info["survivors"] == 4 and info["dropouts"] == 1
    assert info["active_per_stage"] == {"setup": 5, "share_keys": 5, "collect_masked_vectors": 4, "unmask": 4}
    assert any("simulated crash" in f for f in info["failures"])
    assert sorted(m["partition-id"] for m in info["client_metrics"]) == [0, 1, 3, 4]
    assert sorted(info["weights"]) == [10.0, 20.0, 40.0, 50.0]
    # not silently the all-client average: client 2's update (the mid-weight one) is out
    full, _ = expected(list(range(N_CLIENTS)))
    assert np.abs(new["w"] - full["w"]).max() > 1e-3


def test_too_many_dropouts_halt_the_round_with_a_named_error(rounds):
    err = rounds[3]
    assert isinstance(err, SecAggDropoutError) and isinstance(err, ValueError)
    info = err.info
    assert info["halted_stage"] == "collect_masked_vectors" and info["survivors"] == 0
    assert info["active_per_stage"]["collect_masked_vectors"] == 2 and info["clients_sampled"] == 5
    assert "no aggregate" in str(err) and "round 3" in str(err)
    assert sum("simulated crash" in f for f in info["failures"]) == 3


def test_a_client_lost_while_sharing_keys_halts_the_round(rounds):
    err = rounds[6]
    assert isinstance(err, SecAggDropoutError)
    assert err.info["halted_stage"] == "unmask" and err.info["active_per_stage"]["share_keys"] == 4
    assert "cannot be recovered" in str(err) and "share_keys" in str(err)


def test_the_next_round_works_again_after_a_halted_round(rounds):
    new, info = rounds[4]
    check_within_bound(new, list(range(N_CLIENTS)), SA)
    assert info["survivors"] == N_CLIENTS


def test_a_coarse_quantiser_is_inexact_but_inside_the_bound(rounds):
    new, _ = rounds[5]
    worst = check_within_bound(new, list(range(N_CLIENTS)), COARSE)
    assert worst > 1e-5  # the aggregate really went through the quantiser
    assert rounds["seconds"] < 90


def test_a_rounding_seed_makes_the_aggregate_reproducible(rounds):
    (a, _), (b, _) = rounds[7], rounds[8]
    check_within_bound(a, list(range(N_CLIENTS)), COARSE)
    assert all(np.array_equal(a[k], b[k]) for k in GLOBAL)


def test_config_is_validated_with_readable_messages():
    with pytest.raises(ValueError, match="must be smaller than num_shares = 5"):
        SecAggPlusConfig(num_shares=5, reconstruction_threshold=5)
    with pytest.raises(ValueError, match="must be >= 3"):
        SecAggPlusConfig(num_shares=2, reconstruction_threshold=0.5)
    with pytest.raises(ValueError, match="must be >= 2"):
        SecAggPlusConfig(num_shares=5, reconstruction_threshold=1)
    with pytest.raises(ValueError, match="lie in"):
        SecAggPlusConfig(num_shares=1.5)
    with pytest.raises(ValueError, match="max_weight"):
        SecAggPlusConfig(max_weight=0)
    with pytest.raises(ValueError, match="clipping_range"):
        SecAggPlusConfig(clipping_range=-1.0)
    with pytest.raises(ValueError, match="power of 2"):
        SecAggPlusConfig(quantization_range=2**10, modulus_range=3000)
    with pytest.raises(ValueError, match="timeout"):
        SecAggPlusConfig(timeout=0)
    with pytest.raises(ValueError, match="exceeds the 4 sampled clients"):
        SecAggPlusConfig(num_shares=5, reconstruction_threshold=3).check_round(4)
    with pytest.raises(ValueError, match="at least 2 sampled clients"):
        SecAggPlusConfig().check_round(1)
    with pytest.raises(ValueError, match="at least the largest client"):
        SecAggPlusConfig(max_weight=100).check_weights([10, 250])
    assert SecAggPlusConfig().resolved(10) == (10, 5)  # Flower's defaults here: everyone shares, half needed
