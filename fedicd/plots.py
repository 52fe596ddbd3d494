"""Every figure fedicd draws: learning curves, runs compared, client sizes, partition heat maps, leakage vs utility,
log-scale ROC curves, the attack battery's summary and the privacy matrix's heat map.

The functions take plain results (history rows, attack report rows, objects with the named fields) and
write a PNG; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_learning_curves", "plot_rounds", "plot_partition_sizes", "plot_heatmap", "plot_leakage_utility",
           "plot_log_roc", "plot_battery_summary",
           "plot_privacy_matrix"]


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(rounds, values) of the rows that hold ``key`` (with federated.eval_every > 1 only some rounds are scored)."""
    rows = [r for r in history if key in r]
    return [r["round"] for r in rows], [r[key] for r in rows]


def plot_learning_curves(history: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Test micro/macro F1 and validation loss per round, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, label in (("test_micro_f1", "test micro-F1"), ("test_macro_f1", "test macro-F1")):
        ax1.plot(*_series(history, key), label=label, marker="." if len(rounds) < 30 else None)
    ax1.set_xlabel("round")
    ax1.legend(fontsize=8)
    for key, label in (("val_loss", "server val loss"), ("train_train_loss", "client train loss")):
        ax2.plot(*_series(history, key), label=label)
    ax2.set_xlabel("round")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(runs: Sequence, path: str | Path, *, key: str = "test_micro_f1") -> Path:
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


def plot_partition_sizes(runs: Sequence, path: str | Path) -> Path:
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


def plot_heatmap(stats, path: str | Path, *, top: int = 30, title: str = "") -> Path:
    """Save a clients × top-codes heat map (``stats``: a :class:`fedicd.partition.PartitionStats`) of the share of each client's notes carrying each code."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-stats.label_counts.sum(axis=0), kind="stable")[:top]
    share = stats.label_counts[:, order] / np.maximum(np.asarray(stats.sizes)[:, None], 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(order) + 2), max(3, 0.28 * len(stats.names) + 1.5)))
    im = ax.imshow(share, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(order)), [stats.codes[j] for j in order], rotation=90, fontsize=7)
    ax.set_yticks(range(len(stats.names)), stats.names, fontsize=7)
    ax.set_xlabel("most frequent codes")
    ax.set_ylabel("client")
    ax.set_title(title or f"share of client notes with code (mean JSD {stats.mean_jsd:.3f})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _utility_of(row: dict) -> tuple[str, float]:
    """The row's utility metric and value (rows written before ``utility_metric`` existed hold ICD micro-F1)."""
    key = row.get("utility_metric", "icd_micro_f1")
    return key, row[key]


def plot_leakage_utility(rows: list[dict], path: str | Path) -> None:
    """Leakage (attack metric with its 95 % CI) against utility (ICD or label micro-F1), one marker per defence kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, marker in (("none", "*"), ("noise", "o"), ("quantize", "s"), ("pca", "^")):
        pts = [r for r in rows if r["defence"] == kind]
        if not pts:
            continue
        x = [_utility_of(r)[1] for r in pts]
        y = [r["leakage"]["value"] for r in pts]
        err = [[v - r["leakage"]["ci_low"] for v, r in zip(y, pts)], [r["leakage"]["ci_high"] - v for v, r in zip(y, pts)]]
        ax.errorbar(x, y, yerr=err, marker=marker, ls="-", label=kind, capsize=2)
        for r, u, v in zip(pts, x, y):
            ax.annotate(str(r["strength"]), (u, v), fontsize=6)
    base = next((r["baseline"] for r in rows if r.get("baseline")), None)
    if base:
        ax.axhline(base["value"], color="grey", ls=":", label="baseline")
    utility = "ICD" if _utility_of(rows[0])[0] == "icd_micro_f1" else "label"
    ax.set_xlabel(f"{utility} test micro-F1 (utility)")
    ax.set_ylabel(f"{rows[0]['metric']} (leakage, adaptive attacker)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_log_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str) -> Path:
    """ROC curves ``{name: (fpr, tpr)}`` on log-log axes with the chance diagonal (Carlini et al. 2022's
    membership-inference plot: the low-FPR corner is what matters)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    floor = min([1e-3] + [float(np.min(f[f > 0])) for f, _ in curves.values() if np.any(f > 0)])
    for name, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, floor / 2), np.maximum(tpr, floor / 2), lw=1.3, label=name)
    ax.plot([floor / 2, 1], [floor / 2, 1], ls="--", color="grey", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_ylim(floor / 2, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_battery_summary(rows: Sequence[dict], path: str | Path) -> Path:
    """Each report's headline metric with its 95 % interval (bars) and baseline (a tick), one line per report."""
    plt = _pyplot()
    labels = [f"{r['attack']}: {r['metric']}" + (f" ({r['variant']})" if r.get("variant") else "") for r in rows]
    values = np.array([r["value"] for r in rows], dtype=float)
    lo = np.array([r["ci_low"] if r["ci_low"] is not None else r["value"] for r in rows], dtype=float)
    hi = np.array([r["ci_high"] if r["ci_high"] is not None else r["value"] for r in rows], dtype=float)
    y = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    ax.barh(y, values, xerr=np.vstack([values - lo, hi - values]).clip(min=0), color="#4c72b0", capsize=3)
    for i, r in enumerate(rows):
        if r.get("baseline") is not None:
            ax.plot([r["baseline"]] * 2, [i - 0.4, i + 0.4], color="#c44e52", lw=2,
                    label="baseline" if i == next(j for j, q in enumerate(rows) if q.get("baseline") is not None)
                    else None)
    ax.set_yticks(y, [lab[:70] for lab in labels], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("headline metric (95 % CI)")
    if any(r.get("baseline") is not None for r in rows):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _row_scaled(v: np.ndarray) -> np.ndarray:
    """Each row divided by its largest absolute finite value (a row of zeros stays 0; NaN stays NaN): a
    cell's shade is its share of the row's strongest value, so near-equal cells look alike."""
    norm = np.full_like(v, np.nan)
    for i, row in enumerate(v):
        ok = np.isfinite(row)
        if ok.any():
            top = np.abs(row[ok]).max()
            norm[i] = np.abs(row) / top if top > 0 else np.where(ok, 0.0, np.nan)
    return norm


def plot_privacy_matrix(rows: Sequence[str], columns: Sequence[str], values: np.ndarray, path: str | Path, *,
                        text: Sequence[Sequence[str]] | None = None, utility: Sequence[bool] | None = None,
                        title: str = "") -> Path:
    """Heat map of an attacks × defences matrix, cells annotated.

    Each row is divided by its largest value (leakage rows red, darker = more leakage; a ``utility`` row
    green, darker = more utility)."""
    plt = _pyplot()
    v = np.asarray(values, dtype=float)
    norm = _row_scaled(v)
    util = np.zeros(len(rows), bool) if utility is None else np.asarray(utility, bool)
    fig, ax = plt.subplots(figsize=(1.15 * len(columns) + 3, 0.55 * len(rows) + 1.6))
    for mask, cmap in ((~util, "Reds"), (util, "Greens")):
        ax.imshow(np.ma.masked_invalid(np.where(mask[:, None], norm, np.nan)), cmap=cmap, vmin=0, vmax=1,
                  aspect="auto")
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            label = text[i][j] if text is not None else ("" if not np.isfinite(v[i, j]) else f"{v[i, j]:.2f}")
            ax.text(j, i, label or "–", ha="center", va="center", fontsize=6.5,
                    color="white" if np.isfinite(norm[i, j]) and norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title or "leakage per attack", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
