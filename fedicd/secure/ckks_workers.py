"""Parallel CKKS work: how many workers, and key holders' SEAL work spread over processes.

``workers`` (``secure_aggregation.workers``): 0 = every core this process may use
(``len(os.sched_getaffinity(0))``), 1 = in this thread, k = k workers.

SEAL's Python bindings hold the GIL (two threads encrypting take as long as one), so a key holder's
encryption and decryption run in worker processes (:mod:`fedicd.secure.ckks_procs`), each holding its
own SEAL objects made from the secret context (handed to them once, through a pipe; nothing on disk).
They stay up for later calls: one pool per (context, parameters, workers), closed at exit. Where they
cannot start, the work is done in the calling process, with a warning.
The server's addition is NumPy and hashlib only, which release the GIL: it uses threads
(:func:`thread_map`).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tenseal as ts

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_poly import expand_seed, out_of_range, pack_rows, reduce_rows, row_bytes, unpack_rows
from fedicd.secure.ckks_procs import WorkerPool, WorkerPoolError, resolve_workers, serve
from fedicd.secure.ckks_seal import Seal

__all__ = ["SealRunner", "chunks", "decrypt_chunk", "encrypt_chunk", "resolve_workers", "runner_for", "seal_from_bytes",
           "thread_map"]

log = logging.getLogger(__name__)

_ROWS_PER_CHUNK = 128  # ciphertexts per task: bounded memory, enough tasks to balance the workers
_MAX_POOLS = 4


def chunks(n_rows: int, workers: int) -> list[tuple[int, int]]:
    """(first, count) ranges covering 0..n_rows: ≤ 128 rows each and, with several workers, as many per worker
    (at least 2) when there are enough rows."""
    n = -(-n_rows // _ROWS_PER_CHUNK)
    if workers > 1:
        n = -(-max(n, 2 * workers) // workers) * workers
    n = max(1, min(n_rows, n))
    bounds = np.linspace(0, n_rows, n + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def thread_map(fn: Callable, items: Iterable, workers: int) -> list:
    """``[fn(x) for x in items]``, over ``workers`` threads when more than one."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


# -- the SEAL work of one chunk of ciphertexts (in this process or a worker's) ------------------------
def encrypt_chunk(seal: Seal, reals: np.ndarray, seed: bytes, first: int) -> tuple[bytes, list[bytes]]:
    """Wire bytes of the c0 of ciphertexts first.. (rows of reals) and their SHA-256 digests."""
    body = pack_rows(seal.encrypt_rows(reals, seed, first), seal.moduli, seal.n)
    size = row_bytes(seal.moduli, seal.n)
    view = memoryview(body)
    return body, [hashlib.sha256(view[i:i + size]).digest() for i in range(0, len(body), size)]


def decrypt_chunk(seal: Seal, body: bytes, first: int, seeds: Sequence[bytes]) -> tuple[np.ndarray, float]:
    """Decrypt ciphertexts first.. of a sum (``body``: their c0 bytes) into rounded digits and the largest
    distance of a decoded value from its integer."""
    moduli, n = seal.moduli, seal.n
    count = len(body) // row_bytes(moduli, n)
    c0 = unpack_rows(body, 0, count, moduli, n)
    bad = np.flatnonzero(out_of_range(c0, moduli, n))
    if bad.size:
        raise CiphertextError(f"aggregate ciphertext {first + int(bad[0])}: a residue is not below its prime "
                              "(corrupted or forged)")
    a_sum, a = np.zeros_like(c0), np.empty_like(c0)
    safe = (2**64 - 1) // max(moduli) - 1  # additions before a reduction
    for k, seed in enumerate(seeds, start=1):
        np.add(a_sum, expand_seed(seed, first, count, moduli, n, out=a), out=a_sum)
        if k % safe == 0:
            reduce_rows(a_sum, moduli, n)
    reals = seal.decrypt_rows(c0, reduce_rows(a_sum, moduli, n))
    ints = np.rint(reals)
    return ints.astype(np.int64), float(np.abs(reals - ints).max())


def seal_from_bytes(secret: bytes, params: dict) -> Seal:
    """A worker's :class:`Seal`, from the serialised secret context and the parameters' dict."""
    return Seal(ts.context_from(secret), CkksParams(**params))


_POOLS: dict[tuple, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()
_NO_POOLS: list[str] = []  # why worker processes failed here once (then this process stops trying)


def _pool(secret: bytes, params: CkksParams, workers: int) -> WorkerPool:
    key = (hashlib.sha256(secret).digest(), params, workers)
    with _POOLS_LOCK:
        if key not in _POOLS:
            while len(_POOLS) >= _MAX_POOLS:
                _POOLS.pop(next(iter(_POOLS))).close()
            _POOLS[key] = WorkerPool(workers, init=("init", (secret, params.to_dict())))
        return _POOLS[key]


def _close_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.close()
        _POOLS.clear()


atexit.register(_close_pools)


class SealRunner:
    """A key holder's SEAL work for one secret context: in this process (1 worker) or over a process pool."""

    def __init__(self, context: ts.Context, params: CkksParams):
        self._context = weakref.ref(context)  # the runner is cached per context: no strong reference back to it
        self.params = params
        self.seal = Seal(context, params)
        self._secret: bytes | None = None

    def _map(self, local: Callable, operation: str, tasks: list[tuple], workers: int) -> list:
        if workers <= 1 or len(tasks) <= 1 or _NO_POOLS:
            return [local(self.seal, *t) for t in tasks]
        if self._secret is None:
            self._secret = self._context().serialize(save_public_key=False, save_secret_key=True,
                                                  save_galois_keys=False, save_relin_keys=False)
        try:
            pool = _pool(self._secret, self.params, workers)
            return pool.map(operation, [tuple(bytes(x) if isinstance(x, memoryview) else x for x in t) for t in tasks])
        except (WorkerPoolError, OSError) as exc:  # e.g. a worker could not start: work here, and say so once
            log.warning("CKKS worker processes failed (%s: %s); this process encrypts and decrypts alone from now on",
                        type(exc).__name__, exc)
            _NO_POOLS.append(str(exc))
            _close_pools()
            return [local(self.seal, *t) for t in tasks]

    def encrypt(self, reals: np.ndarray, seed: bytes, workers: int) -> tuple[bytes, tuple[bytes, ...]]:
        """Rows of reals → (c0 wire bytes of every ciphertext, their digests)."""
        tasks = [(reals[a:a + n], seed, a) for a, n in chunks(reals.shape[0], workers)]
        parts = self._map(encrypt_chunk, "encrypt", tasks, workers)
        return b"".join(p[0] for p in parts), tuple(d for p in parts for d in p[1])

    def decrypt(self, body: bytes | memoryview, n_rows: int, seeds: Sequence[bytes], workers: int) -> tuple[np.ndarray, float]:
        """c0 wire bytes of a sum and its seeds → (rounded digits, rows × N; largest distance from an integer)."""
        size = row_bytes(self.seal.moduli, self.seal.n)
        tasks = [(memoryview(body)[a * size:(a + n) * size], a, tuple(seeds)) for a, n in chunks(n_rows, workers)]
        parts = self._map(decrypt_chunk, "decrypt", tasks, workers)
        return np.concatenate([p[0] for p in parts]), max(p[1] for p in parts)


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def runner_for(context: ts.Context, params: CkksParams) -> SealRunner:
    """The (cached) :class:`SealRunner` of a secret context and its parameters."""
    runners = _RUNNERS.setdefault(context, {})
    if params not in runners:
        runners[params] = SealRunner(context, params)
    return runners[params]


def _init(_state, secret: bytes, params: dict):
    return seal_from_bytes(secret, params), None


if __name__ == "__main__":  # a worker process of ckks_procs.WorkerPool
    serve({"init": _init, "encrypt": lambda seal, *a: (seal, encrypt_chunk(seal, *a)),
           "decrypt": lambda seal, *a: (seal, decrypt_chunk(seal, *a))})
