"""``embed_texts``: notes in, one float32 vector per note out, cached on disk.

Each text is tokenized once, split into overlapping windows when it does not
fit the encoder (never silently truncated), the windows of a block of texts
are embedded longest first, and the window vectors are pooled back per text.
With a ``cache_dir``, texts whose sha256 is already stored under the same
settings are read back instead of embedded, and new vectors are appended
block by block, so an interrupted run resumes where it stopped.

Privacy
-------
Reads raw note text and returns embeddings, which can be inverted into close
paraphrases of the notes; see ``attacks/embedding_inversion``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedicd.embedding.cache import EmbeddingCache, text_key
from fedicd.embedding.chunking import chunk_spans, pool_chunks
from fedicd.embedding.config import EmbedConfig, EmbeddingResult
from fedicd.embedding.encoder import Encoder, load_encoder, resolve_dtype
from fedicd.embedding.models import canonical_model_id, model_fingerprint, resolve_backend, resolve_model_dir
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
    encoder: Encoder, texts: list[str], config: EmbedConfig, bar: tqdm
) -> tuple[np.ndarray, list[int], int]:
    """Vectors of ``texts``, chunks each text needed, and chunks embedded."""
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
    return vectors, [len(s) for s in spans], len(chunks)


def _log_summary(result: EmbeddingResult, config: EmbedConfig, window: int | None) -> None:
    n = len(result.vectors)
    logger.info("embedded %d texts with %s: %d from cache, %d needed chunking, %d chunks embedded",
                n, result.model_id, result.n_cached, result.n_chunked, result.n_chunks)
    if config.chunk_pooling == "first" and result.n_chunked:
        logger.warning("chunk_pooling='first' is the truncation baseline: %d of %d texts were cut to their "
                       "first chunk (%s content tokens)", result.n_chunked, n, window or "max_tokens")


_Table = dict[str, tuple[np.ndarray, int]]  # text key -> (vector, chunks the text needed)


def _from_cache(cache: EmbeddingCache | None, keys: list[str]) -> _Table:
    hits = [k for k in keys if cache is not None and k in cache]
    if not hits:
        return {}
    vectors, counts = cache.get(hits)
    return {k: (vectors[i], int(counts[i])) for i, k in enumerate(hits)}


def _embed_missing(encoder: Encoder, texts: dict[str, str], config: EmbedConfig,
                   cache: EmbeddingCache | None, progress: bool) -> tuple[_Table, int]:
    """Embed ``texts`` (key -> text) block by block, appending each block to the cache."""
    keys, table, n_chunks = list(texts), {}, 0
    with tqdm(total=len(keys), unit="text", desc="embedding", disable=not progress) as bar:
        for start in range(0, len(keys), _BLOCK_TEXTS):
            block = keys[start : start + _BLOCK_TEXTS]
            vectors, counts, embedded = _embed_block(encoder, [texts[k] for k in block], config, bar)
            if cache is not None:
                cache.add(block, vectors, counts)
            table.update((k, (vectors[i], counts[i])) for i, k in enumerate(block))
            n_chunks += embedded
    return table, n_chunks


def embed_texts(texts: Sequence[str], config: EmbedConfig = EmbedConfig(), *,  # noqa: B008 (frozen)
                cache_dir: str | Path | None = None, progress: bool = True,
                encoder: Encoder | None = None) -> EmbeddingResult:
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

    Returns
    -------
    EmbeddingResult
        ``float32`` vectors in input order, plus chunking and cache counts.
    """
    texts = list(texts)
    _check_texts(texts)
    if encoder is not None and encoder.config != config:
        raise ConfigError("encoder was loaded with a different EmbedConfig than config; pass the same config")
    keys = [text_key(t) for t in texts]
    by_key = dict(zip(keys, texts, strict=True))
    cache = EmbeddingCache(cache_dir, cache_settings(config)) if cache_dir is not None else None
    found = _from_cache(cache, list(by_key))
    missing = {k: t for k, t in by_key.items() if k not in found}
    if encoder is None and (missing or not texts):
        encoder = load_encoder(config)
    embedded, n_chunks = _embed_missing(encoder, missing, config, cache, progress) if missing else ({}, 0)
    table = found | embedded
    dim = encoder.dim if encoder is not None else len(next(iter(found.values()))[0])
    result = EmbeddingResult(
        vectors=np.stack([table[k][0] for k in keys]) if keys else np.empty((0, dim), np.float32),
        n_chunked=sum(table[k][1] > 1 for k in keys), n_chunks=n_chunks,
        n_cached=sum(k in found for k in keys), model_id=canonical_model_id(config.model), dim=dim,
    )
    _log_summary(result, config, encoder.window if encoder is not None else None)
    return result
