"""Chunk vectors of notes for ``embed_texts(..., keep_chunks=True)``: collected, cached and assembled.

Chunk vectors are cached beside the note vectors, in an :class:`~fedicd.embedding.cache.EmbeddingCache` with
``chunk_rows=True`` under the same settings plus ``"rows": "chunks"``: one entry per note holding all of its
chunk rows behind one checksum (a corrupt or partial entry re-embeds the whole note, never serves part of it).
A note counts as cached only when its pooled vector AND its chunk rows (with the same chunk count) are cached;
otherwise it is embedded again and both caches are filled.

Memory: the result is one flat ``float32 [total_chunks, dim]`` array (:class:`fedicd.sequences.ChunkSequences`)
allocated once; embedded blocks are copied into it and released one by one, and cached rows are read into it shard
by shard, without one Python array per chunk.

Privacy
-------
Chunk vectors embed passages of notes and can be inverted like note vectors (docs/threat-models.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fedicd.embedding.cache import EmbeddingCache
from fedicd.embedding.cache_shards import row_starts
from fedicd.sequences import ChunkSequences

__all__ = ["ChunkStore", "chunks_not_cached", "assemble_sequences"]


class ChunkStore:
    """Chunk vectors embedded by one call, block by block (a flat array and the chunk count of each key)."""

    def __init__(self) -> None:
        self._blocks: list[tuple[list[str], np.ndarray, np.ndarray]] = []  # keys, chunks, row starts

    def add(self, keys: Sequence[str], chunks: np.ndarray, counts: Sequence[int]) -> None:
        """Keep one block: ``chunks`` holds ``counts[i]`` consecutive rows for ``keys[i]``."""
        self._blocks.append((list(keys), chunks, row_starts(counts)))

    def counts(self) -> dict[str, int]:
        """Chunk count of every key held."""
        return {key: int(starts[i + 1] - starts[i]) for keys, _, starts in self._blocks
                for i, key in enumerate(keys)}

    def drain_into(self, out: np.ndarray, first_rows: Mapping[str, int]) -> None:
        """Copy each held key's rows to ``out[first_rows[key]:]`` (keys not in ``first_rows`` are skipped), freeing
        every block once copied."""
        while self._blocks:
            keys, chunks, starts = self._blocks.pop(0)
            for i, key in enumerate(keys):
                if key in first_rows:
                    first = first_rows[key]
                    out[first : first + starts[i + 1] - starts[i]] = chunks[starts[i] : starts[i + 1]]
            del chunks


def chunks_not_cached(found: Mapping[str, tuple[np.ndarray, int]], chunk_cache: EmbeddingCache | None) -> list[str]:
    """Keys whose pooled vector was found but whose chunk rows are not cached with the same chunk count (rows
    with another count are discarded from the chunk cache, so that the re-embedded ones take their place)."""
    if chunk_cache is None:
        return list(found)
    stored = {key: chunk_cache.n_chunks(key) for key in found}
    clashing = [key for key, (_, count) in found.items() if stored[key] not in (None, count)]
    if clashing:
        chunk_cache.discard(clashing, "hold another chunk count than the cached note vectors")
    return [key for key, (_, count) in found.items() if stored[key] != count]


def assemble_sequences(keys: Sequence[str], counts: Mapping[str, int], dim: int, store: ChunkStore,
                       chunk_cache: EmbeddingCache | None,
                       reembed: Callable[[list[str]], ChunkStore]) -> ChunkSequences:
    """The chunk sequences of ``keys`` (input order; a repeated key gets its own copy of its rows).

    Parameters
    ----------
    keys:
        Text keys in input order.
    counts:
        Chunk count of every key.
    dim:
        Chunk vector dimension.
    store:
        Chunks embedded by this call (drained).
    chunk_cache:
        Where the other keys' rows are read from (verified).
    reembed:
        Embeds the keys whose cached rows failed their check at this read (and caches them); returns their chunks.

    Raises
    ------
    RuntimeError
        A re-embedded text came back with another chunk count than its cached pooled vector recorded.
    """
    lengths = np.fromiter((counts[k] for k in keys), dtype=np.int64, count=len(keys))
    offsets = row_starts(lengths)
    out = np.empty((int(offsets[-1]), dim), dtype=np.float32)
    first_rows: dict[str, int] = {}
    for position, key in enumerate(keys):
        first_rows.setdefault(key, int(offsets[position]))
    embedded = store.counts()
    _check_counts(embedded, counts)  # rows of another count would overwrite the next note's rows
    store.drain_into(out, first_rows)
    from_cache = [key for key in first_rows if key not in embedded]
    if from_cache:
        failed = chunk_cache.read_into(from_cache, out, [first_rows[k] for k in from_cache]) if chunk_cache else \
            from_cache
        if failed:
            _fill_reembedded(out, first_rows, counts, reembed(failed))
    for position, key in enumerate(keys):  # repeated texts: copy the first occurrence's rows
        start = int(offsets[position])
        if start != first_rows[key]:
            out[start : start + lengths[position]] = out[first_rows[key] : first_rows[key] + lengths[position]]
    return ChunkSequences(out, offsets)


def _check_counts(embedded: Mapping[str, int], counts: Mapping[str, int]) -> None:
    changed = {k: c for k, c in embedded.items() if k in counts and c != counts[k]}
    if changed:
        raise RuntimeError(f"{len(changed)} texts were re-embedded with another chunk count than their cached note "
                           "vectors record (the tokenizer changed under the same model fingerprint?); delete the "
                           "embedding cache directory (cache_dir) and embed again")


def _fill_reembedded(out: np.ndarray, first_rows: Mapping[str, int], counts: Mapping[str, int],
                     store: ChunkStore) -> None:
    _check_counts(store.counts(), counts)
    store.drain_into(out, first_rows)
