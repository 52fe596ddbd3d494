"""``fedicd partition``: partition an experiment's training notes and write the manifest.

The notes, label rules and split come from the experiment config exactly as
``fedicd run`` prepares them; the training split is partitioned on its
label-space codes (what the model learns), and ``partition.min_per_client`` /
``drop_infeasible`` act as in a federated run (:mod:`fedicd.partition.rules`),
except that codes breaking the rule without ``drop_infeasible`` are reported
(a WARNING and the manifest's ``feasibility``), not refused. Writes
``partition.json`` (the manifest, with statistics and the feasibility report)
and ``heatmap.png``.
"""

from __future__ import annotations

from pathlib import Path

from fedicd.config import ExperimentConfig
from fedicd.experiment import prepare_data
from fedicd.partition.manifest import write_manifest
from fedicd.partition.rules import check_client_counts, plan_partition
from fedicd.partition.stats import partition_stats, plot_heatmap

__all__ = ["run_partition"]


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
