"""On-disk cache of note vectors, keyed by settings and text hash, checked on every read.

Layout::

    cache_dir/<settings-hash>/meta.json            settings that produced the vectors
    cache_dir/<settings-hash>/shard-<id>.npy       float32 [n, dim]
    cache_dir/<settings-hash>/shard-<id>.keys.json keys, chunk counts and one checksum per row

Shards are append-only. Each file is written to a temporary name, synced and
renamed, and the ``.keys.json`` file is written last, so it marks a complete
shard: a crash mid-write leaves at most an orphan ``.npy`` that is ignored.
Vectors read back are bit-identical to those written.

Integrity: every row carries a blake2b checksum over its key, chunk count and
vector (:mod:`fedicd.embedding.cache_shards`), checked before the vector is
served. A row that fails is discarded (its key nulled in the index) and its
note re-embedded; a shard whose files are unreadable, truncated or garbled is
removed and its notes re-embedded; a shard written without checksums by an
older fedicd is unverifiable and treated the same way. Each case logs a
WARNING naming the file, and lands in :attr:`EmbeddingCache.problems`.

Chunk rows: with ``chunk_rows=True`` the cache stores every chunk vector of a
note instead of one vector (``settings`` gain ``"rows": "chunks"``, so these
live in their own directory): key ``i`` of a shard owns ``n_chunks[i]``
consecutive rows and one checksum covers them all, so a note's chunks are
served whole or discarded whole (never a note with missing chunks).

Privacy
-------
The cache holds note embeddings and sha256 hashes of note texts. A hash of a
short or guessable note can be confirmed by hashing candidates: store the
cache with the same protection as the notes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedicd.embedding.cache_shards import (
    ShardError,
    ShardRecord,
    open_vectors,
    row_digest,
    row_starts,
    write_atomic,
    write_shard,
)
from fedicd.errors import ConfigError, ShapeError

__all__ = ["CORRUPT", "UNVERIFIED", "EmbeddingCache", "settings_hash", "text_key"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # part of the settings hash: bumping it orphans every cache silently, so the shard
# format (cache_shards.SHARD_FORMAT) is versioned inside each record instead.
CORRUPT, UNVERIFIED = "corrupt", "unverified"  # why a cached vector was discarded


def text_key(text: str) -> str:
    """sha256 hex digest of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings``."""
    blob = json.dumps({**settings, "format_version": _FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Append-only, checksummed vector store for one combination of model and settings.

    Parameters
    ----------
    root:
        Cache directory shared by all settings (created if missing).
    settings:
        JSON-serialisable settings; their hash names the subdirectory.
    chunk_rows:
        Store each key's ``n_chunks`` chunk vectors (``[n_chunks, dim]``) instead of one vector; adds
        ``"rows": "chunks"`` to ``settings``.

    Attributes
    ----------
    discarded:
        Text key -> ``"corrupt"`` or ``"unverified"`` for every cached vector this
        object refused to serve; the caller re-embeds those texts.
    problems:
        One line per cache file discarded or repaired, naming it (also logged as WARNING).

    Raises
    ------
    ConfigError
        ``root`` cannot be created (a file is in the way, or no permission).
    """

    def __init__(self, root: str | Path, settings: Mapping[str, Any], *, chunk_rows: bool = False) -> None:
        self.chunk_rows = chunk_rows
        self.settings = {**settings, "rows": "chunks"} if chunk_rows else dict(settings)
        self.key = settings_hash(self.settings)
        self.path = Path(root).expanduser() / self.key
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cache_dir={str(root)!r}: cannot create {self.path} ({err.strerror or err}); "
                              "set cache_dir to a writable directory") from err
        self._index: dict[str, tuple[str, int, int]] = {}  # text key -> (shard, item in shard, chunks)
        self._records: dict[str, ShardRecord] = {}
        self._starts: dict[str, np.ndarray] = {}  # shard -> first row of each item (+ the row count)
        self.discarded: dict[str, str] = {}
        self.problems: list[str] = []
        self._writable = self._write_meta()
        legacy: list[tuple[str, ShardRecord]] = []
        for keys_file in sorted(self.path.glob("shard-*.keys.json")):
            self._load_shard(keys_file.name.removesuffix(".keys.json"), legacy)
        if legacy:
            self._discard_legacy(legacy)

    def _write_meta(self) -> bool:
        """Write ``meta.json`` unless a valid one exists; False when the directory is read-only."""
        meta = self.path / "meta.json"
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("settings_hash") == self.key:
                return True
        except (OSError, ValueError, AttributeError):
            pass  # missing or garbled: (re)write it
        try:
            write_atomic(meta, json.dumps({"settings_hash": self.key, "settings": self.settings},
                                          indent=2, sort_keys=True).encode())
        except OSError as err:
            self._warn(f"embedding cache {self.path} is not writable ({err.strerror or err}); cached vectors "
                       "are read, but new ones are not stored")
            return False
        return True

    def _load_shard(self, shard: str, legacy: list[tuple[str, ShardRecord]]) -> None:
        record = None
        try:
            record = ShardRecord.read(self.path / f"{shard}.keys.json")
            if record.row_digests is None:
                legacy.append((shard, record))
                return
            starts = self._row_starts(record)
            open_vectors(self.path / f"{shard}.npy", record, int(starts[-1]))
        except ShardError as err:
            self._discard_shard(shard, str(err), record)
            return
        self._register(shard, record, starts, replace=False)

    def _row_starts(self, record: ShardRecord) -> np.ndarray:
        return row_starts(record.n_chunks if self.chunk_rows else [1] * len(record.keys))

    def _register(self, shard: str, record: ShardRecord, starts: np.ndarray, *, replace: bool) -> None:
        self._records[shard], self._starts[shard] = record, starts
        for item, (key, count) in enumerate(zip(record.keys, record.n_chunks, strict=True)):
            if key is not None and (replace or key not in self._index):
                self._index[key] = (shard, item, count)

    def _warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.problems.append(message)

    def _discard_shard(self, shard: str, reason: str, record: ShardRecord | None) -> None:
        keys = [k for k in record.keys if k is not None] if record is not None else []
        count = f"{len(keys)} vectors" if record is not None else "its vectors"
        self._warn(f"embedding cache file {reason}; removing cache shard {shard} and re-embedding {count}")
        self._forget(keys, CORRUPT)
        self._remove(shard)

    def _discard_legacy(self, legacy: list[tuple[str, ShardRecord]]) -> None:
        keys = [k for _, record in legacy for k in record.keys if k is not None]
        self._warn(f"embedding cache {self.path}: {len(legacy)} shard(s) holding {len(keys)} vectors were written "
                   "without checksums by an older fedicd and cannot be verified; re-embedding those notes and "
                   "removing the old shards")
        self._forget(keys, UNVERIFIED)
        for shard, _ in legacy:
            self._remove(shard)

    def _forget(self, keys: Sequence[str], why: str) -> None:
        for key in keys:
            self._index.pop(key, None)
            self.discarded.setdefault(key, why)

    def _remove(self, shard: str) -> None:
        self._records.pop(shard, None)
        self._starts.pop(shard, None)
        try:  # the index first: without it the vectors file is an ignored orphan
            (self.path / f"{shard}.keys.json").unlink(missing_ok=True)
            (self.path / f"{shard}.npy").unlink(missing_ok=True)
        except OSError as err:
            self._warn(f"could not remove {self.path / shard}.npy ({err.strerror or err}); "
                       f"delete {self.path} by hand")

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def n_chunks(self, key: str) -> int | None:
        """The chunk count stored with ``key`` (no read, no check), or None when it is not cached."""
        entry = self._index.get(key)
        return entry[2] if entry is not None else None

    def lookup(self, keys: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
        """Verified vectors and chunk counts of the cached ``keys`` (others are left out).

        Each row's checksum is checked before it is returned; rows that fail,
        and rows of a shard that became unreadable, are discarded and recorded
        in :attr:`discarded`, so the caller re-embeds them. With ``chunk_rows``
        the vector is the key's ``[n_chunks, dim]`` chunk vectors.
        """
        hits: dict[str, tuple[np.ndarray, int]] = {}
        for shard, items in self._by_shard(dict.fromkeys(keys)).items():
            for key, block, count in self._read_verified(shard, items):
                hits[key] = (block if self.chunk_rows else block[0], count)
        return hits

    def read_into(self, keys: Sequence[str], out: np.ndarray, first_rows: Sequence[int]) -> list[str]:
        """Write the verified rows of each key ``keys[i]`` to ``out[first_rows[i]:]``; return the keys not served.

        For large reads of chunk rows: no per-key arrays are kept. A key not cached, or whose rows fail their
        checksum (then discarded as in :meth:`lookup`), is returned and its rows of ``out`` are left as they were.
        """
        dest = dict(zip(keys, first_rows, strict=True))
        served: set[str] = set()
        for shard, items in self._by_shard(dest).items():
            for key, block, _ in self._read_verified(shard, items):
                out[dest[key] : dest[key] + len(block)] = block
                served.add(key)
        return [key for key in dest if key not in served]

    def _by_shard(self, keys: Mapping[str, object]) -> dict[str, list[tuple[str, int]]]:
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for key in keys:
            if key in self._index:
                shard, item, _ = self._index[key]
                by_shard.setdefault(shard, []).append((key, item))
        return by_shard

    def _read_verified(self, shard: str, items: list[tuple[str, int]]) -> list[tuple[str, np.ndarray, int]]:
        """``(key, rows [height, dim], n_chunks)`` of the items whose checksum holds (copies, not mapped)."""
        record, starts = self._records[shard], self._starts[shard]
        try:
            data = open_vectors(self.path / f"{shard}.npy", record, int(starts[-1]))
        except ShardError as err:
            self._discard_shard(shard, str(err), record)
            return []
        firsts = np.array([starts[item] for _, item in items], dtype=np.int64)
        heights = np.array([starts[item + 1] - starts[item] for _, item in items], dtype=np.int64)
        block = np.array(data[_spans(firsts, heights)], dtype=np.float32)  # a copy: the mapping is closed below
        del data
        good, bad, at = [], [], 0
        for (key, item), height in zip(items, heights, strict=True):
            rows = block[at : at + height]
            at += height
            if row_digest(key, record.n_chunks[item], rows) == record.row_digests[item]:
                good.append((key, rows, record.n_chunks[item]))
            else:
                bad.append(item)
        if bad:
            self._drop_rows(shard, record, bad)
        return good

    def discard(self, keys: Sequence[str], reason: str) -> None:
        """Stop serving ``keys`` (their rows are nulled on disk), e.g. chunk rows whose count disagrees with the
        note vector's; logs one WARNING per shard giving ``reason``."""
        for shard, items in self._by_shard(dict.fromkeys(keys)).items():
            self._drop_rows(shard, self._records[shard], [item for _, item in items], reason)

    def _drop_rows(self, shard: str, record: ShardRecord, rows: list[int],
                   reason: str = "fail their checksum (the file changed after it was written)") -> None:
        self._warn(f"embedding cache file {self.path / shard}.npy: {len(rows)} of {len(record.keys)} stored "
                   f"vectors {reason}; discarding them and re-embedding those notes")
        self._forget([record.keys[r] for r in rows if record.keys[r] is not None], CORRUPT)
        for row in rows:
            record.keys[row] = None
        if all(key is None for key in record.keys):
            self._remove(shard)
            return
        try:
            write_atomic(self.path / f"{shard}.keys.json", record.to_json())
        except OSError as err:
            self._warn(f"could not update {self.path / shard}.keys.json ({err.strerror or err}); the bad rows "
                       f"will be detected again; delete {self.path} to rebuild the cache")

    def add(self, keys: Sequence[str], vectors: np.ndarray, n_chunks: Sequence[int], *,
            replace: bool = False) -> None:
        """Append one shard; keys already cached are skipped unless ``replace``.

        With ``chunk_rows``, ``vectors`` holds ``n_chunks[i]`` consecutive rows per key (``[sum(n_chunks), dim]``).
        ``replace`` stores the keys again and serves the new rows from now on (the older rows stay on disk; at the
        next load the shard read first wins, so use it only for rows that are bit-identical or better).
        A write that fails (disk full, read-only directory) logs one WARNING and
        turns caching off for this object; the vectors themselves are unaffected.
        """
        starts = row_starts(n_chunks if self.chunk_rows else [1] * len(n_chunks))
        if len(keys) != len(n_chunks) or vectors.ndim != 2 or len(vectors) != starts[-1]:
            raise ShapeError(f"{len(keys)} keys, vectors {vectors.shape} and {len(n_chunks)} chunk counts differ")
        fresh = [i for i, key in enumerate(keys) if replace or key not in self._index]
        if not fresh or not self._writable:
            return
        rows = _spans(starts[fresh], starts[np.array(fresh) + 1] - starts[fresh])
        try:
            shard, record = write_shard(self.path, [keys[i] for i in fresh], vectors[rows],
                                        [n_chunks[i] for i in fresh], chunk_rows=self.chunk_rows)
        except OSError as err:
            self._writable = False
            self._warn(f"cannot write to embedding cache {self.path} ({err.strerror or err}); continuing "
                       "without caching: this run's vectors are correct but will not be reused")
            return
        self._register(shard, record, self._row_starts(record), replace=True)
        logger.debug("cached %d vectors in %s/%s", len(fresh), self.path, shard)


def _spans(firsts: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Row numbers ``firsts[k] + j`` for ``j < heights[k]``, span by span, in order."""
    heights = np.asarray(heights, dtype=np.int64)
    if len(heights) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(heights)
    return np.repeat(np.asarray(firsts, dtype=np.int64) - (ends - heights), heights) + np.arange(int(ends[-1]))
