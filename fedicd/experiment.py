"""One centralized experiment: notes → labels/splits → embeddings → head → metrics.

:func:`run_experiment` writes, under ``out_dir``: ``results.json`` (metrics on
val and test, the resolved config, the load summary, timings, versions,
provenance), ``model.pt``, ``scaler.npz``, ``labels.json`` and ``config.json``.
Data preparation lives in :mod:`fedicd.prepare` (re-exported here). A chunk-sequence head
(:data:`fedicd.heads.SEQUENCE_HEADS`) trains on :class:`~fedicd.sequences.ChunkSequences`, standardised by the
training notes' chunk rows (``scaler.npz``); ``[warm_start] init = "descriptions"`` initialises the head before
training (:func:`fedicd.warm_start.central.central_initialiser`), recorded in ``results.json["warm_start"]``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from fedicd.config import ExperimentConfig, config_to_dict
from fedicd.data.labels import save_binarizer
from fedicd.errors import ConfigError
from fedicd.federated.model import model_record
from fedicd.federated.staged import check_features_fit
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels
from fedicd.prepare import embed_parts, ids_digest, prepare_data
from fedicd.provenance import provenance
from fedicd.scaling import save_scaler
from fedicd.train import predict_proba, train_central

__all__ = ["run_experiment", "save_model"]

log = logging.getLogger(__name__)


def save_model(model: torch.nn.Module, cfg: ExperimentConfig, input_dim: int, n_labels: int, path: Path) -> None:
    torch.save({"state_dict": model.state_dict(), "train_config": config_to_dict(cfg)["train"],
                "input_dim": input_dim, "n_labels": n_labels}, path)


def _initialiser(cfg: ExperimentConfig, scaler, labels: list[str]):
    """The central warm start's callable (None without one); imported only when [warm_start] asks for one."""
    if not cfg.warm_start.enabled:
        return None
    if cfg.warm_start.public_config:
        raise ConfigError(f"[warm_start] ({cfg.warm_start.method}) warm-starts federated runs (train.mode = "
                          f"'federated'); this run is central (train.mode = {cfg.train.mode!r}): remove [warm_start] "
                          "(a central run takes warm_start.init = \"descriptions\" only: unset "
                          "warm_start.public_config)")
    from fedicd.warm_start.central import central_initialiser

    return central_initialiser(cfg, scaler, labels)


def _refuse_partition_keys(cfg: ExperimentConfig) -> None:
    """partition.min_per_client / drop_infeasible judge codes per client: meaningless in a central run."""
    p = cfg.partition
    if p.min_per_client > 0 or p.drop_infeasible:
        raise ConfigError(f"partition.min_per_client = {p.min_per_client} and partition.drop_infeasible = "
                          f"{str(p.drop_infeasible).lower()} apply to federated runs (train.mode = 'federated') "
                          f"and `fedicd partition`; this run is central (train.mode = {cfg.train.mode!r}): remove "
                          "them (data.min_per_client is the corpus-wide label rule)")


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path) -> dict:
    """Run one centralized experiment and write its artifacts; returns ``results.json``'s content."""
    _refuse_partition_keys(cfg)
    if cfg.warm_start.public_config:
        _initialiser(cfg, None, [])  # refused before any note is loaded
    if cfg.warm_start.init == "descriptions":
        from fedicd.warm_start.zero_shot import check_description_head

        check_description_head(cfg.train)  # a head without a zero-shot form, before any note is embedded
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    t1 = time.perf_counter()
    feats, embed_info, scaler = embed_parts(data, cfg)
    t2 = time.perf_counter()
    check_features_fit(feats["train"], cfg.train.head, "the embedded training notes (fedicd.prepare.embed_parts)")
    initialise = _initialiser(cfg, scaler, list(data.binarizer.classes_))
    trained = train_central(feats["train"], data.labels["train"], cfg.train,
                            x_val=feats["val"], y_val=data.labels["val"], initialise=initialise)
    probs = {p: predict_proba(trained.model, feats[p]) for p in ("val", "test")}
    threshold = choose_threshold(data.labels["val"], probs["val"])
    frequent = top_k_labels(data.labels["train"], 50)
    metrics = {p: compute_metrics(data.labels[p], probs[p], threshold=threshold, frequent=frequent,
                                  train_counts=data.labels["train"].sum(axis=0))
               for p in ("val", "test")}
    results = {"name": cfg.name, "training_mode": "central", "val": metrics["val"], "test": metrics["test"],
               "history": trained.history, "model": model_record(trained.model, cfg.train.head),
               "warm_start": trained.init_info if trained.init_info is not None else {"method": "random"},
               "labels": data.label_info, "embedding": embed_info,
               "split_digests": {p: ids_digest([data.notes.ids[i] for i in idx]) for p, idx in data.parts.items()},
               "load_summary": data.notes.summary.to_dict(),
               "seconds": {"data": t1 - t0, "embed": t2 - t1, "train": trained.seconds,
                           "total": time.perf_counter() - t0},
               "config": config_to_dict(cfg), "provenance": provenance()}
    save_model(trained.model, cfg, feats["train"].shape[1], len(data.binarizer.classes_), out / "model.pt")
    save_scaler(scaler, out / "scaler.npz")
    save_binarizer(data.binarizer, out / "labels.json")
    (out / "config.json").write_text(json.dumps(results["config"], indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    log.info("results written to %s", out / "results.json")
    return results
