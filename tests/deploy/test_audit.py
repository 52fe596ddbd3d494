"""The file-open audit logs every path a process opens, per role and pid, and nothing without FEDICD_OPEN_AUDIT."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from fedicd.deploy import audit
from fedicd.deploy.audit import AUDIT_ENV, audit_log_path, install_open_audit, read_open_audit


def test_without_the_variable_nothing_is_installed(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(AUDIT_ENV, raising=False)
    before = dict(audit._INSTALLED)
    assert install_open_audit("server") is None
    monkeypatch.setenv(AUDIT_ENV, "  ")
    assert install_open_audit("server") is None
    assert audit._INSTALLED == before
    assert read_open_audit(tmp_path, "server") == []


def test_every_open_is_logged_absolute_once_per_line(tmp_path, monkeypatch) -> None:
    # an audit hook cannot be removed: this one stays in the test process, under a role no other test uses
    role = f"unit-{uuid.uuid4().hex[:8]}"
    logs = tmp_path / "audit"
    monkeypatch.setenv(AUDIT_ENV, str(logs))
    log_path = install_open_audit(role)
    assert log_path == audit_log_path(logs.resolve(), role) == logs.resolve() / f"{role}-{os.getpid()}.log"
    assert install_open_audit(role) == log_path  # idempotent: one hook per role and process
    data = tmp_path / "secret.ctx"
    data.write_bytes(b"k")
    np.savez(tmp_path / "x.npz", a=np.arange(3))
    monkeypatch.chdir(tmp_path)
    with open("secret.ctx", "rb"):  # a relative path is logged absolute
        pass
    os.close(os.open(data, os.O_RDONLY))
    with np.load(tmp_path / "x.npz") as z:
        assert z["a"].tolist() == [0, 1, 2]
    sqlite3.connect(tmp_path / "state.db").close()
    with open(os.open(data, os.O_RDONLY), "rb"):  # open(fd) adds no line: os.open logged the path
        pass
    opened = read_open_audit(logs, role)
    mine = [p for p in opened if p.startswith(str(tmp_path))]
    assert mine == [str(data), str(tmp_path / "x.npz"), str(data), str(data), str(tmp_path / "x.npz"),
                    str(tmp_path / "state.db"), str(data)]
    assert not any(p.startswith(str(logs.resolve())) for p in opened)  # the logs never list themselves
    assert read_open_audit(logs, "other") == []


def test_role_names_are_checked(tmp_path) -> None:
    for bad in ("", "../server", "a b", 3):
        with pytest.raises(ValueError, match=r"role = .*: give a plain name"):
            install_open_audit(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="give a plain name"):
            read_open_audit(tmp_path, bad)  # type: ignore[arg-type]


def test_each_process_and_forked_child_writes_its_own_log(tmp_path) -> None:
    logs, target = tmp_path / "audit", tmp_path / "client-data.npz"
    target.write_bytes(b"x")
    script = textwrap.dedent(f"""
        import os
        from fedicd.deploy.audit import install_open_audit
        install_open_audit("client")
        open({str(target)!r}, "rb").close()
        pid = os.fork()
        if pid == 0:
            open({str(target)!r} + ".child", "w").close()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """)
    env = {**os.environ, AUDIT_ENV: str(logs)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    child = int(done.stdout.strip())
    files = sorted(p.name for p in logs.iterdir())
    assert len(files) == 2 and f"client-{child}.log" in files
    parent_log = next(p for p in logs.iterdir() if p.name != f"client-{child}.log")
    assert str(target) in parent_log.read_text().splitlines()
    assert (logs / f"client-{child}.log").read_text().splitlines() == [f"{target}.child"]
    assert set(read_open_audit(logs, "client")) >= {str(target), f"{target}.child"}
    assert read_open_audit(logs, "server") == []
