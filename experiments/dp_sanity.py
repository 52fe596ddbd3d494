"""Does DP-SGD still learn when the noise is small? One client holding all synthetic training notes.

    python experiments/dp_sanity.py --run-dir runs/parity100/synthetic_fed/federated

Reads the staged features of a federated run directory (the training rows reassembled from every client's file,
the test rows from the server's ``server/eval.npz``), trains the MLP for
``--epochs`` local epochs non-privately and with fedicd's DP-SGD at each σ
(C = 0.1, batch 64, Poisson sampling), and prints test micro/macro F1 at
threshold 0.5 and the ε spent (δ = 1e-5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fedicd.local_training import LocalTrainConfig, local_train
from fedicd.federated.staged import ClientData, check_features_fit, load_staged_splits
from fedicd.metrics import f1_scores
from fedicd.privacy.accounting import plan_dp
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_local import dp_local_train
from fedicd.train_config import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/parity100/synthetic_fed/federated"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.01, 1.0])
    args = ap.parse_args()
    torch.set_num_threads(1)
    a = load_staged_splits(args.run_dir)  # the researcher's view: every client's rows and the server's test rows
    cfg = TrainConfig(seed=0)
    check_features_fit(a["x_train"], cfg.head, f"the staged features of the run folder {args.run_dir}")
    x, y = a["x_train"], a["y_train"].astype(np.float32)
    for sigma in [None, *args.sigmas]:
        torch.manual_seed(0)
        model, history, eps = cfg.build(x.shape[1], y.shape[1]), [], None
        plan = None if sigma is None else plan_dp(n=len(x), batch_size=cfg.batch_size, rounds=args.epochs,
                                                  local_epochs=1, noise=sigma, target_epsilon=0.0, delta=1e-5)
        for r in range(1, args.epochs + 1):
            local = LocalTrainConfig(r, args.epochs, 1, 0, 0)
            if plan is None:
                local_train(model, ClientData(x, y, x[:1], y[:1]), cfg, local)
            else:
                res = dp_local_train(model, x, y, cfg, local, PrivacyConfig(dp="sample", noise=sigma, clip=0.1),
                                     plan, history)
                history, eps = res.history, res.epsilon
        model.eval()
        with torch.no_grad():
            probs = torch.sigmoid(model(torch.as_tensor(a["x_test"]))).numpy()
        micro, macro = f1_scores(a["y_test"], probs, threshold=0.5)
        label = "non-private" if sigma is None else f"sigma={sigma:g} epsilon={eps:.3g}"
        print(f"{label:<32} micro-F1 {micro:.4f}  macro-F1 {macro:.4f}")


if __name__ == "__main__":
    main()
