"""The federated server: the round loop (train, client evaluation, global evaluation, checkpoint).

The loop is Flower's ``Strategy.start`` written out so that each round can
be checkpointed and resumed, replies sorted by client before aggregation
(float sums are order-dependent), and bytes and seconds recorded. Every
round the global model is scored on the server-held validation and test
notes: loss, and micro/macro F1 at the threshold that is best on validation.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from fedicd.federated.checkpoint import load_checkpoint, save_checkpoint
from fedicd.federated.staged import load_server_data, read_run_meta
from fedicd.federated.records import from_record, message_bytes
from fedicd.federated.runtime import PROGRESS_LOGGER, RunControl, StoppableGrid, progress_line
from fedicd.federated.secure_rounds import (RoundResult, attach_encrypted_model, check_resumed_key, ckks_aggregate,
                                            ckks_parties, model_record, reply_metrics, secagg_round,
                                            secagg_settings)
from fedicd.metrics import choose_threshold, f1_scores
from fedicd.train import TrainConfig

__all__ = ["make_server_app", "run_rounds", "initial_arrays", "global_eval"]

log = logging.getLogger(__name__)
progress = logging.getLogger(PROGRESS_LOGGER)


def initial_arrays(train_cfg: TrainConfig, input_dim: int, n_labels: int) -> dict[str, np.ndarray]:
    """The seeded initial model, exactly as centralized training initialises it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.resolved_seed)
        model = train_cfg.build(input_dim, n_labels)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _model(train_cfg: TrainConfig, meta: dict, arrays: dict[str, np.ndarray]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        model = train_cfg.build(meta["input_dim"], meta["n_labels"])
    model.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    return model


def global_eval(train_cfg: TrainConfig, meta: dict, arrays: dict[str, np.ndarray], data: dict) -> dict[str, float]:
    """Server-side scores of the global model (threshold chosen on validation)."""
    model = _model(train_cfg, meta, arrays)
    loss_fn = train_cfg.loss()
    out = {}
    probs = {}
    model.eval()
    for part in ("val", "test"):
        with torch.inference_mode():
            logits = model(torch.as_tensor(data[f"x_{part}"], dtype=torch.float32))
            out[f"{part}_loss"] = float(loss_fn(logits, torch.as_tensor(data[f"y_{part}"])))
            probs[part] = torch.sigmoid(logits).numpy()
    threshold = choose_threshold(data["y_val"], probs["val"])
    micro, macro = f1_scores(data["y_test"], probs["test"], threshold=threshold)
    out.update({"threshold": threshold, "test_micro_f1": micro, "test_macro_f1": macro})
    return out


def _sorted_replies(replies: list[Message]) -> list[Message]:
    def key(msg: Message) -> tuple[int, int]:
        if msg.has_error():
            return (1, msg.metadata.src_node_id)
        metrics = next(iter(msg.content.metric_records.values()), {})
        return (0, int(metrics.get("partition-id", 0)))
    return sorted(replies, key=key)


def _validator_log(strategy) -> list[dict]:
    """The ``rejections`` list of the UpdateValidator in ``strategy``'s wrapper chain (a fresh list if none)."""
    while strategy is not None:
        if isinstance(getattr(strategy, "rejections", None), list):
            return strategy.rejections
        strategy = getattr(strategy, "strategy", None)
    return []


def _train_round(strategy, grid: Grid, rnd: int, arrays, config: ConfigRecord, timeout: float, ckks,
                 rejections: list[dict]) -> RoundResult:
    """Send the round's train messages, aggregate the replies; refusals and lost replies go to ``rejections``."""
    messages = list(strategy.configure_train(rnd, model_record(arrays), config, grid))
    attach_encrypted_model(messages, arrays)
    replies = _sorted_replies(list(grid.send_and_receive(messages, timeout=timeout)))
    if ckks is not None:
        new_arrays, metrics, entries, refused = ckks_aggregate(ckks, rnd, replies)
        rejections.extend(entries)
    else:  # UpdateValidator's refusals are taken from its log by the round loop, after evaluation
        validator, before = _validator_log(strategy), len(_validator_log(strategy))
        new_arrays, metrics = strategy.aggregate_train(rnd, replies)
        refused = sum(not str(r["reason"]).startswith("client error") for r in validator[before:])
    missing = max(0, len(messages) - len(replies))
    if missing:
        log.warning("round %d: %d of %d train messages got no reply; counted as client failures", rnd, missing,
                    len(messages))
        rejections.extend({"round": rnd, "reason": "no reply within federated.timeout_s"} for _ in range(missing))
    failures = sum(m.has_error() for m in replies) + missing + refused
    return RoundResult(new_arrays, metrics or {}, message_bytes(messages), message_bytes(replies), len(messages),
                       failures=failures, refused=refused, epsilons=_client_epsilons(replies))


def _client_epsilons(replies: list[Message]) -> dict[str, float]:
    """Every replying client's sample-level ε so far (``epsilon_client_<partition-id>``)."""
    return {f"epsilon_client_{int(m['partition-id'])}": float(m["epsilon"])
            for m in map(reply_metrics, replies) if "epsilon" in m}


RELEASE_LOG = "client_dp_releases.jsonl"


def _log_release(run_dir: Path, strategy, rnd: int) -> None:
    """Under client-level DP, record a noised aggregate the moment it exists (before any checkpoint)."""
    from fedicd.privacy.client_level import find_client_dp

    dp = find_client_dp(strategy)
    if dp is None or dp.accountant is None:
        return
    with (run_dir / RELEASE_LOG).open("a") as fh:
        fh.write(json.dumps({"round": rnd, "noise_multiplier": dp.noise_multiplier,
                             "sample_size": dp.num_sampled_clients}) + "\n")


def _recount_lost_releases(run_dir: Path, strategy, ckpt_round: int) -> int:
    """Compose the releases made after the checkpoint into the restored accountant.

    Flower's noise is unseeded, so a crashed round that had already released its noised
    aggregate is a different release from the one the resumed run will make: both count.
    """
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from fedicd.privacy.client_level import find_client_dp

    dp = find_client_dp(strategy)
    path = run_dir / RELEASE_LOG
    if dp is None or dp.accountant is None or not path.exists():
        return 0
    logged = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lost = [r for r in logged if r["round"] > ckpt_round]
    for r in lost:
        dp.accountant.compose(GaussianPrivacyEvent(noise_multiplier=r["noise_multiplier"],
                                                   sample_size=r["sample_size"],
                                                   population_size=dp.accountant.config.population_size))
    if lost:
        log.warning("client-level DP: %d release(s) after the round-%d checkpoint were made before the crash; "
                    "counted in ε", len(lost), ckpt_round)
        path.write_text("".join(json.dumps(r) + "\n" for r in logged if r["round"] <= ckpt_round))
    return len(lost)


def _client_dp_row(strategy) -> dict[str, float]:
    from fedicd.privacy.client_level import find_client_dp

    dp = find_client_dp(strategy)
    if dp is None or dp.accountant is None:
        return {}
    spent = dp.accountant.get_privacy_spent()
    return {"client_dp_epsilon": spent.epsilon if spent.num_releases else 0.0,
            "client_dp_releases": spent.num_releases}


def _evaluate_round(strategy, grid: Grid, rnd: int, arrays, timeout: float):
    messages = list(strategy.configure_evaluate(rnd, model_record(arrays), ConfigRecord(), grid))
    attach_encrypted_model(messages, arrays)
    if not messages:
        return None, 0, 0
    replies = list(grid.send_and_receive(messages, timeout=timeout))
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


def _start_state(run_dir: Path, strategy, train_cfg: TrainConfig, meta: dict) -> tuple[dict, list, list, int]:
    """(global arrays, history, rejections, first round): fresh, or from the last checkpoint."""
    from fedicd.strategies import load_strategy_state

    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        return initial_arrays(train_cfg, meta["input_dim"], meta["n_labels"]), [], [], 1
    load_strategy_state(strategy, ckpt["strategy_state"])
    _recount_lost_releases(run_dir, strategy, ckpt["round"])
    log.info("resuming %s at round %d", run_dir, ckpt["round"] + 1)
    return ckpt["arrays"], ckpt["history"], ckpt["rejections"], ckpt["round"] + 1


def _row(rnd: int, res: RoundResult, evaluated: tuple, strategy) -> dict:
    """The history row of a round, before the server's own scores."""
    eval_metrics, sent_e, received_e = evaluated
    return {"round": rnd, "clients_sampled": res.sampled, "client_failures": res.failures,
            "updates_rejected": res.refused, "updated": res.arrays is not None,
            "bytes_sent": res.sent + sent_e, "bytes_received": res.received + received_e,
            **{f"train_{k}": float(v) for k, v in res.metrics.items()
               if k not in ("partition-id", "epsilon", "unit-weight")},
            **res.epsilons, **_client_dp_row(strategy),
            **{f"client_{k}": float(v) for k, v in (eval_metrics or {}).items()}}


def run_rounds(grid: Grid, run_dir: Path, control: RunControl | None = None) -> None:
    """Run (or resume) every round of the run described by ``run_dir/run_meta.json``.

    Each round's history row counts ``client_failures`` (sampled clients whose update did not reach
    the aggregate: client errors, missing replies, refused updates) and, among them,
    ``updates_rejected`` (updates the server refused); every refusal's reason is kept in the
    checkpoint's ``rejections``. ``control``: the driver's stop request, checked between messages.
    """
    from fedicd.strategies import build_strategy, strategy_state

    meta = read_run_meta(run_dir)
    fed, train_cfg = meta["federated"], TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in meta["train"].items()})
    grid = StoppableGrid(grid, control) if control is not None else grid
    strategy = build_strategy(fed["strategy"], **meta["strategy_args"])
    arrays, history, rejections, start = _start_state(run_dir, strategy, train_cfg, meta)
    data = load_server_data(run_dir)
    ckks, evaluator = ckks_parties(meta, train_cfg)
    check_resumed_key(ckks, arrays)
    secure_method = meta["config"].get("secure_aggregation", {}).get("method", "none")
    sa_cfg = secagg_settings(meta) if secure_method == "secagg+" else None
    validator = _validator_log(strategy)
    for rnd in range(start, fed["rounds"] + 1):
        t0, logged = time.perf_counter(), len(validator)
        _wait_for_nodes(grid, meta["n_clients"], float(fed.get("node_wait_s", 120.0)), rnd, control)
        config = ConfigRecord({"local-epochs": fed["local_epochs"]})
        if secure_method == "secagg+":
            res = secagg_round(strategy, grid, rnd, arrays, config, meta, sa_cfg, rejections)
        else:
            res = _train_round(strategy, grid, rnd, arrays, config, fed["timeout_s"], ckks, rejections)
        if res.arrays is None:
            log.warning("round %d: no valid update; the global model is unchanged", rnd)
        else:
            arrays = res.arrays if isinstance(res.arrays, dict) else from_record(res.arrays)  # CKKS: encrypted
            _log_release(run_dir, strategy, rnd)
        row = _row(rnd, res, _evaluate_round(strategy, grid, rnd, arrays, fed["timeout_s"]), strategy)
        plain = evaluator(arrays) if evaluator else arrays
        if plain is not None:  # CKKS without an evaluator: nobody here can read the global model
            row.update(global_eval(train_cfg, meta, plain, data))
        if evaluator is not None:
            row["evaluator_decrypt_seconds"] = evaluator.last_seconds
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        rejections.extend(validator[logged:])
        if rnd % fed["checkpoint_every"] == 0 or rnd == fed["rounds"]:
            save_checkpoint(run_dir, server_round=rnd, arrays=arrays, strategy_state=strategy_state(strategy),
                            history=history, rejections=rejections)
        log.info("round %d: %s", rnd, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        progress.info("%s", progress_line(row, fed["rounds"]))


def make_server_app(run_dir: str | None = None, control: RunControl | None = None) -> ServerApp:
    """A ServerApp running the rounds of ``run_dir`` (or the run config's ``run-dir``).

    ``control`` (the simulation driver's): the rounds stop when it asks, and it learns when they ended.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            run_rounds(grid, Path(run_dir or str(context.run_config["run-dir"])), control)
        finally:
            if control is not None:
                control.finished.set()

    return app
