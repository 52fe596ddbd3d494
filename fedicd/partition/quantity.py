"""Quantity skew: client sizes drawn from Dir(β) or a log-normal, labels otherwise IID.

Each client first gets ``min_partition_size`` notes; the rest are shared in
proportions drawn from ``Dir(beta · 1)`` (``distribution="dirichlet"``) or from
normalised ``LogNormal(0, sigma)`` draws (``distribution="lognormal"``), rounded
by largest remainder, so the minimum always holds and no draw is retried.
Which notes go where is a uniform random permutation.
"""

from __future__ import annotations

import numpy as np

from fedicd.partition.base import (Codes, Partition, PartitionError, check_common, check_min_size,
                                   sizes_from_proportions, split_by_sizes)

__all__ = ["quantity_partition", "DISTRIBUTIONS"]

DISTRIBUTIONS = ("dirichlet", "lognormal")


def _proportions(rng: np.random.Generator, n_clients: int, distribution: str, beta: float,
                 sigma: float) -> np.ndarray:
    if distribution == "dirichlet":
        if not np.isfinite(beta) or beta <= 0:
            raise PartitionError(f"beta must be a finite number > 0, got {beta!r}")
        return rng.dirichlet(np.full(n_clients, beta))
    if not np.isfinite(sigma) or sigma < 0:
        raise PartitionError(f"sigma must be a finite number >= 0, got {sigma!r}")
    draws = rng.lognormal(0.0, sigma, size=n_clients)
    return draws / draws.sum()


def quantity_partition(labels: Codes, n_clients: int, *, seed: int = 0, distribution: str = "dirichlet",
                       beta: float = 0.5, sigma: float = 1.0, min_partition_size: int = 1) -> Partition:
    """Unequal client sizes with IID labels (see module docstring)."""
    if distribution not in DISTRIBUTIONS:
        raise PartitionError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    n = check_common(labels, n_clients, allow_empty_labels=True)
    check_min_size(min_partition_size, n, n_clients)
    rng = np.random.default_rng(seed)
    share = _proportions(rng, n_clients, distribution, float(beta), float(sigma))
    sizes = min_partition_size + sizes_from_proportions(share, n - min_partition_size * n_clients)
    clients = split_by_sizes(rng.permutation(n), sizes)
    params = {"distribution": distribution, "beta": beta, "sigma": sigma, "min_partition_size": min_partition_size}
    return Partition(clients=clients, names=[f"client-{k}" for k in range(n_clients)], scheme="quantity",
                     params=params, seed=seed)
