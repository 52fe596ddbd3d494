"""Message handling of the ClientApp: decode the round's global model, train or evaluate, reply.

What differs between runs (the local trainer, the codec of the global model and the update, extra
reply metrics) is the :class:`~fedicd.federated.local.ClientSetup` the handler is given.
"""

from __future__ import annotations

import time

import torch
from flwr.app import Message, MetricRecord, RecordDict

from fedicd.local_training import LocalTrainConfig, build_model, evaluate_local
from fedicd.federated.faults import inject_fault, should_fail
from fedicd.federated.local import ClientSetup
from fedicd.federated.site_data import ClientData, read_client_data

__all__ = ["handle_train", "handle_evaluate"]


def _pin_threads(client_cpus: float) -> None:
    """Use exactly the CPUs the client was given: float reductions (and so a resumed run's
    numbers) must not depend on how many threads a worker process happened to start with."""
    threads = max(1, int(client_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _global_model(msg: Message, setup: ClientSetup) -> torch.nn.Module:
    plan = setup.plan
    return build_model(plan.train, plan.input_dim, plan.n_labels, setup.codec.global_arrays(msg))


def _local_config(msg: Message, setup: ClientSetup, rnd: int) -> LocalTrainConfig:
    fed = setup.plan.federated
    return LocalTrainConfig(server_round=rnd, total_rounds=fed.rounds, local_epochs=fed.local_epochs,
                            partition_id=setup.pid, seed=setup.plan.seed,
                            proximal_mu=float(msg.content["config"].get("proximal-mu", 0.0)),
                            optimizer=fed.local_optimizer, lr=float(fed.local_lr),
                            momentum=float(fed.local_momentum))


def _client_data(setup: ClientSetup) -> ClientData:
    """This client's own rows (``setup.data_path``, the only data file it opens), refused when they do not fit
    the run: another label space, another input dimension, or features the run's head cannot read."""
    plan = setup.plan
    return read_client_data(setup.data_path, labels=setup.labels, input_dim=plan.input_dim, head=plan.train.head)


def handle_train(msg: Message, setup: ClientSetup) -> Message:
    """Train the round's global model on this client's rows; reply with the update and its metrics."""
    fed, pid = setup.plan.federated, setup.pid
    _pin_threads(fed.client_cpus)
    rnd = int(msg.content["config"]["server-round"])
    data = _client_data(setup)
    model = _global_model(msg, setup)
    local = _local_config(msg, setup, rnd)
    t0 = time.perf_counter()
    result = setup.trainer.train(model, data, local, msg)
    seconds = time.perf_counter() - t0
    arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if should_fail(fed, pid, rnd):
        arrays = inject_fault(fed.fault_kind, arrays, pid)
    metrics = {"num-examples": len(data.x_train), "train_loss": result.loss, "train_seconds": seconds,
               "partition-id": pid, **result.metrics, **setup.reply_metrics}
    content = setup.codec.train_reply(arrays, len(data.x_train), metrics)
    for key, record in result.records.items():
        content[key] = record
    if result.commit is not None:
        result.commit()
    return Message(content=content, reply_to=msg)


def handle_evaluate(msg: Message, setup: ClientSetup) -> Message:
    """Score the round's global model on this client's validation rows."""
    _pin_threads(setup.plan.federated.client_cpus)
    data = _client_data(setup)
    if len(data.x_val) == 0:  # partition.client_validation gave this client no validation notes: nothing to score
        return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 0, "partition-id": setup.pid})}),
                       reply_to=msg)
    model = _global_model(msg, setup)
    # partition-id: the server averages the replies in client order (float sums depend on the order)
    metrics = {"num-examples": setup.codec.eval_weight(len(data.x_val)), "partition-id": setup.pid,
               **evaluate_local(model, data, setup.plan.train), **setup.reply_metrics}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
