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
from fedicd.federated.data import load_server_data, read_run_meta
from fedicd.federated.records import from_record, message_bytes, to_record
from fedicd.metrics import choose_threshold, f1_scores
from fedicd.train import TrainConfig

__all__ = ["make_server_app", "run_rounds", "initial_arrays", "global_eval"]

log = logging.getLogger(__name__)


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


def _train_round(strategy, grid: Grid, rnd: int, arrays, config: ConfigRecord, timeout: float):
    messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
    replies = _sorted_replies(list(grid.send_and_receive(messages, timeout=timeout)))
    per_client = _client_epsilons(replies)
    new_arrays, metrics = strategy.aggregate_train(rnd, replies)
    failures = sum(m.has_error() for m in replies) + max(0, len(messages) - len(replies))
    if len(replies) < len(messages):
        log.warning("round %d: %d of %d train messages got no reply; counted as client failures", rnd,
                    len(messages) - len(replies), len(messages))
    return new_arrays, metrics, message_bytes(messages), message_bytes(replies), failures, len(messages), per_client


def _client_epsilons(replies: list[Message]) -> dict[str, float]:
    """Every replying client's sample-level ε so far (``epsilon_client_<partition-id>``)."""
    out = {}
    for msg in replies:
        if msg.has_error():
            continue
        metrics = next(iter(msg.content.metric_records.values()), {})
        if "epsilon" in metrics:
            out[f"epsilon_client_{int(metrics['partition-id'])}"] = float(metrics["epsilon"])
    return out


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
    messages = list(strategy.configure_evaluate(rnd, to_record(arrays), ConfigRecord(), grid))
    if not messages:
        return None, 0, 0
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    return strategy.aggregate_evaluate(rnd, replies), message_bytes(messages), message_bytes(replies)


def _wait_for_nodes(grid: Grid, expected: int, timeout: float, rnd: int) -> int:
    """Block until ``expected`` nodes are connected (or ``timeout`` passes); returns how many are."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
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


def run_rounds(grid: Grid, run_dir: Path) -> None:
    """Run (or resume) every round of the run described by ``run_dir/run_meta.json``."""
    from fedicd.strategies import build_strategy, load_strategy_state, strategy_state

    meta = read_run_meta(run_dir)
    fed, train_cfg = meta["federated"], TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                       for k, v in meta["train"].items()})
    strategy = build_strategy(fed["strategy"], **meta["strategy_args"])
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        arrays, history, rejections, start = initial_arrays(train_cfg, meta["input_dim"], meta["n_labels"]), [], [], 1
    else:
        arrays, history, rejections, start = ckpt["arrays"], ckpt["history"], ckpt["rejections"], ckpt["round"] + 1
        load_strategy_state(strategy, ckpt["strategy_state"])
        _recount_lost_releases(run_dir, strategy, ckpt["round"])
        log.info("resuming %s at round %d", run_dir, start)
    data = load_server_data(run_dir)
    for rnd in range(start, fed["rounds"] + 1):
        t0 = time.perf_counter()
        _wait_for_nodes(grid, meta["n_clients"], float(fed.get("node_wait_s", 120.0)), rnd)
        config = ConfigRecord({"local-epochs": fed["local_epochs"]})
        new, train_metrics, sent, received, failures, sampled, epsilons = _train_round(
            strategy, grid, rnd, arrays, config, fed["timeout_s"])
        if new is None:
            log.warning("round %d: no valid update; the global model is unchanged", rnd)
        else:
            arrays = from_record(new)
            _log_release(run_dir, strategy, rnd)
        eval_metrics, sent_e, received_e = _evaluate_round(strategy, grid, rnd, arrays, fed["timeout_s"])
        row = {"round": rnd, "clients_sampled": sampled, "client_failures": failures,
               "updated": new is not None, "bytes_sent": sent + sent_e, "bytes_received": received + received_e,
               **{f"train_{k}": float(v) for k, v in (train_metrics or {}).items()
                  if k not in ("partition-id", "epsilon", "unit-weight")},
               **epsilons, **_client_dp_row(strategy),
               **{f"client_{k}": float(v) for k, v in (eval_metrics or {}).items()},
               **global_eval(train_cfg, meta, arrays, data)}
        row["seconds"] = time.perf_counter() - t0
        new_rejections = getattr(strategy, "rejections", [])
        history.append(row)
        if rnd % fed["checkpoint_every"] == 0 or rnd == fed["rounds"]:
            save_checkpoint(run_dir, server_round=rnd, arrays=arrays, strategy_state=strategy_state(strategy),
                            history=history, rejections=rejections + list(new_rejections))
        log.info("round %d: %s", rnd, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})


def make_server_app(run_dir: str | None = None) -> ServerApp:
    """A ServerApp running the rounds of ``run_dir`` (or the run config's ``run-dir``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_rounds(grid, Path(run_dir or str(context.run_config["run-dir"])))

    return app
