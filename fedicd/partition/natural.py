"""Natural partition: one client per value of a site column (hospital, country, synthetic site)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedicd.partition.base import Codes, Partition, PartitionError, check_common

__all__ = ["natural_partition"]


def natural_partition(labels: Codes, n_clients: int | None = None, *, sites: Sequence[str] | None,
                      seed: int = 0, min_partition_size: int = 0) -> Partition:
    """Group notes by ``sites``; clients are the sorted distinct site names.

    ``n_clients``, when given, must equal the number of distinct sites. A site
    smaller than ``min_partition_size`` is an error (naming the site), never
    silently merged or dropped. ``seed`` is recorded only: nothing is random.
    """
    if sites is None:
        raise PartitionError("the natural partition needs a site per note (the notes have no site column)")
    if len(sites) != len(labels):
        raise PartitionError(f"got {len(sites)} sites for {len(labels)} notes")
    if any(s is None or str(s).strip() == "" for s in sites):
        raise PartitionError("some notes have an empty site; the natural partition needs every site")
    names = sorted({str(s) for s in sites})
    check_common(labels, len(names), allow_empty_labels=True)
    if n_clients is not None and n_clients != len(names):
        raise PartitionError(f"n_clients={n_clients} but the site column has {len(names)} distinct sites: {names}")
    site_arr = np.asarray([str(s) for s in sites])
    clients = [np.flatnonzero(site_arr == name) for name in names]
    small = [(name, len(c)) for name, c in zip(names, clients) if len(c) < min_partition_size]
    if small:
        raise PartitionError(f"sites below min_partition_size={min_partition_size}: {small}")
    return Partition(clients=clients, names=names, scheme="natural",
                     params={"min_partition_size": min_partition_size}, seed=seed)
