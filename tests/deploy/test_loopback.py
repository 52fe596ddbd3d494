"""A real Flower deployment on loopback: a SuperLink and 3 SuperNodes as processes, TLS and node authentication.

One federation serves the whole module (starting one costs ~30 s on 2 cores, and every message spawns a
``flwr-clientapp`` that imports torch): it trains fedicd's app for 3 rounds and must end with the simulation's
global model; a CKKS run on the same nodes shows which files the server process opened; nodes with an
unregistered key or another CA are refused; closing it leaves no process, port or file behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedicd.deploy.audit import AUDIT_ENV, read_open_audit
from fedicd.deploy.certificates import make_certificates
from fedicd.deploy.commands import InsecureStartError, superlink_command
from fedicd.deploy.local import LocalFederation
from fedicd.deploy.node_keys import check_port_free
from fedicd.deploy.processes import flower_command, free_port
from tests.tiny_run import N_CLIENTS, stage_tiny_run

pytestmark = [pytest.mark.deploy, pytest.mark.xdist_group("deploy")]

REPO = Path(__file__).resolve().parents[2]  # the repository: pyproject.toml's [tool.flwr.app]
ROUNDS = 3


def _stage(run: Path, overrides: list[str]):
    """The tiny 3-client run, no client evaluation (each deployed message is a process: keep rounds short)."""
    return stage_tiny_run(run, ["federated.fraction_evaluate=0.0", "federated.node_wait_s=120", *overrides])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """The simulated run (its final model), its study folder, and a CKKS study over the same client files."""
    from fedicd.deploy.study import prepare_study_from_run
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.runner.simulation import simulate
    from fedicd.secure.ckks_params import CkksParams
    from fedicd.secure.ckks_round import write_key_dir

    root = tmp_path_factory.mktemp("loopback")
    plan = _stage(root / "run", [f"federated.rounds={ROUNDS}"])
    simulate(root / "run", plan, verbose=False)
    keys = root / "server-keys"  # the server's key folder holds the public context only
    write_key_dir(keys, CkksParams(max_clients=N_CLIENTS))
    (root / "node-secret").mkdir()
    secret = shutil.move(keys / "secret.ctx", root / "node-secret" / "secret.ctx")
    shutil.copyfile(keys / "params.json", root / "node-secret" / "params.json")  # the site's copy of the public parameters
    _stage(root / "ckks-run", ["federated.rounds=1", 'secure_aggregation.method="ckks"',
                               f'secure_aggregation.key_dir="{keys}"', 'train.norm="layer"'])
    return {"root": root, "run": root / "run", "final": load_checkpoint(root / "run")["arrays"],
            "config": prepare_study_from_run(root / "run", root / "study"),
            "ckks_config": prepare_study_from_run(root / "ckks-run", root / "ckks-study"),
            "secret": Path(secret)}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    """The app as `flwr run .` ships it from the repository (its FAB holds pyproject.toml and fedicd's code only:
    [tool.flwr.app] fab-include), copied without the rest: Flower walks every file of the folder before filtering,
    ~10 s per run with a virtual environment inside the checkout."""
    from flwr.cli.build import build_fab_from_disk

    app = tmp_path_factory.mktemp("app") / "fedicd-app"
    app.mkdir()
    shutil.copyfile(REPO / "pyproject.toml", app / "pyproject.toml")
    shutil.copytree(REPO / "fedicd", app / "fedicd", ignore=shutil.ignore_patterns("__pycache__"))
    assert len(build_fab_from_disk(app)) > 100_000  # Flower builds it (fedicd's code inside)
    return app


@pytest.fixture(scope="module")
def federation(study):
    from fedicd.federated.site_data import client_data_path

    root = study["root"]
    nodes = [{"partition-id": i, "data-path": str(client_data_path(study["run"], i)),
              "state-dir": str(root / f"state-{i}"), "ckks-secret-key": str(study["secret"])} for i in range(N_CLIENTS)]
    fed = LocalFederation(nodes, env={AUDIT_ENV: str(root / "audit"), "OMP_NUM_THREADS": "1"})
    with fed:
        yield fed


def test_insecure_start_is_refused_by_fedicd_and_by_flower(tmp_path) -> None:
    with pytest.raises(InsecureStartError, match="refusing to start a federation without TLS.*insecure=True"):
        LocalFederation([{"partition-id": 0, "data-path": "x.npz"}], certificates=None)
    with pytest.raises(InsecureStartError, match="refusing to start it insecure"):
        superlink_command("flower-superlink", host="127.0.0.1", port=9999, database=tmp_path / "db",
                          certificates=None)
    assert "--insecure" in superlink_command("flower-superlink", host="127.0.0.1", port=9999, database="db",
                                             certificates=None, insecure=True)
    # Flower's own refusal: a SuperLink without certificates and without --insecure exits at once
    argv = superlink_command(flower_command("flower-superlink"), host="127.0.0.1", port=free_port(),
                             database=tmp_path / "db", certificates=None, insecure=True)
    argv.remove("--insecure")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Certificates are required unless running in insecure mode" in done.stdout + done.stderr


def test_deployment_ends_with_the_simulations_model(federation, study, app_dir) -> None:
    result = federation.run(app_dir, study["config"], timeout_s=600)
    assert result.returncode == 0, result.output[-3000:]
    study_dir = study["config"].parent
    from fedicd.federated.checkpoint import load_checkpoint

    deployed = load_checkpoint(study_dir)
    assert deployed is not None and deployed["round"] == ROUNDS, result.output[-3000:]
    assert [r["client_failures"] for r in deployed["history"]] == [0] * ROUNDS
    assert [r["clients_sampled"] for r in deployed["history"]] == [N_CLIENTS] * ROUNDS
    assert deployed["arrays"].keys() == study["final"].keys()
    for name, value in study["final"].items():
        np.testing.assert_allclose(deployed["arrays"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert json.loads((study_dir / "results.json").read_text())["outcome"]["status"] == "ok"
    opened = read_open_audit(study["root"] / "audit", "server")
    run_dir = str(study["run"])
    assert str(study_dir / "run_plan.json") in opened and str(study_dir / "server" / "eval.npz") in opened
    assert not [p for p in opened if p.startswith(run_dir)]  # no client file, no partition manifest
    clients = set(read_open_audit(study["root"] / "audit", "client"))
    assert {str(study["run"] / "clients" / str(i) / "data.npz") for i in range(N_CLIENTS)} <= clients


def test_ckks_server_opens_no_secret_key_and_no_client_data(federation, study, app_dir) -> None:
    audit = study["root"] / "audit"
    before = {p.name for p in audit.glob("server-*.log")}
    result = federation.run(app_dir, study["ckks_config"], timeout_s=600)
    assert result.returncode == 0, result.output[-3000:]
    logs = [p for p in audit.glob("server-*.log") if p.name not in before]
    assert len(logs) == 1  # this run's ServerApp process
    opened = logs[0].read_text().splitlines()
    keys = Path(json.loads((study["ckks_config"].parent / "run_plan.json").read_text())["secure_aggregation"]["key_dir"])
    assert str(keys / "public.ctx") in opened  # the hook saw the server read its key folder
    assert not [p for p in opened if p.endswith("secret.ctx") or p.startswith(str(study["root"] / "node-secret"))]
    assert not [p for p in opened if "/clients/" in p or p.startswith(str(study["run"]))]
    clients = set(read_open_audit(audit, "client"))
    assert str(study["secret"]) in clients  # the nodes did read it, and their own copy of the public parameters
    assert str(study["secret"].parent / "params.json") in clients and not [p for p in clients if p.startswith(str(keys))]
    history = json.loads((study["ckks_config"].parent / "results.json").read_text())["history"]
    assert [r["client_failures"] for r in history] == [0]


def test_threshold_ckks_runs_deployed_and_the_server_opens_no_key_share(federation, study, app_dir) -> None:
    # every node makes its key share in its own state folder; the coordinator keeps only the public key chain
    from fedicd.secure.threshold.backend import openfhe_available

    ok, why = openfhe_available()
    if not ok:
        pytest.skip(why)
    config = prepare_threshold_study(study)
    audit = study["root"] / "audit"
    before = {p.name for p in audit.glob("server-*.log")}
    result = federation.run(app_dir, config, timeout_s=900)
    assert result.returncode == 0, result.output[-3000:]
    history = json.loads((config.parent / "results.json").read_text())["history"]
    assert [r["updated"] for r in history] == [True, True]
    assert [r["train_partial_decryptions"] for r in history] == [float(N_CLIENTS)] * 2
    assert [r["client_failures"] for r in history] == [0, 0]
    assert (config.parent / "threshold_keys.json").exists()
    shares = [study["root"] / f"state-{i}" / "clients" / str(i) / "threshold" / "secret.bin" for i in range(N_CLIENTS)]
    assert all(p.exists() for p in shares)
    logs = [p for p in audit.glob("server-*.log") if p.name not in before]
    opened = [line for log in logs for line in log.read_text().splitlines()]
    key_files = ("secret.bin", "seal.bin", "party.json")  # a node's key share, sealing key and share state
    assert not [p for p in opened if p.endswith(key_files) or p.startswith(str(study["root"] / "state-"))]
    assert str(config.parent / "threshold_keys.json") in opened  # the hook saw the server read its public chain


def prepare_threshold_study(study) -> Path:
    from fedicd.deploy.study import prepare_study_from_run

    _stage(study["root"] / "threshold-run", ["federated.rounds=2", 'secure_aggregation.method="ckks-threshold"'])
    return prepare_study_from_run(study["root"] / "threshold-run", study["root"] / "threshold-study")


def test_an_unregistered_node_is_refused(federation) -> None:
    attempt = federation.attempt_node("intruder")
    assert attempt.returncode == 1
    assert "[code: 2004] Failed to activate SuperNode" in attempt.log


def test_a_node_trusting_another_ca_is_refused(federation, tmp_path) -> None:
    other = make_certificates(tmp_path / "other-ca")  # a valid chain, from another CA
    attempt = federation.attempt_node("wrong-ca", registered_as="node-0", root_certificates=other.ca_cert)
    assert attempt.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in attempt.log


def test_close_leaves_no_process_port_or_file(federation) -> None:
    ports, workdir = [federation.port, *federation.node_ports], federation.workdir
    assert all(federation.alive(n) for n in ["superlink", *federation.names])
    federation.close()  # raises ShutdownError when a process or a port is left
    assert federation.leftovers() == []
    assert not workdir.exists()
    for port in ports:
        check_port_free("127.0.0.1", port)  # free again (a closed connection's TIME_WAIT allowed, as servers do)
