"""``[partition]`` config section and the one call that turns it into a partition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fedicd.errors import ConfigError
from fedicd.partition.base import Codes, Partition
from fedicd.partition.dirichlet import SCHEMES
from fedicd.partition.quantity import DISTRIBUTIONS
from fedicd.partition.registry import partitioner_names, run_partitioner
from fedicd.partition.validation import CLIENT_VALIDATION

__all__ = ["PartitionConfig", "make_partition"]


@dataclass(frozen=True)
class PartitionConfig:
    """How the training notes are shared among clients (seeded by the experiment's ``seed``).

    ``scheme`` (a name in :mod:`fedicd.partition.registry`): ``iid`` | ``dirichlet`` (``alpha``, ``dirichlet_scheme``,
    ``balance``: 0 = no cap, else cap = balance x N / n_clients) | ``quantity``
    (``distribution`` dirichlet with ``beta`` or lognormal with ``sigma``) |
    ``natural`` (one client per site; ``n_clients`` is then ignored).
    ``min_per_client`` > 0 checks the paper's rule (every code has that many
    notes on every client), in ``fedicd partition`` and in a federated
    ``fedicd run``; ``drop_infeasible`` removes the codes that break it from the
    label space (see :mod:`fedicd.partition.rules`).

    ``client_validation``: which validation notes each client evaluates on
    (see :mod:`fedicd.partition.validation`): ``"auto"`` (per site where a site
    has validation notes, for ``natural``; IID otherwise), ``"per_site"``
    (``natural`` only; every training site must have validation notes),
    ``"iid"`` (validation notes shared at random) or ``"none"`` (server-side
    validation only). The server always holds the whole validation split.
    """

    scheme: str = "iid"
    """How training notes are shared among clients: "iid", "dirichlet" (label skew), "quantity" (size skew) or
    "natural" (one client per site)."""
    n_clients: int = 20
    """Number of clients (ignored by scheme "natural", which makes one per site)."""
    alpha: float = 0.5
    """Dirichlet concentration of scheme "dirichlet": small values give clients dominated by a few codes, large
    values tend to IID."""
    dirichlet_scheme: str = "product"
    """How a multi-label note picks its client under "dirichlet": "product" (where all its codes are common;
    default), "mixture" (where any is common) or "primary" (per-class split on the first code)."""
    balance: float = 0.0
    """Cap of balance x N / n_clients notes per client under "dirichlet"; 0 = no cap, 1.0 = equal sizes."""
    beta: float = 0.5
    """Dirichlet concentration of client sizes under scheme "quantity" with distribution "dirichlet"."""
    distribution: str = "dirichlet"
    """Size distribution of scheme "quantity": "dirichlet" (with beta) or "lognormal" (with sigma)."""
    sigma: float = 1.0
    """Log-normal sigma of client sizes under scheme "quantity" with distribution "lognormal"."""
    min_partition_size: int = 1
    """Fewest notes any client may get; draws are retried (at most max_retries times) until every client has this
    many."""
    max_retries: int = 50
    """Most draws tried to satisfy min_partition_size before the partition is refused with an error naming the
    constraint."""
    unlabelled: str = "error"
    """Notes without any label-space code: "error" (refuse; default) or "uniform" (spread uniformly, or one group of
    their own under "primary")."""
    min_per_client: int = 0
    """The paper's rule checked per client: every code needs at least this many notes on every client (0 = off);
    federated runs and `fedicd partition` only."""
    drop_infeasible: bool = False
    """Remove the codes that break min_per_client from the label space instead of refusing the run."""
    client_validation: str = "auto"
    """Validation notes each client evaluates on: "auto", "per_site" (natural only), "iid" (validation notes shared
    at random) or "none" (server-side validation only)."""

    def __post_init__(self) -> None:
        for name, value, allowed in (("scheme", self.scheme, partitioner_names()), ("dirichlet_scheme", self.dirichlet_scheme,
                                     SCHEMES), ("distribution", self.distribution, DISTRIBUTIONS),
                                     ("unlabelled", self.unlabelled, ("error", "uniform")),
                                     ("client_validation", self.client_validation, CLIENT_VALIDATION)):
            if value not in allowed:
                raise ConfigError(f"partition.{name} must be one of {list(allowed)}, got {value!r}")
        if self.n_clients < 1 or self.min_partition_size < 0 or self.min_per_client < 0:
            raise ConfigError("partition.n_clients must be >= 1, min_partition_size and min_per_client >= 0; got "
                              f"{self.n_clients}, {self.min_partition_size}, {self.min_per_client}")
        if self.balance != 0 and self.balance < 1:
            raise ConfigError(f"partition.balance must be 0 (off) or >= 1, got {self.balance}")
        if self.drop_infeasible and self.min_per_client == 0:
            raise ConfigError("partition.drop_infeasible = true drops the codes that break partition.min_per_client; "
                              "set partition.min_per_client >= 1 too (it is 0)")
        if self.client_validation == "per_site" and self.scheme != "natural":
            raise ConfigError(f"partition.client_validation = 'per_site' needs partition.scheme = 'natural' (one "
                              f"client per site), got {self.scheme!r}; use 'auto', 'iid' or 'none'")


def make_partition(cfg: PartitionConfig, labels: Codes, *, seed: int, sites: Sequence[str] | None = None) -> Partition:
    """Run the partitioner ``cfg`` names on ``labels`` (and ``sites`` for ``natural``)."""
    return run_partitioner(cfg, labels, seed=seed, sites=sites)
