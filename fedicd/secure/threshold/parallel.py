"""Spread per-ciphertext work (encrypt, partial decrypt) over processes: ``secure_aggregation.workers``.

OpenFHE parallelises inside one operation over the modulus towers only (two here), so a 950k-value update's
~120 ciphertexts are the unit of parallel work. Workers are spawned (not forked: OpenFHE's OpenMP runtime does
not survive a fork) and each builds its own crypto context; keys travel to them as bytes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

__all__ = ["map_chunks", "resolve_workers"]


def resolve_workers(workers: int) -> int:
    """``workers``, with 0 = every core this process may use."""
    return workers if workers > 0 else len(os.sched_getaffinity(0))


@functools.lru_cache(maxsize=2)
def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def map_chunks(fn: Callable, items: Sequence, args: tuple, workers: int) -> list:
    """``[fn(item, *args) for item in items]``, over ``workers`` processes when that is more than one."""
    workers = min(resolve_workers(workers), len(items))
    if workers <= 1:
        return [fn(item, *args) for item in items]
    return list(_pool(workers).map(functools.partial(_call, fn, args), items, chunksize=max(1, len(items) // (4 * workers))))


def _call(fn: Callable, args: tuple, item):
    return fn(item, *args)
