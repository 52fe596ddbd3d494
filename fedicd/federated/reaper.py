"""A watchdog that ends the simulation's processes (Ray's servers, agents and workers) when the driver dies.

Ray starts a dozen processes under the driver (GCS server, raylet, dashboard, agents, the ClientApp
actors). When the driver is killed (``kill -9``, the OOM killer) some of them (Ray's dashboard and
runtime-env agents) are re-parented to PID 1 and live on. :func:`start_reaper` starts this file as a
small stdlib-only process in its own session; it records every process descended from the driver
(pid and start time, so a recycled pid is never touched) and, when the driver's end of its stdin pipe
closes without a ``done`` line, sends them SIGTERM, then SIGKILL to whatever is left after
:data:`GRACE_S`. After ``done`` (the simulation returned, Ray was shut down) it only kills survivors of
that shutdown. Linux only (it reads ``/proc``); elsewhere :func:`start_reaper` returns None.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

__all__ = ["Reaper", "start_reaper", "descendants"]

SCAN_S = 0.5
GRACE_S = 2.0


def _proc_table() -> dict[int, tuple[int, str]]:
    """{pid: (ppid, start time)} of every live (non-zombie) process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            table[int(name)] = (int(fields[1]), fields[19])
    return table


def descendants(roots: set[int], table: dict[int, tuple[int, str]] | None = None, *,
                exclude: frozenset[int] = frozenset()) -> dict[int, str]:
    """{pid: start time} of every live process below ``roots`` (the roots excluded), not entering ``exclude``."""
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in roots and child not in exclude:
                found[child] = table[child][1]
                todo.append(child)
    return found


def _alive(tracked: dict[int, str]) -> dict[int, str]:
    table = _proc_table()
    return {pid: start for pid, start in tracked.items() if table.get(pid, (0, None))[1] == start}


def _kill(tracked: dict[int, str], grace: float) -> None:
    """SIGTERM the tracked processes still alive, then SIGKILL what is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in _alive(tracked):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while _alive(tracked) and time.monotonic() < deadline:
            time.sleep(0.1)


def _watch(driver: int, baseline: set[int]) -> int:
    """The reaper's loop: track the driver's new descendants until ``done`` or the pipe closes.

    ``baseline``: the driver's descendants before the simulation (not the simulation's to end).
    """
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a terminal's Ctrl-C must not end the watchdog before the driver
    baseline = frozenset(baseline | {os.getpid()})
    tracked: dict[int, str] = {}
    while True:
        ready, _, _ = select.select([0], [], [], SCAN_S)
        if ready:
            data = os.read(0, 64)
            if data.startswith(b"done"):
                time.sleep(GRACE_S)  # Ray's own shutdown comes first
                _kill(tracked, 0.5)
                return 0
            if not data:  # the driver is gone
                tracked.update(descendants({driver, *tracked}, exclude=baseline))
                _kill(tracked, GRACE_S)
                return 0
        tracked.update(descendants({driver, *tracked}, exclude=baseline))


class Reaper:
    """The driver's handle on the watchdog process."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def close(self) -> None:
        """The simulation ended normally (Ray shut down): the watchdog kills only stragglers, then exits."""
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.close()
        except OSError:
            pass
        threading.Thread(target=self.proc.wait, daemon=True).start()  # reap it without blocking the driver


def start_reaper() -> Reaper | None:
    """Start the watchdog for this process (the simulation driver); None where ``/proc`` is missing."""
    if not os.path.isdir("/proc/self"):
        return None
    baseline = ",".join(str(p) for p in descendants({os.getpid()})) or "-"
    proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid()), baseline],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return Reaper(proc)


if __name__ == "__main__":
    sys.exit(_watch(int(sys.argv[1]), {int(p) for p in sys.argv[2].split(",") if p.isdigit()}))
