"""Timing the real Flower round loop for ``experiments/bench_secure_cost.py``: stages, client calls, server work.

:class:`RoundRecorder` wraps, for one simulation on the in-process engine, the round aggregator's train exchange,
the grid's ``push_messages`` (one message stage; the clients run inside it), each ClientApp call and the
library's ``local_train``; :func:`run_round_loop` stages a run of random vectors and simulates it with the recorder
on. The library is unchanged: the wrappers are removed when the simulation ends.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import time
from pathlib import Path

from secure_cost_pieces import ckks_keys

__all__ = ["RoundRecorder", "run_round_loop", "round_settings", "mechanism_settings"]


class RoundRecorder:
    """Times each train exchange, its message stages (``push_messages``) and every client call in them.

    In-process engine only: the clients run inside ``push_messages`` (every grid wrapper ends there), so the
    server's own work is the exchange's wall time minus the stages', and a client's non-training work is its call
    minus ``local_train``.
    """

    def __init__(self) -> None:
        self.rounds: list[list[dict]] = []  # per train exchange: its stages, each {"wall", "calls": [(call, train)]}
        self.walls: list[float] = []
        self._in_round, self._call_train, self._stage = False, 0.0, {"wall": 0.0, "calls": []}
        self._undo: list[tuple[object, str, object]] = []

    def _patch(self, owner: object, name: str, make) -> None:
        original = getattr(owner, name)
        self._undo.append((owner, name, original))
        setattr(owner, name, make(original))

    def install(self) -> None:
        from fedicd.federated import inprocess, local
        from fedicd.secure import round_defences

        def aggregator(factory):
            def wrapped(*args, **kwargs):
                agg = factory(*args, **kwargs)
                agg.train_round = self._timed_round(agg.train_round)
                return agg
            return wrapped

        self._patch(round_defences, "round_aggregator", aggregator)
        self._patch(inprocess.InProcessGrid, "push_messages", self._timed_stage)
        self._patch(inprocess.InProcessGrid, "_execute", self._timed_call)
        self._patch(local, "local_train", self._timed_train)

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()

    def _timed_round(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self.rounds.append([])
            self._in_round, t0 = True, time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.walls.append(time.perf_counter() - t0)
                self._in_round = False
        return timed

    def _timed_stage(self, fn):
        def timed(grid, *args, **kwargs):
            stage = {"wall": 0.0, "calls": []}
            if self._in_round:
                self.rounds[-1].append(stage)
            self._stage, t0 = stage, time.perf_counter()
            try:
                return fn(grid, *args, **kwargs)
            finally:
                stage["wall"] = time.perf_counter() - t0
        return timed

    def _timed_call(self, fn):
        def timed(grid, msg):
            self._call_train, t0 = 0.0, time.perf_counter()
            try:
                return fn(grid, msg)
            finally:
                self._stage["calls"].append((time.perf_counter() - t0, self._call_train))
        return timed

    def _timed_train(self, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._call_train += time.perf_counter() - t0
        return timed

    def summary(self, first: int, latency_s: float) -> dict:
        """Means over the train exchanges from index ``first`` (0-based) on."""
        rows = []
        for stages, wall in list(zip(self.rounds, self.walls))[first:]:
            calls = [c for s in stages for c in s["calls"]]
            row = {"exchange_wall_s": wall, "stages": len(stages), "client_calls": len(calls),
                   "server_s": wall - sum(s["wall"] for s in stages),
                   "client_train_max_s": sum(max((t for _, t in s["calls"]), default=0.0) for s in stages),
                   "client_other_max_s": sum(max((c - t for c, t in s["calls"]), default=0.0) for s in stages),
                   "client_call_max_s": sum(max((c for c, _ in s["calls"]), default=0.0) for s in stages)}
            row["critical_path_s"] = row["client_call_max_s"] + row["server_s"] + row["stages"] * latency_s
            rows.append(row)
        if not rows:
            raise RuntimeError("no train exchange was timed after round 1 (run at least 2 rounds)")
        return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]} | {"rounds_timed": len(rows)}


def run_round_loop(mechanism: str, args, data: tuple, work: Path, dims: tuple[int, int]) -> dict:
    """Stage the run, simulate ``args.rounds`` rounds with the recorder on; bytes and times of rounds 2.."""
    from fedicd.config import load_config
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.federated.data import stage_arrays
    from fedicd.federated.model import initial_arrays
    from fedicd.run_plan import write_plan
    from fedicd.runner.simulation import simulate
    from fedicd.runner.staging import build_plan
    from fedicd.secure.config import check_secure_staging

    feats, labels, partition, val_partition = data
    dim, n_labels = dims
    run = work / f"run-{mechanism.replace('+', 'plus')}"
    cfg = load_config(None, [*round_settings(args), *mechanism_settings(mechanism, work)])
    stage_arrays(run, feats, labels, partition, val_partition)
    plan = build_plan(cfg, input_dim=dim, n_labels=n_labels, client_sizes=partition.sizes)
    if plan.secure.enabled:  # the limits a staged run is checked against (CKKS key limits, SecAgg+ weights)
        check_secure_staging(plan.secure, client_sizes=list(partition.sizes), sampled=args.clients,
                             arrays=initial_arrays(plan.train, dim, n_labels))
    write_plan(run, plan)
    recorder = RoundRecorder()
    recorder.install()
    try:
        simulate(run, plan)
    finally:
        recorder.restore()
    hist = load_checkpoint(run)["history"][1:]
    out = recorder.summary(1, args.stage_latency_s)
    n = statistics.fmean(r["clients_sampled"] for r in hist)
    out.update(up_bytes=statistics.fmean(r["bytes_received"] for r in hist) / n,
               down_bytes=statistics.fmean(r["bytes_sent"] for r in hist) / n, clients=args.clients,
               rows_per_client=args.rows_per_client, history_seconds=[r["seconds"] for r in hist],
               client_failures=sum(r["client_failures"] for r in hist))
    if not args.keep_runs:
        shutil.rmtree(run, ignore_errors=True)
    return out


def round_settings(args) -> list[str]:
    """Training only: no client evaluation, the server scores the model once, at the end (untimed)."""
    return ['train.mode="federated"', f"federated.rounds={args.rounds}", f"partition.n_clients={args.clients}",
            'federated.engine="inprocess"', f"federated.total_cpus={args.threads}",
            f"federated.client_cpus={args.threads}", "federated.fraction_evaluate=0.0",
            f"federated.eval_every={args.rounds}", f"federated.checkpoint_every={args.rounds}",
            f"secure_aggregation.workers={args.threads}"]


def mechanism_settings(mechanism: str, work: Path) -> list[str]:
    if mechanism == "ckks":
        return ['secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{ckks_keys(work)}"']
    return [] if mechanism == "none" else [f'secure_aggregation.method="{mechanism}"']
