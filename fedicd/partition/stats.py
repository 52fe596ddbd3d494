"""Per-client statistics and the non-IID degree of a partition.

Non-IID degree (reported by every fedicd partition):

- ``mean_jsd``: mean over clients of the Jensen–Shannon divergence (base 2, in
  [0, 1]) between the client's label-occurrence distribution and the global
  one (as in Li et al., NIID-Bench, for label skew);
- ``mean_absent_fraction``: mean over clients of the fraction of the codes
  present somewhere that the client never sees.

A finite IID sample already has ``mean_jsd > 0``; compare against an IID
partition of the same notes (``experiments/partition_noniid.py`` does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

from fedicd.partition.base import Codes, Partition, PartitionError, label_matrix

__all__ = ["PartitionStats", "partition_stats"]


@dataclass
class PartitionStats:
    """Sizes, per-client code counts (``[K, C]``, notes carrying each code) and non-IID degree."""

    names: list[str]
    sizes: list[int]
    codes: list[str]
    label_counts: np.ndarray
    jsd: list[float]
    absent_fraction: list[float]

    @property
    def mean_jsd(self) -> float:
        return float(np.mean(self.jsd))

    @property
    def mean_absent_fraction(self) -> float:
        return float(np.mean(self.absent_fraction))

    def to_dict(self, *, top: int = 50) -> dict:
        """JSON-ready summary (label counts only for the ``top`` most frequent codes)."""
        order = np.argsort(-self.label_counts.sum(axis=0), kind="stable")[:top]
        return {"names": self.names, "sizes": self.sizes, "mean_jsd": self.mean_jsd, "jsd": self.jsd,
                "mean_absent_fraction": self.mean_absent_fraction, "absent_fraction": self.absent_fraction,
                "top_codes": [self.codes[j] for j in order],
                "top_code_counts": self.label_counts[:, order].astype(int).tolist()}


def _jsd(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    if p_counts.sum() == 0:
        return 1.0  # a client with no labelled note shares nothing with the global distribution
    return float(jensenshannon(p_counts, q_counts, base=2) ** 2)


def partition_stats(labels: Codes, partition: Partition) -> PartitionStats:
    """Statistics of ``partition`` over the notes' ``labels`` (the same list it partitioned)."""
    assigned = sum(partition.sizes) + len(partition.dropped)
    if assigned != len(labels):
        raise PartitionError(f"partition covers {assigned} notes but {len(labels)} label rows were given")
    y, codes = label_matrix(labels)
    counts = np.vstack([np.asarray(y[idx].sum(axis=0)).ravel() for idx in partition.clients])
    total = counts.sum(axis=0)
    present = total > 0
    jsd = [_jsd(c[present], total[present]) for c in counts]
    absent = [float(((c == 0) & present).sum() / max(present.sum(), 1)) for c in counts]
    return PartitionStats(names=list(partition.names), sizes=partition.sizes, codes=codes, label_counts=counts,
                          jsd=jsd, absent_fraction=absent)


