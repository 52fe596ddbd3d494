"""The paper's feasibility rule: every kept code has at least ``m`` notes on every client.

Xu & Dray (2025) keep codes with at least 10 notes per client over 20
clients. Under a non-IID partition many codes break that rule on some client;
:func:`check_feasibility` says which codes on which clients, and
:func:`drop_infeasible_codes` removes them (never the notes: a note left with
no code is counted in the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedicd.partition.base import Codes, Partition, PartitionError, label_matrix

__all__ = ["FeasibilityReport", "check_feasibility", "drop_infeasible_codes"]


@dataclass
class FeasibilityReport:
    """Which codes miss ``min_per_client`` notes on which clients."""

    min_per_client: int
    feasible_codes: list[str]
    violations: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def clients_in_violation(self) -> dict[str, int]:
        """Client name → number of codes it holds too few notes of."""
        out: dict[str, int] = {}
        for per_client in self.violations.values():
            for name in per_client:
                out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {"min_per_client": self.min_per_client, "n_feasible_codes": len(self.feasible_codes),
                "n_violating_codes": len(self.violations), "clients_in_violation": self.clients_in_violation(),
                "violations": self.violations}


def check_feasibility(labels: Codes, partition: Partition, *, min_per_client: int = 10) -> FeasibilityReport:
    """Check the rule for every code in ``labels`` over the clients of ``partition``."""
    if min_per_client < 1:
        raise PartitionError(f"min_per_client must be >= 1, got {min_per_client}")
    y, codes = label_matrix(labels)
    counts = np.vstack([np.asarray(y[idx].sum(axis=0)).ravel() for idx in partition.clients]).astype(int)
    violations = {}
    for j, code in enumerate(codes):
        short = np.flatnonzero(counts[:, j] < min_per_client)
        if len(short):
            violations[code] = {partition.names[k]: int(counts[k, j]) for k in short}
    feasible = [c for c in codes if c not in violations]
    return FeasibilityReport(min_per_client=min_per_client, feasible_codes=feasible, violations=violations)


def drop_infeasible_codes(labels: Codes, report: FeasibilityReport) -> tuple[list[tuple[str, ...]], int]:
    """Labels with the violating codes removed, and how many notes were left with none."""
    bad = set(report.violations)
    kept = [tuple(c for c in cs if c not in bad) for cs in labels]
    return kept, sum(1 for before, after in zip(labels, kept) if before and not after)
