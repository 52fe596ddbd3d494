"""Run a federated experiment on Flower's simulation engine (Ray backend) and write its results.

``run_federated(cfg, out_dir)`` stages the data (:mod:`fedicd.federated.data`),
writes ``run_meta.json``, runs the ServerApp and one ClientApp per partition
through ``flwr.simulation.run_simulation`` with ``total_cpus`` CPUs and
``client_cpus`` per client, then scores the final global model (threshold
chosen on validation) and writes ``results.json``, ``history.csv`` and
``learning_curves.png``. ``resume=True`` continues from the last checkpoint
of ``out_dir`` (the config must be the one the run started with).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from fedicd.config import ExperimentConfig, config_to_dict
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.data import load_server_data, read_run_meta, stage_data, write_run_meta
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels
from fedicd.train import predict_proba

__all__ = ["run_federated", "simulate", "build_meta", "strategy_args"]

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
                      embedding=staged.embed_info, load_summary=staged.data.notes.summary.to_dict())
    add_privacy(cfg, meta)
    from fedicd.strategies import build_strategy

    build_strategy(cfg.federated.strategy, **meta["strategy_args"])  # fail now, not inside the first round
    _check_secure(cfg, meta)
    write_run_meta(out, meta)
    return meta


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


def simulate(out: str | Path, meta: dict) -> float:
    """Run the ServerApp and the ClientApps of a staged run directory; returns wall seconds."""
    out = Path(out)
    from flwr.simulation import run_simulation

    from fedicd.federated.client import make_client_app
    from fedicd.federated.server import make_server_app

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    fed = meta["federated"]
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(str(out)), client_app=make_client_app(str(out)),
                   num_supernodes=meta["n_clients"],
                   backend_config={"client_resources": {"num_cpus": fed["client_cpus"], "num_gpus": 0.0},
                                   "init_args": {"num_cpus": fed["total_cpus"], "num_gpus": 0}})
    return time.perf_counter() - t0


def _write_history(out: Path, history: list[dict]) -> None:
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "round", k))
    with (out / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def run_federated(cfg: ExperimentConfig, out_dir: str | Path, *, resume: bool = False) -> dict:
    """Run (or resume) the federated experiment ``cfg``; returns ``results.json``'s content."""
    out = Path(out_dir)
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
    try:
        seconds = simulate(out, meta)
    except Exception as exc:
        ckpt = load_checkpoint(out)
        done = 0 if ckpt is None else ckpt["round"]
        raise RuntimeError(f"the federated run crashed after round {done} of {cfg.federated.rounds}: {exc}; "
                           f"continue it with --resume (checkpoint in {out})") from exc
    ckpt = load_checkpoint(out)
    if ckpt is None or ckpt["round"] < cfg.federated.rounds:
        done = 0 if ckpt is None else ckpt["round"]
        raise RuntimeError(f"the federated run stopped after round {done} of {cfg.federated.rounds} "
                           f"(see the log above); continue it with --resume")
    return _finalize(cfg, out, meta, ckpt, seconds)


def _privacy_results(meta: dict, history: list[dict], out: Path) -> dict:
    """What a paper needs to quote: final ε, δ, σ, C, steps and the accountant."""
    priv = dict(meta.get("privacy", {"dp": "none"}))
    if priv["dp"] == "sample":
        from fedicd.privacy.accounting import epsilon_of, load_history

        # from each client's own accountant file: clients that skipped or failed late rounds are still counted
        histories = [load_history(out / "clients" / str(k), 10**9, count_all=bool(priv.get("secure_rng")))
                     for k in range(len(priv["clients"]))]
        eps = [epsilon_of(h, c["delta"]) for h, c in zip(histories, priv["clients"])]
        priv["final_epsilon_max"] = max(eps) if eps else None
        priv["final_epsilon_per_client"] = {f"client_{k}": e for k, e in enumerate(eps)}
        priv["steps_per_client"] = [sum(s for *_, s in h) for h in histories]
    elif priv["dp"] == "client":
        priv["final_epsilon"] = history[-1].get("client_dp_epsilon") if history else None
        priv["releases"] = history[-1].get("client_dp_releases") if history else 0
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
        from fedicd.federated.server import _ckks_parties

        # after the run, the experiment driver (who holds the clients' key) decrypts the final model
        key = secure.get("evaluator_key") or str(Path(secure["key_dir"]) / "secret.ctx")
        arrays = _ckks_parties(meta, train_cfg, secret_path=key)[1](arrays)
    model = _model(train_cfg, meta, arrays)
    data = load_server_data(out)
    probs = {p: predict_proba(model, data[f"x_{p}"]) for p in ("val", "test")}
    threshold = choose_threshold(data["y_val"], probs["val"])
    frequent = top_k_labels(data["y_train"], 50)
    metrics = {p: compute_metrics(data[f"y_{p}"], probs[p], threshold=threshold, frequent=frequent)
               for p in ("val", "test")}
    results = {"name": cfg.name, "training_mode": "federated", **metrics, "history": ckpt["history"],
               "rejections": ckpt["rejections"], "labels": meta.get("labels"), "embedding": meta.get("embedding"),
               "client_sizes": meta["client_sizes"], "load_summary": meta.get("load_summary"),
               "seconds": {"simulation": seconds, "rounds": sum(r["seconds"] for r in ckpt["history"])},
               "privacy": _privacy_results(meta, ckpt["history"], out), "secure_aggregation": secure,
               "config": meta["config"]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    _write_history(out, ckpt["history"])
    plot_learning_curves(ckpt["history"], out / "learning_curves.png", title=cfg.name)
    return results
