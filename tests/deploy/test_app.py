"""The deployable Flower App (fedicd.deploy.app) driven in-process: the same final model as the simulation of the
same staged run, a node that embeds its own notes, and the named errors of a bad run config or node config.

The real SuperLink/SuperNode processes (TLS, node authentication, faults) are tests/deploy/test_loopback*.py's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedicd.deploy.app import client_app, deployed_client_setup, server_app
from fedicd.deploy.node_data import EMBEDDED_DATA, NodeConfigError
from fedicd.deploy.study import RunConfigError, prepare_study_from_run, study_run_config
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.inprocess import run_inprocess
from fedicd.federated.model import initial_arrays
from fedicd.federated.site_data import LabelSpaceMismatchError, client_data_path
from fedicd.runner.simulation import simulate
from tests.deploy.test_study import LABELS, stage_run
from tests.embedding.fakes import ENGLISH, FakeEncoder


def _deploy(run: Path, study: Path, node_configs: dict[int, dict] | None = None, run_config: dict | None = None):
    """The deployment apps on the in-process grid: the server reads only the study, each node only its own file."""
    prepare_study_from_run(run, study)
    config = {**study_run_config(study), **(run_config or {})}
    nodes = node_configs or {pid: {"data-path": str(client_data_path(run, pid)), "state-dir": str(study.parent /
                                                                                                 f"node{pid}")}
                             for pid in range(3)}
    clients = {k: v for k, v in config.items() if k != "study-dir"}  # the nodes need no server path
    return run_inprocess(server_app, client_app, 3, run_config=clients, server_run_config=config,
                         node_configs=nodes)


@pytest.mark.parametrize("strategy", ["fedavg", "scaffold"])
def test_deployment_ends_with_the_simulations_model(strategy: str, tmp_path: Path) -> None:
    run, sim = tmp_path / "run", tmp_path / "sim"
    plan = stage_run(run, f'federated.strategy="{strategy}"')
    stage_run(sim, f'federated.strategy="{strategy}"')  # the same staging, simulated in its own folder
    simulate(sim, plan, verbose=False)
    _deploy(run, tmp_path / "study")
    simulated, deployed = load_checkpoint(sim), load_checkpoint(tmp_path / "study")
    assert deployed["round"] == simulated["round"] == 2
    assert sorted(deployed["arrays"]) == sorted(simulated["arrays"])
    for key, value in simulated["arrays"].items():
        np.testing.assert_allclose(deployed["arrays"][key], value, rtol=1e-6, atol=1e-7)
    initial = initial_arrays(plan.train, plan.input_dim, plan.n_labels)  # and training moved the model
    assert max(float(np.abs(deployed["arrays"][k] - v).max()) for k, v in initial.items()) > 1e-3
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert results["outcome"]["status"] == "ok" and results["evaluation"] == {"by": "server"}
    assert [r["clients_sampled"] for r in results["history"]] == [3, 3]
    assert not list((tmp_path / "study").glob("clients")) and not (tmp_path / "study" / "partition.json").exists()
    if strategy == "scaffold":  # each node keeps its client control in its own state dir
        assert all((tmp_path / f"node{pid}" / "clients" / str(pid) / "scaffold_c_i.npz").exists() for pid in range(3))


def test_a_node_that_embeds_its_notes_trains_a_round(tmp_path: Path, fake_config, monkeypatch) -> None:
    monkeypatch.setattr("fedicd.embedding.pipeline.load_encoder", FakeEncoder)  # no model loaded
    run, study = tmp_path / "run", tmp_path / "study"
    stage_run(run, "federated.rounds=1")
    notes = tmp_path / "site0" / "notes.jsonl"
    notes.parent.mkdir()
    notes.write_text("\n".join(json.dumps({"text": ENGLISH[i], "codes": [LABELS[i % 5]], "split": s})
                               for i, s in enumerate(["train"] * 8 + ["val"] * 2)))
    nodes = {0: {"data-path": str(notes), "model-path": fake_config.model},
             1: {"data-path": str(client_data_path(run, 1))}, 2: {"data-path": str(client_data_path(run, 2))}}
    _deploy(run, study, nodes, {"embedding": json.dumps(dataclasses.asdict(fake_config))})
    results = json.loads((study / "results.json").read_text())
    row = results["history"][0]
    assert (row["clients_sampled"], row["client_failures"], results["outcome"]["status"]) == (3, 0, "ok")
    embedded = tmp_path / "site0" / "fedicd-state-0" / EMBEDDED_DATA  # beside the notes: the node's own state
    with np.load(embedded) as z:
        assert z["x_train"].shape == (8, 8) and z["x_val"].shape == (2, 8) and list(z["labels"]) == list(LABELS)


def _context(run_config: dict, node_config: dict) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config=run_config)


def test_client_setup_reads_the_run_config_and_the_node_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = stage_run(run)
    prepare_study_from_run(run, tmp_path / "study")
    config = study_run_config(tmp_path / "study")
    node = {"partition-id": 2, "data-path": str(client_data_path(run, 2)), "state-dir": str(tmp_path / "s2")}
    setup = deployed_client_setup(_context(config, node))
    assert (setup.pid, setup.data_path, setup.run_dir, setup.labels) == (2, client_data_path(run, 2), tmp_path / "s2",
                                                                         LABELS)
    assert setup.plan.to_dict() == plan.to_dict()
    assert deployed_client_setup(_context(dict(config), dict(node))) is setup  # made once per plan and node config
    with pytest.raises(RunConfigError, match=r"'plan' is missing: start the run with the study's run config"):
        deployed_client_setup(_context({}, node))
    with pytest.raises(RunConfigError, match="the run config's labels hold 4 codes but its plan has 5 labels"):
        deployed_client_setup(_context({**config, "labels": json.dumps(LABELS[:4])}, node))
    with pytest.raises(LabelSpaceMismatchError, match="the same codes in another order"):
        deployed_client_setup(_context({**config, "labels": json.dumps(LABELS[::-1])}, node))
    with pytest.raises(NodeConfigError, match=r"lacks data-path \(it holds the keys \['partition-id'\]\)"):
        deployed_client_setup(_context(config, {"partition-id": 2}))


def test_the_server_refuses_a_run_without_the_studys_run_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    stage_run(run)
    with pytest.raises(RunConfigError, match=r"'study-dir' is missing"):
        run_inprocess(server_app, client_app, 3)
    prepare_study_from_run(run, tmp_path / "study")
    config = study_run_config(tmp_path / "study")
    other = json.loads(config["plan"])
    other["seed"] += 1
    with pytest.raises(RunConfigError, match="the run config's plan differs from .*run_plan.json"):
        run_inprocess(server_app, client_app, 3, server_run_config={**config, "plan": json.dumps(other)})
    with pytest.raises(RunConfigError, match="the run config's labels differ from .*labels.json"):
        run_inprocess(server_app, client_app, 3, server_run_config={**config, "labels": json.dumps(LABELS[::-1])})
    assert load_checkpoint(tmp_path / "study") is None


def test_a_ckks_server_without_the_secret_key_keeps_the_model_encrypted(tmp_path: Path) -> None:
    """The server's key folder holds public.ctx only (the secret lives on the nodes): the rounds run, and
    results.json says that nobody on the server side scored the encrypted model."""
    from fedicd.secure.ckks_params import CkksParams
    from fedicd.secure.ckks_round import write_key_dir

    keys, node_keys = tmp_path / "keys", tmp_path / "node-keys"
    write_key_dir(keys, CkksParams(max_clients=4, max_count=1024))
    node_keys.mkdir()
    (keys / "secret.ctx").rename(node_keys / "secret.ctx")  # the server's machine never had it
    run = tmp_path / "run"
    stage_run(run, 'secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{keys}"', "federated.rounds=1")
    nodes = {pid: {"data-path": str(client_data_path(run, pid)), "ckks-secret-key": str(node_keys / "secret.ctx")}
             for pid in range(3)}
    _deploy(run, tmp_path / "study", nodes)
    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert results["evaluation"]["by"] == "nobody" and "val" not in results and "test" not in results
    assert results["outcome"]["status"] == "ok" and results["history"][0]["train_clients_aggregated"] == 3.0
    assert list(load_checkpoint(tmp_path / "study")["arrays"]) == ["__ckks_aggregate__"]


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # Flower 1.42's pathspec call
def test_the_fab_ships_fedicds_code_only_and_flower_accepts_the_app(tmp_path: Path) -> None:
    """pyproject's [tool.flwr.app] passes Flower's validation (components importable) and its FAB, built by
    Flower's own builder from the repository's files, holds fedicd's modules only, far under 10 MB."""
    import io
    import tomllib
    import zipfile

    from flwr.cli.build import build_fab_from_files
    from flwr.common.config import validate_config
    from flwr.common.constant import FAB_MAX_SIZE

    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    assert validate_config(config, check_module=True, project_dir=repo) == (True, [], [])
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": "fedicd.deploy.app:server_app",
                                                           "clientapp": "fedicd.deploy.app:client_app"}
    files = {p.relative_to(repo).as_posix(): p for top in ("fedicd", "attacks", "tests", "experiments", "docs")
             for p in (repo / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files.update({name: repo / name for name in ("pyproject.toml", "README.md", ".gitignore")})
    fab, _ = build_fab_from_files(files)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert len(fab) < FAB_MAX_SIZE / 4
    assert {"fedicd/deploy/app.py", "fedicd/resources/demo.toml", "pyproject.toml"} <= set(names)
    assert not [n for n in names if not n.startswith("fedicd/") and n not in ("pyproject.toml", ".info/CONTENT")]
