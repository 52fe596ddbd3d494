"""Spread per-ciphertext work (encrypt, partial decrypt) over processes: ``secure_aggregation.workers``.

OpenFHE parallelises inside one operation over the modulus towers only (two here), so a 950k-value update's
~120 ciphertexts are the unit of parallel work. The workers are fresh interpreters started with ``-m``
(:class:`fedicd.secure.ckks_procs.WorkerPool`, as for shared-key CKKS), not :mod:`multiprocessing`, whose spawn
start method would run a user's unguarded script again in every worker; each builds its own crypto context, and
keys travel to them as bytes through the pipes. A pool that cannot start leaves the work to this process.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Sequence

from fedicd.secure.ckks_procs import WorkerPool, WorkerPoolError, resolve_workers

__all__ = ["map_chunks", "resolve_workers"]

log = logging.getLogger(__name__)

_MODULE = "fedicd.secure.threshold.worker"
_POOLS: dict[int, WorkerPool] = {}
_LOCK = threading.Lock()
_FAILED: list[str] = []  # why the worker processes failed here once (then this process stops trying)


def _pool(workers: int) -> WorkerPool:
    with _LOCK:
        if workers not in _POOLS:
            _POOLS[workers] = WorkerPool(workers, module=_MODULE)
        return _POOLS[workers]


def _close_pools() -> None:
    with _LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


atexit.register(_close_pools)


def map_chunks(fn: Callable, items: Sequence, args: tuple, workers: int) -> list:
    """``[fn(item, *args) for item in items]``, over ``workers`` processes when that is more than one."""
    workers = min(resolve_workers(workers), len(items))
    if workers <= 1 or _FAILED:
        return [fn(item, *args) for item in items]
    try:
        return _pool(workers).map("call", [(fn, item, args) for item in items])
    except (WorkerPoolError, OSError) as exc:
        log.warning("threshold-CKKS worker processes failed (%s: %s); this process works alone from now on",
                    type(exc).__name__, exc)
        _FAILED.append(str(exc))
        _close_pools()
        return [fn(item, *args) for item in items]
