"""Plots of collected runs: federated learning curves compared, each attack's leakage-vs-utility, client sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fedicd.report.collect import Run

__all__ = ["plot_rounds", "plot_partition_sizes", "plot_runs"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(runs: Sequence[Run], path: str | Path, *, key: str = "test_micro_f1") -> Path:
    """``key`` (a history.csv column) per round, one line per federated run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for r in runs:
        history = r.history or r.results.get("history") or []
        ax.plot([h["round"] for h in history], [h.get(key) if h.get(key) is not None else float("nan")
                                                for h in history], marker="o", ms=3, label=r.name)
    ax.set_xlabel("round")
    ax.set_ylabel(key.replace("_", " "))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_partition_sizes(runs: Sequence[Run], path: str | Path) -> Path:
    """Notes per client, one group of bars per partition run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    width = 0.8 / max(len(runs), 1)
    for i, r in enumerate(runs):
        sizes = (r.results.get("stats") or {}).get("sizes") or []
        ax.bar([k + i * width for k in range(len(sizes))], sizes, width=width, label=r.path.name)
    ax.set_xlabel("client")
    ax.set_ylabel("training notes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_runs(runs: Sequence[Run], out: str | Path) -> list[Path]:
    """Every plot the runs support, written under ``out``; returns their paths."""
    from fedicd.plots import plot_learning_curves

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
            from fedicd.attack_sweep import plot_leakage_utility

            path = out / f"leakage_utility_{r.path.name}.png"
            plot_leakage_utility(r.results["rows"], path)
            written.append(path)
    return written
