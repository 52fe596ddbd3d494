"""The read side of a staged run: what a client, the server and a researcher load from the run folder.

Kept apart from :mod:`fedicd.federated.data` (which stages: loads notes, embeds, partitions) so that a
client process imports numpy and the file readers only, not the whole data pipeline.

Each role reads its own file (:mod:`fedicd.federated.site_data`): client ``pid`` reads
``clients/<pid>/data.npz`` (:func:`load_client_data`), the server reads ``server/eval.npz``
(:func:`load_server_data`, absent without ``federated.server_eval``). Features are pooled vectors, or the
chunk sequences of a chunk-sequence head (:data:`fedicd.heads.SEQUENCE_HEADS`), read back as
:class:`~fedicd.sequences.ChunkSequences`. :func:`load_staged_splits` reassembles the whole training split from
every client's file and the partition manifest: the researcher's (and the attacks') ground truth, never the
server's.

Privacy
-------
The server process never calls :func:`load_client_data` or :func:`load_staged_splits` and never opens the
partition manifests (``partition.json``, ``partition_val.json``: the coordinator's record of who holds which
note); a client opens only its own file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedicd.federated.site_data import (ClientData, SiteDataError, check_features_fit, client_data_path,
                                        client_labels, load_server_data, read_client_data, read_server_eval,
                                        server_eval_path)
from fedicd.partition.manifest import read_manifest
from fedicd.sequences import ChunkSequences, ChunksMissingError, is_sequence

__all__ = ["ClientData", "load_client_data", "load_server_data", "load_staged_splits", "check_features_fit",
           "check_staged_features", "MANIFEST", "VAL_MANIFEST", "SPLITS"]

MANIFEST = "partition.json"
VAL_MANIFEST = "partition_val.json"
SPLITS = ("train", "val", "test")


def load_client_data(run_dir: str | Path, partition_id: int) -> ClientData:
    """The rows of client ``partition_id`` in a staged run folder (its ``clients/<pid>/data.npz``, cached per
    process across rounds); :class:`~fedicd.federated.site_data.SiteDataError` when the run has no such client."""
    return read_client_data(client_data_path(run_dir, partition_id))


def check_staged_features(run_dir: str | Path, head: str, *, server_eval: bool = True) -> None:
    """:func:`check_features_fit` for the server's evaluation notes staged in ``run_dir``.

    Without server evaluation (``server_eval`` False) nothing is opened: each client checks its own file.

    Raises
    ------
    SiteDataError
        ``server_eval`` and the run folder holds no ``server/eval.npz`` (staged without it, or by an older fedicd).
    """
    if not server_eval:
        return
    path = server_eval_path(run_dir)
    if not path.exists():
        raise SiteDataError(f"federated.server_eval = true but {path} does not exist: the run folder {Path(run_dir)} "
                            "was staged without the server's evaluation notes (or by an older fedicd); stage it again")
    try:
        check_features_fit(read_server_eval(path)["x_val"], head, f"the staged features {path}")
    except ChunksMissingError as exc:
        raise ChunksMissingError(f"{exc}; stage the run folder {Path(run_dir)} again with train.head = {head!r}") \
            from None


def _concat(parts: list[np.ndarray | ChunkSequences]) -> np.ndarray | ChunkSequences:
    if not is_sequence(parts[0]):
        return np.concatenate(parts)
    chunks = np.concatenate([p.chunks for p in parts])
    lengths = np.concatenate([p.lengths for p in parts])
    return ChunkSequences(chunks, np.concatenate([[0], np.cumsum(lengths)]))


def _reassemble(parts: list, indices: list[np.ndarray], n: int, what: str):
    """Rows given per client, put back at their positions ``indices`` in a split of ``n`` notes."""
    order = np.concatenate(indices).astype(np.int64)
    if len(order) != n or not np.array_equal(np.sort(order), np.arange(n)):
        raise SiteDataError(f"{what}: the clients' rows do not cover the {n} notes exactly once "
                            f"({len(order)} rows, {len(np.unique(order))} distinct)")
    rows = _concat(parts)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return rows.take(inverse) if is_sequence(rows) else rows[inverse]


def load_staged_splits(run_dir: str | Path) -> dict:
    """The researcher's view of a staged run: the training split reassembled in training-note order.

    Reads every client's file and ``partition.json`` (the coordinator's record): ``x_train``, ``y_train`` in
    the order the training notes were partitioned, ``clients`` (each client's row indices into them) and
    ``labels`` (the codes). The server's ``x_val``, ``y_val``, ``x_test``, ``y_test`` and ``train_label_counts``
    are added when the run has server evaluation; without it, ``x_val``/``y_val`` are reassembled from the
    clients when ``partition_val.json`` gives every validation note to a client (else absent), and there is no
    test split.

    For attacks (:mod:`fedicd.attack_runs`) and experiments only: the server process must not call it (it
    opens every client's data and the partition manifests).
    """
    run_dir = Path(run_dir)
    partition, _ = read_manifest(run_dir / MANIFEST)
    if len(partition.dropped):
        raise SiteDataError(f"{run_dir / MANIFEST} drops {len(partition.dropped)} training notes: no client file "
                            "holds them, so the training split cannot be reassembled")
    codes = client_labels(client_data_path(run_dir, 0))
    clients = [read_client_data(client_data_path(run_dir, k), labels=codes) for k in range(partition.n_clients)]
    n = sum(len(c) for c in partition.clients)
    out: dict = {
        "x_train": _reassemble([c.x_train for c in clients], partition.clients, n, f"{run_dir} training split"),
        "y_train": _reassemble([c.y_train for c in clients], partition.clients, n, f"{run_dir} training labels"),
        "clients": [np.asarray(c, dtype=np.int64) for c in partition.clients],
        "labels": codes}
    server = load_server_data(run_dir)
    if server is not None:
        out.update({k: v for k, v in server.items() if k != "labels"})
        return out
    val, _ = read_manifest(run_dir / VAL_MANIFEST)
    if not len(val.dropped):
        n_val = sum(len(c) for c in val.clients)
        out["x_val"] = _reassemble([c.x_val for c in clients], val.clients, n_val, f"{run_dir} validation split")
        out["y_val"] = _reassemble([c.y_val for c in clients], val.clients, n_val, f"{run_dir} validation labels")
    return out

