"""Message handling of the ClientApp: decode the round's instructions, train or evaluate, reply.

SCAFFOLD's client control ``c_i`` is client state: it is kept in the client's
own directory (``<run_dir>/clients/<partition-id>/scaffold_c_i.npz``), so it
survives a restart and never travels; only ``c_i⁺ − c_i`` is sent.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Message, MetricRecord, RecordDict

from fedicd.federated.client import LocalTrainConfig, build_model, evaluate_local, local_train
from fedicd.federated.staged import load_client_data
from fedicd.federated.faults import inject_fault, should_fail
from fedicd.federated.records import from_record, to_record
from fedicd.train import TrainConfig

__all__ = ["handle_train", "handle_evaluate"]


@functools.lru_cache(maxsize=8)
def _train_config(items: tuple) -> TrainConfig:
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in items})


def _cfg(meta: dict) -> TrainConfig:
    return _train_config(tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in meta["train"].items())))


def _control_path(run_dir: Path, pid: int) -> Path:
    return run_dir / "clients" / str(pid) / "scaffold_c_i.npz"


def _load_control(run_dir: Path, pid: int, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    path = _control_path(run_dir, pid)
    if not path.exists():
        return {k: torch.zeros_like(v) for k, v in like.items()}
    with np.load(path) as z:
        return {k: torch.as_tensor(z[k]) for k in like}


def _save_control(run_dir: Path, pid: int, control: dict[str, torch.Tensor], server_round: int) -> None:
    path = _control_path(run_dir, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp-{server_round}.npz")
    np.savez(tmp, **{k: v.numpy() for k, v in control.items()})
    tmp.replace(path)


def _scaffold(msg: Message, model, data, cfg: TrainConfig, run_dir: Path, pid: int, rnd: int):
    """(c, c_i, new control record) for SCAFFOLD rounds, or Nones."""
    from fedicd.strategies.scaffold import SERVER_CONTROL_KEY, scaffold_client_control

    if SERVER_CONTROL_KEY not in msg.content.array_records:
        return None, None, None
    c = {k: torch.as_tensor(v) for k, v in from_record(msg.content[SERVER_CONTROL_KEY]).items()}
    c_i = _load_control(run_dir, pid, c)
    c_new = scaffold_client_control(model, torch.as_tensor(data.x_train), torch.as_tensor(data.y_train), cfg.loss())
    return c, c_i, c_new


def _pin_threads(fed: dict) -> None:
    """Use exactly the CPUs the client was given: float reductions (and so a resumed run's
    numbers) must not depend on how many threads a worker process happened to start with."""
    threads = max(1, int(fed["client_cpus"]))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=4)
def _key_holder(secret_path: str, key_dir: str, clip_values: bool):
    from fedicd.secure.ckks_round import CkksKeyHolder

    return CkksKeyHolder(secret_path, key_dir, clip_values=clip_values)


def _ckks(meta: dict, node_secret: str | None):
    """This client's CKKS key holder, or None when the run is not encrypted.

    The secret context's path comes from node config ``ckks-secret-key`` (a deployment) or,
    in simulation, ``<key_dir>/secret.ctx``.
    """
    secure = meta.get("config", {}).get("secure_aggregation", {})
    if secure.get("method", "none") != "ckks":
        return None
    key_dir = secure["key_dir"]
    return _key_holder(str(node_secret or Path(key_dir) / "secret.ctx"), key_dir, bool(secure.get("clip_values")))


def _global_model(msg: Message, cfg: TrainConfig, meta: dict, holder):
    """The round's global model: decrypted under CKKS (round 1 is the public initial model in plain text)."""
    from fedicd.secure.ckks_round import CKKS_RECORD

    if holder is not None and CKKS_RECORD in msg.content.array_records:
        plain = holder.decrypt(msg.content[CKKS_RECORD])  # float32: integer buffers are refused at staging
        return build_model(cfg, meta["input_dim"], meta["n_labels"], to_record(plain))
    return build_model(cfg, meta["input_dim"], meta["n_labels"], msg.content["arrays"])


def handle_train(msg: Message, run_dir: Path, meta: dict, pid: int, node_secret: str | None = None) -> Message:
    from fedicd.strategies.scaffold import DELTA_CONTROL_KEY

    cfg, fed = _cfg(meta), meta["federated"]
    _pin_threads(fed)
    rnd = int(msg.content["config"]["server-round"])
    data = load_client_data(run_dir, pid)
    holder = _ckks(meta, node_secret)
    t_dec = time.perf_counter()
    model = _global_model(msg, cfg, meta, holder)
    t_dec = time.perf_counter() - t_dec
    c, c_i, c_new = _scaffold(msg, model, data, cfg, run_dir, pid, rnd)
    local = LocalTrainConfig(server_round=rnd, total_rounds=fed["rounds"], local_epochs=fed["local_epochs"],
                             partition_id=pid, seed=meta["seed"],
                             proximal_mu=float(msg.content["config"].get("proximal-mu", 0.0)),
                             optimizer=fed.get("local_optimizer", "adamw"), lr=float(fed.get("local_lr", 0.0)))
    privacy = _privacy_meta(meta)
    t0 = time.perf_counter()
    if privacy["dp"] == "sample":
        loss, dp_metrics = _dp_train(model, data, cfg, local, meta, run_dir, pid, scaffold=c is not None)
    else:
        loss, dp_metrics = local_train(model, data, cfg, local, scaffold_c=c, scaffold_c_i=c_i), {}
    seconds = time.perf_counter() - t0
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if should_fail(fed, pid, rnd):
        arrays = inject_fault(fed["fault_kind"], arrays, pid)
    metrics = {"num-examples": len(data.x_train), "train_loss": loss, "train_seconds": seconds, "partition-id": pid,
               **dp_metrics}
    if privacy["dp"] == "client":
        metrics["unit-weight"] = 1.0  # equal client weights: what the client-level accountant assumes
    if holder is not None:  # the count travels encrypted with the update; nothing in the clear may reveal it
        t1 = time.perf_counter()
        record, clipped = holder.encrypt(arrays, len(data.x_train))
        for key in ("num-examples", "train_seconds", "epsilon", "dp_steps", "dp_empty_batches"):
            metrics.pop(key, None)  # steps = ⌈n/B⌉·epochs and ε (through q = B/n) would give n away
        metrics.update({"encrypt_seconds": time.perf_counter() - t1, "decrypt_seconds": t_dec,
                        "clipped_values": clipped})
        from fedicd.secure.ckks_round import CKKS_RECORD

        content = RecordDict({CKKS_RECORD: record, "metrics": MetricRecord(metrics)})
        return Message(content=content, reply_to=msg)
    content = RecordDict({"arrays": to_record(arrays), "metrics": MetricRecord(metrics)})
    if c_new is not None:
        content[DELTA_CONTROL_KEY] = to_record({k: (c_new[k] - c_i[k]).numpy() for k in c_new})
        _save_control(run_dir, pid, c_new, rnd)
    return Message(content=content, reply_to=msg)


def _privacy_meta(meta: dict) -> dict:
    """The run's DP plan; a run whose config asks for DP but was staged without a plan is refused."""
    wanted = meta.get("config", {}).get("privacy", {}).get("dp", "none")
    if "privacy" not in meta:
        if wanted != "none":
            raise RuntimeError(f"the config asks for privacy.dp = {wanted!r} but run_meta.json holds no DP plan "
                               "(stage runs with fedicd.federated.simulation.add_privacy); refusing to train "
                               "without it")
        return {"dp": "none"}
    return meta["privacy"]


def _dp_train(model, data, cfg: TrainConfig, local: LocalTrainConfig, meta: dict, run_dir: Path, pid: int, *,
              scaffold: bool) -> tuple[float, dict]:
    """One DP-SGD round; the accountant history lives in the client's directory, keyed by round."""
    from fedicd.privacy.accounting import DPPlan, load_history, save_history
    from fedicd.privacy.config import PrivacyConfig
    from fedicd.privacy.dp_local import check_budget, dp_local_train

    privacy = PrivacyConfig(**meta["config"]["privacy"])
    plan = DPPlan(**meta["privacy"]["clients"][pid])
    client_dir = run_dir / "clients" / str(pid)
    history = load_history(client_dir, local.server_round, count_all=privacy.secure_rng)
    check_budget(plan, history, plan.steps_per_epoch * local.local_epochs, partition_id=pid,
                 server_round=local.server_round)
    res = dp_local_train(model, data.x_train, data.y_train, cfg, local, privacy, plan, history, scaffold=scaffold)
    save_history(client_dir, local.server_round, res.history, count_all=privacy.secure_rng)
    return res.loss, {"epsilon": res.epsilon, "dp_steps": res.steps, "dp_empty_batches": res.empty_batches,
                      "dp_clipped_fraction": res.clipped_fraction}


def handle_evaluate(msg: Message, run_dir: Path, meta: dict, pid: int, node_secret: str | None = None) -> Message:
    cfg = _cfg(meta)
    _pin_threads(meta["federated"])
    data = load_client_data(run_dir, pid)
    if len(data.x_val) == 0:  # partition.client_validation gave this client no validation notes: nothing to score
        return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 0})}), reply_to=msg)
    holder = _ckks(meta, node_secret)
    model = _global_model(msg, cfg, meta, holder)
    # under CKKS every client's evaluation weighs 1: a validation count would hint at the client's size
    metrics = {"num-examples": 1 if holder is not None else len(data.x_val), **evaluate_local(model, data, cfg)}
    if meta.get("privacy", {}).get("dp") == "client":
        metrics["unit-weight"] = 1.0  # Flower's FedAvg averages evaluation metrics by the same key
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}),
                   reply_to=msg)
