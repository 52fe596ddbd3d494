"""Federated (FedAvg, IID) vs centralized training with the same head and total epochs.

    python experiments/federated_parity.py --out runs/parity

For each config (default: synthetic_fed.toml with 20 clients and codiesp_fed.toml
with 5), runs the centralized baseline with ``train.epochs = rounds x local_epochs``
and the federated run, on the same notes, split, label space and embeddings, and
prints test micro/macro F1 and their difference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedicd.config import load_config
from fedicd.experiment import run_experiment
from fedicd.runner.simulation import run_federated

CONFIGS = ("experiments/configs/synthetic_fed.toml", "experiments/configs/codiesp_fed.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/parity"))
    ap.add_argument("configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override for every config")
    args = ap.parse_args()
    rows = []
    for path in args.configs:
        fed_cfg = load_config(path, args.overrides)
        epochs = fed_cfg.federated.rounds * fed_cfg.federated.local_epochs
        central_cfg = load_config(path, [*args.overrides, 'train.mode="central"', f"train.epochs={epochs}"])
        name = Path(path).stem
        central = run_experiment(central_cfg, args.out / name / "central")
        federated = run_federated(fed_cfg, args.out / name / "federated")
        rows.append({"config": name, "clients": len(federated["client_sizes"]), "epochs": epochs,
                     "central_micro_f1": central["test"]["micro_f1"], "fed_micro_f1": federated["test"]["micro_f1"],
                     "central_macro_f1": central["test"]["macro_f1"], "fed_macro_f1": federated["test"]["macro_f1"],
                     "central_s": central["seconds"]["train"], "fed_s": federated["seconds"]["simulation"]})
    (args.out / "parity.json").write_text(json.dumps(rows, indent=2))
    print(f"{'config':<16}{'clients':>8}{'epochs':>7}{'central µF1':>12}{'fed µF1':>9}{'Δ':>8}{'central MF1':>12}"
          f"{'fed MF1':>9}")
    for r in rows:
        print(f"{r['config']:<16}{r['clients']:>8}{r['epochs']:>7}{r['central_micro_f1']:>12.4f}{r['fed_micro_f1']:>9.4f}"
              f"{r['fed_micro_f1'] - r['central_micro_f1']:>+8.4f}{r['central_macro_f1']:>12.4f}{r['fed_macro_f1']:>9.4f}")


if __name__ == "__main__":
    main()
