"""``embed_texts``: notes in, one float32 vector per note out, cached on disk.

Each text is tokenized once, split into overlapping windows when it does not
fit the encoder (never silently truncated), the windows of a block of texts
are embedded longest first, and the window vectors are pooled back per text.
With a ``cache_dir``, texts whose sha256 is already stored under the same
settings are read back instead of embedded, and new vectors are appended
block by block, so an interrupted run resumes where it stopped.

With ``keep_chunks=True`` every text's chunk vectors are returned as well
(``EmbeddingResult.sequences``) and cached beside the note vectors
(:mod:`fedicd.embedding.chunk_cache`).

Privacy
-------
Reads raw note text and returns embeddings, which can be inverted into close
paraphrases of the notes; see ``attacks.generative`` and docs/threat-models.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedicd.embedding.cache import CORRUPT, EmbeddingCache, text_key
from fedicd.embedding.chunk_cache import ChunkStore, assemble_sequences, chunks_not_cached
from fedicd.embedding.chunking import chunk_spans, pool_chunks
from fedicd.embedding.config import EmbedConfig, EmbeddingResult
from fedicd.embedding.encoder import Encoder, load_encoder, resolve_dtype
from fedicd.embedding.language import check_language
from fedicd.embedding.models import (
    canonical_model_id,
    model_fingerprint,
    model_language,
    resolve_backend,
    resolve_model_dir,
)
from fedicd.errors import ConfigError, DataFormatError

__all__ = ["cache_settings", "embed_texts"]

logger = logging.getLogger(__name__)

_BLOCK_TEXTS = 1024  # texts per tokenize/embed/cache round; bounds memory and lost work


def _check_texts(texts: Sequence[object]) -> None:
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise DataFormatError(f"texts[{index}] is empty or whitespace only; drop it before embedding")


def cache_settings(config: EmbedConfig) -> dict[str, object]:
    """Everything that changes a vector, for the cache key (no weights loaded)."""
    model_dir = resolve_model_dir(config)
    backend = resolve_backend(config, model_dir)
    return {
        "model_id": canonical_model_id(config.model),
        "revision": config.revision,
        "model_fingerprint": model_fingerprint(model_dir),
        "backend": backend,
        "pooling": config.pooling if backend == "transformers" else "modules.json",
        "instruction": config.instruction,
        "max_tokens": config.max_tokens,
        "chunk_overlap": config.chunk_overlap,
        "chunk_pooling": config.chunk_pooling,
        "normalize": config.normalize,
        "dtype": str(resolve_dtype(config)).removeprefix("torch."),
    }


class _BlockProgress:
    """Turns finished chunks of one block into finished texts on a shared bar."""

    def __init__(self, bar: tqdm, n_texts: int, n_chunks: int) -> None:
        self.bar, self.n_texts, self.n_chunks, self.done, self.shown = bar, n_texts, max(n_chunks, 1), 0, 0

    def __call__(self, finished: int) -> None:
        self.done += finished
        target = self.done * self.n_texts // self.n_chunks
        self.bar.update(target - self.shown)
        self.shown = target


def _embed_block(
    encoder: Encoder, texts: list[str], config: EmbedConfig, bar: tqdm, keep_chunks: bool = False
) -> tuple[np.ndarray, list[int], int, np.ndarray | None]:
    """Vectors of ``texts``, chunks each text needed, chunks embedded, and (with ``keep_chunks``) the chunk
    vectors ``[sum(counts), dim]`` text by text (L2-normalised per chunk when ``config.normalize``)."""
    token_ids = encoder.tokenize(texts)
    spans = [chunk_spans(len(ids), encoder.window, config.chunk_overlap) for ids in token_ids]
    used = [s[:1] for s in spans] if config.chunk_pooling == "first" else spans
    chunks = [ids[a:b] for ids, text_spans in zip(token_ids, used, strict=True) for a, b in text_spans]
    chunk_vectors = encoder.encode_chunks(chunks, on_batch=_BlockProgress(bar, len(texts), len(chunks)))
    vectors = np.empty((len(texts), encoder.dim), dtype=np.float32)
    start = 0
    for row, text_spans in enumerate(used):
        lengths = [b - a for a, b in text_spans]
        vectors[row] = pool_chunks(chunk_vectors[start : start + len(lengths)], lengths, config.chunk_pooling)
        start += len(lengths)
    if config.normalize:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
    kept = _kept_chunks(chunk_vectors, config.normalize) if keep_chunks else None
    bad = int((~np.isfinite(vectors).all(axis=1)).sum()) + (int((~np.isfinite(kept)).any()) if keep_chunks else 0)
    if bad:  # never cache or return NaN/inf vectors (e.g. float16 overflow on a GPU)
        raise RuntimeError(f"encoder {encoder.model_id} ({encoder.dtype}) returned non-finite vectors for {bad} of "
                           f"{len(texts)} texts; set embedding.half_precision = false or use another model")
    return vectors, [len(s) for s in spans], len(chunks), kept


def _kept_chunks(chunk_vectors: np.ndarray, normalize: bool) -> np.ndarray:
    kept = np.array(chunk_vectors, dtype=np.float32)  # a copy: pooling read the encoder's own array
    if normalize:
        kept /= np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), np.float32(1e-12))
    return kept


def _log_summary(result: EmbeddingResult, config: EmbedConfig, window: int | None) -> None:
    n = len(result.vectors)
    logger.info("embedded %d texts with %s: %d from cache, %d re-embedded after failing the cache check "
                "(%d corrupt), %d needed chunking, %d chunks embedded", n, result.model_id, result.n_cached,
                result.n_reembedded, result.n_corrupt, result.n_chunked, result.n_chunks)
    if config.chunk_pooling == "first" and result.n_chunked:
        logger.warning("chunk_pooling='first' is the truncation baseline: %d of %d texts were cut to their "
                       "first chunk (%s content tokens)", result.n_chunked, n, window or "max_tokens")


_Table = dict[str, tuple[np.ndarray, int]]  # text key -> (vector, chunks the text needed)


def _load_to_fill(config: EmbedConfig, cache: EmbeddingCache | None, missing: dict[str, str],
                  chunk_cache: EmbeddingCache | None = None) -> Encoder:
    """Load the encoder; if that fails while discarded cache entries wait to be re-embedded, say so."""
    try:
        return load_encoder(config)
    except (OSError, ValueError) as err:
        for store in (cache, chunk_cache):
            lost = [k for k in missing if store is not None and k in store.discarded]
            if lost:
                raise RuntimeError(f"{len(lost)} cached vectors in {store.path} were discarded (see the warnings "
                                   f"above) and encoder {config.model!r} cannot be loaded to re-embed them: "
                                   f"{err}") from err
        raise


def _embed_missing(encoder: Encoder, texts: dict[str, str], config: EmbedConfig, cache: EmbeddingCache | None,
                   progress: bool, chunks: tuple[ChunkStore, EmbeddingCache | None] | None = None,
                   ) -> tuple[_Table, int]:
    """Embed ``texts`` (key -> text) block by block, appending each block to the cache; with ``chunks`` = (store,
    chunk cache) the chunk vectors are kept in the store and appended to the chunk cache too."""
    keys, table, n_chunks = list(texts), {}, 0
    with tqdm(total=len(keys), unit="text", desc="embedding", disable=not progress) as bar:
        for start in range(0, len(keys), _BLOCK_TEXTS):
            block = keys[start : start + _BLOCK_TEXTS]
            vectors, counts, embedded, kept = _embed_block(encoder, [texts[k] for k in block], config, bar,
                                                           keep_chunks=chunks is not None)
            if cache is not None:
                cache.add(block, vectors, counts)
            if chunks is not None:
                chunks[0].add(block, kept, counts)
                if chunks[1] is not None:
                    chunks[1].add(block, kept, counts)
            table.update((k, (vectors[i], counts[i])) for i, k in enumerate(block))
            n_chunks += embedded
    return table, n_chunks


def embed_texts(texts: Sequence[str], config: EmbedConfig = EmbedConfig(), *,  # noqa: B008 (frozen)
                cache_dir: str | Path | None = None, progress: bool = True,
                encoder: Encoder | None = None, keep_chunks: bool = False) -> EmbeddingResult:
    """Embed texts with a frozen encoder; long texts are chunked and pooled.

    Parameters
    ----------
    texts:
        Non-empty strings; an empty or whitespace-only one raises
        ``DataFormatError`` (a ``ValueError``) naming its index.
    config:
        Encoder and chunking settings.
    cache_dir:
        Directory of the vector cache (created if missing); ``None`` disables it.
        Cached vectors are returned bit-identical; only unseen texts are embedded,
        and a text repeated within ``texts`` is embedded once.
    progress:
        Show a tqdm bar over texts.
    encoder:
        An encoder from ``load_encoder(config)`` to reuse across calls; by
        default one is loaded when some text is not cached.
    keep_chunks:
        Also return every text's chunk vectors as ``result.sequences`` (a
        :class:`fedicd.sequences.ChunkSequences`, texts in input order, a
        repeated text with its own copy): the vectors that were pooled into
        ``result.vectors``, each L2-normalised when ``config.normalize`` (the
        pooled vectors are pooled from the raw chunk vectors and normalised
        after pooling, as without ``keep_chunks``). ``result.vectors`` is
        bit-identical to a call without ``keep_chunks``. Chunk vectors are
        cached beside the note vectors; a text whose note vector is cached
        but whose chunk vectors are not is embedded again.

    Returns
    -------
    EmbeddingResult
        ``float32`` vectors in input order, plus chunking and cache counts,
        ``n_reembedded``/``n_corrupt`` (cached vectors that failed their check
        and were embedded again), ``language_check`` and, with
        ``keep_chunks``, ``sequences``.

    Raises
    ------
    ConfigError
        ``keep_chunks`` with ``chunk_pooling = "first"`` (the truncation
        baseline keeps one chunk per note, there is no chunk sequence to
        keep), or an ``encoder`` loaded with another config.
    RuntimeError
        Cached vectors were discarded and the encoder cannot be loaded to
        re-embed them, or the encoder returned non-finite vectors.
    """
    texts = list(texts)
    _check_texts(texts)
    if encoder is not None and encoder.config != config:
        raise ConfigError("encoder was loaded with a different EmbedConfig than config; pass the same config")
    if keep_chunks and config.chunk_pooling == "first":
        raise ConfigError("keep_chunks=True (a chunk-sequence head) needs every chunk of a note, but "
                          "embedding.chunk_pooling = 'first' keeps only the first one (the truncation baseline); "
                          "set embedding.chunk_pooling = 'mean' or 'max', or choose a pooled head")
    model_id = canonical_model_id(config.model)
    language, source = model_language(config)
    checked = check_language(texts, model_id=model_id, language=language, source=source)
    keys = [text_key(t) for t in texts]
    by_key = dict(zip(keys, texts, strict=True))
    settings = cache_settings(config) if cache_dir is not None else None
    cache = EmbeddingCache(cache_dir, settings) if cache_dir is not None else None
    chunk_cache = EmbeddingCache(cache_dir, settings, chunk_rows=True) if keep_chunks and cache_dir else None
    found = cache.lookup(list(by_key)) if cache is not None else {}
    missing = {k: t for k, t in by_key.items() if k not in found}
    if keep_chunks:
        missing.update((k, by_key[k]) for k in chunks_not_cached(found, chunk_cache))
    fill = _Filler(config, cache, chunk_cache, encoder, progress, keep_chunks, by_key)
    embedded, n_chunks = fill(missing) if (missing or not texts) else ({}, 0)
    dim = fill.encoder.dim if fill.encoder is not None else len(next(iter(found.values()))[0])
    table = embedded | found  # a cached note vector wins: bit-identical to a call without keep_chunks
    sequences = None
    if keep_chunks:
        counts = {k: table[k][1] for k in by_key}
        sequences = assemble_sequences(keys, counts, dim, fill.store, chunk_cache, fill.reembed_chunks)
        embedded = fill.embedded
    result = _assemble(keys, table, found, embedded, (cache, chunk_cache), dim=dim, n_chunks=fill.n_chunks,
                       model_id=model_id)
    result.language_check, result.sequences = checked, sequences
    _log_summary(result, config, fill.encoder.window if fill.encoder is not None else None)
    return result


class _Filler:
    """Embeds the texts the caches lack, loading the encoder on first need, and counts what it embedded."""

    def __init__(self, config: EmbedConfig, cache: EmbeddingCache | None, chunk_cache: EmbeddingCache | None,
                 encoder: Encoder | None, progress: bool, keep_chunks: bool, by_key: dict[str, str]) -> None:
        self.config, self.cache, self.chunk_cache, self.encoder = config, cache, chunk_cache, encoder
        self.progress, self.keep_chunks, self.by_key = progress, keep_chunks, by_key
        self.store, self.embedded, self.n_chunks = ChunkStore(), {}, 0

    def __call__(self, missing: dict[str, str]) -> tuple[_Table, int]:
        if self.encoder is None:
            self.encoder = _load_to_fill(self.config, self.cache, missing, self.chunk_cache)
        if not missing:
            return {}, 0
        chunks = (self.store, self.chunk_cache) if self.keep_chunks else None
        table, n_chunks = _embed_missing(self.encoder, missing, self.config, self.cache, self.progress, chunks)
        self.embedded.update(table)
        self.n_chunks += n_chunks
        return table, n_chunks

    def reembed_chunks(self, keys: list[str]) -> ChunkStore:
        """Embed ``keys`` again (their cached chunk rows failed their check when read); return their chunks."""
        self.store = ChunkStore()
        self({k: self.by_key[k] for k in keys})
        return self.store


def _assemble(keys: list[str], table: _Table, found: _Table, embedded: _Table,
              caches: tuple[EmbeddingCache | None, EmbeddingCache | None], *,
              dim: int, n_chunks: int, model_id: str) -> EmbeddingResult:
    """Vectors in input order, and the counts of what came from where."""
    discarded = {k: why for cache in caches if cache is not None for k, why in cache.discarded.items()}
    return EmbeddingResult(
        vectors=np.stack([table[k][0] for k in keys]) if keys else np.empty((0, dim), np.float32),
        n_chunked=sum(table[k][1] > 1 for k in keys), n_chunks=n_chunks,
        n_cached=sum(k in found and k not in embedded for k in keys), model_id=model_id, dim=dim,
        n_reembedded=sum(k in embedded and k in discarded for k in keys),
        n_corrupt=sum(k in embedded and discarded.get(k) == CORRUPT for k in keys),
        cache_problems=tuple(p for cache in caches if cache is not None for p in cache.problems),
    )
