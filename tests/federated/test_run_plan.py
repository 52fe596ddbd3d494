"""The typed run plan (written once at staging, read by every process) and the round progress display."""

import io
import json
import logging

import pytest

from fedicd.config import load_config
from fedicd.federated.runtime import PROGRESS_LOGGER, RoundProgress, progress_postfix
from fedicd.run_plan import PLAN_FILE, RunPlan, StalePlanError, read_plan, write_plan
from fedicd.runner.staging import build_plan


def _plan(*extra: str) -> RunPlan:
    cfg = load_config(None, ['train.mode="federated"', "partition.n_clients=3", *extra])
    return build_plan(cfg, input_dim=8, n_labels=4, client_sizes=[40, 50, 60], labels={"train_notes": 150})


@pytest.mark.parametrize("extra", [(), ('privacy.dp="sample"', "privacy.noise=1.0", "train.batch_size=8"),
                                   ('privacy.dp="client"', "privacy.noise=0.5"),
                                   ('secure_aggregation.method="secagg+"',)])
def test_the_plan_round_trips_through_its_file(tmp_path, extra):
    plan = _plan(*extra)
    write_plan(tmp_path, plan)
    back = read_plan(tmp_path)
    assert back.to_dict() == plan.to_dict()
    assert (back.train, back.federated, back.secure, back.privacy) == (plan.train, plan.federated, plan.secure,
                                                                       plan.privacy)
    assert back.n_clients == 3 and back.client_sizes == (40, 50, 60)


def test_sample_dp_plans_every_client_and_the_results_keep_the_old_keys():
    plan = _plan('privacy.dp="sample"', "privacy.noise=1.0", "train.batch_size=8")
    assert [c.n for c in plan.privacy.clients] == [40, 50, 60] and plan.privacy.sample_level
    assert list(plan.privacy.to_dict()) == ["dp", "clip", "delta", "target_epsilon", "secure_rng", "accountant",
                                            "clipping", "head_notices", "clients"]
    assert _plan().privacy.to_dict() == {"dp": "none"}


def test_a_folder_staged_by_an_older_fedicd_is_refused_by_name(tmp_path):
    (tmp_path / "run_meta.json").write_text(json.dumps({"config": {}, "n_clients": 3}))
    with pytest.raises(StalePlanError, match="staged by an older fedicd .*run plan version 2"):
        read_plan(tmp_path)
    raw = _plan().to_dict()
    del raw["version"]
    (tmp_path / PLAN_FILE).write_text(json.dumps(raw))
    with pytest.raises(StalePlanError, match="run plan version None; this fedicd reads version 2 only"):
        read_plan(tmp_path)
    raw["version"] = 1  # staged before per-site data files: its data/features.npz is not read any more
    (tmp_path / PLAN_FILE).write_text(json.dumps(raw))
    with pytest.raises(StalePlanError, match="run plan version 1; this fedicd reads version 2 only: stage the run "
                                             "again"):
        read_plan(tmp_path)


def test_a_missing_plan_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="run plan not found"):
        read_plan(tmp_path)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_round_progress_is_a_bar_on_a_terminal_and_lines_elsewhere(tty):
    stream = _Tty() if tty else io.StringIO()
    handler = RoundProgress(stream)
    logger = logging.getLogger(PROGRESS_LOGGER + ".test")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    row = {"round": 1, "train_train_loss": 0.5, "test_micro_f1": 0.25, "epsilon_client_0": 1.5,
           "epsilon_client_1": 2.0, "client_failures": 0, "clients_sampled": 3}
    try:
        logger.info("round 1/2 line", extra={"round_row": row, "rounds": 2})
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = stream.getvalue()
    if tty:
        assert "1/2" in text and "loss=0.5000" in text and "F1=0.250" in text and "ε=2" in text
    else:
        assert text == "round 1/2 line\n"
    assert progress_postfix(row) == {"loss": "0.5000", "F1": "0.250", "ε": "2"}
