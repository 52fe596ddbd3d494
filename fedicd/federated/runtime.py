"""What surrounds a simulation: where the framework logs go, the round counter, signals, a stoppable grid.

* :func:`framework_logs`: Flower's and Ray's driver-side logs (and their Python warnings) are written to
  ``<out>/framework.log``; when quiet (the default without ``-v``) they go only there, and fedicd shows
  the rounds on stderr instead (:class:`RoundProgress`: a progress bar with the latest loss, F1 and ε on
  a terminal, one line per round (:func:`progress_line`) otherwise).
* :func:`interrupt_on_signals`: SIGTERM and SIGINT ask the rounds to stop; Flower then ends its workers
  and shuts Ray down as after a normal run.
* :class:`RunControl` and :class:`StoppableGrid`: the ServerApp thread stops at its next message
  exchange once the driver sets ``stop``, instead of waiting ``timeout_s`` for clients that are gone.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedicd.federated.outcome import RunInterruptedError

__all__ = ["FRAMEWORK_LOG", "PROGRESS_LOGGER", "RunControl", "StoppableGrid", "RoundProgress", "framework_logs",
           "is_verbose", "interrupt_on_signals", "progress_line", "progress_postfix"]

FRAMEWORK_LOG = "framework.log"
PROGRESS_LOGGER = "fedicd.progress"
_FRAMEWORKS = ("flwr", "ray")

POLL_S = 0.02
"""Longest wait between two pulls of :class:`StoppableGrid` (Flower's in-memory grid waits 0.1 s: up to 0.1 s per
message exchange, two per round, after the last reply has arrived; a pull of the in-memory state is cheap)."""

log = logging.getLogger(__name__)


def is_verbose(verbose: bool | None) -> bool:
    """``verbose``, or (None) whether the ``fedicd`` logger shows INFO (the CLI's ``-v``)."""
    return logging.getLogger("fedicd").isEnabledFor(logging.INFO) if verbose is None else bool(verbose)


@dataclass
class RunControl:
    """Shared by the driver and the ServerApp thread: ``stop`` asks the rounds to end, ``finished`` says they did."""

    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    signum: int | None = None  # the signal that asked for the stop

    def check(self) -> None:
        """Raise :class:`RunInterruptedError` once the driver has asked the rounds to stop."""
        if self.stop.is_set():
            raise RunInterruptedError("the driver stopped the run")


class StoppableGrid:
    """A Flower grid whose ``send_and_receive`` gives up as soon as ``control.stop`` is set."""

    def __init__(self, grid, control: RunControl) -> None:
        self._grid = grid
        self._control = control

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list:
        """Flower's push-then-poll loop (:class:`~flwr.server.InMemoryGrid`), checking ``stop`` between polls."""
        pending = set(self._grid.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else math.inf)
        replies: list = []
        while pending:
            self._control.check()
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or time.time() >= end:
                break
            self._control.stop.wait(min(getattr(self._grid, "pull_interval", POLL_S), POLL_S))
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


def progress_line(row: dict, rounds: int) -> str:
    """One line per round: round k/R, client train loss, validation loss or F1, failures, seconds."""
    parts = [f"round {row['round']}/{rounds}"]
    if "train_train_loss" in row:
        parts.append(f"train loss {row['train_train_loss']:.4f}")
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4f}, test micro-F1 {row['test_micro_f1']:.3f}")
    elif "client_eval_loss" in row:
        parts.append(f"client val loss {row['client_eval_loss']:.4f}, micro-F1 {row.get('client_micro_f1', 0):.3f}")
    fails = f"failures {row['client_failures']}/{row['clients_sampled']}"
    if row.get("updates_rejected"):
        fails += f" ({row['updates_rejected']} rejected)"
    parts.append(fails)
    if not row.get("updated", True):
        parts.append("model NOT updated")
    parts.append(f"{row['seconds']:.1f} s")
    return ", ".join(parts)


def progress_postfix(row: dict) -> dict[str, str]:
    """The progress bar's latest scores of a round: train loss, test micro-F1 (or the clients'), ε."""
    out = {}
    if "train_train_loss" in row:
        out["loss"] = f"{row['train_train_loss']:.4f}"
    f1 = row.get("test_micro_f1", row.get("client_micro_f1"))
    if f1 is not None:
        out["F1"] = f"{f1:.3f}"
    eps = [v for k, v in row.items() if k == "client_dp_epsilon" or k.startswith("epsilon_client_")]
    if eps:
        out["ε"] = f"{max(eps):.3g}"
    if row.get("client_failures"):
        out["failures"] = f"{row['client_failures']}/{row['clients_sampled']}"
    return out


class RoundProgress(logging.Handler):
    """The rounds on ``stream``: a tqdm bar over rounds (latest loss, F1, ε) when ``stream`` is a terminal,
    else each record's message as a line. Records carrying ``round_row`` and ``rounds`` advance the bar."""

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream, self.bar = stream, None
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            row, rounds = getattr(record, "round_row", None), getattr(record, "rounds", None)
            if not self.tty or row is None:
                self._line(self.format(record))
                return
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=rounds, initial=row["round"] - 1, desc="rounds", unit="round",
                                file=self.stream, dynamic_ncols=True)
            self.bar.set_postfix(progress_postfix(row), refresh=False)
            self.bar.update(row["round"] - self.bar.n)
        except Exception:  # a progress display must never end a run
            self.handleError(record)

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        super().close()


def _is_framework_warning(filename: str) -> bool:
    return any(f"/{name}/" in filename.replace("\\", "/") for name in _FRAMEWORKS)


@contextmanager
def framework_logs(path: str | Path, *, quiet: bool) -> Iterator[None]:
    """Send Flower's and Ray's logs to ``path``; with ``quiet`` only there, plus a round counter on stderr.

    Everything is restored on exit. Ray's workers do not log to the driver when quiet
    (``log_to_driver = False``, see :func:`fedicd.runner.simulation.backend_config`); their logs stay
    in Ray's session folder (``/tmp/ray/session_latest/logs``).
    """
    try:
        import ray  # noqa: F401  (ray installs its own stderr handler on import: import it before muting it)
    except ImportError:
        pass
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved = [_redirect(logging.getLogger(name), handler, quiet) for name in _FRAMEWORKS]
    progress = logging.getLogger(PROGRESS_LOGGER)
    console = RoundProgress(sys.stderr)
    saved.append((progress, progress.propagate, progress.level, []))
    if quiet:
        progress.addHandler(console)
        progress.propagate = False
        progress.setLevel(logging.INFO)
    shown = warnings.showwarning
    frame_log = logging.getLogger("fedicd.framework")

    def show(message, category, filename, lineno, file=None, line=None):
        if quiet and _is_framework_warning(filename):
            handler.handle(frame_log.makeRecord(frame_log.name, logging.WARNING, filename, lineno,
                                                f"{category.__name__}: {message}", None, None))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
        progress.removeHandler(console)
        console.close()
        for logger, propagate, level, levels in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate
            logger.setLevel(level)
            for h, lvl in levels:
                h.setLevel(lvl)
        handler.close()


def _redirect(logger: logging.Logger, handler: logging.Handler, quiet: bool) -> tuple:
    """Add ``handler`` to ``logger``; when quiet, silence its console handlers and stop propagation."""
    before = (logger, logger.propagate, logger.level, [(h, h.level) for h in logger.handlers])
    logger.addHandler(handler)
    if quiet:
        logger.propagate = False
        for h, _ in before[3]:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.CRITICAL + 1)
    return before


@contextmanager
def interrupt_on_signals(control: RunControl) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT set ``control.signum`` and ``control.stop``: the rounds end at the next
    message exchange, Flower's workers finish, Ray shuts down, and the simulation returns by raising.

    Ray's ``ray.init`` would replace the SIGTERM handler by one raising ``SystemExit`` in the main thread,
    which makes Flower shut Ray down under threads still waiting on it (the driver then aborts): while
    inside, Ray's ``set_sigterm_handler`` is made a no-op. A second signal ends the process at once
    (exit 128 + signal); the reaper (:mod:`fedicd.federated.reaper`) then ends Ray's processes. Outside
    the main thread nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if control.stop.is_set():
            os._exit(128 + signum)
        if hasattr(signal, "alarm"):
            signal.alarm(0)  # Ray's C++ crash handler (absl), if installed, set a 3 s alarm that aborts the driver
        control.signum = signum
        control.stop.set()
        log.warning("%s received: stopping after the clients' current work (a second one kills the run)",
                    signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    ray_utils = _ray_utils()
    ray_setter = getattr(ray_utils, "set_sigterm_handler", None)
    if ray_setter is not None:
        ray_utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    finally:
        if ray_setter is not None:
            ray_utils.set_sigterm_handler = ray_setter
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ray_utils():
    try:
        import ray._private.utils as ray_utils
    except ImportError:
        return None
    return ray_utils
