"""Which validation notes each federated client evaluates on (``partition.client_validation``).

The server always holds the whole validation split (it chooses the decision
threshold and scores the global model on it); this module only decides which
validation rows a client also gets for client-side evaluation:

``"none"``
    No client gets validation rows: server-side validation only.
``"iid"``
    The validation notes are shared among the clients at random, equal sizes
    (what every non-natural partition did before); needs at least as many
    validation notes as clients.
``"per_site"``
    ``natural`` partitions only: each site's client gets its site's validation
    notes; a training site without validation notes is refused.
``"auto"`` (default)
    ``natural``: per site where the site has validation notes, none elsewhere.
    Other schemes: ``"iid"``, and when there are fewer validation notes than
    clients, one note each to as many clients as there are notes.

A client with no validation rows does not evaluate. Validation notes given to
no client (``"none"``, or a site with validation notes but no training notes)
are listed as ``dropped`` in the manifest: they stay on the server.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedicd.partition.base import Partition, PartitionError, split_by_sizes
from fedicd.partition.iid import iid_partition

__all__ = ["CLIENT_VALIDATION", "validation_partition"]

CLIENT_VALIDATION = ("auto", "per_site", "iid", "none")
_ALTERNATIVES = "'auto' (clients without validation notes do not evaluate) or 'none' (server-side validation only)"


def _per_site(n_val: int, train: Partition, sites: Sequence[str] | None, mode: str) -> list[np.ndarray]:
    if train.scheme != "natural" or sites is None or len(sites) != n_val:
        raise PartitionError(f"partition.client_validation = {mode!r} per site needs a natural partition and a site "
                             f"for each of the {n_val} validation notes")
    site_arr = np.asarray([str(s) for s in sites])
    clients = [np.flatnonzero(site_arr == name) for name in train.names]
    missing = [name for name, idx in zip(train.names, clients) if len(idx) == 0]
    if missing and mode == "per_site":
        raise PartitionError(f"partition.client_validation = 'per_site': training sites {missing} have no validation "
                             f"notes ({n_val} validation notes in all); use 'iid' (validation notes shared at "
                             f"random), {_ALTERNATIVES}")
    return clients


def _iid(n_val: int, n_clients: int, seed: int, mode: str) -> list[np.ndarray]:
    if n_val >= n_clients:
        return iid_partition([()] * n_val, n_clients, seed=seed).clients
    if mode == "iid":
        raise PartitionError(f"partition.client_validation = 'iid' shares {n_val} validation notes among {n_clients} "
                             f"clients: fewer notes than clients; use {_ALTERNATIVES}")
    sizes = np.zeros(n_clients, dtype=np.int64)
    sizes[:n_val] = 1
    return split_by_sizes(np.random.default_rng(seed).permutation(n_val), sizes)


def validation_partition(n_val: int, train: Partition, *, mode: str = "auto", seed: int = 0,
                         sites: Sequence[str] | None = None) -> tuple[Partition, dict]:
    """Validation rows per client of ``train`` (see module docstring), and a summary for the results.

    Parameters
    ----------
    n_val:
        Number of validation notes (indices 0..n_val-1).
    train:
        The training partition; the result has the same clients, in the same order.
    mode:
        One of :data:`CLIENT_VALIDATION`.
    seed:
        Seed of the random (IID) share.
    sites:
        Site of each validation note (per-site modes).
    """
    if mode not in CLIENT_VALIDATION:
        raise PartitionError(f"client_validation must be one of {list(CLIENT_VALIDATION)}, got {mode!r}")
    k = train.n_clients
    if mode == "none":
        resolved, clients = "none", [np.empty(0, dtype=np.int64) for _ in range(k)]
    elif mode == "per_site" or (mode == "auto" and train.scheme == "natural"):
        resolved, clients = "per_site", _per_site(n_val, train, sites, mode)
    else:
        resolved, clients = "iid", _iid(n_val, k, seed, mode)
    assigned = np.concatenate([np.empty(0, dtype=np.int64), *clients])
    dropped = np.setdiff1d(np.arange(n_val), assigned)
    part = Partition(clients=clients, names=list(train.names), scheme=f"validation-{resolved}",
                     params={"client_validation": mode}, seed=seed, dropped=dropped)
    info = {"client_validation": mode, "resolved": resolved,
            "clients_without_validation": [n for n, c in zip(train.names, clients) if len(c) == 0],
            "val_notes_server_only": int(len(dropped))}
    return part, info
