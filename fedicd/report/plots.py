"""Which figures a set of collected runs gets (the drawing itself is :mod:`fedicd.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fedicd.plots import plot_leakage_utility, plot_learning_curves, plot_partition_sizes, plot_rounds
from fedicd.report.collect import Run

__all__ = ["plot_runs"]


def plot_runs(runs: Sequence[Run], out: str | Path) -> list[Path]:
    """Every plot the runs support, written under ``out``; returns their paths."""

    out = Path(out)
    written: list[Path] = []
    fed = [r for r in runs if r.kind == "federated"]
    if fed:
        written.append(plot_rounds(fed, out / "rounds_test_micro_f1.png"))
        written.append(plot_rounds(fed, out / "rounds_val_loss.png", key="val_loss"))
        for r in fed:
            written.append(plot_learning_curves(r.history or r.results["history"],
                                                out / f"learning_curves_{r.path.name}.png", title=r.name))
    parts = [r for r in runs if r.kind == "partition"]
    if parts:
        written.append(plot_partition_sizes(parts, out / "partition_sizes.png"))
    for r in runs:
        if r.kind == "attack" and r.results.get("rows"):
            path = out / f"leakage_utility_{r.path.name}.png"
            plot_leakage_utility(r.results["rows"], path)
            written.append(path)
    return written
