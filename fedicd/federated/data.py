"""Stage an experiment's data for federated training, and load a client's share of it.

:func:`stage_data` runs once, on the coordinator: notes → labels/split →
partition of the training notes, with ``partition.min_per_client`` /
``drop_infeasible`` applied (:mod:`fedicd.partition.rules`, as in ``fedicd
partition``) → the validation notes each client evaluates on
(``partition.client_validation``, :mod:`fedicd.partition.validation`) →
embeddings (cached) → scaler fitted on the training notes. It writes
``data/features.npz``, ``partition.json``, ``partition_val.json`` and
``labels.json`` (the label space) under the run directory. Clients read only their rows
(:func:`load_client_data`); no data travels in messages.

Privacy
-------
As in the paper, one StandardScaler is fitted on all training embeddings
(pooled statistics, i.e. a per-feature mean and variance that the clients
would have to share); a deployment would compute it with secure aggregation.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedicd.config import ExperimentConfig
from fedicd.data.labels import save_binarizer
from fedicd.errors import ConfigError
from fedicd.experiment import PreparedData, embed_parts, prepare_data
from fedicd.partition import Partition, partition_stats, read_manifest, write_manifest
from fedicd.partition.rules import check_client_counts, plan_partition
from fedicd.partition.validation import validation_partition

__all__ = ["stage_data", "stage_arrays", "load_client_data", "load_server_data", "ClientData", "StagedInfo"]

log = logging.getLogger(__name__)

FEATURES = "data/features.npz"
MANIFEST = "partition.json"
VAL_MANIFEST = "partition_val.json"


@dataclass
class ClientData:
    """One client's training and validation rows."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


@dataclass
class StagedInfo:
    """What staging produced.

    ``partition_info`` holds the feasibility summary (``"feasibility"``, with
    the dropped codes) and the client-validation summary
    (``"client_validation"``); the feasibility summary is also in
    ``data.label_info["partition_feasibility"]``.
    """

    n_clients: int
    input_dim: int
    n_labels: int
    data: PreparedData
    embed_info: dict
    partition: Partition
    partition_info: dict = field(default_factory=dict)


def _check_before_loading(cfg: ExperimentConfig) -> None:
    """Refusals that need no data: client counts of the label rule, client evaluation without client data."""
    check_client_counts(cfg)
    if cfg.partition.client_validation == "none" and cfg.federated.fraction_evaluate > 0:
        raise ConfigError(f"partition.client_validation = 'none' gives the clients no validation notes, but "
                          f"federated.fraction_evaluate = {cfg.federated.fraction_evaluate} asks clients to "
                          "evaluate: set federated.fraction_evaluate = 0 (the server still validates on the whole "
                          "validation split)")


def _val_partition(cfg: ExperimentConfig, data: PreparedData, partition: Partition) -> tuple[Partition, dict]:
    val = data.parts["val"]
    sites = [data.notes.sites[i] for i in val] if data.notes.sites is not None else None
    part, info = validation_partition(len(val), partition, mode=cfg.partition.client_validation,
                                      seed=cfg.seed + 1, sites=sites)
    if info["clients_without_validation"] and cfg.federated.fraction_evaluate > 0:
        log.warning("%d of %d clients hold no validation notes (partition.client_validation = %r) and will not "
                    "evaluate: %s", len(info["clients_without_validation"]), partition.n_clients,
                    cfg.partition.client_validation, info["clients_without_validation"])
    return part, info


def stage_data(cfg: ExperimentConfig, run_dir: str | Path) -> StagedInfo:
    """Prepare features and partitions for ``cfg`` under ``run_dir`` (see module docstring).

    Every refusal (label rules, splits, client counts, ``partition.min_per_client``,
    client validation) comes before the notes are embedded.
    """
    _check_before_loading(cfg)
    plan = plan_partition(cfg, prepare_data(cfg), strict=True)
    data, partition = plan.data, plan.partition
    val_part, val_info = _val_partition(cfg, data, partition)
    feats, embed_info, _ = embed_parts(data, cfg)
    train = data.parts["train"]
    partition_info = {"feasibility": plan.feasibility.summary, "client_validation": val_info}
    stage_arrays(run_dir, feats, data.labels, val_partition=val_part, partition=partition,
                 note_ids=[data.notes.ids[i] for i in train], stats=partition_stats(plan.labels, partition).to_dict(),
                 extra={"feasibility": plan.feasibility.report, "client_validation": val_info})
    save_binarizer(data.binarizer, Path(run_dir) / "labels.json")
    return StagedInfo(n_clients=partition.n_clients, input_dim=feats["train"].shape[1],
                      n_labels=data.labels["train"].shape[1], data=data, embed_info=embed_info, partition=partition,
                      partition_info=partition_info)


def stage_arrays(run_dir: str | Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 partition: Partition, val_partition: Partition, *, note_ids: list[str] | None = None,
                 stats: dict | None = None, extra: dict | None = None) -> None:
    """Write precomputed train/val/test features and labels plus the client partitions under ``run_dir``.

    The entry point for vectors made elsewhere (any encoder, or random vectors
    in benchmarks); :func:`stage_data` calls it after embedding.
    """
    run_dir = Path(run_dir)
    for part in ("train", "val", "test"):
        if part not in features or part not in labels or len(features[part]) != len(labels[part]):
            raise ValueError(f"features and labels must both hold {part!r} with the same number of rows")
    empty = [n for n, idx in zip(partition.names, partition.clients) if len(idx) == 0]
    if empty:
        raise ValueError(f"clients {empty} received no training notes; raise partition.min_partition_size")
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / FEATURES, **{f"x_{p}": features[p] for p in ("train", "val", "test")},
             **{f"y_{p}": labels[p] for p in ("train", "val", "test")})
    write_manifest(partition, run_dir / MANIFEST, n_notes=len(features["train"]), note_ids=note_ids,
                   extra={"stats": stats or {}, **(extra or {})})
    write_manifest(val_partition, run_dir / VAL_MANIFEST, n_notes=len(features["val"]))


@functools.lru_cache(maxsize=4)
def _features(path: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _load(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / FEATURES
    if not path.exists():
        raise FileNotFoundError(f"staged features not found: {path} (run fedicd's federated staging first)")
    return _features(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=64)
def _client_indices(run_dir: str, manifest: str, partition_id: int) -> np.ndarray:
    partition, _ = read_manifest(Path(run_dir) / manifest)
    if not 0 <= partition_id < partition.n_clients:
        raise ValueError(f"partition-id {partition_id} is outside the {partition.n_clients} clients of "
                         f"{Path(run_dir) / manifest}")
    return partition.clients[partition_id]


def load_client_data(run_dir: str | Path, partition_id: int) -> ClientData:
    """The rows of client ``partition_id`` (cached per process across rounds)."""
    run_dir = Path(run_dir)
    arrays = _load(run_dir)
    tr = _client_indices(str(run_dir), MANIFEST, int(partition_id))
    va = _client_indices(str(run_dir), VAL_MANIFEST, int(partition_id))
    if len(tr) == 0:
        raise ValueError(f"client {partition_id} has an empty training partition in {run_dir / MANIFEST}")
    return ClientData(arrays["x_train"][tr], arrays["y_train"][tr], arrays["x_val"][va], arrays["y_val"][va])


def load_server_data(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Server-held validation and test features/labels (threshold choice and global evaluation)."""
    arrays = _load(Path(run_dir))
    return {k: arrays[k] for k in ("x_val", "y_val", "x_test", "y_test", "y_train")}


def write_run_meta(run_dir: str | Path, meta: dict) -> None:
    (Path(run_dir) / "run_meta.json").write_text(json.dumps(meta, indent=2))


def read_run_meta(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run_meta.json"
    if not path.exists():
        raise FileNotFoundError(f"run metadata not found: {path}")
    return _meta(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _meta(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())
