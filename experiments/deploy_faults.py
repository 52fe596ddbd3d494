"""Faults in a real Flower deployment on loopback: a SuperNode killed mid-round, the SuperLink restarted mid-run.

    python experiments/deploy_faults.py --out runs/deploy_faults

A tiny study (3 clients of 20 rows, 16-d vectors, 5 labels, FedAvg, 4 rounds, no client evaluation) staged as for
simulation, served by a SuperLink and 3 SuperNodes with TLS and node authentication
(:class:`fedicd.deploy.local.LocalFederation`):

1. **node crash**: SuperNode 2 is SIGKILLed (with its SuperExec and ClientApp) as it starts its round-2 ClientApp;
   the round must complete with the other two and record the failure (history ``client_failures``); the node is
   restarted once round 2 is checkpointed and must be sampled again in round 3.
2. **SuperLink restart**: the SuperLink (with its SuperExec and the run's ServerApp) is stopped once round 2 is
   checkpointed and node 0 has started its round-3 ClientApp (mid-round 3), then started again on the same
   ``--database``; the nodes reconnect by themselves, and ``flwr run``
   with the same study folder resumes from the checkpoint. Its final model is compared with an uninterrupted
   4-round simulation of the same study.

Writes ``<out>/faults.json`` and, with ``--results``, a copy (default experiments/results/deploy/faults.json).
Flower marks a silent node's messages failed after 2 missed heartbeats (30 s each, not configurable in 1.42),
which is why the crash round is long and why this is an experiment rather than a CI test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from fedicd.config import load_config
from fedicd.deploy.local import LocalFederation
from fedicd.deploy.study import prepare_study_from_run
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.data import stage_arrays
from fedicd.federated.site_data import client_data_path
from fedicd.partition import iid_partition
from fedicd.run_plan import write_plan
from fedicd.runner.simulation import simulate
from fedicd.runner.staging import build_plan

APP_DIR = Path(__file__).resolve().parents[1]
ROUNDS, N = 4, 3


def stage(run: Path, overrides: tuple[str, ...] = ()):
    """The tiny study (also experiments/deploy_audit.py's), ``overrides`` on top (rounds, CKKS …)."""
    cfg = load_config(None, ['train.mode="federated"', f"partition.n_clients={N}", 'federated.engine="inprocess"',
                             f"federated.rounds={ROUNDS}", "federated.fraction_evaluate=0.0",
                             "federated.node_wait_s=180", *overrides])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((108, 16), dtype=np.float32)
    y = (x[:, :5] > 0.3).astype(np.float32)
    cut = {"train": (0, 60), "val": (60, 84), "test": (84, 108)}
    partition = iid_partition([()] * 60, N, seed=0)
    stage_arrays(run, {p: x[a:b] for p, (a, b) in cut.items()}, {p: y[a:b] for p, (a, b) in cut.items()},
                 partition, iid_partition([()] * 24, N, seed=1))
    plan = build_plan(cfg, input_dim=16, n_labels=5, client_sizes=partition.sizes)
    write_plan(run, plan)
    return plan


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


def checkpoint_round(study: Path) -> int:
    try:
        return json.loads((study / "checkpoint" / "state.json").read_text())["round"]
    except (OSError, ValueError, KeyError):
        return 0


def rows(study: Path) -> list[dict]:
    ckpt = load_checkpoint(study)
    keep = ("round", "clients_sampled", "client_failures", "updates_rejected", "seconds")
    return [{k: (round(r[k], 2) if isinstance(r[k], float) else r[k]) for k in keep} for r in ckpt["history"]]


def node_crash(fed: LocalFederation, study: Path) -> dict:
    t0 = time.perf_counter()
    handle = fed.start_run(APP_DIR, study / "run-config.toml")
    # round 2's ClientApp of node 2: its second "Start `flwr-clientapp`" line
    wait_for(lambda: fed.logs("node-2").count("Start `flwr-clientapp` process") >= 2, 900, "node-2's round-2 app")
    during = checkpoint_round(study) + 1
    fed.kill_node(2)
    killed_at = time.perf_counter() - t0
    wait_for(lambda: checkpoint_round(study) >= during, 900, f"round {during} to be checkpointed")
    round_done_at = time.perf_counter() - t0
    fed.start_node(2)
    restarted_at = time.perf_counter() - t0
    result = fed.wait_run(handle, 1200)
    history = rows(study)
    rejoined = next((r["round"] for r in history if r["round"] > during and r["clients_sampled"] == N
                     and r["client_failures"] == 0), None)
    return {"returncode": result.returncode, "run_seconds": round(result.seconds, 1),
            "killed": {"node": "node-2", "partition_id": 2, "signal": "SIGKILL", "during_round": during,
                       "at_s": round(killed_at, 1)},
            "crash_round_checkpointed_at_s": round(round_done_at, 1),
            "failure_recorded_after_kill_s": round(round_done_at - killed_at, 1), "node_restarted_at_s": round(restarted_at, 1),
            "rejoined_in_round": rejoined, "history": history,
            "status": json.loads((study / "results.json").read_text())["outcome"]["status"]}


def superlink_restart(fed: LocalFederation, study: Path, simulated: dict) -> dict:
    t0 = time.perf_counter()
    first = fed.start_run(APP_DIR, study / "run-config.toml")
    wait_for(lambda: checkpoint_round(study) >= 2, 900, "round 2 to be checkpointed")
    at_round = checkpoint_round(study)
    started = fed.logs("node-0").count("Start `flwr-clientapp` process")  # then mid-round 3: node 0 training
    wait_for(lambda: fed.logs("node-0").count("Start `flwr-clientapp` process") > started, 900, "round 3's apps")
    fed.restart_superlink()
    restarted_at = time.perf_counter() - t0
    fed.stop_run(first)
    second = fed.run(APP_DIR, study / "run-config.toml", timeout_s=1200)
    history = rows(study)
    final = load_checkpoint(study)["arrays"]
    diff = max(float(np.abs(final[k] - simulated[k]).max()) for k in simulated)
    return {"returncode": second.returncode, "restarted": {"after_checkpoint_round": at_round,
                                                           "during_round": at_round + 1,
                                                           "at_s": round(restarted_at, 1)},
            "second_run_seconds": round(second.seconds, 1),
            "rounds_in_history": [r["round"] for r in history], "history": history,
            "resumed_from_round": at_round + 1, "total_s": round(time.perf_counter() - t0, 1),
            "final_vs_uninterrupted_simulation_max_abs_diff": diff,
            "status": json.loads((study / "results.json").read_text())["outcome"]["status"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/deploy_faults"))
    ap.add_argument("--results", type=Path, default=APP_DIR / "experiments" / "results" / "deploy" / "faults.json",
                    help="where to copy faults.json (--results none: nowhere)")
    args = ap.parse_args()
    out = args.out / f"faults-{int(time.time())}"
    run = out / "run"
    plan = stage(run)
    simulate(run, plan, verbose=False)
    simulated = load_checkpoint(run)["arrays"]
    crash_study, restart_study = out / "study-crash", out / "study-restart"
    prepare_study_from_run(run, crash_study)
    prepare_study_from_run(run, restart_study)
    nodes = [{"partition-id": i, "data-path": str(client_data_path(run, i)), "state-dir": str(out / f"state-{i}")}
             for i in range(N)]
    report = {"flower": "1.42", "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
                                            "python": platform.python_version()}}
    with LocalFederation(nodes, workdir=out / "federation", keep=True, env={"OMP_NUM_THREADS": "1"}) as fed:
        report["node_crash"] = node_crash(fed, crash_study)
        print(json.dumps(report["node_crash"], indent=1), flush=True)
        report["superlink_restart"] = superlink_restart(fed, restart_study, simulated)
        print(json.dumps(report["superlink_restart"], indent=1), flush=True)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    report["leftover_processes"] = fed.leftovers()
    (out / "faults.json").write_text(json.dumps(report, indent=2))
    if str(args.results) != "none":
        args.results.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "faults.json", args.results)
    print(f"written {out / 'faults.json'}")


if __name__ == "__main__":
    main()
