"""How the FedAvg-vs-centralized gap grows as the same notes are split over more clients.

    python experiments/federated_client_scaling.py --out runs/client_scaling

The same notes, split, labels and embeddings (``synthetic_fed.toml``: 2,100
training notes), IID over K clients, ``rounds`` rounds x 1 local epoch, against
centralized training for ``rounds`` epochs. For every K it runs FedAvg with the
paper's local AdamW (re-created each round) and with plain local SGD
(``--sgd-lr``). Prints test micro/macro F1 and the gap; writes
``client_scaling.json`` and ``client_scaling.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedicd.config import load_config
from fedicd.experiment import run_experiment
from fedicd.runner.simulation import run_federated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/client_scaling"))
    ap.add_argument("--config", default="experiments/configs/synthetic_fed.toml")
    ap.add_argument("--clients", type=int, nargs="+", default=[2, 5, 20])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--sgd-lr", type=float, default=100.0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    base = [*args.overrides, f"federated.rounds={args.rounds}", "federated.local_epochs=1"]
    central = run_experiment(load_config(args.config, [*base, 'train.mode="central"', f"train.epochs={args.rounds}"]),
                             args.out / "central")
    c_micro, c_macro = central["test"]["micro_f1"], central["test"]["macro_f1"]
    rows = []
    for k in args.clients:
        for opt, lr in (("adamw", 0.0), ("sgd", args.sgd_lr)):
            cfg = load_config(args.config, [*base, f"partition.n_clients={k}", f'federated.local_optimizer="{opt}"',
                                            f"federated.local_lr={lr}", "federated.min_available=1",
                                            "federated.min_train=1", "federated.min_evaluate=1"])
            res = run_federated(cfg, args.out / f"k{k}_{opt}")
            sizes = res["client_sizes"]
            rows.append({"clients": k, "notes_per_client": sum(sizes) / len(sizes), "local_optimizer": opt,
                         "local_lr": lr or cfg.train.lr, "fed_micro_f1": res["test"]["micro_f1"],
                         "fed_macro_f1": res["test"]["macro_f1"], "central_micro_f1": c_micro,
                         "central_macro_f1": c_macro})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "client_scaling.json").write_text(json.dumps(rows, indent=2))
    print(f"centralized ({args.rounds} epochs): micro-F1 {c_micro:.4f}  macro-F1 {c_macro:.4f}")
    print(f"{'K':>4}{'notes/client':>14}{'optimizer':>11}{'local lr':>10}{'fed µF1':>9}{'Δ':>8}{'fed MF1':>9}")
    for r in rows:
        print(f"{r['clients']:>4}{r['notes_per_client']:>14.0f}{r['local_optimizer']:>11}{r['local_lr']:>10g}"
              f"{r['fed_micro_f1']:>9.4f}{r['fed_micro_f1'] - c_micro:>+8.4f}{r['fed_macro_f1']:>9.4f}")
    _plot(rows, c_micro, args.out / "client_scaling.png")


def _plot(rows: list[dict], central: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for opt in ("adamw", "sgd"):
        pts = [(r["notes_per_client"], r["fed_micro_f1"]) for r in rows if r["local_optimizer"] == opt]
        ax.plot(*zip(*pts), marker="o", label=f"FedAvg, local {opt}")
    ax.axhline(central, color="k", ls="--", label="centralized")
    ax.set_xscale("log")
    ax.set_xlabel("training notes per client")
    ax.set_ylabel("test micro-F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
