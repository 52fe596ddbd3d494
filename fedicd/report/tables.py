"""Result tables: one :class:`Table` type (Markdown and CSV), and the tables each kind of run gives.

Cells hold raw values; :func:`fmt` turns one into text for Markdown (floats with
4 decimals, ``None`` as an em dash), while CSV keeps full precision. Every table
builder takes a list of :class:`fedicd.report.collect.Run` and keeps their order.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from fedicd.report.collect import Run

__all__ = ["Table", "fmt", "central_table", "federated_table", "rounds_table", "privacy_table", "secure_table",
           "partition_table", "attack_sweep_table", "attack_metrics_table", "headline_table", "tables_for"]

DASH = "—"


def fmt(value: Any, digits: int = 4) -> str:
    """A cell as text: ``None``/NaN → ``—``, bools → yes/no, floats with ``digits`` decimals (3 significant
    digits below 10^-3, so that a δ of 1e-05 is not shown as 0), the rest ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


@dataclass
class Table:
    """A titled table: column headers and rows of raw values."""

    title: str
    columns: Sequence[str]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: row {row!r} has {len(row)} cells for "
                                 f"{len(self.columns)} columns")

    def _numeric(self, j: int) -> bool:
        vals = [r[j] for r in self.rows if r[j] is not None]
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    def to_markdown(self) -> str:
        """GitHub Markdown; numeric columns right-aligned; ``|`` in a cell escaped."""
        def cell(v: Any) -> str:
            return fmt(v).replace("|", "\\|")

        lines = ["| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---:" if self._numeric(j) else "---" for j in range(len(self.columns))) + "|"]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """CSV with a header row; numbers at full precision, ``None`` as an empty cell."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()


# ------------------------------------------------------------------------------------------ helpers

def _get(doc: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(k)
    return doc


def _test(run: Run, key: str) -> Any:
    return _get(run.results, "test", key)


def _partition_label(cfg: dict) -> str:
    p = cfg.get("partition") or {}
    scheme = p.get("scheme", "iid")
    if scheme == "dirichlet":
        return f"dirichlet α={p.get('alpha')}"
    return str(scheme)


def _total(history: list[dict], key: str) -> Any:
    vals = [r.get(key) for r in history if r.get(key) is not None]
    return sum(vals) if vals else None


def _metric_table(title: str, runs: Sequence[Run], lead: Sequence[tuple[str, Callable[[Run], Any]]]) -> Table:
    metrics = (("test micro-F1", "micro_f1"), ("test macro-F1", "macro_f1"), ("P@5", "p_at_5"),
               ("micro-AUC", "micro_auc"))
    cols = [h for h, _ in lead] + [h for h, _ in metrics]
    rows = [[get(r) for _, get in lead] + [_test(r, k) for _, k in metrics] for r in runs]
    return Table(title, cols, rows)


# ------------------------------------------------------------------------------------------ per kind

def central_table(runs: Sequence[Run]) -> Table:
    """Central runs: head, label space, split sizes and the test metrics."""
    def split(r: Run) -> str:
        lab = r.results.get("labels") or {}
        return f"{lab.get('train_notes')}/{lab.get('val_notes')}/{lab.get('test_notes')}"

    return _metric_table("Central runs", runs, (
        ("run", lambda r: r.name), ("head", lambda r: _get(r.config, "train", "head")),
        ("labels", lambda r: _get(r.results, "labels", "n_labels")), ("train/val/test notes", split)))


def federated_table(runs: Sequence[Run]) -> Table:
    """Federated runs: strategy, partition, clients, rounds, outcome and the test metrics of the final model."""
    return _metric_table("Federated runs", runs, (
        ("run", lambda r: r.name), ("strategy", lambda r: _get(r.config, "federated", "strategy")),
        ("partition", lambda r: _partition_label(r.config)),
        ("clients", lambda r: len(r.results.get("client_sizes") or []) or None),
        ("rounds", lambda r: len(r.history) or len(r.results.get("history") or []) or None),
        ("status", lambda r: _get(r.results, "outcome", "status"))))


def rounds_table(run: Run) -> Table:
    """One federated run's ``history.csv``: per round, the server's validation loss and test F1."""
    cols = (("round", "round"), ("clients", "clients_sampled"), ("val loss", "val_loss"),
            ("test micro-F1", "test_micro_f1"), ("test macro-F1", "test_macro_f1"))
    history = run.history or run.results.get("history") or []
    return Table(f"{run.name}: per round", [h for h, _ in cols], [[row.get(k) for _, k in cols] for row in history])


def privacy_table(runs: Sequence[Run]) -> Table:
    """DP runs: mechanism, σ, clip, the reported ε at δ, and the test metrics."""
    def sigma(r: Run) -> Any:
        priv = r.results.get("privacy") or {}
        if priv.get("dp") in (None, "none"):
            return None
        if priv.get("dp") == "sample":
            plans = priv.get("clients") or []
            vals = [p.get("noise_multiplier") for p in plans if p.get("noise_multiplier") is not None]
            return max(vals) if vals else None
        return _get(r.config, "privacy", "noise")

    def delta(r: Run) -> Any:
        priv = r.results.get("privacy") or {}
        return priv.get("delta") or _get(r.config, "privacy", "delta") or None

    return _metric_table("Differentially private runs", runs, (
        ("run", lambda r: r.name), ("dp", lambda r: _get(r.results, "privacy", "dp")), ("σ", sigma),
        ("clip", lambda r: None if sigma(r) is None else _get(r.config, "privacy", "clip")),
        ("ε", lambda r: _get(r.results, "privacy", "epsilon")), ("δ", lambda r: None if sigma(r) is None else delta(r))))


def secure_table(runs: Sequence[Run]) -> Table:
    """Secure-aggregation runs: method, traffic and median round time, and the test metrics of the final model."""
    def history(r: Run) -> list[dict]:
        return r.history or r.results.get("history") or []

    def mb_per_round(key: str) -> Callable[[Run], Any]:
        def get(r: Run) -> Any:
            total = _total(history(r), key)
            return None if total is None else total / 1e6 / len(history(r))
        return get

    def median_seconds(r: Run) -> Any:
        vals = sorted(h["seconds"] for h in history(r) if h.get("seconds") is not None)
        if not vals:
            return None
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2

    return _metric_table("Secure-aggregation runs", runs, (
        ("run", lambda r: r.name), ("method", lambda r: _get(r.results, "secure_aggregation", "method")),
        ("MB sent / round", mb_per_round("bytes_sent")), ("MB received / round", mb_per_round("bytes_received")),
        ("median s / round", median_seconds)))


def partition_table(runs: Sequence[Run]) -> Table:
    """``fedicd partition`` runs: scheme, clients, client sizes and the non-IID degree."""
    rows = []
    for r in runs:
        stats = r.results.get("stats") or {}
        sizes = stats.get("sizes") or []
        params = r.results.get("params") or {}
        scheme = r.results.get("scheme")
        label = f"dirichlet α={params.get('alpha')}" if scheme == "dirichlet" else scheme
        rows.append([r.path.name, label, len(sizes) or None, min(sizes) if sizes else None,
                     max(sizes) if sizes else None, stats.get("mean_jsd"), stats.get("mean_absent_fraction")])
    return Table("Partitions of the training notes", ["run", "scheme", "clients", "smallest client",
                                                      "largest client", "mean JSD", "mean absent-label share"], rows)


def _defence(row: dict) -> str:
    return row["defence"] if row["defence"] == "none" else f"{row['defence']}:{row['strength']}"


def attack_sweep_table(run: Run) -> Table:
    """An attack sweep: per defence, utility (micro-F1) and leakage with its 95 % CI and the baseline."""
    rows = []
    for row in run.results.get("rows", []):
        key = row.get("utility_metric", "icd_micro_f1")
        leak, base = row.get("leakage") or {}, row.get("baseline") or {}
        ci = f"[{fmt(leak.get('ci_low'))}, {fmt(leak.get('ci_high'))}]" if leak else None
        rows.append([_defence(row), row.get(key), leak.get("value"), ci, base.get("value")])
    metric = (run.results.get("rows") or [{}])[0].get("metric", "leakage")
    return Table(f"{run.path.name}: {run.results.get('attack')} under defences",
                 ["defence", "utility (test micro-F1)", metric, "95% CI", "baseline"], rows)


def attack_metrics_table(report: dict, title: str) -> Table:
    """Every metric (and baseline) of one attack report, with its 95 % CI and n."""
    rows = []
    for label, block in (("", report.get("metrics") or {}), ("baseline: ", report.get("baselines") or {})):
        for name, m in block.items():
            rows.append([label + name, m.get("value"), f"[{fmt(m.get('ci_low'))}, {fmt(m.get('ci_high'))}]",
                         m.get("n")])
    return Table(title, ["metric", "value", "95% CI", "n"], rows)


def headline_table(runs: Sequence[Run]) -> Table:
    """One row per trained model (central and federated runs): setting, ε where DP, test micro/macro-F1."""
    def setting(r: Run) -> str:
        if r.kind == "central":
            return f"central, {_get(r.config, 'train', 'head')} head"
        parts = [str(_get(r.config, "federated", "strategy")), _partition_label(r.config)]
        dp = _get(r.results, "privacy", "dp")
        if dp and dp != "none":
            parts.append(f"{dp}-level DP")
        sec = _get(r.results, "secure_aggregation", "method")
        if sec and sec != "none":
            parts.append(str(sec))
        return "federated, " + ", ".join(parts)

    rows = [[r.name, setting(r), _get(r.results, "privacy", "epsilon"), _test(r, "micro_f1"), _test(r, "macro_f1")]
            for r in runs if r.kind in ("central", "federated")]
    return Table("Headline results", ["run", "setting", "ε", "test micro-F1", "test macro-F1"], rows)


def tables_for(runs: Sequence[Run]) -> list[Table]:
    """Every table the given runs support (for ``fedicd report RUN... --out``)."""
    by = {k: [r for r in runs if r.kind == k] for k in ("central", "federated", "partition", "attack")}
    out: list[Table] = []
    trained = by["central"] + by["federated"]
    if trained:
        out.append(headline_table(trained))
    if by["central"]:
        out.append(central_table(by["central"]))
    if by["federated"]:
        out.append(federated_table(by["federated"]))
        dp = [r for r in by["federated"] if _get(r.results, "privacy", "dp") not in (None, "none")]
        if dp:
            out.append(privacy_table(dp))
        sec = [r for r in by["federated"] if _get(r.results, "secure_aggregation", "method") not in (None, "none")]
        if sec:
            out.append(secure_table(sec))
        out += [rounds_table(r) for r in by["federated"]]
    if by["partition"]:
        out.append(partition_table(by["partition"]))
    for r in by["attack"]:
        out.append(attack_sweep_table(r))
    return out
