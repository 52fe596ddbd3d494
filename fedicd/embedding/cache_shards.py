"""One shard of the vector cache on disk: its index record, its checksums, its files.

A shard is ``shard-<id>.npy`` (float32 ``[n, dim]``) plus ``shard-<id>.keys.json``::

    {"format": 2, "digest": "blake2b-128", "dim": 384,
     "keys": [sha256(text) or null, ...], "n_chunks": [...], "row_digests": [...]}

``row_digests[i]`` is blake2b-128 over ``keys[i]``, ``n_chunks[i]`` and the
little-endian float32 bytes of row ``i``, so a changed vector, a changed count
or a key moved to another row all fail the check. A chunk shard (the chunk
vectors of notes, :class:`fedicd.embedding.cache.EmbeddingCache` with
``chunk_rows=True``) stores ``n_chunks[i]`` consecutive rows for key ``i``
(``[sum(n_chunks), dim]``), and ``row_digests[i]`` covers all of them, so a
note's chunks are served whole or not at all. A ``null`` key marks a row
discarded after it failed its check. Records without ``row_digests`` were
written by an older fedicd and cannot be verified.

Privacy
-------
Vectors of notes are patient data; this module reads and writes them as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

__all__ = ["SHARD_FORMAT", "ShardError", "ShardRecord", "open_vectors", "row_digest", "row_starts", "write_atomic",
           "write_shard"]

SHARD_FORMAT = 2
_DIGEST = "blake2b-128"


class ShardError(Exception):
    """A shard cannot be used; ``str(err)`` says why (internal: the cache turns it into a warning)."""


def row_digest(key: str, n_chunks: int, vector: np.ndarray) -> str:
    """blake2b-128 hex digest binding a text key, its chunk count and its vector bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{key}\0{int(n_chunks)}\0".encode())
    digest.update(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    return digest.hexdigest()


def write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary name, sync it, and rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ShardRecord:
    """The parsed ``.keys.json`` of one shard."""

    keys: list[str | None]
    n_chunks: list[int]
    row_digests: list[str] | None  # None: written without checksums (older fedicd)
    dim: int | None

    @classmethod
    def read(cls, path: Path) -> ShardRecord:
        """Parse and check a ``.keys.json`` file; raises :class:`ShardError` when garbled."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ShardError(f"{path}: index is unreadable ({err})") from err
        if not isinstance(raw, dict) or not isinstance(raw.get("keys"), list):
            raise ShardError(f"{path}: index has no 'keys' list")
        keys, counts, digests = raw["keys"], raw.get("n_chunks"), raw.get("row_digests")
        if not isinstance(counts, list) or len(counts) != len(keys):
            raise ShardError(f"{path}: index has {len(keys)} keys but n_chunks is not a list of that length")
        if not all(k is None or isinstance(k, str) for k in keys) or not all(_is_count(c) for c in counts):
            raise ShardError(f"{path}: index holds keys that are not strings or chunk counts that are not "
                             "positive integers")
        if digests is not None and (not isinstance(digests, list) or len(digests) != len(keys)
                                    or not all(isinstance(d, str) for d in digests)):
            raise ShardError(f"{path}: index has a row_digests field that is not one string per key")
        dim = raw.get("dim")
        if digests is not None and not _is_count(dim):
            raise ShardError(f"{path}: index has dim={dim!r}; expected a positive integer")
        return cls(keys=keys, n_chunks=[int(c) for c in counts], row_digests=digests, dim=dim)

    def to_json(self) -> bytes:
        """The record as written to disk."""
        return json.dumps({"format": SHARD_FORMAT, "digest": _DIGEST, "dim": self.dim, "keys": self.keys,
                           "n_chunks": self.n_chunks, "row_digests": self.row_digests}).encode()


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def row_starts(heights: Sequence[int]) -> np.ndarray:
    """First row of each key when key ``i`` owns ``heights[i]`` consecutive rows (``int64 [n_keys + 1]``)."""
    return np.concatenate([[0], np.cumsum(np.asarray(heights, dtype=np.int64))]).astype(np.int64)


def open_vectors(path: Path, record: ShardRecord, n_rows: int | None = None) -> np.ndarray:
    """Memory-map a shard's vectors, checking the header against its record (``n_rows`` rows, default one per
    key).

    Raises
    ------
    ShardError
        The file is missing, truncated, garbled, or holds another shape or dtype.
    """
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # numpy: "mmap length is greater than file size"...
        raise ShardError(f"{path}: vectors are unreadable ({err})") from err
    rows = len(record.keys) if n_rows is None else n_rows
    expected = (rows, record.dim) if record.dim is not None else (rows,)
    if data.dtype != np.float32 or data.ndim != 2 or data.shape[: len(expected)] != expected:
        raise ShardError(f"{path}: vectors are {data.dtype} {data.shape}; the index expects float32 {expected}")
    return data


def write_shard(directory: Path, keys: Sequence[str], vectors: np.ndarray, n_chunks: Sequence[int], *,
                chunk_rows: bool = False) -> tuple[str, ShardRecord]:
    """Write a new shard (vectors first, the index last); return its name and record.

    With ``chunk_rows`` key ``i`` owns ``n_chunks[i]`` consecutive rows of ``vectors`` (one digest over them).
    """
    shard = "shard-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    counts = [int(c) for c in n_chunks]
    starts = row_starts(counts if chunk_rows else [1] * len(counts))
    if starts[-1] != len(vectors):
        raise ValueError(f"{len(keys)} keys own {int(starts[-1])} rows but {len(vectors)} vectors were given")
    record = ShardRecord(keys=list(keys), n_chunks=counts, dim=int(vectors.shape[1]),
                         row_digests=[row_digest(k, c, vectors[starts[i]:starts[i + 1]])
                                      for i, (k, c) in enumerate(zip(keys, counts, strict=True))])
    buffer = BytesIO()
    np.save(buffer, vectors, allow_pickle=False)
    write_atomic(directory / f"{shard}.npy", buffer.getvalue())
    write_atomic(directory / f"{shard}.keys.json", record.to_json())
    return shard, record
