"""1,000 virtual clients in simulation: peak memory of the whole process tree, seconds per round, micro-F1.

    nice -n 10 python experiments/scale_simulation.py --engine inprocess --rounds 50 --out runs/scale --archive
    nice -n 10 python experiments/scale_simulation.py --engine ray --rounds 3 --out runs/scale --archive
    python experiments/scale_simulation.py --dry-run --out runs/scale     # stage only: cache hits, client sizes
    python experiments/scale_simulation.py --cluster-check --out runs/scale --archive   # a real local Ray cluster

One federated run (``fedicd.runner.simulation.run_federated``) of ``experiments/configs/synthetic_fed_large.toml``
(24,000 synthetic notes, MiniLM embeddings read from the embedding cache) partitioned IID over ``--clients`` clients,
``--fraction`` of them sampled for training each round by Flower's fixed-size sampler (``federated.min_train`` set to
the same count, since 0 would derive n_clients / 2), 2 % of them for the clients' own evaluation, and the server's
global evaluation every round. The head is the privacy–utility suite's 1,000-client recipe without DP (linear head, local AdamW 1e-2),
so the micro-F1 can be read against ``docs/results/privacy-utility.md``'s fixed_cohort ε = ∞ row. The local
learning rate follows a cosine schedule over ``federated.rounds``: a 5-round run is not the first 5 rounds of a
50-round one.

Memory: a sampler thread reads, every ``--sample-s`` seconds, the resident set (VmRSS) and the proportional set
(Pss, ``/proc/<pid>/smaps_rollup``: shared pages split between their users, so the sum over processes does not
count Ray's shared object store once per worker) of the driver and of every descendant process (Ray's GCS, raylet,
workers; fedicd's reaper), found by walking ``/proc/*/stat`` parent links. Reported: the peak of the tree's summed
RSS and Pss over the samples, the driver's own high-water mark (VmHWM, exact), and ``rss_upper_bound_mb`` = the
driver's VmHWM + the peak summed RSS of its descendants (what the 8 GB budget is checked against: it cannot be
lower than the true peak unless a child lived less than one sampling interval).

``--cluster-check`` starts a one-node Ray cluster with ``ray start --head --block`` (its own port and temp folder, so
no other Ray on the machine joins it or is joined by accident), runs a small ``fedicd run`` (the same corpus,
4 clients, 2 rounds) with ``federated.ray_address = "auto"`` and ``RAY_ADDRESS`` naming the head, and then
(``--client-check``) one with ``ray://`` through the head's Ray client server; then stops every process of that
cluster by process id (``ray stop`` would end every Ray on the machine) and records the outcome in
``experiments/results/scale/ray_cluster_check.json``.

Writes ``<out>/<engine>_<clients>/`` (the run folder) and, with ``--archive``, ``experiments/results/scale/
scale_<clients>[_ray].json``, which ``fedicd.report.scale`` renders as ``docs/results/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "experiments" / "results" / "scale"
CONFIG = "experiments/configs/synthetic_fed_large.toml"
RECIPE = ('train.head="linear"', "federated.local_lr=0.01")
MB = 1024 * 1024


# --- memory of the process tree ----------------------------------------------------------------------------
def _status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (0 if the process is gone or has no such field)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (children, grandchildren, ...), from ``/proc/*/stat`` parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class TreeMemory:
    """Samples the memory of this process and its descendants in a daemon thread (see the module docstring)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.pid = interval_s, os.getpid()
        self.peak = {"tree_rss_kb": 0, "tree_pss_kb": 0, "children_rss_kb": 0, "max_processes": 1}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-memory", daemon=True)

    def sample(self) -> None:
        kids = descendants(self.pid)
        kids_rss = sum(_status_kb(p, "VmRSS") for p in kids)
        tree_rss = _status_kb(self.pid, "VmRSS") + kids_rss
        tree_pss = _pss_kb(self.pid) + sum(_pss_kb(p) for p in kids)
        for key, value in (("tree_rss_kb", tree_rss), ("tree_pss_kb", tree_pss), ("children_rss_kb", kids_rss),
                           ("max_processes", 1 + len(kids))):
            self.peak[key] = max(self.peak[key], value)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> TreeMemory:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict:
        driver_hwm = _status_kb(self.pid, "VmHWM")
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB: the largest single reaped child
        return {"method": ("VmRSS and Pss (/proc/<pid>/smaps_rollup) of the driver and all its descendants "
                           f"(/proc/*/stat parent links), summed, sampled every {self.interval_s} s in a thread "
                           f"({self.samples} samples); driver VmHWM exact; upper bound = driver VmHWM + peak "
                           "summed descendants' RSS"),
                "peak_tree_rss_mb": round(self.peak["tree_rss_kb"] / 1024, 1),
                "peak_tree_pss_mb": round(self.peak["tree_pss_kb"] / 1024, 1),
                "driver_hwm_mb": round(driver_hwm / 1024, 1),
                "peak_children_rss_mb": round(self.peak["children_rss_kb"] / 1024, 1),
                "largest_reaped_child_mb": round(reaped / 1024, 1),
                "rss_upper_bound_mb": round((driver_hwm + self.peak["children_rss_kb"]) / 1024, 1),
                "max_processes": self.peak["max_processes"], "samples": self.samples}


# --- the run -----------------------------------------------------------------------------------------------
def overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of the scale run (module docstring)."""
    n, per_round = args.clients, max(1, round(args.clients * args.fraction))
    n_eval = max(1, round(args.clients * args.fraction_evaluate))
    ray = [f'federated.ray_address="{args.ray_address}"'] if args.ray_address else []
    return [f'name="scale_{args.engine}_{n}"', f"partition.n_clients={n}", "partition.min_partition_size=1",
            f'federated.engine="{args.engine}"', f"federated.rounds={args.rounds}",
            f"federated.fraction_train={args.fraction}", f"federated.min_train={per_round}",
            f"federated.min_available={n}", f"federated.fraction_evaluate={args.fraction_evaluate}",
            f"federated.min_evaluate={n_eval}", f"federated.total_cpus={args.total_cpus}",
            f"federated.client_cpus={args.client_cpus}", *ray, *RECIPE, *args.set]


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def round_seconds(run_dir: Path) -> list[float]:
    """The ``seconds`` column of ``history.csv`` (one wall time per round)."""
    import csv

    with open(run_dir / "history.csv", newline="", encoding="utf-8") as fh:
        return [float(row["seconds"]) for row in csv.DictReader(fh)]


def dry_run(cfg, run_dir: Path) -> dict:
    """Stage the data (embedding from the cache) and write the plan; no rounds."""
    from fedicd.runner.staging import stage_plan

    t0 = time.perf_counter()
    plan = stage_plan(cfg, run_dir)
    sizes = list(plan.client_sizes)
    return {"stage_seconds": round(time.perf_counter() - t0, 1), "n_clients": len(sizes),
            "train_notes": sum(sizes), "client_size_min": min(sizes), "client_size_max": max(sizes),
            "client_size_median": statistics.median(sizes), "n_labels": plan.n_labels, "input_dim": plan.input_dim}


def summarise(args: argparse.Namespace, res: dict, run_dir: Path, memory: dict, wall_s: float, sets: list[str]) -> dict:
    secs = round_seconds(run_dir)
    steady = secs[1:] or secs  # round 1 also warms up (first imports, Ray's actors)
    sizes = res["client_sizes"]
    niceness = os.nice(0)
    command = (f"nice -n {niceness} " if niceness else "") + " ".join(["python", *sys.argv])
    return {
        "config": CONFIG, "overrides": sets, "engine": args.engine, "ray_address": args.ray_address,
        "rounds": len(secs), "n_clients": len(sizes), "clients_per_round": max(1, round(args.clients * args.fraction)),
        "clients_evaluating_per_round": max(1, round(args.clients * args.fraction_evaluate)),
        "train_notes": sum(sizes), "client_size_min": min(sizes), "client_size_max": max(sizes),
        "client_size_median": statistics.median(sizes),
        "peak_rss_mb": memory["rss_upper_bound_mb"], "memory": memory,
        "seconds_per_round_mean": round(statistics.fmean(secs), 3),
        "seconds_per_round_median": round(statistics.median(secs), 3),
        "seconds_per_round_after_first_mean": round(statistics.fmean(steady), 3),
        "first_round_seconds": round(secs[0], 3),
        "simulation_seconds": round(res["seconds"]["simulation"], 1), "wall_seconds": round(wall_s, 1),
        "test_micro_f1": res["test"]["micro_f1"], "test_macro_f1": res["test"]["macro_f1"],
        "val_micro_f1": res["val"].get("micro_f1"), "n_labels": res["test"]["n_labels"],
        "test_notes": res["test"]["n_notes"], "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "git_commit": git_commit(), "command": command, "run_dir": str(run_dir.relative_to(ROOT))
        if run_dir.is_relative_to(ROOT) else str(run_dir)}


# --- a real (one-node) Ray cluster --------------------------------------------------------------------------
CLUSTER_CONFIG = CONFIG  # its embeddings are cached; synthetic_fed.toml would embed 3,000 notes first
CLUSTER_SETS = ("partition.n_clients=4", "federated.rounds=2", "federated.fraction_train=1.0",
                "federated.min_train=4", "federated.min_available=4", "federated.fraction_evaluate=0.5",
                "federated.min_evaluate=2", "federated.client_cpus=1.0", *RECIPE)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cluster_pids(head: subprocess.Popen, temp_dir: str) -> set[int]:
    """The ``ray start`` process, its descendants, and any process whose command line names our temp folder."""
    pids = {head.pid, *descendants(head.pid)} if head.poll() is None else set()
    pids |= {int(e) for e in os.listdir("/proc") if e.isdigit() and temp_dir in _cmdline(int(e))}
    return {p for p in pids if p != os.getpid()}


def stop_cluster(head: subprocess.Popen, temp_dir: str) -> list[int]:
    """SIGTERM, then SIGKILL, every process of our cluster, by id; returns those still alive after."""
    import signal

    pids = cluster_pids(head, temp_dir)
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in sorted(pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            head.poll()
            pids = {p for p in pids if os.path.exists(f"/proc/{p}") and "zombie" not in _state(p)}
            if not pids:
                break
            time.sleep(0.2)
        pids |= cluster_pids(head, temp_dir)
    return sorted(pids)


def _state(pid: int) -> str:
    line = next((ln for ln in open(f"/proc/{pid}/status") if ln.startswith("State:")), "") \
        if os.path.exists(f"/proc/{pid}/status") else ""
    return line.lower()


def _drivers(temp_dir: str) -> int:
    """Drivers (jobs) that have connected to our cluster: their core-driver logs in its session folder."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    return len(list(logs.glob("python-core-driver-*"))) if logs.is_dir() else 0


def _fedicd_run(address: str, env: dict, out: Path, commands: list[str], temp_dir: str) -> dict:
    sets = [f'federated.ray_address="{address}"', *CLUSTER_SETS, f'name="ray_cluster_{address.split(":")[0]}"']
    cmd = ["fedicd", "run", CLUSTER_CONFIG, "--out", str(out), "--overwrite", *[x for s in sets for x in ("--set", s)]]
    commands.append(" ".join(f"'{c}'" if ('"' in c or " " in c) else c for c in cmd))
    t0, drivers = time.perf_counter(), _drivers(temp_dir)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    res = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "stderr_tail": proc.stderr[-1500:]}
    if proc.returncode == 0:
        r = json.loads((ROOT / out / "results.json").read_text())
        res.update(n_clients=len(r["client_sizes"]), rounds=len(r["history"]), test_micro_f1=r["test"]["micro_f1"])
    res["drivers_joined_cluster"] = _drivers(temp_dir) - drivers  # >= 1: the run used our cluster
    return res


def cluster_check(out: Path, client_check: bool) -> dict:
    """Start a one-node cluster, run fedicd on it with ray_address "auto" (and "ray://"), stop it; the record."""
    temp_dir = f"/tmp/rE{os.getpid()}"
    port, client_port = free_port(), free_port()
    start = ["ray", "start", "--head", "--block", "--num-cpus", "2", "--port", str(port), "--temp-dir", temp_dir,
             "--ray-client-server-port", str(client_port), "--include-dashboard=false", "--disable-usage-stats"]
    commands = [" ".join(start) + " &"]
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}", "FLWR_TELEMETRY_ENABLED": "0"}
    head = subprocess.Popen(start, cwd=ROOT, stdout=open(out / "ray_head.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    record: dict = {"what": ("A one-node Ray cluster started with `ray start --head` (2 CPUs) on this machine; "
                             "fedicd joined it through `federated.ray_address` instead of starting its own Ray."),
                    "ray_address": "auto", "ray_address_env": env["RAY_ADDRESS"], "commands": commands}
    try:
        status = ["ray", "status", "--address", env["RAY_ADDRESS"]]
        for _ in range(60):
            probe = subprocess.run(status, capture_output=True, text=True, env=env)
            if probe.returncode == 0 and "Active:" in probe.stdout and " CPU" in probe.stdout:
                break
            time.sleep(2)
        commands.append(" ".join(status))
        record["ray_status"] = probe.stdout[-1200:]
        record["cluster_nodes"] = probe.stdout.count("node_")
        record["cluster_cpus"] = next((float(ln.split("/")[1].split()[0]) for ln in probe.stdout.splitlines()
                                       if ln.strip().endswith("CPU") and "/" in ln), None)
        record["run"] = _fedicd_run("auto", env, out / "cluster_auto", commands, temp_dir)
        if client_check:
            client_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
            record["client_run"] = _fedicd_run(f"ray://127.0.0.1:{client_port}", client_env,
                                               out / "cluster_client", commands, temp_dir)
    finally:
        commands.append(f"kill <pids of the ray start process, its descendants, and processes naming {temp_dir}>")
        left = stop_cluster(head, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    record["leftover_processes"] = len(left)
    ok = record["run"]["returncode"] == 0 and record["run"]["drivers_joined_cluster"] >= 1 and not left
    record["outcome"] = "accepted and ran" if ok else "failed"
    if client_check:
        record["client_outcome"] = "ran" if record["client_run"]["returncode"] == 0 else "failed"
    record["git_commit"] = git_commit()
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "scale")
    ap.add_argument("--engine", choices=("inprocess", "ray"), default="inprocess")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--fraction", type=float, default=0.1, help="federated.fraction_train")
    ap.add_argument("--fraction-evaluate", type=float, default=0.02, help="federated.fraction_evaluate")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--total-cpus", type=int, default=2)
    ap.add_argument("--client-cpus", type=float, default=1.0)
    ap.add_argument("--ray-address", default="", help='federated.ray_address ("" local, "auto", "ray://h:p")')
    ap.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    ap.add_argument("--sample-s", type=float, default=0.5, help="memory sampling interval")
    ap.add_argument("--dry-run", action="store_true", help="stage only (embedding cache, partition); no rounds")
    ap.add_argument("--cluster-check", action="store_true", help="a small run on a real one-node Ray cluster")
    ap.add_argument("--client-check", action="store_true", help="with --cluster-check: also through ray://")
    ap.add_argument("--archive", action="store_true", help="write experiments/results/scale/scale_<n>[_ray].json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.cluster_check:
        args.out.mkdir(parents=True, exist_ok=True)
        doc = cluster_check(args.out, args.client_check)
        print(json.dumps(doc, indent=1))
        if args.archive:
            ARCHIVE.mkdir(parents=True, exist_ok=True)
            (ARCHIVE / "ray_cluster_check.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return
    from fedicd.config import load_config
    from fedicd.runner.simulation import run_federated

    sets = overrides(args)
    cfg = load_config(ROOT / CONFIG, sets)
    run_dir = args.out / f"{args.engine}_{args.clients}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    if args.dry_run:
        print(json.dumps(dry_run(cfg, run_dir), indent=1))
        return
    t0 = time.perf_counter()
    with TreeMemory(args.sample_s) as mem:
        res = run_federated(cfg, run_dir)
    doc = summarise(args, res, run_dir, mem.report(), time.perf_counter() - t0, sets)
    (run_dir / "scale.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(doc, indent=1))
    if args.archive:
        ARCHIVE.mkdir(parents=True, exist_ok=True)
        name = f"scale_{args.clients}{'' if args.engine == 'inprocess' else '_ray'}.json"
        (ARCHIVE / name).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {ARCHIVE / name}")


if __name__ == "__main__":
    main()
