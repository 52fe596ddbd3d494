"""Plots of results files (learning curves)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_learning_curves"]


def plot_learning_curves(history: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Test micro/macro F1 and validation loss per round, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, label in (("test_micro_f1", "test micro-F1"), ("test_macro_f1", "test macro-F1")):
        ax1.plot(rounds, [r.get(key, float("nan")) for r in history], label=label)
    ax1.set_xlabel("round")
    ax1.legend(fontsize=8)
    for key, label in (("val_loss", "server val loss"), ("train_train_loss", "client train loss")):
        ax2.plot(rounds, [r.get(key, float("nan")) for r in history], label=label)
    ax2.set_xlabel("round")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
