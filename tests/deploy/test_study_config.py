"""A study prepared from a config and a sites file by a coordinator who holds no site's data
(fedicd.deploy.study_config): the plan it builds, its named errors, its CLI, and a deployed run from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedicd.cli import main
from fedicd.config import load_config
from fedicd.deploy.study import RUN_CONFIG_FILE, StudyError, study_run_config
from fedicd.deploy.study_config import prepare_study, read_label_space, read_sites
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.site_data import SERVER_EVAL, LabelSpaceMismatchError, client_data_path
from fedicd.run_plan import read_plan
from fedicd.runner.staging import build_plan
from tests.deploy.test_study import BASE, DIM, LABELS, stage_run


def _sites(path: Path, sizes) -> Path:
    path.write_text("".join(f'[[site]]\nname = "site-{i}"\npartition-id = {i}\ntrain-notes = {n}\n\n'
                            for i, n in enumerate(sizes)))
    return path


@pytest.fixture
def pilot(tmp_path: Path) -> Path:
    """A staged run whose scaler, label space and server notes the coordinator reuses (its sites: 20, 20, 20)."""
    stage_run(tmp_path / "pilot")
    return tmp_path / "pilot"


def test_the_plan_is_the_one_staging_builds_for_the_declared_sites(pilot: Path, tmp_path: Path) -> None:
    cfg = load_config(None, list(BASE))
    path = prepare_study(cfg, tmp_path / "study", sites=_sites(tmp_path / "sites.toml", [20, 20, 20]),
                         labels=pilot / "labels.json", scaler=pilot / "scaler.npz", eval_data=pilot / SERVER_EVAL)
    plan = read_plan(tmp_path / "study")
    expected = build_plan(cfg, input_dim=DIM, n_labels=len(LABELS), client_sizes=[20, 20, 20])
    assert (plan.client_sizes, plan.input_dim, plan.n_labels) == ((20, 20, 20), DIM, len(LABELS))
    assert (plan.train, plan.privacy, plan.strategy) == (expected.train, expected.privacy, expected.strategy)
    config = study_run_config(tmp_path / "study")
    assert path == tmp_path / "study" / RUN_CONFIG_FILE and json.loads(config["labels"]) == list(LABELS)
    with np.load(pilot / "scaler.npz") as z:
        np.testing.assert_array_equal(json.loads(config["scaler"])["mean"], z["mean"])
    assert (tmp_path / "study" / SERVER_EVAL).read_bytes() == (pilot / SERVER_EVAL).read_bytes()


def test_a_study_from_a_config_runs_on_the_sites_own_files(pilot: Path, tmp_path: Path) -> None:
    from fedicd.deploy.app import client_app, server_app
    from fedicd.federated.inprocess import run_inprocess

    study = tmp_path / "study"
    prepare_study(load_config(None, list(BASE)), study, sites=_sites(tmp_path / "sites.toml", [20, 20, 20]),
                  labels=pilot / "labels.json", scaler=pilot / "scaler.npz", eval_data=pilot / SERVER_EVAL)
    config = study_run_config(study)
    nodes = {pid: {"data-path": str(client_data_path(pilot, pid)), "state-dir": str(tmp_path / f"n{pid}")}
             for pid in range(3)}
    run_inprocess(server_app, client_app, 3, run_config={k: v for k, v in config.items() if k != "study-dir"},
                  server_run_config=config, node_configs=nodes)
    assert load_checkpoint(study)["round"] == 2
    assert json.loads((study / "results.json").read_text())["outcome"]["status"] == "ok"


def test_without_server_notes_the_dimension_comes_from_the_scaler_or_is_asked_for(pilot: Path, tmp_path: Path):
    cfg = load_config(None, [*BASE, "federated.server_eval=false"])
    sites, labels = _sites(tmp_path / "s.toml", [5, 5, 5]), pilot / "labels.json"
    prepare_study(cfg, tmp_path / "a", sites=sites, labels=labels, scaler=pilot / "scaler.npz")
    assert read_plan(tmp_path / "a").input_dim == DIM and not (tmp_path / "a" / SERVER_EVAL).exists()
    with pytest.raises(StudyError, match="the input dimension is unknown: give the shared scaler"):
        prepare_study(cfg, tmp_path / "b", sites=sites, labels=labels)
    prepare_study(cfg, tmp_path / "c", sites=sites, labels=labels, input_dim=384)
    assert read_plan(tmp_path / "c").input_dim == 384 and study_run_config(tmp_path / "c")["scaler"] == ""
    with pytest.raises(StudyError, match=r"the input dimensions disagree: \{'scaler': 8, 'input_dim': 384\}"):
        prepare_study(cfg, tmp_path / "d", sites=sites, labels=labels, scaler=pilot / "scaler.npz", input_dim=384)


@pytest.mark.parametrize("body, message", [
    ("", "holds no \\[\\[site\\]\\] table"),
    ("[[site]]\npartition-id = 0\n", r"site 1 \(unnamed\) lacks \['train-notes'\]"),
    ("[[site]]\npartition-id = 0\ntrain-notes = 0\n", "declares 0 training notes"),
    ("[[site]]\npartition-id = 0\ntrain-notes = 5\n[[site]]\npartition-id = 0\ntrain-notes = 5\n",
     "partition-id 0 appears twice"),
    ("[[site]]\npartition-id = 1\ntrain-notes = 5\n", r"must be 0 … 0, each once; got \[1\]"),
    ("[[site]]\npartition-id = '0'\ntrain-notes = 5\n", "must be integers, got '0' and 5"),
    ("[[site]\n", "is not TOML"),
])
def test_a_bad_sites_file_is_refused_by_name(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "sites.toml").write_text(body)
    with pytest.raises(StudyError, match=message):
        read_sites(tmp_path / "sites.toml")
    with pytest.raises(StudyError, match="sites file .*missing.toml not found"):
        read_sites(tmp_path / "missing.toml")


def test_sites_are_ordered_by_partition_id(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text("[[site]]\npartition-id = 1\ntrain-notes = 7\n"
                                     "[[site]]\npartition-id = 0\ntrain-notes = 3\n")
    assert read_sites(tmp_path / "s.toml") == [3, 7]


def test_label_spaces_read_from_three_formats_and_bad_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(list(LABELS)))
    (tmp_path / "b.json").write_text(json.dumps({"classes": list(LABELS)}))
    (tmp_path / "c.txt").write_text("# codes\n" + "\n".join(LABELS) + "\n\n")
    assert read_label_space(tmp_path / "a.json") == read_label_space(tmp_path / "b.json") \
        == read_label_space(tmp_path / "c.txt") == list(LABELS)
    (tmp_path / "d.txt").write_text("A01\nB02\nA01\n")
    with pytest.raises(StudyError, match=r"lists codes more than once: \['A01'\]"):
        read_label_space(tmp_path / "d.txt")
    (tmp_path / "e.json").write_text("{}")
    with pytest.raises(StudyError, match="holds neither a JSON list"):
        read_label_space(tmp_path / "e.json")


def test_config_level_refusals(pilot: Path, tmp_path: Path) -> None:
    sites, labels = _sites(tmp_path / "s.toml", [20, 20, 20]), pilot / "labels.json"
    with pytest.raises(StudyError, match="federated.server_eval = true needs the server's evaluation notes"):
        prepare_study(load_config(None, list(BASE)), tmp_path / "a", sites=sites, labels=labels,
                      scaler=pilot / "scaler.npz")
    with pytest.raises(StudyError, match="evaluation notes were given but federated.server_eval = false"):
        prepare_study(load_config(None, [*BASE, "federated.server_eval=false"]), tmp_path / "b", sites=sites,
                      labels=labels, eval_data=pilot / SERVER_EVAL)
    with pytest.raises(StudyError, match="a study needs train.mode = 'federated'"):
        prepare_study(load_config(None, []), tmp_path / "c", sites=sites, labels=labels, input_dim=8)
    (tmp_path / "other.txt").write_text("X1\nX2\nX3\nX4\nX5\n")
    with pytest.raises(LabelSpaceMismatchError):
        prepare_study(load_config(None, list(BASE)), tmp_path / "d", sites=sites, labels=tmp_path / "other.txt",
                      eval_data=pilot / SERVER_EVAL)
    assert not any((tmp_path / n).exists() for n in "abcd")  # nothing written by a refused study


def test_the_cli_prepares_a_study_from_a_config(pilot: Path, tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("[train]\nmode = \"federated\"\n[partition]\nn_clients = 3\n[federated]\nserver_eval = false\n")
    code = main(["deploy", "prepare", "--config", str(cfg), "--sites", str(_sites(tmp_path / "s.toml", [4, 4, 4])),
                 "--labels", str(pilot / "labels.json"), "--scaler", str(pilot / "scaler.npz"), "--out",
                 str(tmp_path / "study")])
    assert code == 0 and "flwr run . <federation> --run-config" in capsys.readouterr().out
    assert read_plan(tmp_path / "study").client_sizes == (4, 4, 4)
    assert main(["deploy", "prepare", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2
    assert "needs --sites and --labels" in capsys.readouterr().err
