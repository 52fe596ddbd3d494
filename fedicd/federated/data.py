"""Stage an experiment's data for federated training, and load a client's share of it.

:func:`stage_data` runs once, on the coordinator: notes → labels/split →
embeddings (cached) → scaler fitted on the training notes → partition of the
training notes (and an IID or per-site split of the validation notes, for
client-side evaluation). It writes ``data/features.npz`` and
``partition.json`` under the run directory. Clients read only their rows
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedicd.config import ExperimentConfig
from fedicd.experiment import PreparedData, embed_parts, prepare_data
from fedicd.partition import Partition, iid_partition, natural_partition, partition_stats, read_manifest, write_manifest
from fedicd.partition.config import make_partition

__all__ = ["stage_data", "stage_arrays", "load_client_data", "load_server_data", "ClientData", "StagedInfo"]

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
    n_clients: int
    input_dim: int
    n_labels: int
    data: PreparedData
    embed_info: dict
    partition: Partition


def _val_partition(cfg: ExperimentConfig, data: PreparedData, n_clients: int, names: list[str]) -> Partition:
    val = data.parts["val"]
    if cfg.partition.scheme == "natural" and data.notes.sites is not None:
        part = natural_partition([()] * len(val), sites=[data.notes.sites[i] for i in val])
        if part.names != names:
            raise ValueError(f"validation notes cover sites {part.names}, training notes {names}")
        return part
    return iid_partition([()] * len(val), n_clients, seed=cfg.seed + 1)


def stage_data(cfg: ExperimentConfig, run_dir: str | Path) -> StagedInfo:
    """Prepare features and partitions for ``cfg`` under ``run_dir`` (see module docstring)."""
    data = prepare_data(cfg)
    feats, embed_info, _ = embed_parts(data, cfg)
    label_set = set(data.binarizer.classes_)
    train = data.parts["train"]
    labels = [tuple(c for c in data.notes.codes[i] if c in label_set) for i in train]
    sites = [data.notes.sites[i] for i in train] if data.notes.sites is not None else None
    partition = make_partition(cfg.partition, labels, seed=cfg.seed, sites=sites)
    val_part = _val_partition(cfg, data, partition.n_clients, partition.names)
    stage_arrays(run_dir, feats, data.labels, partition, val_part, note_ids=[data.notes.ids[i] for i in train],
                 stats=partition_stats(labels, partition).to_dict())
    return StagedInfo(n_clients=partition.n_clients, input_dim=feats["train"].shape[1],
                      n_labels=data.labels["train"].shape[1], data=data, embed_info=embed_info, partition=partition)


def stage_arrays(run_dir: str | Path, features: dict[str, np.ndarray], labels: dict[str, np.ndarray],
                 partition: Partition, val_partition: Partition, *, note_ids: list[str] | None = None,
                 stats: dict | None = None) -> None:
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
                   extra={"stats": stats or {}})
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
