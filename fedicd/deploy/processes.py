"""Start, find and stop the processes of a local Flower deployment, children and grandchildren included.

Flower's processes start others: ``flower-superlink`` starts ``flower-superexec`` in a *new session* (so it leaves
the SuperLink's process group), which starts ``flwr-serverapp`` for every run; ``flower-supernode`` starts its own
``flower-superexec``, which starts a ``flwr-clientapp`` per message. A process group therefore does not hold a
whole tree. Every process started here gets two environment variables that its descendants inherit,
``FEDICD_FEDERATION_ID`` (one per federation) and ``FEDICD_FEDERATION_ROLE`` (``superlink``, ``node-0`` …), and
is found again by reading ``/proc/<pid>/environ`` (Linux), even after it has been re-parented. Each process
still starts in its own session (``start_new_session``), so a terminal's Ctrl-C never reaches it.

Privacy
-------
Nothing here reads data; processes are found by their inherited environment only.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

__all__ = ["TAG_ENV", "ROLE_ENV", "ProcessStartError", "ShutdownError", "RunResult", "RunHandle", "NodeAttempt",
           "free_port", "flower_command", "start_process", "tagged_pids",
           "stop_tagged", "wait_listening", "log_tail"]

log = logging.getLogger(__name__)

TAG_ENV = "FEDICD_FEDERATION_ID"
ROLE_ENV = "FEDICD_FEDERATION_ROLE"


class ProcessStartError(RuntimeError):
    """A Flower process that exited, or never listened, when it should have been serving."""


class ShutdownError(RuntimeError):
    """After :meth:`LocalFederation.close`: processes still alive or ports still bound (both named)."""


@dataclass(frozen=True)
class RunResult:
    """One ``flwr run --stream``: its exit code, wall seconds, the run id Flower printed and the CLI's output."""

    returncode: int
    seconds: float
    run_id: str | None
    output: str


@dataclass(frozen=True)
class RunHandle:
    """A submitted ``flwr run``: its process name (log ``<name>.log``), process and start time."""

    name: str
    proc: subprocess.Popen
    started: float


@dataclass(frozen=True)
class NodeAttempt:
    """A SuperNode started to be refused: its exit code, seconds until it exited, and its log."""

    returncode: int | None
    seconds: float
    log: str


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def flower_command(name: str) -> str:
    """The path of Flower's console script ``name`` (beside this Python first, then on PATH).

    Raises
    ------
    ProcessStartError
        The script is not installed.
    """
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise ProcessStartError(f"{name} not found beside {sys.executable} or on PATH: install flwr (pip install "
                                "'flwr>=1.42')")
    return found


def start_process(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str], tag: str, role: str,
                  cwd: str | Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``, tagged ``tag`` / ``role``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**env, TAG_ENV: tag, ROLE_ENV: role}, cwd=cwd, start_new_session=True)


def _environ(pid: int) -> dict[bytes, bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":  # a zombie: already dead, waiting to be reaped
                return None
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except (OSError, IndexError):
        return None
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def tagged_pids(tag: str, roles: Iterable[str] | None = None) -> list[int]:
    """Live processes carrying federation ``tag`` (of the given roles only, when ``roles`` is given)."""
    wanted = None if roles is None else {r.encode() for r in roles}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _environ(int(entry.name))
        if env and env.get(TAG_ENV.encode()) == tag.encode() and (wanted is None or env.get(ROLE_ENV.encode())
                                                                   in wanted):
            found.append(int(entry.name))
    return sorted(found)


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_tagged(tag: str, roles: Iterable[str] | None = None, *, popens: Sequence[subprocess.Popen] = (),
                grace_s: float = 10.0, hard: bool = False) -> list[int]:
    """SIGTERM every process of ``tag`` (``roles``) and the process groups of ``popens``; SIGKILL what is left after
    ``grace_s`` (at once when ``hard``: a crash); reap ``popens``. Returns the pids still alive after that (normally
    none)."""
    roles = None if roles is None else list(roles)
    steps = ((signal.SIGKILL, 5.0),) if hard else ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0))
    for sig, wait in steps:
        for p in popens:
            if p.poll() is None:  # not reaped yet: its pid (= its group's id) cannot have been reused
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        _signal(tagged_pids(tag, roles), sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in popens) and not tagged_pids(tag, roles):
                return []
            time.sleep(0.1)
        if sig == signal.SIGTERM:
            log.info("still running %.0f s after SIGTERM: %s; sending SIGKILL", grace_s, tagged_pids(tag, roles))
    for p in popens:
        try:
            p.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
    return tagged_pids(tag, roles)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_listening(host: str, port: int, proc: subprocess.Popen, *, name: str, log_path: Path,
                   timeout_s: float) -> float:
    """Block until something accepts TCP connections on ``host:port``; returns the seconds waited.

    Raises
    ------
    ProcessStartError
        ``proc`` exited first (its return code and log tail are in the message), or ``timeout_s`` passed.
    """
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise ProcessStartError(f"{name} exited with code {proc.returncode} before listening on {host}:{port}; "
                                    f"its log {log_path} ends:\n{log_tail(log_path)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout_s:
            raise ProcessStartError(f"{name} did not listen on {host}:{port} within {timeout_s:.0f} s; its log "
                                    f"{log_path} ends:\n{log_tail(log_path)}")
        time.sleep(0.2)
