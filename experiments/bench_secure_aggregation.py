"""Cost of secure aggregation: bytes per client, round time and final F1 for none / ckks / secagg+ (one run).

    python experiments/bench_secure_aggregation.py --out runs/secure_agg [--rounds 20] [--clients 10]

Synthetic corpus (``synthetic_fed.toml``: 3,000 notes, IID), ``--clients`` clients, FedAvg
with the paper's MLP head widened to 2,048 hidden units (``train.hidden = [2048]``:
1.09M parameters for the 146 labels; the issue asks for a 1-2M-parameter head), ``--rounds`` rounds, client-side
evaluation off (``fraction_evaluate = 0``) so the bytes are the training traffic; the
global model is scored every round on the server-held val/test split (under CKKS by
the key-holding evaluator, after decrypting). CKKS keys are made fresh in
``OUT/keys``. Per method: parameters, upload and download bytes per client per round
(and their ratio to the plain run), mean round seconds over rounds 2.. (round 1 holds
the simulation's start-up), the CKKS time split (client decrypt/encrypt, server add,
evaluator decrypt), and the final test micro-F1. Writes ``OUT/secure_agg.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedicd.config import load_config
from fedicd.runner.simulation import run_federated
from fedicd.secure.ckks_round import write_key_dir

METHODS = ("none", "ckks", "secagg+")


def _summary(method: str, res: dict, n_params: int) -> dict:
    hist = res["history"]
    later = hist[1:] or hist
    n = np.mean([r["clients_sampled"] for r in later])
    row = {"method": method, "params": n_params, "rounds": len(hist),
           "upload_bytes_per_client": float(np.mean([r["bytes_received"] for r in later]) / n),
           "download_bytes_per_client": float(np.mean([r["bytes_sent"] for r in later]) / n),
           "round_seconds": float(np.mean([r["seconds"] for r in later])),
           "round1_seconds": hist[0]["seconds"],
           "test_micro_f1": res["test"]["micro_f1"], "test_macro_f1": res["test"]["macro_f1"]}
    for key in ("train_encrypt_seconds", "train_decrypt_seconds", "train_aggregate_seconds",
                "evaluator_decrypt_seconds", "train_train_seconds"):
        vals = [r[key] for r in later if key in r]
        if vals:
            row[key] = float(np.mean(vals))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/secure_agg"))
    ap.add_argument("--config", default="experiments/configs/synthetic_fed.toml")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override for every run")
    args = ap.parse_args()
    keys = args.out / "keys"
    if not (keys / "secret.ctx").exists():
        write_key_dir(keys)
    base = [f"federated.rounds={args.rounds}", f"partition.n_clients={args.clients}",
            "federated.fraction_evaluate=0.0", "train.hidden=[2048]", *args.overrides]
    # the CKKS run has a key-holding evaluator, so every method scores the global model every round
    extra = {"none": [], "ckks": ['secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{keys}"',
                                  f'secure_aggregation.evaluator_key="{keys / "secret.ctx"}"'],
             "secagg+": ['secure_aggregation.method="secagg+"']}
    rows = []
    for method in args.methods:
        cfg = load_config(args.config, [*base, *extra[method]])
        out = args.out / method.replace("+", "plus")
        if out.exists():
            import shutil

            shutil.rmtree(out)
        res = run_federated(cfg, out)
        from fedicd.federated.model import initial_arrays
        from fedicd.run_plan import read_plan

        plan = read_plan(out)
        init = initial_arrays(plan.train, plan.input_dim, plan.n_labels)
        rows.append(_summary(method, res, int(sum(v.size for v in init.values()))))
        print(json.dumps(rows[-1]), flush=True)
    plain = next((r for r in rows if r["method"] == "none"), None)
    for r in rows:
        fp32 = 4 * r["params"]
        r["upload_vs_fp32"] = r["upload_bytes_per_client"] / fp32
        r["download_vs_fp32"] = r["download_bytes_per_client"] / fp32
        if plain:
            r["round_time_vs_none"] = r["round_seconds"] / plain["round_seconds"]
            r["f1_delta_vs_none"] = r["test_micro_f1"] - plain["test_micro_f1"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "secure_agg.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{'method':<9}{'params':>9}{'up/client':>12}{'×fp32':>7}{'down/client':>13}{'×fp32':>7}{'round s':>9}"
          f"{'×none':>7}{'µF1':>8}{'Δ':>8}")
    for r in rows:
        print(f"{r['method']:<9}{r['params']:>9}{r['upload_bytes_per_client'] / 1e6:>10.2f}MB{r['upload_vs_fp32']:>7.2f}"
              f"{r['download_bytes_per_client'] / 1e6:>11.2f}MB{r['download_vs_fp32']:>7.2f}{r['round_seconds']:>9.2f}"
              f"{r.get('round_time_vs_none', float('nan')):>7.2f}{r['test_micro_f1']:>8.4f}"
              f"{r.get('f1_delta_vs_none', float('nan')):>+8.4f}")


if __name__ == "__main__":
    main()
