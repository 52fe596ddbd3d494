"""What every partitioner returns, and the input checks they share.

A partitioner maps ``(labels, n_clients, seed, options)`` to a
:class:`Partition`: one sorted index array per client, plus the indices it
dropped on purpose (none of fedicd's partitioners drop notes; the field exists
so that a scheme which must drop says so instead of losing them).

``labels`` is always the notes' code lists (``CodedNotes.codes``): order
matters only for the primary-label scheme, which uses the first code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from scipy import sparse

__all__ = ["Partition", "PartitionError", "check_common", "check_min_size", "label_matrix",
           "sizes_from_proportions", "split_by_sizes", "draw_with_retries"]

Codes = Sequence[Sequence[str]]


class PartitionError(ValueError):
    """A partition request is invalid or its constraints cannot be met."""


@dataclass
class Partition:
    """Client index arrays (into the notes given to the partitioner) and provenance.

    Attributes
    ----------
    clients:
        ``clients[k]`` holds the sorted indices of client ``k``'s notes.
    names:
        A name per client (``client-0``... or the site name).
    scheme, params, seed:
        How the partition was made (written to the manifest).
    dropped:
        Indices assigned to no client (always reported, normally empty).
    attempts:
        Draws needed to satisfy ``min_partition_size``.
    """

    clients: list[np.ndarray]
    names: list[str]
    scheme: str
    params: dict[str, Any]
    seed: int
    dropped: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    attempts: int = 1

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    @property
    def sizes(self) -> list[int]:
        return [int(len(c)) for c in self.clients]

    def assignment(self, n: int) -> np.ndarray:
        """Client id per note (``-1`` for dropped notes)."""
        out = np.full(n, -1, dtype=np.int64)
        for k, idx in enumerate(self.clients):
            out[idx] = k
        return out


def check_common(labels: Codes, n_clients: int, *, allow_empty_labels: bool = False) -> int:
    """Validate the shared inputs; return the number of notes."""
    n = len(labels)
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or n_clients < 1:
        raise PartitionError(f"n_clients must be an integer >= 1, got {n_clients!r}")
    if n == 0:
        raise PartitionError("cannot partition an empty set of notes")
    if n_clients > n:
        raise PartitionError(f"n_clients={n_clients} is more than the {n} notes to share out")
    if not allow_empty_labels:
        empty = [i for i, cs in enumerate(labels) if len(cs) == 0]
        if empty:
            raise PartitionError(f"{len(empty)} notes have no label (e.g. index {empty[0]}); label-skew "
                                 "partitioners need every note to carry at least one code, or "
                                 "unlabelled='uniform' (config: partition.unlabelled = \"uniform\") to spread "
                                 "such notes uniformly")
    return n


def label_matrix(labels: Codes) -> tuple[sparse.csr_matrix, list[str]]:
    """Sparse binary ``[N, C]`` matrix of the codes and the sorted code list."""
    vocab = sorted({c for cs in labels for c in cs})
    pos = {c: j for j, c in enumerate(vocab)}
    rows = [i for i, cs in enumerate(labels) for _ in dict.fromkeys(cs)]
    cols = [pos[c] for cs in labels for c in dict.fromkeys(cs)]
    data = np.ones(len(rows), dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(labels), len(vocab))), vocab


def sizes_from_proportions(proportions: np.ndarray, n: int) -> np.ndarray:
    """Integer sizes summing to ``n`` (largest-remainder rounding of ``proportions * n``)."""
    raw = np.asarray(proportions, dtype=np.float64) * n
    sizes = np.floor(raw).astype(np.int64)
    remainder = n - sizes.sum()
    order = np.argsort(-(raw - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    return sizes


def split_by_sizes(order: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """Cut a permutation into consecutive pieces of the given sizes (each sorted)."""
    bounds = np.cumsum(sizes)[:-1]
    return [np.sort(part) for part in np.split(order, bounds)]


def check_min_size(min_partition_size: int, n: int, n_clients: int) -> None:
    """Reject a ``min_partition_size`` that no partition of ``n`` notes could meet."""
    if isinstance(min_partition_size, bool) or not isinstance(min_partition_size, (int, np.integer)) \
            or min_partition_size < 0:
        raise PartitionError(f"min_partition_size must be an integer >= 0, got {min_partition_size!r}")
    if min_partition_size * n_clients > n:
        raise PartitionError(f"min_partition_size={min_partition_size} x n_clients={n_clients} = "
                             f"{min_partition_size * n_clients} exceeds the {n} notes: infeasible")


def draw_with_retries(draw: Callable[[np.random.Generator], list[np.ndarray]], rng: np.random.Generator, *,
                      min_partition_size: int, max_retries: int, what: str) -> tuple[list[np.ndarray], int]:
    """Call ``draw`` until every client has ``min_partition_size`` notes, at most ``max_retries`` times."""
    if max_retries < 1:
        raise PartitionError(f"max_retries must be >= 1, got {max_retries}")
    smallest = None
    for attempt in range(1, max_retries + 1):
        clients = draw(rng)
        smallest = min(len(c) for c in clients)
        if smallest >= min_partition_size:
            return clients, attempt
    raise PartitionError(f"{what}: no draw in {max_retries} attempts gave every client >= min_partition_size="
                         f"{min_partition_size} notes (smallest client in the last draw: {smallest}); "
                         "raise alpha, lower min_partition_size or n_clients, or enable balancing")
