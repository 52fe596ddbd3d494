"""``fedicd partition``: partition an experiment's training notes and write the manifest.

The notes, label rules and split come from the experiment config exactly as
``fedicd run`` prepares them; the training split is partitioned on its
label-space codes (what the model learns). Writes ``partition.json`` (the
manifest, with statistics and the feasibility report) and ``heatmap.png``.
"""

from __future__ import annotations

from pathlib import Path

from fedicd.config import ExperimentConfig
from fedicd.experiment import prepare_data
from fedicd.partition.config import make_partition
from fedicd.partition.feasibility import check_feasibility, drop_infeasible_codes
from fedicd.partition.manifest import write_manifest
from fedicd.partition.stats import partition_stats, plot_heatmap

__all__ = ["run_partition"]


def run_partition(cfg: ExperimentConfig, out_dir: str | Path) -> dict:
    """Partition ``cfg``'s training notes; returns the manifest's extra fields (stats, feasibility)."""
    out = Path(out_dir)
    data = prepare_data(cfg)
    train = data.parts["train"]
    label_set = set(data.binarizer.classes_)
    labels = [tuple(c for c in data.notes.codes[i] if c in label_set) for i in train]
    sites = [data.notes.sites[i] for i in train] if data.notes.sites is not None else None
    partition = make_partition(cfg.partition, labels, seed=cfg.seed, sites=sites)
    stats = partition_stats(labels, partition)
    extra: dict = {"source": {"config": cfg.name, "split": "train", "n_labels": len(label_set)},
                   "stats": stats.to_dict()}
    if cfg.partition.min_per_client > 0:
        report = check_feasibility(labels, partition, min_per_client=cfg.partition.min_per_client)
        extra["feasibility"] = report.to_dict()
        if cfg.partition.drop_infeasible:
            _, emptied = drop_infeasible_codes(labels, report)
            extra["feasibility"].update({"dropped_codes": sorted(report.violations),
                                         "notes_left_without_codes": emptied})
    write_manifest(partition, out / "partition.json", n_notes=len(train),
                   note_ids=[data.notes.ids[i] for i in train], extra=extra)
    plot_heatmap(stats, out / "heatmap.png", title=f"{cfg.name}: {partition.scheme} {partition.params}")
    return extra
