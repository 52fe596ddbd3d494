"""Frozen-encoder embedding step: notes in, float32 vectors out.

The public names are listed in ``__all__``; the modules are

- ``config``: :class:`EmbedConfig` and :class:`EmbeddingResult`;
- ``models``: find a model on disk, fingerprint it, and know its language;
- ``encoder``: sentence-transformers and transformers encoders fed token ids;
- ``chunking``: overlapping windows and chunk pooling (pure functions);
- ``cache``: append-only on-disk vector cache, checksummed per row
  (``cache_shards``: one shard's files and checksums);
- ``chunk_cache``: the chunk vectors kept by ``embed_texts(..., keep_chunks=True)``:
  collected, cached beside the note vectors, assembled into a ChunkSequences;
- ``language``: the check that texts suit an English encoder;
- ``pipeline``: :func:`embed_texts`.
"""

from fedicd.embedding.cache import EmbeddingCache, text_key
from fedicd.embedding.chunking import chunk_spans, pool_chunks
from fedicd.embedding.config import BACKENDS, CHUNK_POOLINGS, POOLINGS, EmbedConfig, EmbeddingResult
from fedicd.embedding.encoder import Encoder, load_encoder
from fedicd.embedding.language import check_language
from fedicd.embedding.models import MODEL_LANGUAGES, model_language
from fedicd.embedding.pipeline import cache_settings, embed_texts

__all__ = [
    "BACKENDS",
    "CHUNK_POOLINGS",
    "MODEL_LANGUAGES",
    "POOLINGS",
    "EmbedConfig",
    "EmbeddingCache",
    "EmbeddingResult",
    "Encoder",
    "cache_settings",
    "check_language",
    "chunk_spans",
    "embed_texts",
    "load_encoder",
    "model_language",
    "pool_chunks",
    "text_key",
]
