"""The read side of a staged run: what clients and the server load from the run folder.

Kept apart from :mod:`fedicd.federated.data` (which stages: loads notes, embeds, partitions) so that a
client process imports numpy and the manifest reader only, not the whole data pipeline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedicd.partition.manifest import read_manifest

__all__ = ["ClientData", "load_client_data", "load_server_data", "FEATURES", "MANIFEST", "VAL_MANIFEST"]

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


@functools.lru_cache(maxsize=4)
def _features(path: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _load(run_dir: Path) -> dict[str, np.ndarray]:
    path = run_dir / FEATURES
    if not path.exists():
        raise FileNotFoundError(f"staged features not found: {path} (run fedicd's federated staging first)")
    return _features(str(path), path.stat().st_mtime)


@functools.lru_cache(maxsize=8)
def _manifest(path: str, mtime_ns: int):
    """The parsed manifest (cached per file version: a 1,000-client manifest is read once, not per client call)."""
    return read_manifest(Path(path))[0]


def _client_indices(run_dir: str, manifest: str, partition_id: int) -> np.ndarray:
    path = Path(run_dir) / manifest
    partition = _manifest(str(path), path.stat().st_mtime_ns)
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
