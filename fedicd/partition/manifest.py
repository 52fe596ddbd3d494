"""Partition manifests: the JSON file federated training reads to find each client's notes.

A manifest holds the scheme, its parameters and seed, each client's index
list (positions in the note list that was partitioned, e.g. the training
split) and, when known, the note ids, so a client can check it is reading
the notes the partition was made for. Statistics and the feasibility report
ride along for the record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fedicd.partition.base import Partition, PartitionError

__all__ = ["write_manifest", "read_manifest", "MANIFEST_FORMAT"]

MANIFEST_FORMAT = "fedicd-partition/1"


def write_manifest(partition: Partition, path: str | Path, *, n_notes: int, note_ids: Sequence[str] | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``partition`` as JSON; ``extra`` (stats, feasibility, source) is stored as-is."""
    if note_ids is not None and len(note_ids) != n_notes:
        raise PartitionError(f"{len(note_ids)} note ids given for n_notes={n_notes}")
    clients = []
    for name, idx in zip(partition.names, partition.clients):
        entry: dict[str, Any] = {"name": name, "indices": [int(i) for i in idx]}
        if note_ids is not None:
            entry["note_ids"] = [note_ids[int(i)] for i in idx]
        clients.append(entry)
    doc = {"format": MANIFEST_FORMAT, "scheme": partition.scheme, "params": partition.params,
           "seed": partition.seed, "attempts": partition.attempts, "n_notes": n_notes,
           "dropped": [int(i) for i in partition.dropped], "clients": clients, **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return path


def read_manifest(path: str | Path) -> tuple[Partition, dict[str, Any]]:
    """Read a manifest; returns the :class:`Partition` and the whole JSON document."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"partition manifest not found: {path}")
    doc = json.loads(path.read_text())
    if doc.get("format") != MANIFEST_FORMAT:
        raise PartitionError(f"{path}: not a fedicd partition manifest (format {doc.get('format')!r}, "
                             f"expected {MANIFEST_FORMAT!r})")
    clients = [np.asarray(c["indices"], dtype=np.int64) for c in doc["clients"]]
    seen = np.concatenate([*clients, np.asarray(doc["dropped"], dtype=np.int64)])
    if len(seen) != doc["n_notes"] or len(np.unique(seen)) != len(seen):
        raise PartitionError(f"{path}: client indices do not cover the {doc['n_notes']} notes exactly once")
    partition = Partition(clients=clients, names=[c["name"] for c in doc["clients"]], scheme=doc["scheme"],
                          params=doc["params"], seed=doc["seed"], attempts=doc.get("attempts", 1),
                          dropped=np.asarray(doc["dropped"], dtype=np.int64))
    return partition, doc
