"""The privacy matrix: attacks down the side, defences across the top, utility in each column, 95 % CIs everywhere.

Each column (:data:`COLUMNS`) is one federated run of the same config with one defence
(none, sample-level DP-SGD at ε ∈ {1, 3, 8}, client-level DP, SecAgg+, CKKS, embedding
noise), attacked by the battery (:func:`fedicd.attack_runs.battery.run_battery`). Each row
(:data:`ROWS`) reads one number per column from the battery's reports: the strongest variant
of that attack (the largest headline value over the reports that match the row), with its
interval. The utility row is the column's test ICD micro-F1 with a bootstrap interval over
test notes. :func:`matrix_table` turns the cells into rows for JSON, CSV, the heat map and
the docs page (:mod:`fedicd.report.privacy_matrix`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Column", "Row", "COLUMNS", "ROWS", "column_overrides", "matrix_cells", "micro_f1_interval",
           "utility_interval", "matrix_table", "write_matrix", "cell_text"]


@dataclass(frozen=True)
class Column:
    """A defence: its key, its heading and the config overrides that turn it on."""

    key: str
    label: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Row:
    """An attack's number: which battery attack, which metrics (first found), which reports (``match``: pairs of a
    report setting and a substring its value must contain; empty = every report), and whether a larger value
    means more leakage."""

    key: str
    label: str
    attack: str
    metrics: tuple[str, ...]
    match: tuple[tuple[str, str], ...] = ()
    higher_leaks: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("none", "none", ()),
    Column("dp_eps1", "DP ε=1", ('privacy.dp="sample"', "privacy.target_epsilon=1.0")),
    Column("dp_eps3", "DP ε=3", ('privacy.dp="sample"', "privacy.target_epsilon=3.0")),
    Column("dp_eps8", "DP ε=8", ('privacy.dp="sample"', "privacy.target_epsilon=8.0")),
    Column("client_dp", "client DP", ('privacy.dp="client"', "privacy.noise=1.0", "privacy.clip=0.5")),
    Column("secagg_plus", "SecAgg+", ('secure_aggregation.method="secagg+"',)),
    Column("ckks", "CKKS", ('secure_aggregation.method="ckks"',)),
    Column("embedding_noise", "embedding noise", ()),
)
"""The defences, in column order (CKKS gets its key folder, embedding noise its σ, from :func:`column_overrides`)."""

ROWS: tuple[Row, ...] = (
    Row("bow_word_f1", "embedding BoW inversion (word F1)", "embedding_inversion", ("word_f1",)),
    Row("update_word_f1", "update → text (word F1)", "update_inversion", ("word_f1",)),
    Row("update_names", "update → text (full names recovered)", "update_inversion", ("full_name_recovered",)),
    Row("update_embeddings", "update → embeddings (share with cosine > 0.99)", "update_inversion", ("recovered",)),
    Row("lira_tpr", "LiRA TPR at 1 % FPR", "membership", ("tpr_at_1pct_fpr",), (("attack", "lira"),)),
    Row("rmia_tpr", "RMIA TPR at 1 % FPR", "membership", ("tpr_at_1pct_fpr",), (("attack", "rmia"),)),
    Row("audit_white", "audit ε̂ / ε (white-box)", "audit", ("epsilon_ratio",), (("observed", "white-box"),)),
    Row("audit_black", "audit ε̂ / ε (black-box)", "audit", ("epsilon_ratio",), (("observed", "black-box"),)),
    Row("attribute_auc", "attribute AUC", "attribute", ("female_auc", "_auc")),
    Row("utility", "ICD micro-F1 (utility)", "", (), higher_leaks=False),
)
"""The matrix's rows; ``utility`` is read from the run, not from a report."""


def column_overrides(column: Column, *, key_dir: str | Path | None = None, embedding_noise: float = 0.1) -> list[str]:
    """The config overrides of ``column`` (CKKS: the key folder and its evaluator key; embedding noise: σ)."""
    if column.key == "ckks":
        if key_dir is None:
            raise ValueError("the CKKS column needs a key folder (fedicd keys --out DIR)")
        return [*column.overrides, f'secure_aggregation.key_dir="{key_dir}"',
                f'secure_aggregation.evaluator_key="{Path(key_dir) / "secret.ctx"}"']
    if column.key == "embedding_noise":
        return [f"privacy.embedding_noise={embedding_noise}"]
    return list(column.overrides)


def _metric(report: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in report["metrics"]:
            return name
        if name.startswith("_"):
            found = [m for m in report["metrics"] if m.endswith(name)]
            if found:
                return found[0]
    return None


def _cell(row: Row, battery_dir: Path, summary: dict) -> dict:
    """The strongest matching report's value for ``row`` (or why there is none)."""
    entries = [r for r in summary["rows"] if r["attack"] == row.attack]
    if not entries:
        return {"missing": f"{row.attack} was not run"}
    if all(r["status"] != "ok" for r in entries):
        return {"missing": f"{entries[0]['status']}: {entries[0].get('error')}"}
    best = None
    for r in entries:
        if r["status"] != "ok":
            continue
        report = json.loads((battery_dir / r["file"]).read_text())
        settings = report.get("settings") or {}
        matches = all(sub in str(settings.get(key, "")).lower() for key, sub in row.match)
        metric = _metric(report, row.metrics)
        if metric is None or not matches:
            continue
        m = report["metrics"][metric]
        if best is None or m["value"] > best["value"]:
            best = {**{k: m[k] for k in ("value", "ci_low", "ci_high", "n")}, "metric": metric,
                    "variant": r.get("variant") or "", "file": r["file"]}
    return best or {"missing": f"no {row.attack} report carries {' / '.join(row.metrics)}"
                               + "".join(f" with {k} ~ {v!r}" for k, v in row.match)}


def micro_f1_interval(pred: np.ndarray, truth: np.ndarray, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """Micro-F1 of 0/1 predictions [notes × labels] with a bootstrap 95 % CI over notes (resampled notes,
    micro-F1 from their summed TP / FP / FN)."""
    pred, y = np.asarray(pred, bool), np.asarray(truth, bool)
    tp, fp, fn = (pred & y).sum(1), (pred & ~y).sum(1), (~pred & y).sum(1)

    def f1(i: np.ndarray) -> float:
        t = tp[i].sum()
        return float(2 * t / max(2 * t + fp[i].sum() + fn[i].sum(), 1))

    rng = np.random.default_rng(seed)
    n = len(tp)
    boots = [f1(rng.integers(0, n, n)) for _ in range(n_boot)]
    return {"value": f1(np.arange(n)), "ci_low": float(np.quantile(boots, 0.025)),
            "ci_high": float(np.quantile(boots, 0.975)), "n": int(n), "metric": "icd_micro_f1"}


def utility_interval(run, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """Test micro-F1 of the run's final model at its validation-chosen threshold (``results.json``), with a
    bootstrap 95 % CI over test notes (:func:`micro_f1_interval`)."""
    from fedicd.train import predict_proba

    pred = predict_proba(run.build_head(), run.features["x_test"]) >= float(run.results["test"]["threshold"])
    return micro_f1_interval(pred, run.features["y_test"], seed=seed, n_boot=n_boot)


def matrix_cells(column_dir: Path, summary: dict, utility: dict | None) -> dict[str, dict]:
    """``{row key: cell}`` of one column from its battery folder and summary."""
    cells = {row.key: _cell(row, column_dir, summary) for row in ROWS if row.attack}
    cells["utility"] = utility or {"missing": "no finished run"}
    return cells


def cell_text(cell: dict, *, ci: bool = True) -> str:
    """``0.42 [0.30, 0.55]`` (or ``–`` for a missing cell)."""
    if "value" not in cell:
        return "–"
    if not ci or cell.get("ci_low") is None:
        return f"{cell['value']:.2f}"
    return f"{cell['value']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]"


def matrix_table(doc: dict) -> tuple[list[str], list[str], np.ndarray, list[list[dict]]]:
    """(row labels, column labels, values [rows × columns] with NaN for missing, cells) of a matrix document."""
    cols = [c["key"] for c in doc["columns"]]
    labels = [r["label"] for r in doc["rows"]]
    cells = [[doc["cells"].get(c, {}).get(r["key"], {"missing": "column not run"}) for c in cols] for r in doc["rows"]]
    values = np.array([[c.get("value", np.nan) for c in row] for row in cells], dtype=float)
    return labels, [c["label"] for c in doc["columns"]], values, cells


def _csv(doc: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "column", "value", "ci_low", "ci_high", "n", "metric", "variant", "missing"])
    for row in doc["rows"]:
        for col in doc["columns"]:
            c = doc["cells"].get(col["key"], {}).get(row["key"], {})
            w.writerow([row["key"], col["key"], *[c.get(k) for k in ("value", "ci_low", "ci_high", "n", "metric",
                                                                       "variant", "missing")]])
    return buf.getvalue()


def write_matrix(doc: dict, out: str | Path) -> list[Path]:
    """``privacy_matrix.json``, ``.csv`` and ``.png`` (heat map, leakage normalised per row) under ``out``."""
    from fedicd.plots import plot_privacy_matrix

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "privacy_matrix.json", out / "privacy_matrix.csv", out / "privacy_matrix.png"]
    paths[0].write_text(json.dumps(doc, indent=2))
    paths[1].write_text(_csv(doc))
    labels, columns, values, cells = matrix_table(doc)
    utility = [not r.get("higher_leaks", True) for r in doc["rows"]]
    text = [[cell_text(c).replace(" [", "\n[") for c in row] for row in cells]
    plot_privacy_matrix(labels, columns, values, paths[2], text=text, utility=utility,
                        title=f"privacy matrix: {doc.get('corpus', '')}\nshade = value / row max; red: leakage, "
                              "green: utility")
    return paths
