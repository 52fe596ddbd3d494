"""Frozen-encoder embedding step: notes in, float32 vectors out.

``fedicd.embed`` re-exports the public names; the modules are

- ``config``: :class:`EmbedConfig` and :class:`EmbeddingResult`;
- ``models``: find a model on disk and fingerprint it;
- ``encoder``: sentence-transformers and transformers encoders fed token ids;
- ``chunking``: overlapping windows and chunk pooling (pure functions);
- ``cache``: append-only on-disk vector cache;
- ``pipeline``: :func:`embed_texts`.
"""

from fedicd.embedding.cache import EmbeddingCache, text_key
from fedicd.embedding.chunking import chunk_spans, pool_chunks
from fedicd.embedding.config import BACKENDS, CHUNK_POOLINGS, POOLINGS, EmbedConfig, EmbeddingResult
from fedicd.embedding.encoder import Encoder, load_encoder
from fedicd.embedding.pipeline import cache_settings, embed_texts

__all__ = [
    "BACKENDS",
    "CHUNK_POOLINGS",
    "POOLINGS",
    "EmbedConfig",
    "EmbeddingCache",
    "EmbeddingResult",
    "Encoder",
    "cache_settings",
    "chunk_spans",
    "embed_texts",
    "load_encoder",
    "pool_chunks",
    "text_key",
]
