"""``fedicd report``: result tables and plots from run folders, and the generated ``docs/results`` pages.

* :mod:`fedicd.report.collect`: find and read run folders (``results.json``,
  ``history.csv``, ``partition.json``, attack reports); archive their small files.
* :mod:`fedicd.report.tables`: tables (Markdown and CSV) per kind of run.
* :mod:`fedicd.report.plots`: learning curves compared, leakage vs utility, client sizes.
* :mod:`fedicd.report.docs`: one Markdown page per area (``docs/results/*.md``)
  and the README's headline table.
* :mod:`fedicd.report.privacy_matrix`: ``docs/results/privacy-matrix.md`` from the archived
  privacy matrices (``experiments/privacy_matrix.py --archive``).
* :mod:`fedicd.report.privacy_utility`: ``docs/results/privacy-utility.md`` from the archived privacy–utility
  frontiers (``experiments/privacy_utility.py --archive``).
* :mod:`fedicd.report.config_docs`: ``docs/config.md`` from the config dataclasses' field docstrings.

:func:`report_runs` is what ``fedicd report RUN_DIR... --out DIR`` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from fedicd.report.collect import Run, archive_run, collect_runs
from fedicd.report.tables import Table, tables_for

__all__ = ["report_runs", "write_tables", "Run", "Table", "collect_runs", "archive_run"]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def write_tables(tables: Iterable[Table], out: str | Path) -> Path:
    """Each table as ``<slug>.csv``, and all of them in ``tables.md``; returns the Markdown file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for t in tables:
        (out / f"{_slug(t.title)}.csv").write_text(t.to_csv())
        parts.append(f"### {t.title}\n\n{t.to_markdown()}\n")
    (out / "tables.md").write_text("\n".join(parts))
    return out / "tables.md"


def report_runs(paths: Iterable[str | Path], out: str | Path, *, plots: bool = True,
                progress: bool = True) -> dict:
    """Tables (Markdown + CSV) and plots of every run in or below ``paths``, written under ``out``."""
    runs = collect_runs(paths, progress=progress)
    tables = tables_for(runs)
    md = write_tables(tables, out)
    written = []
    if plots:
        from fedicd.report.plots import plot_runs

        written = plot_runs(runs, out)
    return {"runs": runs, "tables": tables, "markdown": md, "plots": written}
