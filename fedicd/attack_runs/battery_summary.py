"""The battery's summary: one row per attack report (or per skipped / failed attack), as JSON, CSV, Markdown, PNG.

``summary.json`` holds the run, its defence as read from the run plan, the utility
(test micro-F1 of the final global model) and the rows; ``summary.csv`` and
``summary.md`` the rows; ``summary.png`` each report's headline metric with its
95 % interval (and baseline, where the report has one). A row's ``seconds`` is its attack's wall time shared
evenly among the attack's reports.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .federation import FederationRun

__all__ = ["defence_of", "write_summary", "summary_markdown", "COLUMNS"]

COLUMNS = ("attack", "status", "kind", "variant", "metric", "value", "ci_low", "ci_high", "n", "baseline", "seconds",
           "file", "error")


def defence_of(run: FederationRun) -> dict:
    """The run's defences as its plan and results record them (DP mode and ε, secure aggregation, embedding noise)."""
    from .battery_embedding import embedding_noise_of

    privacy = run.results.get("privacy") or {}
    plan = run.plan.privacy
    return {"dp": run.dp, "epsilon": privacy.get("epsilon"), "delta": plan.delta or None,
            "target_epsilon": plan.target_epsilon or None, "secure_aggregation": run.plan.secure.method,
            "embedding_noise": embedding_noise_of(run), "clients": run.plan.n_clients,
            "rounds": run.plan.federated.rounds}


def _utility(run: FederationRun) -> dict:
    test = run.results.get("test") or {}
    return {"icd_micro_f1": test.get("micro_f1"), "icd_macro_f1": test.get("macro_f1")}


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def summary_markdown(summary: dict) -> str:
    """The summary's rows as a Markdown table, after one line on the run and its defence."""
    d, u = summary["defence"], summary["utility"]
    head = (f"Battery on `{summary['run_dir']}`: dp = {d['dp']} (ε = {d['epsilon']}), secure aggregation = "
            f"{d['secure_aggregation']}, embedding noise σ = {d['embedding_noise']}; ICD micro-F1 = "
            f"{_fmt(u['icd_micro_f1'])}; quick = {summary['quick']}, seed = {summary['seed']}.")
    cols = [c for c in COLUMNS if c != "file"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in summary["rows"]]
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_summary(out: Path, rows: list[dict], *, run: FederationRun, defence: dict, seed: int, quick: bool,
                  seconds: float) -> dict:
    """Write ``summary.json`` / ``.csv`` / ``.md`` / ``.png`` under ``out``; returns the summary."""
    from fedicd.plots import plot_battery_summary

    rows = [{c: r.get(c) for c in COLUMNS} for r in rows]
    summary = {"run_dir": str(run.run_dir), "defence": defence, "utility": _utility(run), "seed": seed,
               "quick": quick, "seconds": seconds, "rows": rows,
               "failed": [r["attack"] for r in rows if r["status"] == "failed"],
               "skipped": [r["attack"] for r in rows if r["status"] == "skipped"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.csv").write_text(_csv(rows))
    (out / "summary.md").write_text(summary_markdown(summary))
    ok = [r for r in rows if r["status"] == "ok" and r["value"] is not None]
    if ok:
        plot_battery_summary(ok, out / "summary.png")
    return summary
