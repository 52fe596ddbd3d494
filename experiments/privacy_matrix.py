"""The privacy matrix: every defence (columns) against every attack on the federation (rows), utility per column.

    python experiments/privacy_matrix.py CONFIG --out DIR [--quick] [--columns KEY ...] [--refs N]
                                         [--embedding-noise SIGMA] [--set k=v ...] [--archive DIR]

For each column (none, DP ε ∈ {1, 3, 8}, client-level DP, SecAgg+, CKKS, embedding noise;
``fedicd.attack_runs.matrix.COLUMNS``) CONFIG is trained federated with that defence on the
in-process engine (unless CONFIG names an engine) into ``DIR/<column>/run``, then the battery
(``fedicd audit``'s attacks) runs on it into ``DIR/<column>/``. The matrix (one cell per attack
and defence: the strongest variant's headline value with its 95 % CI) is written as
``DIR/privacy_matrix.{json,csv,png}``; ``--archive`` copies those three files to a results folder
(``experiments/results/privacy_matrix/<corpus>/``) for ``fedicd report --docs``.
A CodiEsp config whose corpus is absent is skipped with a message (exit 0).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from fedicd.attack_runs.audit_command import engine_overrides
from fedicd.attack_runs.matrix import COLUMNS, ROWS, cell_text, column_overrides, matrix_cells, matrix_table, \
    utility_interval, write_matrix
from fedicd.config import load_config

def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quick", action="store_true", help="the attacks' quick versions (the config sets the scale)")
    p.add_argument("--columns", nargs="+", default=[c.key for c in COLUMNS], choices=[c.key for c in COLUMNS])
    p.add_argument("--refs", type=int, default=8, help="membership inference reference models (default 8)")
    p.add_argument("--embedding-noise", type=float, default=0.1, help="σ of the embedding-noise column")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--archive", type=Path, default=None, help="copy privacy_matrix.{json,csv,png} here")
    return p.parse_args(argv)


def _keys(out: Path, n_clients: int) -> Path:
    from fedicd.secure.ckks_params import CkksParams
    from fedicd.secure.ckks_round import write_key_dir

    key_dir = out / "keys"
    if not (key_dir / "secret.ctx").exists():
        write_key_dir(key_dir, CkksParams(max_clients=max(8, n_clients)), overwrite=True)
    return key_dir


def _column(args, column, base: list[str], key_dir, options) -> tuple[dict, dict]:
    """Train one column and run the battery on it: (column record, cells)."""
    from fedicd.attack_runs.battery import run_battery
    from fedicd.attack_runs.federation import load_federation_run
    from fedicd.runner.simulation import run_federated

    col_dir = args.out / column.key
    overrides = [*base, *column_overrides(column, key_dir=key_dir, embedding_noise=args.embedding_noise)]
    record = {"key": column.key, "label": column.label, "overrides": overrides}
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.config, engine_overrides(args.config, overrides))
        if col_dir.exists():
            shutil.rmtree(col_dir)
        run_federated(cfg, col_dir / "run")
        run = load_federation_run(col_dir / "run")
        summary = run_battery(run, col_dir, seed=cfg.seed, quick=args.quick, options=options)
        cells = matrix_cells(col_dir, summary, utility_interval(run, seed=cfg.seed))
        record.update(defence=summary["defence"], failed=summary["failed"], skipped=summary["skipped"])
    except Exception as exc:  # one column's failure is recorded, the others still run
        record["error"] = f"{type(exc).__name__}: {exc}"
        cells = {row.key: {"missing": record["error"]} for row in ROWS}
    record["seconds"] = time.perf_counter() - t0
    print(f"[{column.key}] {record['seconds']:.0f} s" + (f"  ERROR {record['error']}" if "error" in record else ""),
          flush=True)
    return record, cells


def main(argv=None) -> int:
    args = _parse(argv)
    base = list(args.overrides)
    cfg = load_config(args.config, engine_overrides(args.config, base))
    if cfg.data.source == "codiesp" and not Path(cfg.data.path).is_dir():
        print(f"skipped: the CodiEsp corpus is not at {cfg.data.path} (data.path of {args.config})")
        return 0
    if cfg.train.mode != "federated":
        sys.exit(f"{args.config}: train.mode must be 'federated' (the matrix attacks a federation)")
    from fedicd.heads import SEQUENCE_HEADS

    if cfg.train.head in SEQUENCE_HEADS:  # refused before any column is trained
        sys.exit(f"{args.config}: train.head = {cfg.train.head!r} trains on chunk sequences, but the matrix's attacks "
                 "read one pooled vector per note: set train.head to a pooled head (mlp, deep_mlp, deep_res_mlp, "
                 "linear, bottleneck)")
    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    key_dir = _keys(args.out, cfg.partition.n_clients) if "ckks" in args.columns else None
    t0 = time.perf_counter()
    from fedicd.attack_runs.data import load_attack_data
    from fedicd.provenance import provenance

    data = load_attack_data(cfg)  # one embedding of the notes serves every column's embedding attacks
    print(f"[notes embedded for the embedding attacks] {time.perf_counter() - t0:.0f} s", flush=True)
    options = {"embedding_inversion": {"data": data}, "attribute": {"data": data},
               "membership": {"n_refs": args.refs}}
    columns, cells = [], {}
    for column in (c for c in COLUMNS if c.key in args.columns):
        record, cells[column.key] = _column(args, column, base, key_dir, options)
        columns.append(record)
    doc = {"corpus": cfg.name, "config": str(args.config), "quick": args.quick, "overrides": base,
           "refs": args.refs, "embedding_noise": args.embedding_noise, "columns": columns,
           "rows": [{"key": r.key, "label": r.label, "higher_leaks": r.higher_leaks} for r in ROWS],
           "cells": cells, "seconds": time.perf_counter() - t_all, "provenance": provenance(sys.argv)}
    paths = write_matrix(doc, args.out)
    _print(doc)
    if args.archive:
        args.archive.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy2(p, args.archive / p.name)
        print(f"archived in {args.archive}")
    print(f"total {doc['seconds'] / 60:.1f} min; {', '.join(str(p) for p in paths)}")
    return 0


def _print(doc: dict) -> None:
    labels, columns, _, cells = matrix_table(doc)
    print(f"{'':<48}" + "".join(f"{c:>22}" for c in columns))
    for label, row in zip(labels, cells):
        print(f"{label:<48}" + "".join(f"{cell_text(c):>22}" for c in row))
    print("seconds per column: " + ", ".join(f"{c['key']} {c['seconds']:.0f}" for c in doc["columns"]))


if __name__ == "__main__":
    sys.exit(main())
