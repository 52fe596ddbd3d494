"""Frozen encoder → float32 note vectors (the ``embed`` stage of the pipeline).

Public API of the embedding step; the implementation lives in
:mod:`fedicd.embedding`. Typical use::

    from fedicd.embed import EmbedConfig, embed_texts

    result = embed_texts(notes.texts, EmbedConfig(), cache_dir="cache/embeddings")
    result.vectors        # float32 [n_notes, 384] for the default all-MiniLM-L6-v2
    result.summary()      # n_chunked, n_chunks, n_cached... for the load summary

Privacy
-------
Embeddings of clinical notes are patient data: they can be inverted into
close paraphrases (see ``attacks/embedding_inversion``).
"""

from fedicd import embedding as _embedding
from fedicd.embedding import *  # noqa: F403  (the public API, listed once in fedicd.embedding.__all__)

__all__ = list(_embedding.__all__)
