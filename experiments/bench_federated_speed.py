"""Wall time of a 20-client Flower simulation vs centralized training over the same sample passes.

    python experiments/bench_federated_speed.py --rounds 20                  # both engines
    python experiments/bench_federated_speed.py --rounds 20 --engine inprocess

The paper's scale, without the hours of embedding: random 768-d "embeddings"
for 14,000 training notes (20,000 notes x 70 %) with 1,085 sparse labels that
depend on them (so training does real work), the MLP head (950k parameters),
20 IID clients. Centralized: ``rounds`` epochs over the pooled rows, with
torch's default threads (one per core). Federated: ``rounds`` rounds x 1 local
epoch on every client (the same passes over every row), FedAvg,
fraction_evaluate 0.5 (client evaluation every round), the server's global
evaluation every round, a checkpoint every ``--checkpoint-every`` rounds
(default 1, the library's default), on

* ``inprocess``: fedicd's in-process grid, the clients one after another in
  this process, each with all the run's CPUs (``federated.client_cpus =
  total_cpus``, set explicitly here: the engine a user would pick on a small
  machine);
* ``ray``: Flower's simulation engine, one Ray worker per client CPU
  (``client_cpus = 1``: 2 clients at once on 2 CPUs).

The centralized run is timed before the first engine and after each (it varies
by ~30 % on a shared 2-core machine, far more under load): each ratio is the
federated time over the faster (and the slower) of those timings, measured in
one run. With the in-process engine all the work is in this process, so its
CPU seconds over the central run's (``cpu_ratio_to_central``) are also
reported: a measure that a loaded machine disturbs far less than wall time.
Where the federated time goes is timed per phase by wrapping the functions
that do the work (this script only: the library is unchanged); under Ray the
clients' phases run in worker processes and only the clients' own training
time (from their replies) is known. The load average of the machine is
recorded before and after. Prints a table and writes a JSON result
(``--json``, default experiments/results/speed/federated_speed.json).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from fedicd.config import load_config
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.data import stage_arrays
from fedicd.partition import iid_partition
from fedicd.run_plan import write_plan
from fedicd.runner.simulation import simulate
from fedicd.runner.staging import build_plan
from fedicd.train import TrainConfig, train_central

# (phase, module, attribute): what is timed where it is looked up (a missing name is skipped and reported)
PHASES = [
    ("server_encode_global", "fedicd.federated.rounds", "RoundAggregator.model_record"),
    ("train_exchange", "fedicd.federated.rounds", "RoundAggregator.train_round"),
    ("server_aggregation", "fedicd.federated.rounds", "PlainAggregator.aggregate"),
    ("client_eval_exchange", "fedicd.federated.server", "_evaluate_round"),
    ("server_global_eval", "fedicd.federated.server", "global_eval"),
    ("checkpoint_write", "fedicd.federated.server", "save_checkpoint"),
    # client side: in this process only with the in-process engine
    ("client_read_data", "fedicd.federated.client_handlers", "read_client_data"),
    ("client_decode_build_model", "fedicd.federated.client_handlers", "build_model"),
    ("client_local_training", "fedicd.federated.local", "local_train"),
    ("client_encode_update", "fedicd.federated.local", "to_record"),
    ("client_evaluate", "fedicd.federated.client_handlers", "evaluate_local"),
    ("engine_message_copies", "fedicd.federated.inprocess", "_copy_message"),
]


class PhaseClock:
    """Wall and CPU seconds (this process's) and calls of wrapped functions, by phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.missing: list[str] = []
        self._undo: list[tuple[object, str, object]] = []

    def wrap(self, phase: str, module: str, attr: str) -> None:
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        target = getattr(owner, name, None) if owner is not None else None
        if target is None:
            self.missing.append(f"{module}.{attr}")
            return

        @functools.wraps(target)
        def timed(*args, **kwargs):
            w, c = time.perf_counter(), time.process_time()
            try:
                return target(*args, **kwargs)
            finally:
                self.wall[phase] += time.perf_counter() - w
                self.cpu[phase] += time.process_time() - c
                self.calls[phase] += 1

        self._undo.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else target))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def report(self) -> dict:
        return {p: {"wall_s": round(self.wall[p], 3), "cpu_s": round(self.cpu[p], 3), "calls": self.calls[p]}
                for p, _, _ in PHASES if self.calls.get(p)}


def fake_features(n: int, dim: int, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    w = rng.standard_normal((dim, n_labels), dtype=np.float32) / np.sqrt(dim)
    scores = x @ w + rng.standard_normal((n, n_labels), dtype=np.float32)
    y = (scores > np.quantile(scores, 1 - 5 / n_labels, axis=0)).astype(np.float32)  # ~5 codes per note
    return x, y


def engine_overrides(engine: str, total_cpus: int) -> list[str]:
    """The settings of each engine: in-process clients take every CPU; Ray runs one client per CPU."""
    if engine == "inprocess":
        return ['federated.engine="inprocess"', f"federated.total_cpus={total_cpus}",
                f"federated.client_cpus={total_cpus}"]
    return ['federated.engine="ray"', f"federated.total_cpus={total_cpus}", "federated.client_cpus=1"]


def run_engine(engine: str, args, data: tuple, eval_every: int = 1) -> dict:
    """Stage the data for ``engine``, simulate with every phase timed; the row of the report."""
    feats, labels, partition, val_partition = data
    cfg = load_config(None, ['train.mode="federated"', f"federated.rounds={args.rounds}",
                             f"partition.n_clients={args.clients}", f"federated.checkpoint_every={args.checkpoint_every}",
                             f"federated.eval_every={eval_every}", *engine_overrides(engine, args.total_cpus), *args.overrides])
    run = args.out / f"run-{engine}-e{eval_every}-{int(time.time())}"
    stage_arrays(run, feats, labels, partition, val_partition)
    plan = build_plan(cfg, input_dim=768, n_labels=1085, client_sizes=partition.sizes)
    write_plan(run, plan)
    clock = PhaseClock()
    for phase, module, attr in PHASES:
        clock.wrap(phase, module, attr)
    cpu0 = time.process_time()
    try:
        fed_s = simulate(run, plan)
    finally:
        clock.restore()
    hist = load_checkpoint(run)["history"]
    rounds_s = sum(r["seconds"] for r in hist)
    reported = sum(r["train_train_seconds"] * r["clients_sampled"] for r in hist)  # the clients' own timings
    fed = plan.federated
    parallel = fed.total_cpus // fed.client_cpus if engine == "ray" else 1
    return {"engine": engine, "federated_s": fed_s, "driver_cpu_s": time.process_time() - cpu0,
            "total_cpus": fed.total_cpus, "client_cpus": fed.client_cpus, "clients_at_once": parallel,
            "checkpoint_every": fed.checkpoint_every, "eval_every": fed.eval_every, "rounds_s": rounds_s, "startup_and_shutdown_s": fed_s - rounds_s,
            "client_local_training_s_sum": reported,
            "per_round_overhead_s": (rounds_s - reported / parallel) / args.rounds,
            "final_train_loss": hist[-1].get("train_train_loss"), "final_test_micro_f1": hist[-1].get("test_micro_f1"),
            "phases": clock.report(), "phases_not_found": clock.missing}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_fed"))
    ap.add_argument("--json", type=Path, default=Path("experiments/results/speed/federated_speed.json"))
    ap.add_argument("--engine", choices=["inprocess", "ray", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--train-rows", type=int, default=14_000)
    ap.add_argument("--total-cpus", type=int, default=2)
    ap.add_argument("--checkpoint-every", type=int, default=1,
                    help="federated.checkpoint_every (1: a checkpoint after every round, the library's default)")
    ap.add_argument("--eval-every", type=int, nargs="+", default=[1],
                    help="federated.eval_every values, each run on every engine (1: the server and the clients "
                         "evaluate every round, the paper's protocol; ROUNDS: only the final model is evaluated, as "
                         "the central run, which evaluates nothing while it trains)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="more config overrides (last)")
    args = ap.parse_args()
    engines = ["inprocess", "ray"] if args.engine == "both" else [args.engine]
    sizes = {"train": args.train_rows, "val": args.train_rows * 15 // 70, "test": args.train_rows * 15 // 70}
    x, y = fake_features(sum(sizes.values()), 768, 1085, seed=0)
    cut = np.cumsum([0, *sizes.values()])
    feats = {p: x[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    labels = {p: y[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    partition = iid_partition([()] * sizes["train"], args.clients, seed=0)
    val_partition = iid_partition([()] * sizes["val"], args.clients, seed=1)
    central_cfg = TrainConfig(epochs=args.rounds, seed=0)
    load_before = os.getloadavg()

    central_s, central_cpu_s = [], []

    def central() -> None:
        cpu = time.process_time()
        central_s.append(train_central(feats["train"], labels["train"], central_cfg).seconds)
        central_cpu_s.append(time.process_time() - cpu)

    results: list[dict] = []

    def write() -> dict:  # after every timing, so that an interrupted benchmark leaves what it measured
        fast, slow = min(central_s), max(central_s)
        for row in results:
            row["ratio_to_faster_central"] = row["federated_s"] / fast
            row["ratio_to_slower_central"] = row["federated_s"] / slow
            if row["engine"] == "inprocess":  # all its work in this process: CPU seconds, robust to the machine's load
                row["cpu_ratio_to_central"] = row["driver_cpu_s"] / min(central_cpu_s)
        report = {"commit": git_commit(), "command": "python experiments/bench_federated_speed.py "
                  + " ".join(sys.argv[1:]), "clients": args.clients, "rounds": args.rounds,
                  "train_rows": sizes["train"], "cpus": os.cpu_count(), "python": platform.python_version(),
                  "load_average_before": load_before, "load_average_after": os.getloadavg(),
                  "central_train_s": central_s, "central_cpu_s": central_cpu_s,
                  "central_note": "timed before the first engine and after each", "engines": results,
                  "complete": len(results) == len(engines) * len(args.eval_every)
                  and len(central_s) == len(results) + 1}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        return report

    central()
    write()
    for engine, every in [(e, k) for e in engines for k in args.eval_every]:
        results.append(run_engine(engine, args, (feats, labels, partition, val_partition), every))
        write()
        central()
        report = write()
    print(f"central training: {', '.join(f'{s:.1f}' for s in central_s)} s  (load average "
          f"{load_before[0]:.1f} before, {report['load_average_after'][0]:.1f} after)")
    for row in results:
        print(f"\n[{row['engine']}] client_cpus {row['client_cpus']}, {row['clients_at_once']} client(s) at once")
        for k, v in row.items():
            if k in ("engine", "phases", "phases_not_found"):
                continue
            print(f"  {k:<30}{v:>12.2f}" if isinstance(v, float) else f"  {k:<30}{v!s:>12}")
        print(f"  {'phase':<30}{'wall s':>10}{'cpu s':>10}{'calls':>8}")
        for phase, t in row["phases"].items():
            print(f"  {phase:<30}{t['wall_s']:>10.2f}{t['cpu_s']:>10.2f}{t['calls']:>8}")
        if row["phases_not_found"]:
            print(f"  (not timed: {', '.join(row['phases_not_found'])})")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
