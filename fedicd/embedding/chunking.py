"""Pure helpers that split token sequences into overlapping windows and pool them.

Nothing here knows about models: a text is a list of token ids, a chunk is a
``(start, end)`` span of it, and pooling combines chunk vectors into one
vector per text. Long notes are therefore split, never silently truncated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedicd.errors import ConfigError, ShapeError

__all__ = ["chunk_spans", "pool_chunks"]


def chunk_spans(n_tokens: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open token spans that cover ``range(n_tokens)`` in overlapping windows.

    Parameters
    ----------
    n_tokens:
        Length of the token sequence (>= 0).
    window:
        Most tokens per span (> ``overlap``).
    overlap:
        Tokens shared by consecutive spans (>= 0).

    Returns
    -------
    list of (start, end)
        One span ``(0, n_tokens)`` when the sequence fits one window, else spans
        of exactly ``window`` tokens whose neighbours share exactly ``overlap``
        tokens; only the last span may be shorter. An empty sequence gives
        ``[(0, 0)]``.
    """
    if window < 1 or overlap < 0 or overlap >= window:
        raise ConfigError(
            f"chunk window={window} must be >= 1 and greater than chunk_overlap={overlap} (>= 0); "
            "raise max_tokens, shorten the instruction or lower chunk_overlap"
        )
    if n_tokens < 0:
        raise ShapeError(f"n_tokens={n_tokens} must be >= 0")
    if n_tokens <= window:
        return [(0, n_tokens)]
    step = window - overlap
    n_spans = -(-(n_tokens - overlap) // step)  # ceil division
    return [(i * step, min(i * step + window, n_tokens)) for i in range(n_spans)]


def pool_chunks(vectors: np.ndarray, lengths: Sequence[int], how: str) -> np.ndarray:
    """Combine the chunk vectors of one text into one vector.

    Parameters
    ----------
    vectors:
        ``[n_chunks, dim]`` chunk vectors in text order.
    lengths:
        Content tokens per chunk (special and instruction tokens excluded).
    how:
        ``"mean"``: average weighted by ``lengths`` (so a short tail chunk counts
        less; overlap tokens count in both chunks that hold them). ``"max"``:
        element-wise maximum. ``"first"``: the first chunk (truncation).

    Returns
    -------
    numpy.ndarray
        ``float32`` vector ``[dim]``. One chunk is returned unchanged.
    """
    if vectors.ndim != 2 or len(vectors) == 0 or len(vectors) != len(lengths):
        raise ShapeError(f"vectors shape {vectors.shape} does not match {len(lengths)} chunk lengths")
    if how == "first" or len(vectors) == 1:
        return vectors[0].astype(np.float32, copy=True)
    if how == "max":
        return vectors.max(axis=0).astype(np.float32)
    if how == "mean":
        weights = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
        pooled = weights @ vectors.astype(np.float64) / weights.sum()
        return pooled.astype(np.float32)
    raise ConfigError(f"chunk_pooling={how!r} is not supported; allowed values: mean, max, first")
