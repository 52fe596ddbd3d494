"""The local federation's refusals before any Flower process starts, its command lines, and the process
bookkeeping that finds (and stops) children that left their parent's process group."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time

import pytest
from flwr.common.config import parse_config_args

from fedicd.deploy.certificates import CertificateError, make_certificates
from fedicd.deploy.commands import (CONNECTION, InsecureStartError, cli_config, node_command, superlink_command,
                                    write_toml)
from fedicd.deploy.local import LocalFederation
from fedicd.deploy.processes import ProcessStartError, start_process, stop_tagged, tagged_pids, wait_listening
from fedicd.errors import ConfigError

NODE = {"partition-id": 0, "data-path": "/site/data.npz"}


def test_the_superlink_runs_tls_with_node_authentication_or_refuses(tmp_path) -> None:
    argv = superlink_command("flower-superlink", host="127.0.0.1", port=18000, database=tmp_path / "state.db",
                             certificates=tmp_path)
    assert argv == ["flower-superlink", "--host", "127.0.0.1", "--port", "18000", "--database",
                    str(tmp_path / "state.db"), "--disable-runtime-dependency-installation",
                    "--ssl-ca-certfile", str(tmp_path / "ca.crt"), "--ssl-certfile", str(tmp_path / "server.crt"),
                    "--ssl-keyfile", str(tmp_path / "server.key"), "--enable-supernode-auth"]
    for told in (False, "yes", 1):  # only insecure=True itself opens the door
        with pytest.raises(InsecureStartError, match="refusing to start it insecure.*insecure=True"):
            superlink_command("flower-superlink", host="h", port=1, database="d", certificates=None, insecure=told)
    insecure = superlink_command("flower-superlink", host="h", port=1, database="d", certificates=None, insecure=True)
    assert insecure[-1] == "--insecure" and "--enable-supernode-auth" not in insecure


def test_node_commands_and_config_files_read_back_as_flower_reads_them(tmp_path) -> None:
    argv = node_command("flower-supernode", superlink="127.0.0.1:18000", port=19101, host="127.0.0.1",
                        node_config=tmp_path / "n.toml", root_certificates=tmp_path / "ca.crt", key=tmp_path / "k")
    assert argv[argv.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(tmp_path / "k")
    assert "--insecure" not in argv
    assert node_command("s", superlink="a:1", port=2, host="h", node_config="n.toml", root_certificates=None,
                        key=None)[-1] == "--insecure"
    config = {"partition-id": 2, "data-path": str(tmp_path / "a dir" / 'q"uote.npz'), "ckks-secret-key": "/k/s.ctx",
              "flag": True, "scale": 0.5}
    path = write_toml(tmp_path / "node-config.toml", config)
    assert parse_config_args([str(path)]) == config  # flower-supernode --node-config <file>
    assert cli_config("127.0.0.1:18000", tmp_path / "ca.crt") == {"superlink": {
        "default": CONNECTION, CONNECTION: {"address": "127.0.0.1:18000",
                                            "root-certificates": str((tmp_path / "ca.crt").resolve())}}}
    assert cli_config("h:1", None)["superlink"][CONNECTION]["insecure"] is True


def test_bad_federations_are_refused_before_anything_starts(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nodes = \[\]"):
        LocalFederation([])
    with pytest.raises(InsecureStartError, match="without TLS.*pass insecure=True explicitly"):
        LocalFederation([NODE], certificates=None)
    with pytest.raises(ConfigError, match="choose one"):
        LocalFederation([NODE], certificates="auto", insecure=True)
    with pytest.raises(ConfigError, match="one distinct port per node"):
        LocalFederation([NODE, NODE], port=18000, node_ports=[18001, 18001])
    empty = LocalFederation([NODE], certificates=tmp_path / "none", workdir=tmp_path / "w1")
    with pytest.raises(CertificateError, match=f"certificate not found: {tmp_path / 'none' / 'server.crt'}"):
        empty.start()
    old = make_certificates(tmp_path / "old", days=1, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=3))
    expired = LocalFederation([NODE], certificates=tmp_path / "old", workdir=tmp_path / "w2")
    with pytest.raises(CertificateError, match=f"certificate {old.server_cert} expired on"):
        expired.start()
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        taken = LocalFederation([NODE], port=port, workdir=tmp_path / "w3")
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            taken.start()
    for fed in (empty, expired, taken):
        assert fed.closed and fed.leftovers() == [] and not (fed.workdir / "logs").exists()


def test_children_that_left_the_process_group_are_found_and_stopped(tmp_path) -> None:
    # like flower-superlink, whose flower-superexec starts in a new session: the parent's group does not hold it
    tree = ("import os, subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)")
    tag = f"t{os.getpid()}{time.monotonic_ns()}"
    parent = start_process([sys.executable, "-c", tree], log_path=tmp_path / "p.log", env=dict(os.environ), tag=tag,
                           role="superlink")
    other = start_process([sys.executable, "-c", "import time; time.sleep(120)"], log_path=tmp_path / "o.log",
                          env=dict(os.environ), tag=tag, role="node-0")
    deadline = time.monotonic() + 30
    while len(tagged_pids(tag)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(tagged_pids(tag, ["superlink"])) == 3 and tagged_pids(tag, ["node-0"]) == [other.pid]
    assert stop_tagged(tag, ["superlink"], popens=[parent], grace_s=5) == []
    assert tagged_pids(tag) == [other.pid]  # another role is left alone
    assert stop_tagged(tag, popens=[other], hard=True) == [] and other.returncode == -9
    assert (tmp_path / "p.log").read_text().startswith(f"$ {sys.executable} -c")


def test_a_process_that_exits_before_listening_is_named_with_its_log(tmp_path) -> None:
    proc = start_process([sys.executable, "-c", "print('no certificates'); raise SystemExit(3)"],
                         log_path=tmp_path / "s.log", env=dict(os.environ), tag="x", role="superlink")
    with pytest.raises(ProcessStartError, match=r"(?s)flower-superlink exited with code 3 before listening on "
                                                r"127.0.0.1:1.*no certificates"):
        wait_listening("127.0.0.1", 1, proc, name="flower-superlink", log_path=tmp_path / "s.log", timeout_s=30)
