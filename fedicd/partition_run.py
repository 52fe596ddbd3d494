"""Partition an experiment's prepared notes: the glue between data preparation and :mod:`fedicd.partition`.

:mod:`fedicd.partition` works on codes, sites and seeds only; this module feeds
it an experiment's training notes as ``fedicd run`` prepares them
(:func:`plan_partition`, used by a federated run's staging) and implements
``fedicd partition`` (:func:`run_partition`).

``fedicd partition``: the notes, label rules and split come from the experiment
config exactly as ``fedicd run`` prepares them; the training split is
partitioned on its label-space codes (what the model learns), and
``partition.min_per_client`` / ``drop_infeasible`` act as in a federated run
(:mod:`fedicd.partition.rules`), except that codes breaking the rule without
``drop_infeasible`` are reported (a WARNING and the manifest's
``feasibility``), not refused. Writes ``partition.json`` (the manifest, with
statistics and the feasibility report) and ``heatmap.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedicd.config import ExperimentConfig
from fedicd.partition.base import Partition
from fedicd.partition.config import make_partition
from fedicd.partition.manifest import write_manifest
from fedicd.partition.rules import FeasibilityOutcome, check_client_counts, enforce_feasibility
from fedicd.partition.stats import partition_stats
from fedicd.plots import plot_heatmap
from fedicd.prepare import PreparedData, prepare_data, restrict_label_space

__all__ = ["PartitionPlan", "plan_partition", "run_partition", "check_client_counts"]


@dataclass
class PartitionPlan:
    """The training partition with the rules applied.

    Attributes
    ----------
    data:
        The prepared data; its label space lacks the dropped codes, and
        ``label_info["partition_feasibility"]`` holds the rule's summary.
    partition:
        Client index arrays into ``data.parts["train"]``.
    labels:
        The training notes' label-space codes (after dropping).
    feasibility:
        What :func:`enforce_feasibility` found and did.
    """

    data: PreparedData
    partition: Partition
    labels: list[tuple[str, ...]]
    feasibility: FeasibilityOutcome


def plan_partition(cfg: ExperimentConfig, data: PreparedData, *, strict: bool) -> PartitionPlan:
    """Partition ``data``'s training notes on their label-space codes and apply :mod:`fedicd.partition.rules`.

    Call :func:`check_client_counts` (``partition=None``) before preparing the
    data too, so a disagreement is refused before any loading.
    """
    train = data.parts["train"]
    label_space = set(data.binarizer.classes_)
    labels = [tuple(c for c in data.notes.codes[i] if c in label_space) for i in train]
    sites = [data.notes.sites[i] for i in train] if data.notes.sites is not None else None
    partition = make_partition(cfg.partition, labels, seed=cfg.seed, sites=sites)
    check_client_counts(cfg, partition)
    outcome = enforce_feasibility(labels, partition, cfg.partition, strict=strict)
    if outcome.dropped:
        data = restrict_label_space(data, outcome.dropped)
    if outcome.summary:
        data.label_info["partition_feasibility"] = outcome.summary
    return PartitionPlan(data=data, partition=partition, labels=outcome.labels, feasibility=outcome)


def run_partition(cfg: ExperimentConfig, out_dir: str | Path) -> dict:
    """Partition ``cfg``'s training notes; returns the manifest's extra fields (stats, feasibility)."""
    out = Path(out_dir)
    check_client_counts(cfg)
    plan = plan_partition(cfg, prepare_data(cfg), strict=False)
    data, partition = plan.data, plan.partition
    stats = partition_stats(plan.labels, partition)
    extra: dict = {"source": {"config": cfg.name, "split": "train", "n_labels": len(data.binarizer.classes_)},
                   "stats": stats.to_dict()}
    if plan.feasibility.report:
        extra["feasibility"] = plan.feasibility.report
    train = data.parts["train"]
    write_manifest(partition, out / "partition.json", n_notes=len(train),
                   note_ids=[data.notes.ids[i] for i in train], extra=extra)
    plot_heatmap(stats, out / "heatmap.png", title=f"{cfg.name}: {partition.scheme} {partition.params}")
    return extra
