"""Worker processes for a key holder's SEAL work: ``python -m fedicd.secure.ckks_workers``, spoken to over pipes.

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

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence

# the module a worker runs (its loop, ``serve``, lives beside the work it does)
_WORKER_MODULE = "fedicd.secure.ckks_workers"

__all__ = ["WorkerPool", "WorkerPoolError"]


class WorkerPoolError(RuntimeError):
    """A worker process could not start or died (the caller then does the work in its own process)."""


class WorkerPool:
    """``workers`` worker processes, each holding SEAL objects of one secret context; one caller at a time."""

    def __init__(self, secret: bytes, params: dict, workers: int):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # fedicd wherever it was found
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
        self._procs = [subprocess.Popen([sys.executable, "-m", _WORKER_MODULE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env) for _ in range(workers)]
        self._lock = threading.Lock()
        try:
            self._run_all([("init", (secret, params))] * workers, one_each=True)
        except BaseException:
            self.close()
            raise

    def _call(self, proc: subprocess.Popen, message: tuple):
        try:
            pickle.dump(message, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            proc.stdin.flush()
            ok, result = pickle.load(proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            raise WorkerPoolError(f"a CKKS worker process died or could not start (exit code {proc.poll()})") from exc
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
        """``operation`` ("encrypt" or "decrypt") over the tasks, spread over the workers; results in order."""
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
