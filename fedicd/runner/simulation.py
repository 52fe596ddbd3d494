"""Run a federated experiment on Flower's simulation engine (Ray backend) and write its results.

``run_federated(cfg, out_dir)`` stages the data and writes the run plan (:mod:`fedicd.runner.staging`),
runs the ServerApp and one ClientApp per partition (:mod:`fedicd.runner.apps`) through
``flwr.simulation.run_simulation`` with ``total_cpus`` CPUs and ``client_cpus`` per client, then scores
the final global model (threshold chosen on validation) and writes ``results.json``, ``history.csv``
and ``learning_curves.png`` (:mod:`fedicd.runner.results`). ``resume=True`` continues from the last
checkpoint of ``out_dir`` (the config must be the one the run started with).

How a run ends (docs/federated-runs.md): results are written, then a run in which no round updated the
model, or too many client updates were refused or lost (``federated.max_rejected_share``), raises
:class:`RunFailedError`; a crash advises ``--resume`` only when a checkpoint exists and the cause can
change. Flower's and Ray's logs go to ``<out>/framework.log`` (and only there unless verbose); a
watchdog ends Ray's processes if the driver is killed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from fedicd.config import ExperimentConfig
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.outcome import RunFailedError, RunInterruptedError, crash_message, failure_message
from fedicd.federated.runtime import (FRAMEWORK_LOG, PROGRESS_LOGGER, RunControl, framework_logs,
                                      interrupt_on_signals, is_verbose)
from fedicd.run_plan import PLAN_FILE, RunPlan, read_plan, resolved_config

__all__ = ["run_federated", "simulate", "backend_config", "RunFailedError"]

log = logging.getLogger(__name__)


def backend_config(plan: RunPlan, *, quiet: bool) -> dict:
    """Flower's Ray backend settings; its ``init_args`` are ``ray.init``'s keywords (Flower 1.42's RayBackend).

    ``federated.ray_address`` = "" starts a local Ray of ``total_cpus`` CPUs (``address="local"``: a cluster
    this machine happens to run, or ``RAY_ADDRESS``, is not joined). "auto" (the cluster this machine is a node
    of; ``RAY_ADDRESS`` names it when set) and "ray://host:port" (a Ray client of a remote head) join an existing
    cluster, whose nodes declared their CPUs at ``ray start``: Ray refuses ``num_cpus`` / ``num_gpus`` then, so
    ``total_cpus`` is not sent and Flower sizes its actor pool from the cluster's CPUs, one actor per
    ``client_cpus``. When quiet, Ray's workers do not log to the driver.
    """
    fed = plan.federated
    if fed.ray_address:
        init: dict = {"address": fed.ray_address}
    else:
        init = {"address": "local", "num_cpus": fed.total_cpus, "num_gpus": 0}
    if quiet:
        init.update({"logging_level": "ERROR", "log_to_driver": False})
    return {"client_resources": {"num_cpus": fed.client_cpus, "num_gpus": 0.0}, "init_args": init}


def simulate(out: str | Path, plan: RunPlan, *, verbose: bool | None = None) -> float:
    """Run the ServerApp and the ClientApps of a staged run directory; returns wall seconds.

    Flower's and Ray's logs go to ``<out>/framework.log`` (only there unless ``verbose``; None: the
    ``fedicd`` logger's level decides), the round progress to stderr. SIGTERM or SIGINT stop the rounds,
    shut Ray down and raise :class:`RunInterruptedError`; if the driver is killed outright, a watchdog
    process (:mod:`fedicd.federated.reaper`) ends Ray's processes.
    """
    out = Path(out)
    from fedicd.federated.reaper import start_reaper

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # Ray's C++ crash handler turns a SIGTERM into a stack dump and an abort 3 s later (read when Ray is imported)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    quiet, control = not is_verbose(verbose), RunControl()
    on_ray = plan.federated.engine == "ray"
    t0 = time.perf_counter()
    reaper = start_reaper() if on_ray else None
    try:
        with framework_logs(out / FRAMEWORK_LOG, quiet=quiet), interrupt_on_signals(control):
            logging.getLogger(PROGRESS_LOGGER).info(
                "simulating %d rounds with %d clients %s (Flower's%s logs: %s)", plan.federated.rounds,
                plan.n_clients, "on Ray" if on_ray else "in this process", " and Ray's" if on_ray else "",
                out / FRAMEWORK_LOG)
            _run_simulation(out, plan, control, quiet)
    finally:
        if reaper is not None:
            reaper.close()
    return time.perf_counter() - t0


def _run_simulation(out: Path, plan: RunPlan, control: RunControl, quiet: bool) -> None:
    """Flower's ``run_simulation`` on Ray, or fedicd's in-process grid (``federated.engine``); an interrupted run
    ends in :class:`RunInterruptedError` naming the signal."""
    from fedicd.runner.apps import make_client_app, make_server_app

    server_app, client_app = make_server_app(str(out), control), make_client_app(str(out))
    try:
        if plan.federated.engine == "inprocess":
            from fedicd.federated.inprocess import run_inprocess

            run_inprocess(server_app, client_app, plan.n_clients)
        else:
            from flwr.simulation import run_simulation

            run_simulation(server_app=server_app, client_app=client_app, num_supernodes=plan.n_clients,
                           backend_config=backend_config(plan, quiet=quiet))
    except (SystemExit, KeyboardInterrupt) as exc:  # a handler other than ours ran (e.g. a newer Ray's)
        control.signum = control.signum or (signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM)
        _stop(control)
    except Exception:
        if control.signum is None:
            raise
    if control.signum is not None:
        raise RunInterruptedError(f"interrupted by {signal.Signals(control.signum).name}", control.signum)


def _stop(control: RunControl) -> None:
    """After an interrupt: stop the ServerApp thread, make sure Ray is down."""
    control.stop.set()
    control.finished.wait(30.0)
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass


def _plan_for(cfg: ExperimentConfig, out: Path, resume: bool) -> RunPlan:
    """The resumed run's plan (its config must be ``cfg``), or a freshly staged one."""
    if resume:
        plan = read_plan(out)
        if plan.config != resolved_config(cfg):
            raise ValueError(f"--resume: the config differs from the one {out} was started with "
                             f"({out / PLAN_FILE}); resume with the same config")
        return plan
    if load_checkpoint(out) is not None:
        raise ValueError(f"{out} already holds a federated run; use --resume or a new --out")
    from fedicd.runner.staging import stage_plan

    return stage_plan(cfg, out)


def _crashed(exc: Exception, out: Path, rounds: int) -> RuntimeError:
    ckpt = load_checkpoint(out)
    return RuntimeError(crash_message(exc, done=0 if ckpt is None else ckpt["round"], rounds=rounds, out=out,
                                      checkpointed=ckpt is not None))


def run_federated(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False,
                  verbose: bool | None = None) -> dict:
    """Run (or resume) the federated experiment ``cfg``; returns ``results.json``'s content.

    Raises
    ------
    RunFailedError
        After writing ``results.json`` and ``history.csv``: no round updated the model, or more than
        ``federated.max_rejected_share`` of the sampled client updates did not reach it.
    RuntimeError
        The simulation crashed or was interrupted; the message says whether ``--resume`` can help.
    """
    from fedicd.runner.results import finalize
    from fedicd.secure.round_defences import check_keys

    out = Path(out_dir)
    check_keys(cfg.secure_aggregation)  # milliseconds: before anything is written or embedded
    out.mkdir(parents=True, exist_ok=True)
    plan = _plan_for(cfg, out, resume)
    rounds = cfg.federated.rounds
    try:
        seconds = simulate(out, plan, verbose=verbose)
    except Exception as exc:
        raise _crashed(exc, out, rounds) from exc
    ckpt = load_checkpoint(out)
    if ckpt is None or ckpt["round"] < rounds:
        raise _crashed(RuntimeError(f"the simulation ended before its last round (see {out / FRAMEWORK_LOG})"),
                       out, rounds)
    results = finalize(cfg.name, out, plan, ckpt, seconds)
    if results["outcome"]["status"] != "ok":
        raise RunFailedError(failure_message(results["outcome"], out), results["outcome"])
    return results
