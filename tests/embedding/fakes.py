"""Fake encoder and texts for the embedding tests (no model loaded)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np

from fedicd.embedding import EmbedConfig


class FakeEncoder:
    """Duck-typed :class:`fedicd.embedding.Encoder`: word ids by crc32, vectors seeded by the ids."""

    dim, window, max_tokens, dtype = 8, 16, 18, "float32"

    def __init__(self, config: EmbedConfig) -> None:
        self.config, self.model_id, self.chunks_seen = config, config.model, 0

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [[zlib.crc32(word.encode()) % 30_000 for word in text.split()] for text in texts]

    def encode_chunks(self, chunks: Sequence[Sequence[int]], *, progress: bool = False,
                      on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        self.chunks_seen += len(chunks)
        out = np.stack([np.random.default_rng(list(c)).standard_normal(self.dim) for c in chunks]).astype(np.float32)
        if on_batch is not None:
            on_batch(len(chunks))
        return out


ENGLISH = [
    f"Patient {i} was admitted with chest pain and shortness of breath; the history of the illness is "
    f"unremarkable and the patient denies fever. {'He was treated with aspirin. ' * (i % 4)}"
    for i in range(30)
]  # 30 distinct English notes; some span more than one 16-token window
