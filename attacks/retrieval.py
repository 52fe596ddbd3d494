"""Retrieval inversion: find each victim's text among candidates the adversary guesses it could be.

Threat model (``"retrieval_inversion"``): the adversary holds a pool of
candidate texts (public notes, templates, or guesses), embeds them with the
public encoder and ranks them by cosine similarity to each victim vector.
"""

from __future__ import annotations

import numpy as np

from attacks.threat import AdversaryView

__all__ = ["rank_candidates", "hits_at_k"]


def rank_candidates(view: AdversaryView, pool_embeddings: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices [n_victims, k] of the ``k`` pool entries closest (cosine) to each victim vector."""
    pool = np.asarray(pool_embeddings, dtype=np.float32)
    if pool.ndim != 2 or pool.shape[1] != view.target_embeddings.shape[1]:
        raise ValueError(f"pool_embeddings must be [n, {view.target_embeddings.shape[1]}], got {pool.shape}")
    if not 1 <= k <= len(pool):
        raise ValueError(f"k must be in [1, {len(pool)}], got {k}")
    t = view.target_embeddings / np.maximum(np.linalg.norm(view.target_embeddings, axis=1, keepdims=True), 1e-12)
    p = pool / np.maximum(np.linalg.norm(pool, axis=1, keepdims=True), 1e-12)
    sims = t @ p.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def hits_at_k(ranked: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per victim, 1.0 if its true pool index is among the first ``k`` ranked (scoring side)."""
    truth = np.asarray(truth)
    if len(truth) != len(ranked):
        raise ValueError(f"{len(truth)} true indices for {len(ranked)} victims")
    return (ranked[:, :k] == truth[:, None]).any(axis=1).astype(float)
