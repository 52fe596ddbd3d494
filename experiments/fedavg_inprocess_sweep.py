"""In-process FedAvg diagnostics: local optimizer, server momentum, client count, without Flower.

Usage::

    python experiments/fedavg_inprocess_sweep.py RUN_DIR [--mode central|fedavg] [--optimizer adamw|sgd] [--lr LR]
        [--adam-state fresh|persist|server-average] [--server-momentum BETA] [--clients K] [--rounds 100]
        [--batch-size 64] [--local-epochs 1] [--threads 2] [--seed 0] [--every 10] [--json PATH]

    # FedAvg with the paper's local AdamW, re-created every round, on the run's own partition
    python experiments/fedavg_inprocess_sweep.py runs/parity100/synthetic_fed/federated
    # local plain SGD (peak lr 100), the training rows re-split IID over 5 clients
    python experiments/fedavg_inprocess_sweep.py runs/parity100/synthetic_fed/federated --optimizer sgd --lr 100 \\
        --clients 5
    # centralized AdamW baseline: one epoch over all training rows per round
    python experiments/fedavg_inprocess_sweep.py runs/parity100/synthetic_fed/federated --mode central

``RUN_DIR`` is a fedicd federated run directory staged with the server's evaluation notes (the default
``federated.server_eval = true``): the clients' files ``clients/<pid>/data.npz``, the client partition
(``partition.json``) and ``server/eval.npz`` (the test rows), e.g. ``runs/parity100/synthetic_fed/federated``. The
training rows are reassembled from the clients' files (:func:`fedicd.federated.staged.load_staged_splits`, the
researcher's view).

This is a fast diagnostic that bypasses Flower: the clients are trained one after another in this process. It
mirrors fedicd's client loop -- a fresh local optimizer every round (unless ``--adam-state`` says otherwise), the
learning rate of the global cosine schedule at the round index (:func:`fedicd.local_training.round_lr`), fedicd's
training loop (:func:`fedicd.train.run_epoch`) and example-weighted averaging of the client models -- but not its
per-round seeding (one batch-order generator is shared by every client and round here), checkpointing,
validation or threshold choice:
micro-/macro-F1 are on the test rows at threshold 0.5. The head, loss and AdamW weight decay (1e-5) are
``TrainConfig(mode="federated")``'s defaults. The in-process sweeps quoted in the README (more local steps, server
momentum, persistent or server-averaged Adam moments, client count K over a fixed pool) came from this script.

Settings (each flag changes one thing from the default, FedAvg with a fresh local AdamW every round):

* ``--mode central``: centralized training, one epoch over all training rows per round (AdamW, lr 1e-3, cosine).
* ``--optimizer sgd --lr LR``: plain SGD with peak lr ``LR`` (locally, or centrally with ``--mode central``).
* ``--adam-state persist``: every client keeps its own AdamW state (moments and step count) across rounds.
* ``--adam-state server-average``: the server averages the clients' Adam moments (example-weighted; the step count
  is the first client's) and every client starts the next round from a copy of them.
* ``--server-momentum BETA``: server momentum on the averaged update (FedAvgM, server lr 1); 0 is plain FedAvg.
* ``--clients K``: re-split the partition's training rows IID over ``K`` clients (numpy seed ``--seed``).

Seeds: ``--seed`` seeds the model initialisation (and dropout) and the IID re-split; ``--seed + 1`` the batch
order. Prints test F1 every ``--every`` rounds and one final line with the setting and
``micro_f1 macro_f1 seconds``; writes no files except the optional ``--json`` result.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedicd.federated.staged import check_features_fit, load_staged_splits
from fedicd.local_training import local_optimizer, round_lr, set_lr
from fedicd.metrics import f1_scores
from fedicd.train import TrainConfig, plain_step, run_epoch, shuffled_batches

ADAMW_LR = 1e-3          # TrainConfig's default peak lr, the paper's
ADAMW_WEIGHT_DECAY = 1e-5
THRESHOLD = 0.5

StateDict = dict[str, torch.Tensor]


@dataclass
class Data:
    """Training rows as tensors, test rows as arrays, and the clients' row indices into the training rows."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: np.ndarray
    y_test: np.ndarray
    clients: list[np.ndarray]


def load_data(run_dir: Path, n_clients: int | None, seed: int) -> Data:
    """The staged features and partition of ``run_dir``; ``n_clients`` re-splits the partition's rows IID."""
    arrays = load_staged_splits(run_dir)
    # the sweep trains TrainConfig()'s MLP on pooled vectors: a chunk-sequence run's staged chunks are refused
    check_features_fit(arrays["x_train"], TrainConfig().head, f"the staged features of the run folder {run_dir}")
    if "x_test" not in arrays:
        raise SystemExit(f"{run_dir} was staged without the server's evaluation notes (federated.server_eval = "
                         "false): the sweep scores on its test split; stage it with server_eval = true")
    clients = list(arrays["clients"])
    if n_clients is not None:
        pool = np.sort(np.concatenate(clients))
        if not 1 <= n_clients <= len(pool):
            raise SystemExit(f"--clients {n_clients}: need 1..{len(pool)} clients for {len(pool)} training rows")
        clients = np.array_split(pool[np.random.default_rng(seed).permutation(len(pool))], n_clients)
    return Data(x_train=torch.tensor(arrays["x_train"]), y_train=torch.tensor(arrays["y_train"], dtype=torch.float32),
                x_test=arrays["x_test"], y_test=arrays["y_test"], clients=clients)


def evaluate(model: torch.nn.Module, data: Data) -> tuple[float, float]:
    """Test (micro-F1, macro-F1) at threshold 0.5."""
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.tensor(data.x_test))).numpy()
    return f1_scores(data.y_test, scores, threshold=THRESHOLD)


def make_optimizer(name: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """fedicd's local optimizer: AdamW with weight decay 1e-5, or plain SGD without weight decay."""
    return local_optimizer(model, name, lr, ADAMW_WEIGHT_DECAY if name == "adamw" else 0.0)


def train_rows(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: torch.nn.Module, data: Data,
               rows: torch.Tensor, *, batch_size: int, epochs: int, gen: torch.Generator) -> None:
    """``epochs`` passes over ``rows`` of the training data in shuffled mini-batches (fedicd's loop)."""
    x, y = data.x_train[rows], data.y_train[rows]
    step = plain_step(model, opt, loss_fn)
    for _ in range(epochs):
        run_epoch(model, step, shuffled_batches(x, y, batch_size, gen))


def weighted_average(states: list[StateDict], weights: torch.Tensor) -> StateDict:
    """Example-weighted mean of the floating-point entries (in float64); other entries from the first client."""
    first = states[0]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in first.items()}


def average_adam_moments(opt_states: list[dict[str, Any]], weights: torch.Tensor) -> dict[str, Any]:
    """The first client's optimizer state with ``exp_avg``/``exp_avg_sq`` replaced by the weighted client mean."""
    avg = copy.deepcopy(opt_states[0])
    for pid in avg["state"]:
        for key in ("exp_avg", "exp_avg_sq"):
            avg["state"][pid][key] = sum(w * s["state"][pid][key] for w, s in zip(weights.float(), opt_states))
    return avg


def apply_server_momentum(current: StateDict, averaged: StateDict, buffer: StateDict | None,
                          beta: float) -> StateDict:
    """FedAvgM with server lr 1: ``buf = beta * buf + (avg - cur)``; updates ``averaged`` to ``cur + buf``."""
    if buffer is None:
        buffer = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in current.items() if v.is_floating_point()}
    for k in buffer:
        buffer[k] = beta * buffer[k] + (averaged[k].double() - current[k].double())
        averaged[k] = (current[k].double() + buffer[k]).to(current[k].dtype)
    return buffer


def report(history: list[dict[str, float]], step: int, every: int, model: torch.nn.Module, data: Data) -> None:
    if every and step % every == 0:
        micro, macro = evaluate(model, data)
        history.append({"round": step, "micro_f1": micro, "macro_f1": macro})
        print(f"round {step:>4}  micro_f1 {micro:.4f}  macro_f1 {macro:.4f}", flush=True)


def run_central(model: torch.nn.Module, loss_fn: torch.nn.Module, data: Data, args: argparse.Namespace,
                history: list[dict[str, float]]) -> None:
    """Centralized training: one epoch over all training rows per round, cosine lr over ``--rounds``."""
    opt = make_optimizer(args.optimizer, model, args.lr)
    gen = torch.Generator().manual_seed(args.seed + 1)
    rows = torch.arange(len(data.x_train))
    for epoch in range(args.rounds):
        set_lr(opt, round_lr(args.lr, epoch, args.rounds))
        train_rows(model, opt, loss_fn, data, rows, batch_size=args.batch_size, epochs=1, gen=gen)
        report(history, epoch + 1, args.every, model, data)


def run_fedavg(model: torch.nn.Module, loss_fn: torch.nn.Module, data: Data, args: argparse.Namespace,
               history: list[dict[str, float]]) -> None:
    """FedAvg over ``data.clients``, all clients every round, trained sequentially in this process."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    client_rows = [torch.as_tensor(rows) for rows in data.clients]
    weights = torch.tensor([len(rows) for rows in client_rows], dtype=torch.float64)
    weights = weights / weights.sum()
    persisted: list[dict[str, Any] | None] = [None] * len(client_rows)  # --adam-state persist
    server_adam: dict[str, Any] | None = None                          # --adam-state server-average
    momentum: StateDict | None = None                                  # --server-momentum
    for rnd in range(args.rounds):
        lr = round_lr(args.lr, rnd, args.rounds)
        states, opt_states = [], []
        for c, rows in enumerate(client_rows):
            local = copy.deepcopy(model)
            opt = make_optimizer(args.optimizer, local, lr)
            if args.adam_state == "persist" and persisted[c] is not None:
                opt.load_state_dict(persisted[c])
            elif args.adam_state == "server-average" and server_adam is not None:
                # a copy: load_state_dict aliases the tensors, and Adam updates them in place
                opt.load_state_dict(copy.deepcopy(server_adam))
            set_lr(opt, lr)  # a loaded state carries the lr it was saved with
            train_rows(local, opt, loss_fn, data, rows, batch_size=args.batch_size, epochs=args.local_epochs,
                       gen=gen)
            if args.adam_state == "persist":
                persisted[c] = copy.deepcopy(opt.state_dict())
            elif args.adam_state == "server-average":
                opt_states.append(opt.state_dict())
            states.append(local.state_dict())
        averaged = weighted_average(states, weights)
        if args.server_momentum:
            momentum = apply_server_momentum(model.state_dict(), averaged, momentum, args.server_momentum)
        model.load_state_dict(averaged)
        if opt_states:
            server_adam = average_adam_moments(opt_states, weights)
        report(history, rnd + 1, args.every, model, data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="fedicd federated run dir (clients/*/data.npz, partition.json, server/eval.npz)")
    ap.add_argument("--mode", choices=["central", "fedavg"], default="fedavg")
    ap.add_argument("--optimizer", "--local-optimizer", dest="optimizer", choices=["adamw", "sgd"], default="adamw",
                    help="the (local) optimizer; default adamw (the paper's)")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"peak lr of the cosine schedule (default {ADAMW_LR:g} for adamw; required for sgd)")
    ap.add_argument("--adam-state", choices=["fresh", "persist", "server-average"], default="fresh",
                    help="fedavg + adamw: local AdamW state across rounds (default fresh: re-created every round)")
    ap.add_argument("--server-momentum", type=float, default=0.0, metavar="BETA",
                    help="fedavg: server momentum on the averaged update, server lr 1 (default 0: plain FedAvg)")
    ap.add_argument("--clients", type=int, default=None, metavar="K",
                    help="fedavg: re-split the training rows IID over K clients (default: the manifest's partition)")
    ap.add_argument("--rounds", type=int, default=100, help="rounds (central: epochs); default 100")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--local-epochs", type=int, default=1, help="fedavg: local epochs per round (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=10, help="print test F1 every N rounds (0: only the final line)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the final result dict here")
    args = ap.parse_args(argv)
    if args.lr is None:
        if args.optimizer == "sgd":
            ap.error("--optimizer sgd needs --lr")
        args.lr = ADAMW_LR
    if args.mode == "central":
        fed_only = {"--adam-state": args.adam_state != "fresh", "--server-momentum": args.server_momentum != 0,
                    "--clients": args.clients is not None, "--local-epochs": args.local_epochs != 1}
        if any(fed_only.values()):
            ap.error(f"--mode central takes none of {', '.join(k for k, v in fed_only.items() if v)}")
    if args.optimizer == "sgd" and args.adam_state != "fresh":
        ap.error("--adam-state needs --optimizer adamw")
    if args.rounds < 1 or args.batch_size < 1 or args.local_epochs < 1:
        ap.error("--rounds, --batch-size and --local-epochs must be positive")
    return args


def setting(args: argparse.Namespace, n_clients: int) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode, "optimizer": args.optimizer, "lr": args.lr}
    if args.mode == "fedavg":
        out.update(adam_state=args.adam_state if args.optimizer == "adamw" else None,
                   server_momentum=args.server_momentum, clients=n_clients, local_epochs=args.local_epochs)
    out.update(rounds=args.rounds, batch_size=args.batch_size, seed=args.seed)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(args.run_dir, args.clients, args.seed)
    cfg = TrainConfig(mode="federated")
    torch.manual_seed(args.seed)
    model = cfg.build(data.x_train.shape[1], data.y_train.shape[1])
    loss_fn = cfg.loss()
    history: list[dict[str, float]] = []
    start = time.time()
    (run_central if args.mode == "central" else run_fedavg)(model, loss_fn, data, args, history)
    micro, macro = evaluate(model, data)
    seconds = time.time() - start
    result = {**setting(args, len(data.clients)), "run_dir": str(args.run_dir), "micro_f1": micro,
              "macro_f1": macro, "seconds": seconds, "history": history}
    summary = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in setting(args, len(data.clients)).items() if v is not None)
    print(f"{summary}  micro_f1 {micro:.4f}  macro_f1 {macro:.4f}  seconds {seconds:.1f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
