"""The read side of a staged run: what clients and the server load from the run folder.

Kept apart from :mod:`fedicd.federated.data` (which stages: loads notes, embeds, partitions) so that a
client process imports numpy and the manifest reader only, not the whole data pipeline.

``data/features.npz`` holds, per split, pooled vectors ``x_<split>`` ``[N, d]``, or the chunk sequences of a
chunk-sequence head (:data:`fedicd.heads.SEQUENCE_HEADS`): ``x_<split>`` the flat chunk vectors and
``x_<split>_offsets`` the notes' boundaries (:meth:`fedicd.sequences.ChunkSequences.to_arrays`), read back as
:class:`~fedicd.sequences.ChunkSequences`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedicd.errors import ConfigError
from fedicd.partition.manifest import read_manifest
from fedicd.sequences import ChunkSequences, ChunksMissingError, is_sequence, select_rows

__all__ = ["ClientData", "load_client_data", "load_server_data", "check_features_fit", "check_staged_features",
           "FEATURES", "MANIFEST", "VAL_MANIFEST", "SPLITS"]

FEATURES = "data/features.npz"
MANIFEST = "partition.json"
VAL_MANIFEST = "partition_val.json"
SPLITS = ("train", "val", "test")


@dataclass
class ClientData:
    """One client's training and validation rows: pooled vectors or chunk sequences, and 0/1 labels."""

    x_train: np.ndarray | ChunkSequences
    y_train: np.ndarray
    x_val: np.ndarray | ChunkSequences
    y_val: np.ndarray


@functools.lru_cache(maxsize=4)
def _features(path: str, mtime: float) -> dict[str, np.ndarray | ChunkSequences]:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for part in SPLITS:
        name = f"x_{part}"
        if f"{name}_offsets" in arrays:
            arrays[name] = ChunkSequences.from_arrays(arrays, name)
            del arrays[f"{name}_offsets"]
    return arrays


def _load(run_dir: Path) -> dict[str, np.ndarray | ChunkSequences]:
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
    return ClientData(select_rows(arrays["x_train"], tr), arrays["y_train"][tr], select_rows(arrays["x_val"], va),
                      arrays["y_val"][va])


def load_server_data(run_dir: str | Path) -> dict[str, np.ndarray | ChunkSequences]:
    """Server-held validation and test features/labels (threshold choice and global evaluation); the features
    are chunk sequences where the run was staged with them."""
    arrays = _load(Path(run_dir))
    return {k: arrays[k] for k in ("x_val", "y_val", "x_test", "y_test", "y_train")}


def check_features_fit(features: object, head: str, where: str) -> None:
    """Refuse features the head cannot read.

    Raises
    ------
    ChunksMissingError
        ``head`` is a chunk-sequence head and ``features`` are pooled vectors.
    ConfigError
        ``head`` reads pooled vectors and ``features`` are chunk sequences.
    """
    from fedicd.heads import SEQUENCE_HEADS
    from fedicd.sequences import require_sequences

    if head in SEQUENCE_HEADS:
        require_sequences(features, head, where)
    elif is_sequence(features):
        raise ConfigError(f"train.head = {head!r} reads one pooled vector per note, but {where} holds chunk "
                          f"sequences (made for a chunk-sequence head): choose one of {list(SEQUENCE_HEADS)} or make "
                          "the features again for this head (a staged run: stage it again with this train.head)")


def check_staged_features(run_dir: str | Path, head: str) -> None:
    """:func:`check_features_fit` for the training features staged in ``run_dir``."""
    path = Path(run_dir) / FEATURES
    try:
        check_features_fit(_load(Path(run_dir))["x_train"], head, f"the staged features {path}")
    except ChunksMissingError as exc:
        raise ChunksMissingError(f"{exc}; stage the run folder {Path(run_dir)} again with train.head = {head!r}") \
            from None
