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
paraphrases of the notes; see ``attacks.generative`` and docs/threat-models.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fedicd.embedding.cache import CORRUPT, EmbeddingCache, text_key
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
    bad = int((~np.isfinite(vectors).all(axis=1)).sum())
    if bad:  # never cache or return NaN/inf vectors (e.g. float16 overflow on a GPU)
        raise RuntimeError(f"encoder {encoder.model_id} ({encoder.dtype}) returned non-finite vectors for {bad} of "
                           f"{len(texts)} texts; set embedding.half_precision = false or use another model")
    return vectors, [len(s) for s in spans], len(chunks)


def _log_summary(result: EmbeddingResult, config: EmbedConfig, window: int | None) -> None:
    n = len(result.vectors)
    logger.info("embedded %d texts with %s: %d from cache, %d re-embedded after failing the cache check "
                "(%d corrupt), %d needed chunking, %d chunks embedded", n, result.model_id, result.n_cached,
                result.n_reembedded, result.n_corrupt, result.n_chunked, result.n_chunks)
    if config.chunk_pooling == "first" and result.n_chunked:
        logger.warning("chunk_pooling='first' is the truncation baseline: %d of %d texts were cut to their "
                       "first chunk (%s content tokens)", result.n_chunked, n, window or "max_tokens")


_Table = dict[str, tuple[np.ndarray, int]]  # text key -> (vector, chunks the text needed)


def _load_to_fill(config: EmbedConfig, cache: EmbeddingCache | None, missing: dict[str, str]) -> Encoder:
    """Load the encoder; if that fails while discarded cache entries wait to be re-embedded, say so."""
    try:
        return load_encoder(config)
    except (OSError, ValueError) as err:
        lost = [k for k in missing if cache is not None and k in cache.discarded]
        if not lost:
            raise
        raise RuntimeError(f"{len(lost)} cached vectors in {cache.path} were discarded (see the warnings above) and "
                           f"encoder {config.model!r} cannot be loaded to re-embed them: {err}") from err


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
        ``float32`` vectors in input order, plus chunking and cache counts,
        ``n_reembedded``/``n_corrupt`` (cached vectors that failed their check
        and were embedded again) and ``language_check``.

    Raises
    ------
    RuntimeError
        Cached vectors were discarded and the encoder cannot be loaded to
        re-embed them, or the encoder returned non-finite vectors.
    """
    texts = list(texts)
    _check_texts(texts)
    if encoder is not None and encoder.config != config:
        raise ConfigError("encoder was loaded with a different EmbedConfig than config; pass the same config")
    model_id = canonical_model_id(config.model)
    language, source = model_language(config)
    checked = check_language(texts, model_id=model_id, language=language, source=source)
    keys = [text_key(t) for t in texts]
    by_key = dict(zip(keys, texts, strict=True))
    cache = EmbeddingCache(cache_dir, cache_settings(config)) if cache_dir is not None else None
    found = cache.lookup(list(by_key)) if cache is not None else {}
    missing = {k: t for k, t in by_key.items() if k not in found}
    if encoder is None and (missing or not texts):
        encoder = _load_to_fill(config, cache, missing)
    embedded, n_chunks = _embed_missing(encoder, missing, config, cache, progress) if missing else ({}, 0)
    dim = encoder.dim if encoder is not None else len(next(iter(found.values()))[0])
    result = _assemble(keys, found, embedded, cache, dim=dim, n_chunks=n_chunks, model_id=model_id)
    result.language_check = checked
    _log_summary(result, config, encoder.window if encoder is not None else None)
    return result


def _assemble(keys: list[str], found: _Table, embedded: _Table, cache: EmbeddingCache | None, *,
              dim: int, n_chunks: int, model_id: str) -> EmbeddingResult:
    """Vectors in input order, and the counts of what came from where."""
    table = found | embedded
    discarded = cache.discarded if cache is not None else {}
    return EmbeddingResult(
        vectors=np.stack([table[k][0] for k in keys]) if keys else np.empty((0, dim), np.float32),
        n_chunked=sum(table[k][1] > 1 for k in keys), n_chunks=n_chunks,
        n_cached=sum(k in found for k in keys), model_id=model_id, dim=dim,
        n_reembedded=sum(k in embedded and k in discarded for k in keys),
        n_corrupt=sum(k in embedded and discarded.get(k) == CORRUPT for k in keys),
        cache_problems=tuple(cache.problems) if cache is not None else (),
    )
