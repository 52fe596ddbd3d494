"""The study folder a coordinator prepares (fedicd.deploy.study): what it copies, what it never copies, its run
config read back by Flower's own parser, its named errors and its CLI."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from flwr.common.config import get_fused_config_from_dir, parse_config_args
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler

from fedicd.config import load_config
from fedicd.data.labels import fit_binarizer, save_binarizer
from fedicd.deploy.study import (RUN_CONFIG_FILE, RUN_CONFIG_KEYS, RunConfigError, StudyError, prepare_study_from_run,
                                 run_config_json, run_config_text, study_run_config, write_run_config)
from fedicd.federated.data import stage_arrays
from fedicd.partition import iid_partition
from fedicd.run_plan import RunPlan, write_plan
from fedicd.runner.staging import build_plan
from fedicd.scaling import save_scaler

REPO = Path(__file__).resolve().parents[2]
LABELS = ("A01", "B02.1", "C03", "D04", "E05")
DIM = 8
BASE = ('train.mode="federated"', "federated.rounds=2", "partition.n_clients=3", 'federated.engine="inprocess"',
        "federated.fraction_evaluate=1.0", "train.hidden=[16]", "train.batch_size=16")


def stage_run(run: Path, *overrides: str, sizes=(60, 30, 30), seed: int = 0) -> RunPlan:
    """A staged simulation run of 3 IID clients over tiny learnable arrays (with labels.json and scaler.npz)."""
    cfg = load_config(None, [*BASE, *overrides])
    rng = np.random.default_rng(seed)
    raw = {p: rng.normal(1.0, 2.0, size=(n, DIM)).astype(np.float32) for p, n in zip(("train", "val", "test"), sizes)}
    scaler = StandardScaler().fit(raw["train"])
    feats = {p: scaler.transform(x).astype(np.float32) for p, x in raw.items()}
    w = rng.normal(size=(DIM, len(LABELS)))
    labels = {p: (x @ w > 0.5).astype(np.float32) for p, x in feats.items()}
    partition = iid_partition([()] * sizes[0], 3, seed=0)
    stage_arrays(run, feats, labels, partition, iid_partition([()] * sizes[1], 3, seed=1), label_codes=LABELS,
                 server_eval=cfg.federated.server_eval)
    save_binarizer(fit_binarizer([LABELS]), run / "labels.json")
    save_scaler(scaler, run / "scaler.npz")
    plan = build_plan(cfg, input_dim=DIM, n_labels=len(LABELS), client_sizes=partition.sizes)
    write_plan(run, plan)
    return plan


@pytest.fixture
def run(tmp_path: Path) -> Path:
    stage_run(tmp_path / "run")
    return tmp_path / "run"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_study_holds_the_public_and_server_parts_only(run: Path, tmp_path: Path) -> None:
    path = prepare_study_from_run(run, tmp_path / "study")
    study = tmp_path / "study"
    assert path == study / RUN_CONFIG_FILE
    assert _files(study) == {"run_plan.json", "labels.json", "scaler.npz", "server/eval.npz", RUN_CONFIG_FILE}
    assert {"clients/0/data.npz", "partition.json", "partition_val.json"} <= _files(run)  # what was left behind
    for name in ("run_plan.json", "labels.json", "scaler.npz", "server/eval.npz"):
        assert (study / name).read_bytes() == (run / name).read_bytes()


def test_run_config_reads_back_exactly_through_flowers_parser(run: Path, tmp_path: Path) -> None:
    path = prepare_study_from_run(run, tmp_path / "study")
    values = study_run_config(tmp_path / "study")
    assert tuple(values) == RUN_CONFIG_KEYS
    parsed = parse_config_args([str(path)])
    assert parsed == values
    assert parsed["study-dir"] == str((tmp_path / "study").resolve())
    assert parsed["plan"] == (run / "run_plan.json").read_text()
    assert json.loads(parsed["labels"]) == list(LABELS)
    with np.load(run / "scaler.npz") as z:  # floats survive JSON and TOML bit for bit
        scaler = json.loads(parsed["scaler"])
        assert np.array_equal(np.asarray(scaler["mean"]), z["mean"]) and np.array_equal(scaler["scale"], z["scale"])
    assert json.loads(parsed["embedding"])["model"] == "all-MiniLM-L6-v2"
    # `flwr run` fuses the run config with pyproject's [tool.flwr.app.config]: every key must be declared there
    fused = get_fused_config_from_dir(REPO, parsed)
    assert {k: fused[k] for k in RUN_CONFIG_KEYS} == values


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_string_survives_the_run_config(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_run_config(Path(tmp) / "rc.toml", {"plan": text, "labels": json.dumps([text, "I10"])})
        parsed = parse_config_args([str(path)])
    assert parsed == {"plan": text, "labels": json.dumps([text, "I10"])}


def test_warm_start_files_are_copied_and_no_server_eval_without_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    stage_run(run, "federated.server_eval=false")
    np.savez(run / "initial_model.npz", w=np.ones(2))
    (run / "warm_start.json").write_text('{"method": "descriptions"}')
    prepare_study_from_run(run, tmp_path / "study")
    assert _files(tmp_path / "study") == {"run_plan.json", "labels.json", "scaler.npz", "initial_model.npz",
                                          "warm_start.json", RUN_CONFIG_FILE}


def test_overwrite_replaces_a_study_and_drops_its_stale_files(run: Path, tmp_path: Path) -> None:
    study = tmp_path / "study"
    prepare_study_from_run(run, study)
    (study / "initial_model.npz").write_bytes(b"stale")
    with pytest.raises(StudyError, match=r"already holds a study \(run_plan.json\): give a new folder, or overwrite"):
        prepare_study_from_run(run, study)
    prepare_study_from_run(run, study, overwrite=True)
    assert not (study / "initial_model.npz").exists()
    (study / "checkpoint").mkdir()
    with pytest.raises(StudyError, match=r"holds a started run \(checkpoint\)"):
        prepare_study_from_run(run, study, overwrite=True)


def test_refusals_name_the_folder(run: Path, tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"holds no run_plan.json: give a run folder staged by fedicd"):
        prepare_study_from_run(tmp_path / "nothing", tmp_path / "study")
    with pytest.raises(StudyError, match="is the run folder itself"):
        prepare_study_from_run(run, run)
    (run / "server" / "eval.npz").unlink()
    with pytest.raises(StudyError, match=r"asks for server evaluation .* holds no server/eval.npz"):
        prepare_study_from_run(run, tmp_path / "study")


def test_a_run_without_labels_json_takes_the_codes_of_the_server_file(run: Path, tmp_path: Path) -> None:
    (run / "labels.json").unlink()
    prepare_study_from_run(run, tmp_path / "study")
    assert json.loads((tmp_path / "study" / "labels.json").read_text())["classes"] == list(LABELS)
    (tmp_path / "study" / "labels.json").unlink()
    (tmp_path / "study" / "server" / "eval.npz").unlink()
    with pytest.raises(StudyError, match="holds neither labels.json nor server/eval.npz"):
        study_run_config(tmp_path / "study")


def test_run_config_readers_name_the_key() -> None:
    with pytest.raises(RunConfigError, match=r"'study-dir' is missing: start the run with the study's run config"):
        run_config_text({}, "study-dir")
    with pytest.raises(RunConfigError, match=r"'plan' is '': start"):
        run_config_text({"plan": ""}, "plan")
    with pytest.raises(RunConfigError, match=r"'labels' is not JSON"):
        run_config_json({"labels": "[A01"}, "labels")
    assert run_config_json({"scaler": ""}, "scaler", required=False) is None
    assert run_config_json({"labels": '["A01"]'}, "labels") == ["A01"]


def test_cli_prepares_a_study(run: Path, tmp_path: Path, capsys) -> None:
    from fedicd.cli import main

    assert main(["deploy", "prepare", "--from-run", str(run), "--out", str(tmp_path / "study")]) == 0
    assert f"--run-config {tmp_path / 'study' / RUN_CONFIG_FILE}" in capsys.readouterr().out
    assert main(["deploy", "prepare", "--from-run", str(run), "--out", str(tmp_path / "study")]) == 2
    assert "already holds a study" in capsys.readouterr().err
