"""The partition rules that ``fedicd partition`` and a federated ``fedicd run`` both apply (one copy).

- :func:`check_client_counts`: the paper's label rule counts
  ``data.min_per_client × data.n_clients`` notes; with the rule on,
  ``data.n_clients`` must be the number of clients that train
  (``partition.n_clients``, or the number of sites of a natural partition).
- :func:`enforce_feasibility`: ``partition.min_per_client`` (every label-space
  code has that many notes on every client). Codes that break it are removed
  from the label space with ``partition.drop_infeasible = true``; otherwise a
  federated run refuses (``strict``) and ``fedicd partition``, whose job is to
  report them, logs a WARNING and writes them to the manifest. If every code
  breaks it, both refuse.

Both work on codes, partitions and config sections; partitioning an
experiment's prepared notes (``plan_partition``) is :mod:`fedicd.partition_run`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fedicd.errors import ConfigError
from fedicd.partition.base import Codes, Partition
from fedicd.partition.config import PartitionConfig
from fedicd.partition.feasibility import check_feasibility, drop_infeasible_codes

__all__ = ["check_client_counts", "enforce_feasibility", "FeasibilityOutcome"]

log = logging.getLogger(__name__)


def check_client_counts(cfg: Any, partition: Partition | None = None) -> None:
    """Refuse ``data.n_clients`` ≠ the partition's client count while ``data.min_per_client > 0``.

    ``cfg``: anything with ``data`` (``min_per_client``, ``n_clients``) and ``partition``
    (a :class:`PartitionConfig`) sections, e.g. an experiment config.

    Call it before partitioning (``partition=None``: checks ``partition.n_clients``;
    a natural partition is skipped, its site count is not known yet) and after.
    """
    d = cfg.data
    if d.min_per_client == 0:
        return
    if partition is None and cfg.partition.scheme == "natural":
        return
    n = cfg.partition.n_clients if partition is None else partition.n_clients
    what = (f"the natural partition has {n} sites (one client each)" if cfg.partition.scheme == "natural"
            else f"partition.n_clients={n}")
    if d.n_clients != n:
        raise ConfigError(f"data.n_clients={d.n_clients} (the label rule data.min_per_client={d.min_per_client} × "
                          f"data.n_clients keeps codes with >= {d.min_per_client * d.n_clients} notes) but {what}: "
                          f"set data.n_clients = {n} so the rule counts the clients that train")


@dataclass
class FeasibilityOutcome:
    """What :func:`enforce_feasibility` found and did.

    Attributes
    ----------
    labels:
        The notes' codes after dropping (the input when nothing was dropped).
    dropped:
        Codes removed from the label space (sorted).
    report:
        The full report for the manifest (``{}`` when the rule is off).
    summary:
        A short version for results.json (no per-client violations).
    """

    labels: list[tuple[str, ...]]
    dropped: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def _example(violations: dict[str, dict[str, int]]) -> str:
    code = next(iter(violations))
    return f"e.g. {code}: {violations[code]}"


def enforce_feasibility(labels: Codes, partition: Partition, cfg: PartitionConfig, *,
                        strict: bool) -> FeasibilityOutcome:
    """Apply ``cfg.min_per_client`` / ``cfg.drop_infeasible`` to ``labels`` (the partitioned notes' codes).

    ``strict`` (a federated run): infeasible codes without ``drop_infeasible``
    raise :class:`ConfigError`; otherwise they are logged as a WARNING.
    """
    kept_all = [tuple(cs) for cs in labels]
    if cfg.min_per_client == 0:
        return FeasibilityOutcome(labels=kept_all)
    report = check_feasibility(labels, partition, min_per_client=cfg.min_per_client)
    n_all, n_bad = len(report.feasible_codes) + len(report.violations), len(report.violations)
    summary = {"min_per_client": cfg.min_per_client, "n_codes": n_all, "n_violating_codes": n_bad,
               "clients_in_violation": report.clients_in_violation()}
    head = (f"partition.min_per_client={cfg.min_per_client} (every code needs >= {cfg.min_per_client} notes on each "
            f"of the {partition.n_clients} clients)")
    if report.ok:
        return FeasibilityOutcome(labels=kept_all, report=report.to_dict(), summary=summary)
    if not report.feasible_codes:
        raise ConfigError(f"{head}: all {n_all} label-space codes break it ({_example(report.violations)}); lower "
                          "partition.min_per_client, use fewer clients or a less skewed partition")
    if cfg.drop_infeasible:
        kept, emptied = drop_infeasible_codes(labels, report)
        dropped = sorted(report.violations)
        extra = {"dropped_codes": dropped, "notes_left_without_codes": emptied}
        log.warning("%s: removed %d of %d codes from the label space (partition.drop_infeasible); %d training "
                    "notes are left without a code", head, n_bad, n_all, emptied)
        return FeasibilityOutcome(labels=kept, dropped=dropped, report={**report.to_dict(), **extra},
                                  summary={**summary, **extra})
    message = (f"{head}: {n_bad} of {n_all} label-space codes break it ({_example(report.violations)}); set "
               "partition.drop_infeasible = true to remove them from the label space, or lower "
               "partition.min_per_client (0 turns the check off)")
    if strict:
        raise ConfigError(message)
    log.warning(message)
    return FeasibilityOutcome(labels=kept_all, report=report.to_dict(), summary=summary)
