"""Run a federated experiment on Flower's simulation engine (Ray backend) and write its results.

``run_federated(cfg, out_dir)`` stages the data (:mod:`fedicd.federated.data`),
writes ``run_meta.json``, runs the ServerApp and one ClientApp per partition
through ``flwr.simulation.run_simulation`` with ``total_cpus`` CPUs and
``client_cpus`` per client, then scores the final global model (threshold
chosen on validation) and writes ``results.json``, ``history.csv`` and
``learning_curves.png``. ``resume=True`` continues from the last checkpoint
of ``out_dir`` (the config must be the one the run started with).

How a run ends (docs/federated-runs.md): results are written, then a run in
which no round updated the model, or too many client updates were refused or
lost (``federated.max_rejected_share``), raises :class:`RunFailedError`; a crash
advises ``--resume`` only when a checkpoint exists and the cause can change.
Flower's and Ray's logs go to ``<out>/framework.log`` (and only there unless
verbose); a watchdog ends Ray's processes if the driver is killed.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import signal
import time
from pathlib import Path

from fedicd.config import ExperimentConfig, config_to_dict
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.data import load_server_data, read_run_meta, stage_data, write_run_meta
from fedicd.federated.outcome import (RunFailedError, RunInterruptedError, crash_message, failure_message,
                                      run_outcome)
from fedicd.federated.runtime import (FRAMEWORK_LOG, PROGRESS_LOGGER, RunControl, framework_logs,
                                      interrupt_on_signals, is_verbose)
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels
from fedicd.train import predict_proba

__all__ = ["run_federated", "simulate", "build_meta", "strategy_args", "backend_config", "RunFailedError"]

log = logging.getLogger(__name__)


def strategy_args(cfg: ExperimentConfig, n_clients: int) -> dict:
    fed = cfg.federated
    min_available, min_train, min_evaluate = fed.node_minimums(n_clients)
    return {"fraction_train": fed.fraction_train, "fraction_evaluate": fed.fraction_evaluate,
            "min_available_nodes": min_available, "min_train_nodes": min_train, "min_evaluate_nodes": min_evaluate,
            "proximal_mu": fed.proximal_mu, "server_lr": fed.server_lr, "server_momentum": fed.server_momentum,
            "eta": fed.eta, "eta_l": fed.eta_l, "beta_1": fed.beta_1, "beta_2": fed.beta_2, "tau": fed.tau,
            "validate_updates": fed.validate_updates}


def build_meta(cfg: ExperimentConfig, *, input_dim: int, n_labels: int, client_sizes: list[int],
               **extra) -> dict:
    """The ``run_meta.json`` both apps read: resolved config, model shape, strategy arguments."""
    resolved = json.loads(json.dumps(config_to_dict(cfg)))
    return {"config": resolved, "train": resolved["train"], "federated": resolved["federated"], "seed": cfg.seed,
            "input_dim": input_dim, "n_labels": n_labels, "n_clients": len(client_sizes),
            "strategy_args": strategy_args(cfg, len(client_sizes)), "client_sizes": client_sizes, **extra}


def add_privacy(cfg: ExperimentConfig, meta: dict) -> dict:
    """Plan DP for the run (head conversion, σ per client or per round) and record it in ``meta``."""
    from fedicd.privacy.client_level import UNIT_WEIGHT_KEY
    from fedicd.privacy.plan import plan_privacy

    plan = plan_privacy(cfg, meta["client_sizes"], meta["input_dim"], meta["n_labels"])
    meta["privacy"] = plan["meta"]
    if plan["train"] is not None:
        meta["train"] = json.loads(json.dumps(dataclasses.asdict(plan["train"])))
    if plan["meta"]["dp"] == "client":
        pm = plan["meta"]
        meta["strategy_args"] = {**meta["strategy_args"], "weighted_by_key": UNIT_WEIGHT_KEY, "client_dp": {
            "noise": pm["noise_multiplier"], "clip": pm["clip"], "sampled": pm["sampled_clients"],
            "population": pm["population"], "delta": pm["delta"],
            "max_epsilon": pm["target_epsilon"] or None, "client_side": pm["client_side_clipping"]}}
    return meta


def _stage(cfg: ExperimentConfig, out: Path) -> dict:
    staged = stage_data(cfg, out)
    meta = build_meta(cfg, input_dim=staged.input_dim, n_labels=staged.n_labels,
                      client_sizes=staged.partition.sizes, labels=staged.data.label_info,
                      embedding=staged.embed_info, load_summary=staged.data.notes.summary.to_dict(),
                      partition=staged.partition_info)
    add_privacy(cfg, meta)
    from fedicd.strategies import build_strategy

    build_strategy(cfg.federated.strategy, **meta["strategy_args"])  # fail now, not inside the first round
    _check_secure(cfg, meta)
    write_run_meta(out, meta)
    return meta


def _check_keys(cfg: ExperimentConfig) -> None:
    """Under CKKS, the key folder's public context and every secret context the run reads hold one key pair."""
    secure = cfg.secure_aggregation
    if secure.method != "ckks":
        return
    from fedicd.secure.ckks_round import check_key_pair

    secrets = [Path(secure.key_dir) / "secret.ctx"]  # what the simulation's clients read
    if secure.evaluator_key:
        secrets.append(Path(secure.evaluator_key))
    check_key_pair(secure.key_dir, secrets)


def _check_secure(cfg: ExperimentConfig, meta: dict) -> None:
    """Secure-aggregation checks that need the staged clients and the model, before the first round."""
    if not cfg.secure_aggregation.enabled:
        return
    from fedicd.secure.config import check_secure_staging
    from fedicd.federated.server import initial_arrays
    from fedicd.train import TrainConfig

    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["train"].items()})
    n = len(meta["client_sizes"])
    sampled = max(int(n * cfg.federated.fraction_train), meta["strategy_args"]["min_train_nodes"])
    check_secure_staging(cfg.secure_aggregation, client_sizes=meta["client_sizes"], sampled=min(n, sampled),
                         arrays=initial_arrays(train_cfg, meta["input_dim"], meta["n_labels"]))


def backend_config(fed: dict, *, quiet: bool) -> dict:
    """Flower's Ray backend settings: the run's CPUs; when quiet, Ray's workers do not log to the driver."""
    init = {"num_cpus": fed["total_cpus"], "num_gpus": 0}
    if quiet:
        init.update({"logging_level": "ERROR", "log_to_driver": False})
    return {"client_resources": {"num_cpus": fed["client_cpus"], "num_gpus": 0.0}, "init_args": init}


def simulate(out: str | Path, meta: dict, *, verbose: bool | None = None) -> float:
    """Run the ServerApp and the ClientApps of a staged run directory; returns wall seconds.

    Flower's and Ray's logs go to ``<out>/framework.log`` (only there unless ``verbose``; None: the
    ``fedicd`` logger's level decides), one progress line per round to stderr. SIGTERM or SIGINT
    stop the rounds, shut Ray down and raise :class:`RunInterruptedError`; if the driver is killed
    outright, a watchdog process (:mod:`fedicd.federated.reaper`) ends Ray's processes.
    """
    out = Path(out)
    from fedicd.federated.reaper import start_reaper

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    # Ray's C++ crash handler turns a SIGTERM into a stack dump and an abort 3 s later (read when Ray is imported)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    quiet, control = not is_verbose(verbose), RunControl()
    t0 = time.perf_counter()
    reaper = start_reaper()
    try:
        with framework_logs(out / FRAMEWORK_LOG, quiet=quiet), interrupt_on_signals(control):
            logging.getLogger(PROGRESS_LOGGER).info(
                "simulating %d rounds with %d clients on Ray (Flower's and Ray's logs: %s)",
                meta["federated"]["rounds"], meta["n_clients"], out / FRAMEWORK_LOG)
            _run_simulation(out, meta, control, quiet)
    finally:
        if reaper is not None:
            reaper.close()
    return time.perf_counter() - t0


def _run_simulation(out: Path, meta: dict, control: RunControl, quiet: bool) -> None:
    """Flower's ``run_simulation``; an interrupted run ends in :class:`RunInterruptedError` naming the signal."""
    from flwr.simulation import run_simulation

    from fedicd.federated.client import make_client_app
    from fedicd.federated.server import make_server_app

    try:
        run_simulation(server_app=make_server_app(str(out), control), client_app=make_client_app(str(out)),
                       num_supernodes=meta["n_clients"], backend_config=backend_config(meta["federated"],
                                                                                       quiet=quiet))
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


def _write_history(out: Path, history: list[dict]) -> None:
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "round", k))
    with (out / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


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
    out = Path(out_dir)
    _check_keys(cfg)  # milliseconds: before anything is written or embedded
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        meta = read_run_meta(out)
        if meta["config"] != build_meta(cfg, input_dim=0, n_labels=0, client_sizes=[0])["config"]:
            raise ValueError(f"--resume: the config differs from the one {out} was started with "
                             f"({out / 'run_meta.json'}); resume with the same config")
    else:
        if load_checkpoint(out) is not None:
            raise ValueError(f"{out} already holds a federated run; use --resume or a new --out")
        meta = _stage(cfg, out)
    rounds = cfg.federated.rounds
    try:
        seconds = simulate(out, meta, verbose=verbose)
    except Exception as exc:
        ckpt = load_checkpoint(out)
        raise RuntimeError(crash_message(exc, done=0 if ckpt is None else ckpt["round"], rounds=rounds, out=out,
                                         checkpointed=ckpt is not None)) from exc
    ckpt = load_checkpoint(out)
    if ckpt is None or ckpt["round"] < rounds:
        stopped = RuntimeError(f"the simulation ended before its last round (see {out / FRAMEWORK_LOG})")
        raise RuntimeError(crash_message(stopped, done=0 if ckpt is None else ckpt["round"], rounds=rounds, out=out,
                                         checkpointed=ckpt is not None))
    results = _finalize(cfg, out, meta, ckpt, seconds)
    if results["outcome"]["status"] != "ok":
        raise RunFailedError(failure_message(results["outcome"], out), results["outcome"])
    return results


def _privacy_results(meta: dict, history: list[dict], out: Path) -> dict:
    """What a paper needs to quote: ε (``epsilon``, with ``epsilon_meaning``), δ, σ, C, steps, the accountant."""
    priv = dict(meta.get("privacy", {"dp": "none"}))
    if priv["dp"] == "sample":
        from fedicd.privacy.accounting import epsilon_of, load_history

        # from each client's own accountant file: clients that skipped or failed late rounds are still counted
        histories = [load_history(out / "clients" / str(k), 10**9, count_all=bool(priv.get("secure_rng")))
                     for k in range(len(priv["clients"]))]
        eps = [epsilon_of(h, c["delta"]) for h, c in zip(histories, priv["clients"])]
        priv["epsilon"] = max(eps) if eps else None
        priv["epsilon_per_client"] = {f"client_{k}": e for k, e in enumerate(eps)}
        priv["epsilon_meaning"] = ("sample-level DP: the largest over the clients of the epsilon protecting one note "
                                   "of that client's training data, at the client's delta (epsilon_per_client "
                                   "gives each)")
        priv["steps_per_client"] = [sum(s for *_, s in h) for h in histories]
    elif priv["dp"] == "client":
        priv["epsilon"] = history[-1].get("client_dp_epsilon") if history else None
        priv["epsilon_meaning"] = ("client-level DP: the epsilon protecting everything one client contributes "
                                   "(all of its notes) across every released global model, at delta")
        priv["releases"] = history[-1].get("client_dp_releases") if history else 0
    else:
        priv.update({"epsilon": None, "epsilon_meaning": "no differential privacy: no epsilon guarantee"})
    return priv


def _secure_results(meta: dict) -> dict:
    """How the updates were hidden, and who scored the global model."""
    secure = dict(meta["config"].get("secure_aggregation", {"method": "none"}))
    if secure["method"] == "ckks":
        from fedicd.secure.ckks_round import read_params

        secure["params"] = read_params(secure["key_dir"]).to_dict()
        secure["evaluation"] = (
            ("every round by the key-holding evaluator (secure_aggregation.evaluator_key; in this simulation it runs "
             "in the ServerApp's process)" if secure.get("evaluator_key") else
             "no server-side scores during the run (the ServerApp holds only the public context)")
            + "; client evaluation decrypts on the clients; the final model was decrypted after the run by the "
              "experiment driver with the clients' key")
    return secure


def _finalize(cfg: ExperimentConfig, out: Path, meta: dict, ckpt: dict, seconds: float) -> dict:
    from fedicd.federated.server import _model
    from fedicd.plots import plot_learning_curves
    from fedicd.train import TrainConfig

    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["train"].items()})
    arrays, secure = ckpt["arrays"], _secure_results(meta)
    if secure["method"] == "ckks":
        from fedicd.federated.secure_rounds import ckks_parties

        # after the run, the experiment driver (who holds the clients' key) decrypts the final model
        key = secure.get("evaluator_key") or str(Path(secure["key_dir"]) / "secret.ctx")
        arrays = ckks_parties(meta, train_cfg, secret_path=key)[1](arrays)
    model = _model(train_cfg, meta, arrays)
    data = load_server_data(out)
    probs = {p: predict_proba(model, data[f"x_{p}"]) for p in ("val", "test")}
    threshold = choose_threshold(data["y_val"], probs["val"])
    frequent = top_k_labels(data["y_train"], 50)
    metrics = {p: compute_metrics(data[f"y_{p}"], probs[p], threshold=threshold, frequent=frequent)
               for p in ("val", "test")}
    outcome = run_outcome(ckpt["history"], ckpt["rejections"],
                          max_rejected_share=float(meta["federated"].get("max_rejected_share", 0.5)))
    results = {"name": cfg.name, "training_mode": "federated", "outcome": outcome, **metrics,
               "history": ckpt["history"], "rejections": ckpt["rejections"], "labels": meta.get("labels"), "embedding": meta.get("embedding"),
               "client_sizes": meta["client_sizes"], "load_summary": meta.get("load_summary"),
               "partition": meta.get("partition"),
               "seconds": {"simulation": seconds, "rounds": sum(r["seconds"] for r in ckpt["history"])},
               "privacy": _privacy_results(meta, ckpt["history"], out), "secure_aggregation": secure,
               "config": meta["config"]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _write_history(out, ckpt["history"])
    plot_learning_curves(ckpt["history"], out / "learning_curves.png", title=cfg.name)
    return results
