"""Wall time of a 20-client Flower simulation vs centralized training over the same sample passes.

    python experiments/bench_federated_speed.py --rounds 20

The paper's scale, without the hours of embedding: random 768-d "embeddings"
for 14,000 training notes (20,000 notes x 70 %) with 1,085 sparse labels that
depend on them (so training does real work), the MLP head (950k parameters),
20 IID clients. Centralized: ``rounds`` epochs over the pooled rows.
Federated: ``rounds`` rounds x 1 local epoch on every client (the same passes
over every row), FedAvg, fraction_evaluate 0.5, server-side evaluation every
round, through Flower's simulation engine (Ray, 2 CPUs, 1 per client). The
centralized run is timed before and after the simulation (it varies by ~30 %
on a shared 2-core machine); prints both ratios and where the federated time
goes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedicd.config import load_config
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.data import stage_arrays
from fedicd.partition import iid_partition
from fedicd.run_plan import write_plan
from fedicd.runner.simulation import simulate
from fedicd.runner.staging import build_plan
from fedicd.train import TrainConfig, train_central


def fake_features(n: int, dim: int, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    w = rng.standard_normal((dim, n_labels), dtype=np.float32) / np.sqrt(dim)
    scores = x @ w + rng.standard_normal((n, n_labels), dtype=np.float32)
    y = (scores > np.quantile(scores, 1 - 5 / n_labels, axis=0)).astype(np.float32)  # ~5 codes per note
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_fed"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--train-rows", type=int, default=14_000)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(None, ['train.mode="federated"', f"federated.rounds={args.rounds}",
                             f"partition.n_clients={args.clients}", *args.overrides])
    sizes = {"train": args.train_rows, "val": args.train_rows * 15 // 70, "test": args.train_rows * 15 // 70}
    x, y = fake_features(sum(sizes.values()), 768, 1085, seed=0)
    cut = np.cumsum([0, *sizes.values()])
    feats = {p: x[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    labels = {p: y[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    run = args.out / f"run-{int(time.time())}"
    partition = iid_partition([()] * sizes["train"], args.clients, seed=0)
    stage_arrays(run, feats, labels, partition, iid_partition([()] * sizes["val"], args.clients, seed=1))
    plan = build_plan(cfg, input_dim=768, n_labels=1085, client_sizes=partition.sizes)
    write_plan(run, plan)
    central_cfg = TrainConfig(epochs=args.rounds, seed=0)
    before = train_central(feats["train"], labels["train"], central_cfg).seconds
    fed_s = simulate(run, plan)
    hist = load_checkpoint(run)["history"]
    after = train_central(feats["train"], labels["train"], central_cfg).seconds
    central_s = min(before, after)  # timed before and after the simulation: the machine's noise shows
    rounds_s = sum(r["seconds"] for r in hist)
    client_train = sum(r["train_train_seconds"] * args.clients for r in hist)
    report = {"clients": args.clients, "rounds": args.rounds, "train_rows": sizes["train"],
              "central_train_s_before": before, "central_train_s_after": after,
              "federated_s": fed_s, "ratio_to_faster_central": fed_s / central_s,
              "ratio_to_slower_central": fed_s / max(before, after),
              "startup_and_shutdown_s": fed_s - rounds_s, "rounds_s": rounds_s,
              "client_local_training_s_sum": client_train,
              "per_round_overhead_s": (rounds_s - client_train / 2) / args.rounds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(report, indent=2))
    for k, v in report.items():
        print(f"{k:<30}{v:>12.2f}" if isinstance(v, float) else f"{k:<30}{v:>12}")


if __name__ == "__main__":
    main()
