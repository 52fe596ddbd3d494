"""The federated server: the round loop (sample, send, receive, validate, aggregate, evaluate, checkpoint).

The loop is Flower's ``Strategy.start`` written out so that each round can be checkpointed and resumed,
replies sorted by client before aggregation (float sums are order-dependent), and bytes and seconds
recorded. How a train round is exchanged and aggregated is the :class:`~fedicd.federated.rounds.RoundAggregator`
of the run's :class:`~fedicd.federated.rounds.ServerSetup`; its observers see every round. Every round the
global model is scored on the server-held validation and test notes: loss, and micro/macro F1 at the
threshold that is best on validation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

from fedicd.federated.checkpoint import load_checkpoint, save_checkpoint
from fedicd.federated.model import initial_arrays, load_global_model
from fedicd.federated.records import from_record, message_bytes
from fedicd.federated.rounds import RoundResult, ServerSetup, epsilons_so_far, sorted_replies, validator_log
from fedicd.federated.runtime import PROGRESS_LOGGER, RunControl, StoppableGrid, progress_line
from fedicd.federated.staged import check_staged_features, load_server_data
from fedicd.metrics import choose_threshold, f1_scores
from fedicd.run_plan import RunPlan
from fedicd.train import predict_logits

__all__ = ["run_rounds", "global_eval"]

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS_LOGGER)


def global_eval(plan: RunPlan, arrays: dict[str, np.ndarray], data: dict) -> dict[str, float]:
    """Server-side scores of the global model (threshold chosen on validation); ``data``'s features are pooled
    vectors or chunk sequences (scored in batches)."""
    model = load_global_model(plan.train, plan.input_dim, plan.n_labels, arrays)
    loss_fn = plan.train.loss()
    out = {}
    probs = {}
    model.eval()
    for part in ("val", "test"):
        with torch.inference_mode():
            logits = predict_logits(model, data[f"x_{part}"])
            out[f"{part}_loss"] = float(loss_fn(logits, torch.as_tensor(data[f"y_{part}"])))
            probs[part] = torch.sigmoid(logits).numpy()
    threshold = choose_threshold(data["y_val"], probs["val"])
    micro, macro = f1_scores(data["y_test"], probs["test"], threshold=threshold)
    out.update({"threshold": threshold, "test_micro_f1": micro, "test_macro_f1": macro})
    return out


def _evaluate_round(setup: ServerSetup, grid: Grid, rnd: int, arrays, timeout: float):
    strategy, aggregator = setup.strategy, setup.aggregator
    messages = list(strategy.configure_evaluate(rnd, aggregator.model_record(arrays), ConfigRecord(), grid))
    aggregator.prepare(messages, arrays)
    if not messages:
        return None, 0, 0
    replies = sorted_replies(list(grid.send_and_receive(messages, timeout=timeout)))
    return strategy.aggregate_evaluate(rnd, replies), message_bytes(messages), message_bytes(replies)


def _wait_for_nodes(grid: Grid, expected: int, timeout: float, rnd: int, control: RunControl | None) -> int:
    """Block until ``expected`` nodes are connected (or ``timeout`` passes); returns how many are."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if control is not None:
            control.check()
        connected = len(list(grid.get_node_ids()))
        if connected >= expected:
            if time.monotonic() - start > 0.01:
                log.info("round %d: waited %.2f s for all %d clients to connect", rnd, time.monotonic() - start,
                         expected)
            return connected
        if time.monotonic() >= deadline:
            log.warning("round %d: only %d of %d clients connected after %.0f s; sampling from those",
                        rnd, connected, expected, timeout)
            return connected
        time.sleep(0.05)


def _start_state(run_dir: Path, setup: ServerSetup, plan: RunPlan) -> tuple[dict, list, list, int]:
    """(global arrays, history, rejections, first round): fresh, or from the last checkpoint."""
    from fedicd.strategies import load_strategy_state

    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        return initial_arrays(plan.train, plan.input_dim, plan.n_labels, run_dir), [], [], 1  # warm start if staged
    load_strategy_state(setup.strategy, ckpt["strategy_state"])
    for observer in setup.observers:
        observer.on_resume(ckpt["round"])
    log.info("resuming %s at round %d", run_dir, ckpt["round"] + 1)
    return ckpt["arrays"], ckpt["history"], ckpt["rejections"], ckpt["round"] + 1


def _row(rnd: int, res: RoundResult, evaluated: tuple, setup: ServerSetup) -> dict:
    """The history row of a round, before the server's own scores."""
    eval_metrics, sent_e, received_e = evaluated
    observed = {k: v for observer in setup.observers for k, v in observer.history_row().items()}
    return {"round": rnd, "clients_sampled": res.sampled, "client_failures": res.failures,
            "updates_rejected": res.refused, "updated": res.arrays is not None,
            "bytes_sent": res.sent + sent_e, "bytes_received": res.received + received_e,
            **{f"train_{k}": float(v) for k, v in res.metrics.items()
               if k not in ("partition-id", "epsilon", "epsilon_rdp", "epsilon_pld", "unit-weight")},
            **res.epsilons, **observed,
            **{f"client_{k}": float(v) for k, v in (eval_metrics or {}).items() if k != "partition-id"}}


def _round(grid, rnd: int, arrays, setup: ServerSetup, plan: RunPlan, rejections: list, run_dir: Path):
    """Train, aggregate and evaluate round ``rnd``; returns (global arrays, history row without seconds)."""
    fed = plan.federated
    res = setup.aggregator.train_round(setup.strategy, grid, rnd, arrays,
                                       ConfigRecord({"local-epochs": fed.local_epochs}), rejections)
    if res.arrays is None:
        log.warning("round %d: no valid update; the global model is unchanged", rnd)
    else:
        arrays = res.arrays if isinstance(res.arrays, dict) else from_record(res.arrays)
        for observer in setup.observers:
            observer.on_update(rnd)
    evaluate = rnd % fed.eval_every == 0 or rnd == fed.rounds  # federated.eval_every: the rounds in between train only
    row = _row(rnd, res, _evaluate_round(setup, grid, rnd, arrays, fed.timeout_s) if evaluate else (None, 0, 0),
               setup)
    plain = setup.aggregator.readable(arrays) if evaluate else None
    # plain None: nobody in this process can read the global model (e.g. CKKS without evaluator); no server_eval:
    # the server holds no notes (server/eval.npz), only the clients' evaluation scores the model
    if plain is not None and fed.server_eval:
        row.update(global_eval(plan, plain, load_server_data(run_dir)))
    row.update(setup.aggregator.row_extras())
    return arrays, row


def run_rounds(grid: Grid, run_dir: Path, plan: RunPlan, setup: ServerSetup, control: RunControl | None = None) -> None:
    """Run (or resume) every round of the run planned in ``run_dir``.

    Each round's history row counts ``client_failures`` (sampled clients whose update did not reach
    the aggregate: client errors, missing replies, refused updates) and, among them,
    ``updates_rejected`` (updates the server refused); every refusal's reason is kept in the
    checkpoint's ``rejections``. ``control``: the driver's stop request, checked between messages.
    """
    from fedicd.strategies import strategy_state

    fed = plan.federated
    # a head that cannot read the server's staged notes fails now (without server_eval each client checks its own)
    check_staged_features(run_dir, plan.train.head, server_eval=fed.server_eval)
    grid = StoppableGrid(grid, control) if control is not None else grid
    arrays, history, rejections, start = _start_state(run_dir, setup, plan)
    setup.aggregator.check_resume(arrays)
    validator = validator_log(setup.strategy)
    for rnd in range(start, fed.rounds + 1):
        t0, logged = time.perf_counter(), len(validator)
        _wait_for_nodes(grid, plan.n_clients, float(fed.node_wait_s), rnd, control)
        arrays, row = _round(grid, rnd, arrays, setup, plan, rejections, run_dir)
        row.update(epsilons_so_far(history, row))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        rejections.extend(validator[logged:])
        if rnd % fed.checkpoint_every == 0 or rnd == fed.rounds:
            save_checkpoint(run_dir, server_round=rnd, arrays=arrays, strategy_state=strategy_state(setup.strategy),
                            history=history, rejections=rejections)
        log.info("round %d: %s", rnd, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        progress.info("%s", progress_line(row, fed.rounds), extra={"round_row": row, "rounds": fed.rounds})
