"""On-disk cache of note vectors, keyed by settings and text hash.

Layout::

    cache_dir/<settings-hash>/meta.json            settings that produced the vectors
    cache_dir/<settings-hash>/shard-<id>.npy       float32 [n, dim]
    cache_dir/<settings-hash>/shard-<id>.keys.json {"keys": [sha256(text)...], "n_chunks": [...]}

Shards are append-only. Each file is written to a temporary name, synced and
renamed, and the ``.keys.json`` file is written last, so it marks a complete
shard: a crash mid-write leaves at most an orphan ``.npy`` that is ignored.
Vectors read back are bit-identical to those written.

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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedicd.errors import DataFormatError, ShapeError

__all__ = ["EmbeddingCache", "settings_hash", "text_key"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def text_key(text: str) -> str:
    """sha256 hex digest of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_hash(settings: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings``."""
    blob = json.dumps({**settings, "format_version": _FORMAT_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _npy_bytes(array: np.ndarray) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class EmbeddingCache:
    """Append-only vector store for one combination of model and settings.

    Parameters
    ----------
    root:
        Cache directory shared by all settings.
    settings:
        JSON-serialisable settings; their hash names the subdirectory.
    """

    def __init__(self, root: str | Path, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.key = settings_hash(self.settings)
        self.path = Path(root).expanduser() / self.key
        self.path.mkdir(parents=True, exist_ok=True)
        meta = self.path / "meta.json"
        if not meta.exists():
            _write_atomic(meta, json.dumps({"settings_hash": self.key, "settings": self.settings},
                                           indent=2, sort_keys=True).encode())
        self._index: dict[str, tuple[str, int, int]] = {}
        for keys_file in sorted(self.path.glob("shard-*.keys.json")):
            self._read_keys(keys_file)

    def _read_keys(self, keys_file: Path) -> None:
        shard = keys_file.name.removesuffix(".keys.json")
        try:
            record = json.loads(keys_file.read_text(encoding="utf-8"))
            keys, counts = record["keys"], record["n_chunks"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"corrupt cache shard index: {err}", source=str(keys_file)) from err
        if not (self.path / f"{shard}.npy").is_file() or len(keys) != len(counts):
            raise DataFormatError("cache shard index without matching vectors", source=str(keys_file))
        for row, (key, count) in enumerate(zip(keys, counts, strict=True)):
            self._index.setdefault(key, (shard, row, int(count)))

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors and chunk counts of cached ``keys`` (all must be present), in order."""
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            shard, row, _ = self._index[key]
            by_shard.setdefault(shard, []).append((pos, row))
        counts = np.array([self._index[key][2] for key in keys], dtype=np.int64)
        vectors: np.ndarray | None = None
        for shard, pairs in by_shard.items():
            data = np.load(self.path / f"{shard}.npy", mmap_mode="r", allow_pickle=False)
            if vectors is None:
                vectors = np.empty((len(keys), data.shape[1]), dtype=np.float32)
            positions, rows = (np.array(column) for column in zip(*pairs, strict=True))
            vectors[positions] = data[rows]
        return (vectors if vectors is not None else np.empty((0, 0), np.float32)), counts

    def add(self, keys: Sequence[str], vectors: np.ndarray, n_chunks: Sequence[int]) -> None:
        """Append one shard; keys already cached are skipped."""
        if len(keys) != len(vectors) or len(keys) != len(n_chunks) or vectors.ndim != 2:
            raise ShapeError(f"{len(keys)} keys, vectors {vectors.shape} and {len(n_chunks)} chunk counts differ")
        fresh = [i for i, key in enumerate(keys) if key not in self._index]
        if not fresh:
            return
        new_keys = [keys[i] for i in fresh]
        shard = "shard-" + hashlib.sha256("\n".join(new_keys).encode()).hexdigest()[:16]
        counts = [int(n_chunks[i]) for i in fresh]
        _write_atomic(self.path / f"{shard}.npy", _npy_bytes(np.ascontiguousarray(vectors[fresh], np.float32)))
        _write_atomic(self.path / f"{shard}.keys.json", json.dumps({"keys": new_keys, "n_chunks": counts}).encode())
        for row, (key, count) in enumerate(zip(new_keys, counts, strict=True)):
            self._index[key] = (shard, row, count)
        logger.debug("cached %d vectors in %s/%s", len(new_keys), self.path, shard)
