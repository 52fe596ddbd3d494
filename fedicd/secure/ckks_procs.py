"""Worker processes for a key holder's per-ciphertext work, spoken to over pipes: ``python -m MODULE``, where MODULE
runs :func:`serve` (shared-key CKKS: ``fedicd.secure.ckks_workers``; threshold CKKS:
``fedicd.secure.threshold.worker``).

Why not :mod:`multiprocessing`: its "spawn" and "forkserver" start methods import the parent's
``__main__`` again in every worker, which re-runs any unguarded top-level code of a user's script
(training, writing results) in each worker; "fork" copies a process whose other threads (Flower's,
Ray's, PyTorch's) may hold locks. A fresh interpreter started with ``-m`` imports only this package.

Protocol: the parent writes pickled ``(operation, arguments)`` to a worker's stdin and reads a pickled
``(ok, result or exception)`` from the worker's original stdout (the worker sends anything printed to
stdout on to stderr, so stray prints cannot corrupt the channel). The first message hands over the
secret context (bytes, through the pipe: nothing on disk); EOF on stdin ends the worker. Only this
package's own processes are on either end of the pipes.
"""

from __future__ import annotations

import numbers
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence

from fedicd.errors import ConfigError

# the module a shared-key CKKS worker runs (its operations live beside the work they do)
_WORKER_MODULE = "fedicd.secure.ckks_workers"

__all__ = ["WorkerPool", "WorkerPoolError", "resolve_workers", "serve"]


def resolve_workers(workers: int) -> int:
    """0 → every core this process may use; k ≥ 1 → k; anything else raises :class:`ConfigError`."""
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:
        raise ConfigError(f"workers must be an integer >= 0 (0 = every core), got {workers!r}")
    if workers == 0:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(workers)


class WorkerPoolError(RuntimeError):
    """A worker process could not start or died (the caller then does the work in its own process)."""


class WorkerPool:
    """``workers`` processes running ``module``'s :func:`serve` loop; ``init`` (an ``(operation, arguments)``
    message, e.g. handing over a secret context) is sent to each first. One caller at a time."""

    def __init__(self, workers: int, *, init: tuple | None = None, module: str = _WORKER_MODULE):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # fedicd wherever it was found
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        self._procs = [subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env) for _ in range(workers)]
        self._lock = threading.Lock()
        try:
            if init is not None:
                self._run_all([init] * workers, one_each=True)
        except BaseException:
            self.close()
            raise

    def _call(self, proc: subprocess.Popen, message: tuple):
        try:
            pickle.dump(message, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            ok, result = pickle.load(proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            raise WorkerPoolError(f"a worker process died or could not start (exit code {proc.poll()})") from exc
        if not ok:
            raise result
        return result

    def _run_all(self, messages: Sequence[tuple], *, one_each: bool = False) -> list:
        """Results of ``messages`` in order; worker w takes messages w, w + workers, ... (or exactly message w)."""
        results: list = [None] * len(messages)
        errors: list[tuple[int, BaseException]] = []

        def work(w: int) -> None:
            for i in ([w] if one_each else range(w, len(messages), len(self._procs))):
                try:
                    results[i] = self._call(self._procs[w], messages[i])
                except BaseException as exc:  # re-raised below, in the caller's thread
                    errors.append((i, exc))
                    return

        threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(len(self._procs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise min(errors, key=lambda e: e[0])[1]
        return results

    def map(self, operation: str, tasks: Sequence[tuple]) -> list:
        """``operation`` (one of the worker module's) over the tasks, spread over the workers; results in order."""
        with self._lock:
            return self._run_all([(operation, t) for t in tasks])

    def close(self) -> None:
        for proc in self._procs:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()  # EOF: the worker exits
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


def serve(operations: dict) -> None:
    """A worker's loop: pickled ``(operation, arguments)`` in, ``(ok, result or exception)`` out, until EOF.
    ``operations[name](state, *arguments)`` returns ``(state, result)``; the state (e.g. SEAL objects made by an
    "init" message) stays in this process between messages."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints go to stderr, never into the channel
    source = sys.stdin.buffer
    state = None
    while True:
        try:
            operation, args = pickle.load(source)
        except EOFError:
            return
        try:
            state, result = operations[operation](state, *args)
            reply = (True, result)
        except Exception as exc:  # sent back and raised in the parent
            reply = (False, exc)
        pickle.dump(reply, channel, protocol=pickle.HIGHEST_PROTOCOL)
        channel.flush()
