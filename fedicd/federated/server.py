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


def _model_record(arrays: dict[str, np.ndarray]):
    """What a message carries as the global model: the plain arrays, or nothing plain under CKKS."""
    from flwr.app import ArrayRecord

    from fedicd.secure.ckks_round import STATE_KEY

    return ArrayRecord() if STATE_KEY in arrays else to_record(arrays)


def _attach_encrypted_model(messages: list[Message], arrays: dict[str, np.ndarray]) -> None:
    """Under CKKS, every message carries the encrypted global model (the last aggregate)."""
    from flwr.app import Array, ArrayRecord

    from fedicd.secure.ckks_round import CKKS_RECORD, STATE_KEY

    if STATE_KEY in arrays:
        for msg in messages:
            msg.content[CKKS_RECORD] = ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])})


def _ckks_aggregate(ckks, rnd: int, replies: list[Message]):
    """Add the clients' encrypted updates (the server cannot decrypt them); rejected ones are listed."""
    from fedicd.secure.ckks_round import CKKS_RECORD, STATE_KEY

    updates, rejected = [], []
    for msg in replies:
        if msg.has_error():
            continue
        pid = int(next(iter(msg.content.metric_records.values()), {}).get("partition-id", -1))
        if CKKS_RECORD not in msg.content.array_records:
            rejected.append({"partition-id": pid, "reason": "no encrypted update in the reply (a client without "
                                                            "the key, or not running CKKS)"})
            continue
        updates.append((pid, msg.content[CKKS_RECORD]))
    t0 = time.perf_counter()
    aggregate, bad = ckks.aggregate(updates)
    seconds = time.perf_counter() - t0
    rejected = [{"round": rnd, **r} for r in rejected + bad]
    accepted = {u for u, _ in updates} - {r["partition-id"] for r in bad}
    ok = [m for m in (next(iter(msg.content.metric_records.values()), {}) for msg in replies if not msg.has_error())
          if int(m.get("partition-id", -1)) in accepted]
    # unweighted means: the example counts travel encrypted
    metrics = {k: float(np.mean(vals)) for k in ("train_loss", "encrypt_seconds", "decrypt_seconds")
               if (vals := [float(m[k]) for m in ok if k in m])}
    metrics["aggregate_seconds"] = seconds
    if aggregate is None:
        return None, metrics, rejected
    metrics["clipped_values"] = float(aggregate.n_clipped)
    metrics["clients_aggregated"] = float(aggregate.n_clients)
    return {STATE_KEY: np.frombuffer(aggregate.to_bytes(), dtype=np.uint8).copy()}, metrics, rejected


def _secagg_train_round(strategy, grid: Grid, rnd: int, arrays, config: ConfigRecord, meta: dict, sa_cfg,
                        rejections: list[dict]):
    """One round through Flower's SecAgg+ workflow: the server learns only the weighted sum.

    The strategy's ``configure_train`` picks the clients and builds the config (e.g. FedProx's
    mu); Flower's workflow runs the four SecAgg+ stages; the unmasked average goes through the
    strategy's ``aggregate_train`` as one reply. Too many dropouts: no update this round, and the
    halt (with Flower's reasons) is appended to ``rejections``.
    """
    from fedicd.secure.secagg import SecAggDropoutError, secagg_train_round, strategy_reply

    messages = list(strategy.configure_train(rnd, to_record(arrays), config, grid))
    wkey = getattr(strategy, "weighted_by_key", "num-examples")
    try:
        new, info = secagg_train_round(grid, rnd, arrays, messages[0].content["config"], sa_cfg,
                                       node_ids=[m.metadata.dst_node_id for m in messages], weight_key=wkey,
                                       rounding_seed=meta["seed"] * 1_000_003 + rnd)
        agg, metrics = strategy.aggregate_train(rnd, [strategy_reply(messages[0], new, info, wkey)])
    except SecAggDropoutError as exc:
        info, agg, metrics = exc.info, None, None
        rejections.append({"round": rnd, "reason": f"SecAggDropoutError: {exc}"})
    per_client = {f"epsilon_client_{int(m['partition-id'])}": float(m["epsilon"])
                  for m in info["client_metrics"] if "epsilon" in m and "partition-id" in m}
    metrics = {**(metrics or {}), "secagg_survivors": float(info["survivors"]),
               "secagg_clipped_entries": float(info["clipped_entries"])}
    return (agg, metrics, info["bytes_sent"], info["bytes_received"], info["dropouts"], info["clients_sampled"],
            per_client)


def _secagg_settings(meta: dict):
    """Flower's SecAgg+ parameters of the run (``max_weight = 0`` → the largest client)."""
    from fedicd.secure.config import SecureAggConfig

    secure = SecureAggConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in meta["config"]["secure_aggregation"].items()})
    return secure.secagg(largest_client=max(meta["client_sizes"]))


def _train_round(strategy, grid: Grid, rnd: int, arrays, config: ConfigRecord, timeout: float, ckks=None,
                 rejections: list[dict] | None = None):
    messages = list(strategy.configure_train(rnd, _model_record(arrays), config, grid))
    _attach_encrypted_model(messages, arrays)
    replies = _sorted_replies(list(grid.send_and_receive(messages, timeout=timeout)))
    per_client = _client_epsilons(replies)
    if ckks is not None:
        new_arrays, metrics, rejected = _ckks_aggregate(ckks, rnd, replies)
        rejections.extend(rejected)
    else:
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
    messages = list(strategy.configure_evaluate(rnd, _model_record(arrays), ConfigRecord(), grid))
    _attach_encrypted_model(messages, arrays)
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
    ckks, evaluator = _ckks_parties(meta, train_cfg)
    _check_resumed_key(ckks, arrays)
    secure_method = meta["config"].get("secure_aggregation", {}).get("method", "none")
    sa_cfg = _secagg_settings(meta) if secure_method == "secagg+" else None
    for rnd in range(start, fed["rounds"] + 1):
        t0 = time.perf_counter()
        _wait_for_nodes(grid, meta["n_clients"], float(fed.get("node_wait_s", 120.0)), rnd)
        config = ConfigRecord({"local-epochs": fed["local_epochs"]})
        if secure_method == "secagg+":
            new, train_metrics, sent, received, failures, sampled, epsilons = _secagg_train_round(
                strategy, grid, rnd, arrays, config, meta, sa_cfg, rejections)
        else:
            new, train_metrics, sent, received, failures, sampled, epsilons = _train_round(
                strategy, grid, rnd, arrays, config, fed["timeout_s"], ckks, rejections)
        if new is None:
            log.warning("round %d: no valid update; the global model is unchanged", rnd)
        else:
            arrays = new if isinstance(new, dict) else from_record(new)  # CKKS: the encrypted aggregate
            _log_release(run_dir, strategy, rnd)
        eval_metrics, sent_e, received_e = _evaluate_round(strategy, grid, rnd, arrays, fed["timeout_s"])
        row = {"round": rnd, "clients_sampled": sampled, "client_failures": failures,
               "updated": new is not None, "bytes_sent": sent + sent_e, "bytes_received": received + received_e,
               **{f"train_{k}": float(v) for k, v in (train_metrics or {}).items()
                  if k not in ("partition-id", "epsilon", "unit-weight")},
               **epsilons, **_client_dp_row(strategy),
               **{f"client_{k}": float(v) for k, v in (eval_metrics or {}).items()}}
        plain = evaluator(arrays) if evaluator else arrays
        if plain is not None:  # CKKS without an evaluator: nobody here can read the global model
            row.update(global_eval(train_cfg, meta, plain, data))
        if evaluator is not None:
            row["evaluator_decrypt_seconds"] = evaluator.last_seconds
        row["seconds"] = time.perf_counter() - t0
        new_rejections = getattr(strategy, "rejections", [])
        history.append(row)
        if rnd % fed["checkpoint_every"] == 0 or rnd == fed["rounds"]:
            save_checkpoint(run_dir, server_round=rnd, arrays=arrays, strategy_state=strategy_state(strategy),
                            history=history, rejections=rejections + list(new_rejections))
        log.info("round %d: %s", rnd, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})


def _ckks_parties(meta: dict, train_cfg: TrainConfig, secret_path: str | None = None):
    """Under CKKS: the server's aggregator (public context only) and the evaluator, or (None, None).

    The evaluator turns the encrypted global model into plain arrays; it exists only when
    ``secure_aggregation.evaluator_key`` (or ``secret_path``, the driver's own key after the run)
    names a secret context — otherwise it returns None for an encrypted model and nothing here
    opens a secret context (see :mod:`fedicd.secure.ckks_round`).
    """
    secure = meta["config"].get("secure_aggregation", {})
    if secure.get("method", "none") != "ckks":
        return None, None
    from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer, STATE_KEY

    init = initial_arrays(train_cfg, meta["input_dim"], meta["n_labels"])
    layout = tuple((k, tuple(int(s) for s in v.shape)) for k, v in init.items())
    key_dir = Path(secure["key_dir"])
    server = CkksServer(key_dir, layout)
    secret_path = secret_path or secure.get("evaluator_key") or None
    holder = CkksKeyHolder(secret_path, key_dir) if secret_path else None
    dtypes = {k: v.dtype for k, v in init.items()}

    def evaluator(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        evaluator.last_seconds = 0.0
        if STATE_KEY not in arrays:
            return arrays
        if holder is None:
            return None
        from flwr.app import Array, ArrayRecord

        t0 = time.perf_counter()
        plain = holder.decrypt(ArrayRecord(array_dict={"bytes": Array(arrays[STATE_KEY])}), dtypes)
        evaluator.last_seconds = time.perf_counter() - t0
        return plain

    evaluator.last_seconds = 0.0
    return server, evaluator


def _check_resumed_key(ckks, arrays: dict[str, np.ndarray]) -> None:
    """A checkpointed encrypted model must be under the key the run now has."""
    if ckks is None:
        return
    from fedicd.secure.ckks import EncryptedUpdate
    from fedicd.secure.ckks_round import STATE_KEY

    if STATE_KEY not in arrays:
        return
    key = EncryptedUpdate.from_bytes(arrays[STATE_KEY].tobytes()).key_id
    if key != ckks.key:
        raise RuntimeError(f"the checkpoint's encrypted global model was made under key {key}, but the key folder "
                           f"now holds key {ckks.key}: the keys were regenerated, and this run cannot resume "
                           "(start a new run)")


def make_server_app(run_dir: str | None = None) -> ServerApp:
    """A ServerApp running the rounds of ``run_dir`` (or the run config's ``run-dir``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_rounds(grid, Path(run_dir or str(context.run_config["run-dir"])))

    return app
