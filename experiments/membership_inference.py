"""Membership inference (LiRA, RMIA) against small federated runs: no defence, DP-SGD at ε ∈ {1, 3, 8},
client-level DP.

    python experiments/membership_inference.py --out experiments/results/membership
    python experiments/membership_inference.py --quick --out /tmp/mia   # 4 references; none and ε = 8
    python experiments/membership_inference.py --tables-only   # rewrite .md/.csv from membership.json

Each column is a federated run of the synthetic demo corpus (600 notes, 30 codes,
5 IID clients, 3 rounds of FedAvg, MLP head, batch 32, in-process engine: the
overrides in ``SMALL``), trained here with
:func:`fedicd.runner.simulation.run_federated`. The battery
(:func:`fedicd.attack_runs.membership.battery_membership`, ``--n-refs`` reference
heads per target) attacks the final global model and client 0's update. Writes
``membership.json`` (the command line and one row per attack, target and column), ``membership.csv`` and ``membership.md`` (the
table) and the log-scale ROC PNGs ``<column>_membership_roc_<target>.png`` under
``--out``; prints the table. Run folders go to ``--runs`` (a temporary folder by
default); ``--reuse`` attacks the finished ones found there instead of training them again.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path

from fedicd.attack_runs.federation import load_federation_run
from fedicd.attack_runs.membership import battery_membership
from fedicd.config import load_config
from fedicd.runner.simulation import run_federated

SMALL = ["data.n_notes=600", "data.n_codes=30", "data.min_train_count=5", "embedding.max_tokens=128",
         'train.mode="federated"', "partition.n_clients=5", "partition.min_partition_size=5", "federated.rounds=3",
         "federated.fraction_evaluate=1.0", "train.batch_size=32", 'federated.engine="inprocess"']
COLUMNS = {"none": [], "dp_eps1": ['privacy.dp="sample"', "privacy.target_epsilon=1.0"],
           "dp_eps3": ['privacy.dp="sample"', "privacy.target_epsilon=3.0"],
           "dp_eps8": ['privacy.dp="sample"', "privacy.target_epsilon=8.0"],
           "client_dp_eps8": ['privacy.dp="client"', "privacy.target_epsilon=8.0"]}


def _fmt(row: dict, key: str, blind: bool = False) -> str:
    mark = "†" if blind else ""
    return f"{row[key]:.3f}{mark} [{row[key + '_lo']:.3f}, {row[key + '_hi']:.3f}]"


def _row(column: str, results: dict, report) -> dict:
    m, b, s = report.metrics, report.baselines, report.settings
    eps = results["privacy"].get("epsilon")
    return {"defence": column, "epsilon": eps if eps is not None and math.isfinite(eps) else None,  # None: no DP
            "micro_f1": results["test"]["micro_f1"], "target": s["target"], "attack": s["attack"],
            "n_members": s["n_members"], "n_nonmembers": s["n_nonmembers"], "n_refs": s["n_refs"],
            **{f"{k}{suffix}": m[k][part] for k in m for suffix, part in (("", "value"), ("_lo", "ci_low"),
                                                                          ("_hi", "ci_high"))},
            "loss_auc": b["loss_auc"]["value"], "loss_tpr_at_1pct_fpr": b["loss_tpr_at_1pct_fpr"]["value"],
            "random_auc": b["random_auc"]["value"]}


def _table(rows: list[dict]) -> str:
    """The markdown table of ``rows`` (:func:`_row`); † marks a TPR at an FPR below ``1 / n_nonmembers``, which
    allows no false positive at all."""
    head = ("| defence | ε | micro-F1 | target | attack | AUC [95 % CI] | TPR @ 1 % FPR [95 % CI] | TPR @ 0.1 % FPR "
            "| loss AUC | loss TPR @ 1 % |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        n0 = r["n_nonmembers"]
        eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.2f}"
        lines.append(f"| {r['defence']} | {eps} | {r['micro_f1']:.3f} | {r['target']} | {r['attack']} "
                     f"| {_fmt(r, 'auc')} | {_fmt(r, 'tpr_at_1pct_fpr', 0.01 * n0 < 1)} "
                     f"| {r['tpr_at_0.1pct_fpr']:.3f}{'†' if 0.001 * n0 < 1 else ''} "
                     f"| {r['loss_auc']:.3f} | {r['loss_tpr_at_1pct_fpr']:.3f} |")
    lines += ["", "† fewer non-members than 1 / FPR: this TPR is the TPR with no false positive at all, not a "
              "measurement at that FPR (n_nonmembers is in the CSV/JSON)."]
    return "\n".join(lines)


def _write_tables(out: Path, rows: list[dict]) -> str:
    """``membership.md`` and ``membership.csv`` from ``rows``; returns the table."""
    table = _table(rows)
    (out / "membership.md").write_text(table + "\n")
    with open(out / "membership.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("experiments/results/membership"))
    ap.add_argument("--runs", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="attack finished run folders under --runs as they are")
    ap.add_argument("--quick", action="store_true", help="4 reference heads, the none and ε = 8 columns")
    ap.add_argument("--n-refs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="runs/results/cache", help="the embedding cache")
    ap.add_argument("--tables-only", action="store_true",
                    help="rewrite membership.md/.csv from the rows of --out/membership.json; train and attack nothing")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tables_only:
        print(_write_tables(args.out, json.loads((args.out / "membership.json").read_text())["rows"]))
        return
    columns = {k: v for k, v in COLUMNS.items() if not args.quick or k in ("none", "dp_eps8")}
    runs_root = args.runs or Path(tempfile.mkdtemp(prefix="fedicd_mia_"))
    rows, start = [], time.perf_counter()
    for column, extra in columns.items():
        cfg = load_config("fedicd/resources/demo.toml", [*SMALL, f'cache_dir="{args.cache_dir}"', *extra])
        t0 = time.perf_counter()
        done = runs_root / column / "results.json"
        results = (json.loads(done.read_text()) if args.reuse and done.exists()
                   else run_federated(cfg, runs_root / column))
        t1 = time.perf_counter()
        png_dir = args.out / column
        reps = battery_membership(load_federation_run(runs_root / column), seed=args.seed, quick=args.quick,
                                  n_refs=args.n_refs, out=png_dir)
        for p in png_dir.glob("*.png"):
            p.rename(args.out / f"{column}_{p.name}")
        png_dir.rmdir()
        for r in reps:
            r.settings["roc_png"] = f"{column}_{Path(r.settings['roc_png']).name}"
        print(f"{column}: run {t1 - t0:.0f} s, battery {time.perf_counter() - t1:.0f} s", flush=True)
        rows += [_row(column, results, r) for r in reps]
        (args.out / f"{column}.json").write_text(json.dumps([r.to_dict() for r in reps], indent=1))
    print(_write_tables(args.out, rows))
    print(f"total {time.perf_counter() - start:.0f} s")
    argv = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "membership.json").write_text(json.dumps({"argv": argv, "runs": str(runs_root), "rows": rows},
                                                         indent=1))
    for column in columns:
        (args.out / f"{column}.json").unlink()


if __name__ == "__main__":
    main()
