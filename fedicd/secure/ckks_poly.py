"""Ciphertext polynomials as NumPy arrays: their bytes on the wire, and the uniform c1 = a from a seed.

A fresh symmetric CKKS ciphertext is (c0, c1) = (m + e − a·s, a) with a uniformly random (NTT form, one
residue polynomial per data prime q_i). Only c0 travels: a client draws a 32-byte seed, and ciphertext j
uses a_j = :func:`expand_seed` (seed, j), which anyone can recompute. The server adds the c0 of the
clients' updates coefficient-wise mod q_i (:func:`add_rows`) and forwards the seeds; a key holder
expands every seed and adds the a_k to decrypt the sum (c0 + Σ a_k·s = Σ (m_k + e_k)).

Bytes: a residue mod q_i is written little-endian in ⌈bits(q_i)/8⌉ bytes (6 for the default 48-bit
prime, i.e. the entropy of a uniform residue), residues of prime 0 first.

a_j from the seed: AES-256 in counter mode keyed by the seed, read as little-endian 64-bit words
masked to bits(q_i) bits; rejection sampling keeps a_j exactly uniform mod q_i (see
:func:`expand_seed`; with the default prime a word is rejected with probability 2^-34). AES-CTR is
the expander of Kyber's "90s" variant; SEAL's own seeded ciphertexts use BLAKE2 or SHAKE instead,
which only changes speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["SEED_BYTES", "add_rows", "expand_seed", "out_of_range", "pack_rows", "reduce_rows", "residue_widths",
           "row_bytes", "unpack_rows"]

SEED_BYTES = 32


def residue_widths(moduli: Sequence[int]) -> tuple[int, ...]:
    """Bytes per residue of each data prime on the wire: ⌈bits(q_i)/8⌉."""
    return tuple(-(-int(q).bit_length() // 8) for q in moduli)


def _void(width: int) -> np.dtype:
    """The first ``width`` bytes of a little-endian uint64, as one opaque item (a fast strided byte copy)."""
    return np.dtype({"names": ["v"], "formats": [f"V{width}"], "offsets": [0], "itemsize": 8})


def pack_rows(rows: np.ndarray, moduli: Sequence[int], n: int) -> bytes:
    """Residues (rows × (primes·N) uint64, each < its prime) → wire bytes, row after row."""
    rows = np.ascontiguousarray(rows, dtype="<u8").reshape(-1, len(moduli), n)
    parts = [np.ascontiguousarray(rows[:, i, :].view(_void(w))["v"]).view(np.uint8).reshape(rows.shape[0], w * n)
             for i, w in enumerate(residue_widths(moduli))]
    return (parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)).tobytes()


def row_bytes(moduli: Sequence[int], n: int) -> int:
    """Wire bytes of one ciphertext's c0."""
    return n * sum(residue_widths(moduli))


def unpack_rows(buf: bytes | memoryview, first: int, count: int, moduli: Sequence[int], n: int) -> np.ndarray:
    """Rows ``first`` .. ``first+count`` of wire bytes → count × (primes·N) uint64 (not range-checked)."""
    out = np.empty((count, len(moduli) * n), dtype=np.uint64)
    size, offset = row_bytes(moduli, n), 0
    for i, width in enumerate(residue_widths(moduli)):
        start = first * size + offset
        mask = np.uint64((1 << (8 * width)) - 1)
        # one strided 8-byte read per residue, masked to its width, for the rows with 8 bytes after every residue;
        # the last few residues of the buffer have fewer: their rows are copied into zero-padded words instead
        room = len(buf) - start - (n - 1) * width - 8
        whole = min(count, room // size + 1) if room >= 0 else 0
        if whole:
            view = np.ndarray((whole, n), dtype="<u8", buffer=buf, offset=start, strides=(size, width))
            np.bitwise_and(view, mask, out=out[:whole, i * n:(i + 1) * n])
        for r in range(whole, count):
            padded = np.zeros((n, 8), np.uint8)
            padded[:, :width] = np.frombuffer(buf, np.uint8, n * width, start + r * size).reshape(n, width)
            out[r, i * n:(i + 1) * n] = padded.view("<u8").ravel()
        offset += width * n
    return out


def add_rows(acc: np.ndarray, rows: np.ndarray) -> None:
    """acc += rows (no reduction: up to 2^64 / max q_i ≥ 16 rows may be added before :func:`reduce_rows`)."""
    np.add(acc, rows, out=acc)


def reduce_rows(acc: np.ndarray, moduli: Sequence[int], n: int) -> np.ndarray:
    """acc mod q_i, prime by prime (acc: rows × (primes·N))."""
    q = np.repeat(np.asarray(moduli, dtype=np.uint64), n)
    return np.remainder(acc, q, out=acc)


def out_of_range(rows: np.ndarray, moduli: Sequence[int], n: int) -> np.ndarray:
    """Per row: whether any residue is ≥ its prime (bytes that are no c0 of this context)."""
    r = rows.reshape(rows.shape[0], len(moduli), n)
    return np.any(r.max(axis=2) >= np.asarray(moduli, dtype=np.uint64), axis=1)


def _stream(seed: bytes, prime: int, domain: int, block: int, n_words: int) -> np.ndarray:
    """``n_words`` little-endian 64-bit words of AES-256-CTR(key = seed) from counter block
    (prime: 4 bytes, domain: 4 bytes, block: 8 bytes), big-endian."""
    counter = prime.to_bytes(4, "big") + domain.to_bytes(4, "big") + block.to_bytes(8, "big")
    out = np.empty(8 * n_words + 16, dtype=np.uint8)
    Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor().update_into(np.zeros(8 * n_words, np.uint8), out)
    return out[:8 * n_words].view("<u8")


def expand_seed(seed: bytes, first: int, count: int, moduli: Sequence[int], n: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """a_j for ciphertexts j = first .. first+count of the update seeded by ``seed``: count × (primes·N) uint64.

    Residues of ciphertext j mod q_i: the N words of key-stream blocks j·N/2 .. (j+1)·N/2 of (prime i,
    domain 0), masked to bits(q_i) bits, when all lie below q_i (so ranges of ciphertexts are one
    AES call); otherwise the first N such words of the stream (prime i, domain 1, block j·2^32).
    Either way a_j is exactly uniform.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a seed has {SEED_BYTES} bytes, got {len(seed)}")
    out = np.empty((count, len(moduli) * n), dtype=np.uint64) if out is None else out
    for i, q in enumerate(moduli):
        mask = np.uint64((1 << int(q).bit_length()) - 1)
        part = out[:, i * n:(i + 1) * n]
        np.bitwise_and(_stream(seed, i, 0, first * n // 2, count * n).reshape(count, n), mask, out=part)
        for r in np.flatnonzero(part.max(axis=1) >= q):  # a word at or above q: this row from the second stream
            part[r] = _rejection_sample(seed, i, first + int(r), int(q), n, mask)
    return out


def _rejection_sample(seed: bytes, prime: int, index: int, q: int, n: int, mask: np.uint64) -> np.ndarray:
    """The first n words below q of the (prime, domain 1, block index·2^32) stream (the rare path)."""
    words = 2 * n
    while True:
        kept = _stream(seed, prime, 1, index << 32, words) & mask
        kept = kept[kept < q]
        if kept.size >= n:
            return kept[:n]
        words *= 2
