"""The parts a client is assembled from: its local trainer and the codec of the global model.

A :class:`ClientSetup` is made once per client process and run plan: the trainer is chosen from
the plan (:class:`PlainTrainer`, FedProx's proximal term included; :class:`ScaffoldTrainer`; or a
defence's, such as DP-SGD from :mod:`fedicd.privacy`), and so is the codec (:class:`PlainCodec`,
or secure aggregation's). ``reply_metrics`` are added to every train and evaluation reply.

SCAFFOLD's client control ``c_i`` is client state: it is kept in the client's own directory
(``<run_dir>/clients/<partition-id>/scaffold_c_i.npz``), so it survives a restart and never
travels; only ``c_i⁺ − c_i`` is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedicd.local_training import LocalTrainConfig, local_train, round_seed
from fedicd.federated.records import from_record, to_record
from fedicd.federated.site_data import ClientData
from fedicd.run_plan import RunPlan
from fedicd.sequences import as_model_input, is_sequence

__all__ = ["LocalResult", "LocalTrainer", "PlainTrainer", "ScaffoldTrainer", "PlainCodec", "ClientSetup",
           "default_trainer"]


@dataclass
class LocalResult:
    """A local round: last-epoch loss, metrics for the reply, extra records, and what to keep once replied."""

    loss: float
    metrics: dict = field(default_factory=dict)
    records: dict[str, ArrayRecord] = field(default_factory=dict)
    commit: Callable[[], None] | None = None


class LocalTrainer:
    """Trains the global model on the client's rows for one round."""

    def __init__(self, plan: RunPlan, run_dir: Path, pid: int) -> None:
        self.plan, self.run_dir, self.pid = plan, run_dir, pid

    def train(self, model: torch.nn.Module, data: ClientData, local: LocalTrainConfig, msg: Message) -> LocalResult:
        raise NotImplementedError


class PlainTrainer(LocalTrainer):
    """The centralized loop on the client's rows (FedProx's proximal term when the round config sets mu)."""

    def train(self, model, data, local, msg) -> LocalResult:
        return LocalResult(local_train(model, data, self.plan.train, local))


class ScaffoldTrainer(LocalTrainer):
    """SCAFFOLD's corrected local steps; replies carry ``c_i⁺ − c_i``, and ``c_i⁺`` is kept once replied."""

    def _path(self) -> Path:
        return self.run_dir / "clients" / str(self.pid) / "scaffold_c_i.npz"

    def _load(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        path = self._path()
        if not path.exists():
            return {k: torch.zeros_like(v) for k, v in like.items()}
        with np.load(path) as z:
            return {k: torch.as_tensor(z[k]) for k in like}

    def _save(self, control: dict[str, torch.Tensor], server_round: int) -> None:
        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"tmp-{server_round}.npz")
        np.savez(tmp, **{k: v.numpy() for k, v in control.items()})
        tmp.replace(path)

    def train(self, model, data, local, msg) -> LocalResult:
        from fedicd.strategies.scaffold import DELTA_CONTROL_KEY, SERVER_CONTROL_KEY, scaffold_client_control

        cfg = self.plan.train
        if SERVER_CONTROL_KEY not in msg.content.array_records:
            return LocalResult(local_train(model, data, cfg, local))
        c = {k: torch.as_tensor(v) for k, v in from_record(msg.content[SERVER_CONTROL_KEY]).items()}
        c_i = self._load(c)
        with torch.random.fork_rng(devices=[]):  # c_i+'s dropout: repeatable per (seed, round, client)
            torch.manual_seed(round_seed(local) + 3)
            # chunk sequences: padded batches of at most 256 notes (their activations are T times larger)
            c_new = scaffold_client_control(model, as_model_input(data.x_train),
                                            torch.as_tensor(data.y_train, dtype=torch.float32), cfg.loss(),
                                            batch_size=256 if is_sequence(data.x_train) else 4096)
        loss = local_train(model, data, cfg, local, scaffold_c=c, scaffold_c_i=c_i)
        delta = to_record({k: (c_new[k] - c_i[k]).numpy() for k in c_new})
        return LocalResult(loss, records={DELTA_CONTROL_KEY: delta},
                           commit=lambda: self._save(c_new, local.server_round))


def default_trainer(plan: RunPlan, run_dir: Path, pid: int) -> LocalTrainer:
    """The trainer of a run without a defence that trains differently."""
    cls = ScaffoldTrainer if plan.strategy.name == "scaffold" else PlainTrainer
    return cls(plan, run_dir, pid)


class PlainCodec:
    """The global model and the update travel as plain arrays."""

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan

    def global_arrays(self, msg: Message) -> ArrayRecord:
        """The round's global model."""
        return msg.content["arrays"]

    def eval_weight(self, n_val: int) -> int:
        """The weight of this client's evaluation metrics."""
        return n_val

    def train_reply(self, arrays: dict[str, np.ndarray], n_examples: int, metrics: dict) -> RecordDict:
        """The reply content of a train round."""
        return RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)})


@dataclass
class ClientSetup:
    """One client of a planned run, with its trainer and codec.

    ``data_path``: the client's own data file (:mod:`fedicd.federated.site_data`; in simulation
    ``<run_dir>/clients/<pid>/data.npz``, in a deployment the node's ``data-path``), the only data file the
    client opens. ``labels``: the run's label codes, in order, which the file must hold (None: not compared).
    ``run_dir``: the root of the client's own state (SCAFFOLD's control).
    """

    plan: RunPlan
    run_dir: Path
    pid: int
    trainer: LocalTrainer
    codec: PlainCodec
    reply_metrics: dict = field(default_factory=dict)
    data_path: Path = field(kw_only=True)
    labels: tuple[str, ...] | None = field(default=None, kw_only=True)
