"""The federated client: local training on a client's rows, and the Flower ClientApp.

:func:`local_train` is the same loop as centralized training
(:func:`fedicd.train.train_epoch`: HybridLoss, AdamW, mini-batches) run for
``local_epochs`` epochs (or the same loop with plain SGD), with the learning
rate of the global cosine schedule at this round, plus the FedProx proximal term and SCAFFOLD's gradient
correction when the strategy asks for them. Each round's randomness (dropout,
shuffling) is seeded by (experiment seed, round, client), so a resumed run
repeats an uninterrupted one exactly.

Privacy
-------
The client reads its own embeddings and labels from the staged files; only
model arrays, SCAFFOLD control deltas and scalar metrics leave it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedicd.federated.staged import ClientData, read_run_meta
from fedicd.metrics import f1_scores
from fedicd.strategies.fedprox import proximal_term
from fedicd.strategies.scaffold import scaffold_correct_gradients_
from fedicd.train import TrainConfig, _batches

__all__ = ["LocalTrainConfig", "local_train", "evaluate_local", "round_lr", "round_seed", "local_optimizer",
           "make_client_app", "build_model",
           "clip_update_when_asked"]


@dataclass(frozen=True)
class LocalTrainConfig:
    """What one client does in one round."""

    server_round: int
    total_rounds: int
    local_epochs: int
    partition_id: int
    seed: int
    proximal_mu: float = 0.0
    optimizer: str = "adamw"
    lr: float = 0.0  # peak local learning rate; 0 = the TrainConfig's


def round_lr(base_lr: float, epoch_index: int, total_epochs: int) -> float:
    """The centralized cosine schedule (``CosineAnnealingLR``, ``eta_min=0``) at a global epoch index."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch_index / total_epochs))


def build_model(train_cfg: TrainConfig, input_dim: int, n_labels: int, arrays: ArrayRecord) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        model = train_cfg.build(input_dim, n_labels)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def local_train(model: torch.nn.Module, data: ClientData, train_cfg: TrainConfig, local: LocalTrainConfig, *,
                scaffold_c: dict[str, torch.Tensor] | None = None,
                scaffold_c_i: dict[str, torch.Tensor] | None = None) -> float:
    """Train ``model`` in place on the client's rows; returns the mean batch loss of the last epoch."""
    x = torch.as_tensor(data.x_train, dtype=torch.float32)
    y = torch.as_tensor(data.y_train, dtype=torch.float32)
    loss_fn = train_cfg.loss()
    global_params = [p.detach().clone() for p in model.parameters()] if local.proximal_mu > 0 else None
    peak_lr = local.lr or train_cfg.lr
    opt = local_optimizer(model, local.optimizer, peak_lr, train_cfg.weight_decay)
    total_epochs = local.total_rounds * local.local_epochs
    loss_value = float("nan")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(round_seed(local))
        gen = torch.Generator().manual_seed(round_seed(local) + 1)
        model.train()
        for e in range(local.local_epochs):
            for group in opt.param_groups:
                group["lr"] = round_lr(peak_lr, (local.server_round - 1) * local.local_epochs + e, total_epochs)
            loss_value = _epoch(model, opt, loss_fn, x, y, train_cfg.batch_size, gen, global_params, local.proximal_mu,
                                (scaffold_c, scaffold_c_i))
    return loss_value


def local_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """A fresh local optimizer (no state is carried between rounds)."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown local optimizer {name!r}; expected 'adamw' or 'sgd'")


def round_seed(local: LocalTrainConfig) -> int:
    return (local.seed * 1_000_003 + local.server_round * 1_009 + local.partition_id) % (2**62)


def _epoch(model, opt, loss_fn, x, y, batch_size, gen, global_params, mu, controls) -> float:
    """One local epoch: HybridLoss (+ FedProx term), backward, SCAFFOLD correction, AdamW step."""
    total, n = 0.0, 0
    for idx in _batches(torch.randperm(len(x), generator=gen), batch_size):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        if global_params is not None:
            loss = loss + proximal_term(model, global_params, mu)
        loss.backward()
        if controls[0] is not None:
            scaffold_correct_gradients_(model, controls[0], controls[1])
        opt.step()
        total += float(loss.detach())
        n += 1
    return total / max(n, 1)


@torch.inference_mode()
def evaluate_local(model: torch.nn.Module, data: ClientData, train_cfg: TrainConfig) -> dict[str, float]:
    """Loss and F1 (threshold 0.5) of ``model`` on the client's validation rows."""
    if len(data.x_val) == 0:
        raise ValueError("this client holds no validation notes")
    model.eval()
    logits = model(torch.as_tensor(data.x_val, dtype=torch.float32))
    loss = float(train_cfg.loss()(logits, torch.as_tensor(data.y_val, dtype=torch.float32)))
    micro, macro = f1_scores(data.y_val, torch.sigmoid(logits).numpy(), threshold=0.5)
    return {"eval_loss": loss, "micro_f1": micro, "macro_f1": macro}


def _client_state(context: Context, run_dir: str | None) -> tuple[Path, dict, int]:
    rd = Path(run_dir or str(context.run_config["run-dir"]))
    return rd, read_run_meta(rd), int(context.node_config["partition-id"])


def clip_update_when_asked(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` on train messages whose config carries a clipping norm.

    The norm is sent by ``DifferentialPrivacyClientSideFixedClipping`` (client-level
    DP with client-side clipping); other runs pass through untouched.
    """
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if any(KEY_CLIPPING_NORM in rec for rec in msg.content.config_records.values()):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app(run_dir: str | None = None) -> ClientApp:
    """A ClientApp reading its data from ``run_dir`` (or the run config's ``run-dir``)."""
    from fedicd.federated.client_handlers import handle_evaluate, handle_train

    app = ClientApp()

    from fedicd.secure.secagg import secaggplus_client_mod

    # SecAgg+ first: it masks what the rest of the chain (clipping, training) produces; other runs pass through
    @app.train(mods=[secaggplus_client_mod, clip_update_when_asked])
    def train(msg: Message, context: Context) -> Message:
        rd, meta, pid = _client_state(context, run_dir)
        return handle_train(msg, rd, meta, pid, context.node_config.get("ckks-secret-key"))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        rd, meta, pid = _client_state(context, run_dir)
        return handle_evaluate(msg, rd, meta, pid, context.node_config.get("ckks-secret-key"))

    return app
