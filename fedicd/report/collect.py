"""Find and read run folders: ``results.json`` (+ ``history.csv``), ``partition.json``, attack sweeps.

A *run folder* holds one of:

* ``results.json``: a central (``training_mode = "central"``) or federated run
  (``fedicd run``); its ``history.csv`` (federated rounds) is read too;
* ``partition.json``: a ``fedicd partition`` manifest with its statistics;
* ``leakage_utility.json``: a ``fedicd attack invert|attribute`` sweep, with one
  :class:`attacks.report.AttackReport` JSON per defence beside it.

:func:`collect_runs` accepts run folders or folders above them (searched
recursively) and shows a progress bar while reading. :func:`archive_run` copies a
run's small files to another folder, without the bulky fields no report shows.
"""

from __future__ import annotations

import csv
import json
import sys
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Run", "MARKERS", "find_run_dirs", "load_run", "collect_runs", "read_history", "archive_run"]

MARKERS = ("results.json", "partition.json", "leakage_utility.json")


@dataclass
class Run:
    """One run folder's content."""

    path: Path
    kind: str                                   # "central" | "federated" | "partition" | "attack"
    results: dict[str, Any]                     # results.json, partition.json or leakage_utility.json
    history: list[dict[str, Any]] = field(default_factory=list)     # history.csv rows (numbers parsed)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack report file stem -> JSON

    @property
    def name(self) -> str:
        """The run's name: ``name`` in results.json, else the folder's name."""
        return str(self.results.get("name") or self.path.name)

    @property
    def config(self) -> dict[str, Any]:
        return self.results.get("config") or {}


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders among ``paths`` and below them (sorted within each given path, in the order given)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such run folder: {p}")
        if p.is_dir() and any((p / m).is_file() for m in MARKERS):
            found.append(p)
            continue
        below = sorted({f.parent for m in MARKERS for f in p.rglob(m)} if p.is_dir() else set())
        if not below:
            raise ValueError(f"{p} holds no run (none of {', '.join(MARKERS)} in it or below it)")
        found.extend(below)
    return list(dict.fromkeys(found))


def _number(text: str) -> Any:
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """``history.csv`` rows with numbers parsed (an empty cell is ``None``)."""
    with Path(path).open(newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def load_run(path: str | Path) -> Run:
    """Read one run folder (see the module docstring for what makes a folder a run)."""
    path = Path(path)
    if (path / "results.json").is_file():
        results = json.loads((path / "results.json").read_text())
        history = read_history(path / "history.csv") if (path / "history.csv").is_file() else []
        kind = "federated" if results.get("training_mode") == "federated" else "central"
        return Run(path, kind, results, history)
    if (path / "partition.json").is_file():
        return Run(path, "partition", json.loads((path / "partition.json").read_text()))
    if (path / "leakage_utility.json").is_file():
        doc = json.loads((path / "leakage_utility.json").read_text())
        reports = {f.stem: json.loads(f.read_text()) for f in sorted(path.glob("*.json"))
                   if f.name != "leakage_utility.json"}
        return Run(path, "attack", doc, reports=reports)
    raise ValueError(f"{path} is not a run folder (none of {', '.join(MARKERS)})")


def collect_runs(paths: Iterable[str | Path], *, progress: bool = True) -> list[Run]:
    """Every run in or below ``paths``, read with a progress bar (``progress=False`` hides it)."""
    from tqdm.auto import tqdm

    dirs = find_run_dirs(paths)
    quiet = not progress or len(dirs) < 2 or not sys.stderr.isatty()
    return [load_run(d) for d in tqdm(dirs, desc="reading runs", unit="run", disable=quiet)]


# ------------------------------------------------------------------------------------------ archiving

_BULKY_RESULTS = ("load_summary", "rejections")   # not shown by any report table
_BULKY_PARTITION_CLIENT = ("indices", "note_ids")   # a client's note list: its size is kept


def _slim_results(doc: dict) -> dict:
    out = {k: v for k, v in doc.items() if k not in _BULKY_RESULTS}
    if isinstance(out.get("partition"), dict):
        out["partition"] = {k: v for k, v in out["partition"].items() if k not in ("clients", "indices")}
    if isinstance(out.get("embedding"), dict):
        out["embedding"] = {k: v for k, v in out["embedding"].items() if k != "cache_problems"}
    return out


def _slim_partition(doc: dict) -> dict:
    clients = [{**{k: v for k, v in c.items() if k not in _BULKY_PARTITION_CLIENT}, "size": len(c.get("indices", []))}
               for c in doc.get("clients", [])]
    return {**doc, "clients": clients}


def _dump(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def archive_run(run: Run, dest_root: str | Path) -> Path:
    """Copy ``run``'s small files to ``dest_root/<folder name>`` (replacing an earlier copy); returns that folder.

    Kept: results.json (without the load summary, rejections, client note lists), history.csv, config.json;
    partition.json without per-client note lists (sizes kept); an attack sweep's leakage_utility.json and
    reports without their reconstructed examples. Models, scalers, plots, checkpoints and logs are not copied.
    """
    dest = Path(dest_root) / run.path.name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if run.kind in ("central", "federated"):
        _dump(dest / "results.json", _slim_results(run.results))
        for name in ("history.csv", "config.json"):
            if (run.path / name).is_file():
                shutil.copyfile(run.path / name, dest / name)
    elif run.kind == "partition":
        _dump(dest / "partition.json", _slim_partition(run.results))
    else:
        _dump(dest / "leakage_utility.json", run.results)
        for stem, rep in run.reports.items():
            _dump(dest / f"{stem}.json", {**rep, "examples": []})
    return dest
