"""IID partition: a seeded random permutation cut into equal (or given) sizes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedicd.partition.base import Codes, Partition, PartitionError, check_common, check_min_size, split_by_sizes

__all__ = ["iid_partition"]


def iid_partition(labels: Codes, n_clients: int, *, seed: int = 0, sizes: Sequence[int] | None = None,
                  min_partition_size: int = 0) -> Partition:
    """Share notes out uniformly at random.

    ``sizes`` (summing to the number of notes) fixes each client's size;
    by default sizes differ by at most one.
    """
    n = check_common(labels, n_clients, allow_empty_labels=True)
    check_min_size(min_partition_size, n, n_clients)
    if sizes is None:
        sizes_arr = np.full(n_clients, n // n_clients, dtype=np.int64)
        sizes_arr[: n % n_clients] += 1
    else:
        sizes_arr = np.asarray(sizes, dtype=np.int64)
        if len(sizes_arr) != n_clients or sizes_arr.sum() != n or (sizes_arr < 0).any():
            raise PartitionError(f"sizes must be {n_clients} non-negative integers summing to {n}, got {list(sizes)}")
    if sizes_arr.min() < min_partition_size:
        raise PartitionError(f"sizes {sizes_arr.tolist()} break min_partition_size={min_partition_size}")
    order = np.random.default_rng(seed).permutation(n)
    return Partition(clients=split_by_sizes(order, sizes_arr), names=[f"client-{k}" for k in range(n_clients)],
                     scheme="iid", params={"sizes": None if sizes is None else sizes_arr.tolist(),
                                           "min_partition_size": min_partition_size}, seed=seed)
