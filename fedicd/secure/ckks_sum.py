"""The server's addition of seeded ciphertexts: check each c0's digest and range, add mod q_i, in threads.

The server never holds c1 (each update's a is a seed it forwards, see :mod:`fedicd.secure.ckks_poly`):
adding updates is adding their c0 residues coefficient-wise modulo each data prime. The work is split
into ranges of ciphertexts, one thread each (NumPy and hashlib release the GIL); within a range every
update's bytes are checked against their SHA-256 digests and every residue against its prime before it
is added, so a bad update is named (:class:`CiphertextError` with ``update`` set) instead of being
added. Nothing is written to disk and SEAL is not involved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.ckks_poly import out_of_range, pack_rows, reduce_rows, row_bytes, unpack_rows
from fedicd.secure.ckks_workers import chunks, thread_map

__all__ = ["add_bodies", "check_bodies"]

Body = tuple[bytes, Sequence[bytes]]  # (c0 wire bytes of every ciphertext, their digests)


def _range_errors(bodies: Sequence[Body], first: int, count: int, moduli: Sequence[int], n: int,
                  acc: np.ndarray | None) -> list[tuple[int, int, str]]:
    """Check (and, with ``acc``, add) ciphertexts first..first+count of every body; the problems found."""
    size, errors, added = row_bytes(moduli, n), [], 0
    limit = (2**64 - 1) // max(moduli) - 1  # additions before a reduction
    for i, (body, digests) in enumerate(bodies):
        view = memoryview(body)
        bad = next((j for j in range(first, first + count)
                    if hashlib.sha256(view[j * size:(j + 1) * size]).digest() != digests[j]), None)
        if bad is not None:
            errors.append((i, bad, "bytes do not match their SHA-256 digest (corrupted)"))
            continue
        rows = unpack_rows(body, first, count, moduli, n)
        high = np.flatnonzero(out_of_range(rows, moduli, n))
        if high.size:
            errors.append((i, first + int(high[0]), "a residue is not below its data prime (corrupted or forged, "
                                                    "or made under other parameters)"))
            continue
        if acc is not None:
            np.add(acc, rows, out=acc)
            added += 1
            if added % limit == 0:
                reduce_rows(acc, moduli, n)
    return errors


def _raise_first(errors: list[tuple[int, int, str]]) -> None:
    if errors:
        i, j, message = min(errors)
        raise CiphertextError(f"update {i}, ciphertext {j}: {message}", update=i)


def check_bodies(bodies: Sequence[Body], n_rows: int, moduli: Sequence[int], n: int, workers: int) -> None:
    """Digests and residue ranges of every update; the first problem raises :class:`CiphertextError`."""
    found = thread_map(lambda r: _range_errors(bodies, r[0], r[1], moduli, n, None), chunks(n_rows, workers), workers)
    _raise_first([e for errors in found for e in errors])


def add_bodies(bodies: Sequence[Body], n_rows: int, moduli: Sequence[int], n: int,
               workers: int) -> tuple[bytes, tuple[bytes, ...]]:
    """Check and add the updates' c0 (mod q_i): the sum's wire bytes and per-ciphertext digests."""
    size = row_bytes(moduli, n)

    def task(span: tuple[int, int]) -> tuple[list, bytes, list[bytes]]:
        acc = np.zeros((span[1], len(moduli) * n), dtype=np.uint64)
        errors = _range_errors(bodies, span[0], span[1], moduli, n, acc)
        if errors:
            return errors, b"", []
        packed = pack_rows(reduce_rows(acc, moduli, n), moduli, n)
        view = memoryview(packed)
        return [], packed, [hashlib.sha256(view[k:k + size]).digest() for k in range(0, len(packed), size)]

    parts = thread_map(task, chunks(n_rows, workers), workers)
    _raise_first([e for p in parts for e in p[0]])
    return b"".join(p[1] for p in parts), tuple(d for p in parts for d in p[2])
