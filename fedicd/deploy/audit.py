"""Which files a deployed process opens: an audit hook (PEP 578) that logs every opened path, for the checks that
the server never opens a client's data or a CKKS secret key.

When the environment variable ``FEDICD_OPEN_AUDIT`` names a directory, :func:`install_open_audit` adds a
:func:`sys.addaudithook` hook to the calling process that appends every path the interpreter opens to
``<dir>/<role>-<pid>.log``, one absolute path per line, flushed at once (a process killed mid-run leaves a
complete log up to its last open). Without the variable it does nothing: no hook, no cost. The deployed apps
(``fedicd.deploy.app``) call it first thing, as ``install_open_audit("server")`` / ``("client")``; the loopback
tests read the logs back with :func:`read_open_audit`.

Events logged: ``open`` (``open()``, ``io.open``, ``os.open``, hence ``Path.read_bytes``, ``np.load``,
``torch.load`` …) and ``sqlite3.connect`` (a database path). Files that C or C++ code opens without going
through Python (a library's own ``fopen``) raise no audit event and are not seen; fedicd reads its data, plans,
keys and certificates through Python.

Privacy
-------
The log holds file paths only, never contents. It is a test instrument for the threat model's claim "the server
process never reads a client's data or a CKKS secret key" (docs/threat-models.md), not a sandbox: a hook reports
opens, it does not prevent them.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path

__all__ = ["AUDIT_ENV", "install_open_audit", "read_open_audit", "audit_log_path"]

AUDIT_ENV = "FEDICD_OPEN_AUDIT"
_ROLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EVENTS = ("open", "sqlite3.connect")
_INSTALLED: dict[str, "_OpenAudit"] = {}
_GUARD = threading.local()


def _check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise ValueError(f"role = {role!r}: give a plain name (letters, digits, . _ -), e.g. 'server' or 'client'")
    return role


def audit_log_path(directory: str | Path, role: str, pid: int | None = None) -> Path:
    """``<directory>/<role>-<pid>.log``: where process ``pid`` (default: this one) logs its opens as ``role``."""
    return Path(directory) / f"{_check_role(role)}-{os.getpid() if pid is None else int(pid)}.log"


class _OpenAudit:
    """One role's hook: the log file is opened before the hook exists and paths inside the audit folder are
    skipped (the logs never list themselves) and
    reopened under the new pid's name in a forked child."""

    def __init__(self, directory: Path, role: str):
        self.directory, self.role, self.lock = directory, role, threading.Lock()
        self.prefix = str(directory) + os.sep
        self.pid, self.fh = os.getpid(), self._open()

    def _open(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        return open(audit_log_path(self.directory, self.role), "a", encoding="utf-8", buffering=1)

    def __call__(self, event: str, args: tuple) -> None:
        if event not in _EVENTS or getattr(_GUARD, "busy", False) or not args:
            return
        path = args[0]
        if isinstance(path, int) or path is None:  # open(fd): the path was logged when the fd was opened
            return
        _GUARD.busy = True
        try:
            text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
            text = os.path.abspath(text) if text != ":memory:" else text
            if text.startswith(self.prefix):  # the audit logs themselves (written, or read back by a test)
                return
            with self.lock:
                if os.getpid() != self.pid:  # a forked child: its own log
                    self.pid, self.fh = os.getpid(), self._open()
                self.fh.write(text.replace("\n", "\\n") + "\n")
                self.fh.flush()
        except Exception:  # noqa: BLE001 - an audit hook must never break the open it reports
            pass
        finally:
            _GUARD.busy = False


def install_open_audit(role: str) -> Path | None:
    """Log every path this process opens to ``$FEDICD_OPEN_AUDIT/<role>-<pid>.log``; returns the log's path.

    Without ``FEDICD_OPEN_AUDIT`` (or with it empty) nothing is installed and None is returned. Calling it again
    with the same role in the same process installs nothing more (audit hooks cannot be removed: a process
    keeps its hook until it exits).

    Raises
    ------
    ValueError
        ``role`` is not a plain name (it becomes part of a file name).
    """
    _check_role(role)
    directory = os.environ.get(AUDIT_ENV, "").strip()
    if not directory:
        return None
    hook = _INSTALLED.get(role)
    if hook is None:
        hook = _OpenAudit(Path(directory).resolve(), role)
        _INSTALLED[role] = hook
        sys.addaudithook(hook)
    return audit_log_path(hook.directory, role, hook.pid)


def read_open_audit(directory: str | Path, role: str) -> list[str]:
    """Every path logged by the processes of ``role`` under ``directory`` (all ``<role>-<pid>.log`` files, by
    pid), in the order each process opened them; [] when none logged.

    Raises
    ------
    ValueError
        ``role`` is not a plain name.
    """
    _check_role(role)
    logs = sorted(Path(directory).glob(f"{role}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
                  if p.stem.rsplit("-", 1)[1].isdigit() else -1)
    return [line for log in logs if log.stem.rsplit("-", 1)[1].isdigit()
            for line in log.read_text(encoding="utf-8").splitlines() if line]
