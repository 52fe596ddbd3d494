"""The zero-shot retrieval coder: codes ranked by the cosine between a note and each code's description.

Nothing is trained. Every label of the run's label space that has a public description
(:mod:`fedicd.warm_start.descriptions`) is embedded with the run's own encoder settings; a note scores code ``j``
by the cosine between its vector and the description's vector. With chunk sequences (``notes = "chunks"``) the
score is the **largest** cosine over the note's chunks: a code is usually mentioned in one passage, and the mean
of a long note's chunks dilutes that passage.

Scores and thresholds
---------------------
The probability of code ``j`` is ``(1 + cos) / 2`` (monotone, in ``[0, 1]``); a code without a description scores
0 and is never predicted nor ranked above a described code. Cosines of one encoder cluster in a narrow band, so
the decision threshold is chosen on validation (:func:`fedicd.metrics.choose_threshold`) over a fine grid
(:data:`THRESHOLD_GRID`, steps of 0.0025, i.e. 0.005 in cosine).

Which space
-----------
The cosine is taken either between the encoder's vectors as they are (``"raw"``) or after the run's
standardisation (``"scaled"``: the scaler fitted on the training notes — on their chunk rows for chunk sequences —
applied to notes and descriptions alike, as a trained head sees them). Standardising removes the direction all
notes share, which can sharpen or blur the ranking depending on the encoder; the space is chosen by the
validation micro-F1 (mean average precision on ties), never by the test split. Both candidates' validation
scores are kept in the result.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
from sklearn.preprocessing import StandardScaler

from fedicd.errors import ConfigError, ShapeError
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels
from fedicd.sequences import ChunkSequences

__all__ = ["NOTE_FORMS", "SPACES", "THRESHOLD_GRID", "unit_rows", "cosine_scores", "cosine_probabilities",
           "retrieval_metrics", "zero_shot_coder", "identity_scaler"]

log = logging.getLogger(__name__)
NOTE_FORMS = ("pooled", "chunks")
SPACES = ("raw", "scaled")
THRESHOLD_GRID = np.round(np.arange(0.0025, 1.0, 0.0025), 4)
_BLOCK_NOTES = 64  # notes scored at once (bounds the [chunks, labels] cosine block)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` with every row scaled to unit L2 norm (float64); an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def cosine_scores(notes: np.ndarray | ChunkSequences, descriptions: np.ndarray) -> np.ndarray:
    """Cosine between every note and every description, ``float64 [n_notes, n_labels]``.

    Parameters
    ----------
    notes:
        Pooled note vectors ``[n, d]``, or a :class:`~fedicd.sequences.ChunkSequences` (then a note's score is
        the maximum over its chunks).
    descriptions:
        ``[n_labels, d]`` description vectors (a zero row gives cosine 0).
    """
    desc = unit_rows(descriptions)
    if isinstance(notes, ChunkSequences):
        if notes.dim != desc.shape[1]:
            raise ShapeError(f"chunk vectors have {notes.dim} dimensions, descriptions {desc.shape[1]}")
        out = np.empty((len(notes), len(desc)))
        for start in range(0, len(notes), _BLOCK_NOTES):
            stop = min(start + _BLOCK_NOTES, len(notes))
            first, last = notes.offsets[start], notes.offsets[stop]
            cos = unit_rows(notes.chunks[first:last]) @ desc.T
            out[start:stop] = np.maximum.reduceat(cos, notes.offsets[start:stop] - first, axis=0)
        return out
    notes = np.asarray(notes)
    if notes.ndim != 2 or notes.shape[1] != desc.shape[1]:
        raise ShapeError(f"note vectors {notes.shape} and descriptions {desc.shape} must share the dimension")
    return unit_rows(notes) @ desc.T


def cosine_probabilities(cosines: np.ndarray, described: np.ndarray) -> np.ndarray:
    """``(1 + cos) / 2`` clipped to ``[0, 1]``; the columns of undescribed labels are 0."""
    probs = np.clip((1.0 + np.asarray(cosines, dtype=np.float64)) / 2.0, 0.0, 1.0)
    probs[:, ~np.asarray(described, dtype=bool)] = 0.0
    return probs


def identity_scaler(dim: int) -> StandardScaler:
    """A fitted StandardScaler whose ``transform`` returns its input unchanged (mean 0, scale 1)."""
    return StandardScaler().fit(np.stack([-np.ones(dim), np.ones(dim)]))


def _space_scores(notes: dict[str, Any], descriptions: np.ndarray, described: np.ndarray,
                  labels: dict[str, np.ndarray], train_counts: np.ndarray, frequent: np.ndarray) -> dict:
    """Validation-chosen threshold and val/test metrics of one space."""
    probs = {p: cosine_probabilities(cosine_scores(notes[p], descriptions), described) for p in ("val", "test")}
    threshold = choose_threshold(labels["val"], probs["val"], grid=THRESHOLD_GRID)
    return {p: compute_metrics(labels[p], probs[p], threshold=threshold, frequent=frequent,
                               train_counts=train_counts) for p in ("val", "test")}


def retrieval_metrics(spaces: dict[str, tuple[dict[str, Any], np.ndarray]], described: np.ndarray,
                      labels: dict[str, np.ndarray]) -> dict:
    """Score every candidate space, choose one on validation, return its metrics and the selection record.

    Parameters
    ----------
    spaces:
        ``{space name: ({"val": notes, "test": notes}, descriptions [L, d])}``.
    described:
        ``bool [L]``: labels with a description.
    labels:
        ``{"train", "val", "test"}`` binary label matrices (train only gives the frequency order and the
        rare-code counts).

    Returns
    -------
    dict
        ``val``, ``test`` (metrics of the chosen space), ``space`` and ``selection`` (each candidate's validation
        micro-F1, macro-F1 and mAP).
    """
    if not spaces:
        raise ConfigError("the retrieval coder needs at least one space to score in")
    train_counts = labels["train"].sum(axis=0)
    frequent = top_k_labels(labels["train"], 50)
    scored = {name: _space_scores(notes, desc, described, labels, train_counts, frequent)
              for name, (notes, desc) in spaces.items()}
    best = max(scored, key=lambda s: (scored[s]["val"]["micro_f1"], scored[s]["val"]["map"]))
    selection = {s: {k: scored[s]["val"][k] for k in ("micro_f1", "macro_f1", "map")} for s in scored}
    return {"val": scored[best]["val"], "test": scored[best]["test"], "space": best, "selection": selection}


def _embed(cfg, data, *, notes: str, encoder) -> tuple[np.ndarray | ChunkSequences, dict]:
    """Every note's raw vector (or chunk sequence), embedding noise applied when configured."""
    from fedicd.embedding import embed_texts
    from fedicd.privacy.config import noise_embeddings

    result = embed_texts(data.notes.texts, cfg.embedding, cache_dir=cfg.cache_dir, encoder=encoder,
                         progress=False, keep_chunks=notes == "chunks")
    info = {"model": result.model_id, "dim": result.dim, "n_chunked": result.n_chunked, "n_cached": result.n_cached}
    x: np.ndarray | ChunkSequences = result.vectors
    if notes == "chunks":
        if result.sequences is None:
            raise ConfigError("the encoder returned no chunk sequences (keep_chunks=True gave sequences=None)")
        x = result.sequences
        info["chunks"] = int(len(x.chunks))
    sigma = cfg.privacy.embedding_noise
    if sigma > 0:
        noise = lambda v: noise_embeddings(v, sigma, seed=cfg.seed)  # noqa: E731
        x = x.map_chunks(noise) if isinstance(x, ChunkSequences) else noise(x)
        info["embedding_noise"] = sigma
    return x, info


def _parts(x: np.ndarray | ChunkSequences, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    return {p: (x.take(idx) if isinstance(x, ChunkSequences) else x[idx]) for p, idx in parts.items()}


def _scaled(notes: dict[str, Any]) -> tuple[dict[str, Any], StandardScaler]:
    """The notes standardised by a scaler fitted on the training notes (their chunk rows for sequences)."""
    train = notes["train"]
    scaler = StandardScaler().fit(train.chunks if isinstance(train, ChunkSequences) else train)
    out = {p: (x.map_chunks(scaler.transform) if isinstance(x, ChunkSequences)
               else scaler.transform(x).astype(np.float32)) for p, x in notes.items()}
    return out, scaler


def zero_shot_coder(cfg, *, notes: str = "pooled", encoder=None, spaces: Sequence[str] = SPACES) -> dict:
    """Run the zero-shot retrieval coder on ``cfg``'s data; returns a ``results.json``-like dict.

    Parameters
    ----------
    cfg:
        An :class:`fedicd.config.ExperimentConfig` (its data, split, label rules and ``[embedding]``; the
        head and training settings are not used).
    notes:
        ``"pooled"`` (one vector per note) or ``"chunks"`` (max over the note's chunk vectors).
    encoder:
        An encoder loaded for ``cfg.embedding`` (tests pass a fake one); None loads one when needed.
    spaces:
        Candidate spaces (:data:`SPACES`); the validation split chooses among them.

    Returns
    -------
    dict
        ``val`` / ``test`` metrics, ``coder`` (notes, chosen space, each space's validation scores),
        ``descriptions`` (described count, missing codes listed), ``model`` (no parameters), ``labels``,
        ``embedding``, ``seconds``.
    """
    from fedicd.config import config_to_dict
    from fedicd.prepare import prepare_data
    from fedicd.warm_start.descriptions import description_vectors

    if notes not in NOTE_FORMS:
        raise ConfigError(f"notes = {notes!r}: choose one of {list(NOTE_FORMS)}")
    bad = [s for s in spaces if s not in SPACES]
    if bad or not spaces:
        raise ConfigError(f"spaces = {list(spaces)}: choose among {list(SPACES)}")
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    x, embed_info = _embed(cfg, data, notes=notes, encoder=encoder)
    t1 = time.perf_counter()
    label_names = [str(c) for c in data.binarizer.classes_]
    raw_notes = _parts(x, data.parts)
    described = description_vectors(label_names, cfg.data.label_kind, cfg.embedding, identity_scaler(x.shape[1]),
                                    cache_dir=cfg.cache_dir, encoder=encoder)
    candidates: dict[str, tuple[dict[str, Any], np.ndarray]] = {}
    if "raw" in spaces:
        candidates["raw"] = (raw_notes, described.vectors)
    if "scaled" in spaces:
        scaled_notes, scaler = _scaled(raw_notes)
        scaled_desc = np.zeros_like(described.vectors)
        scaled_desc[described.described] = scaler.transform(described.vectors[described.described])
        candidates["scaled"] = (scaled_notes, scaled_desc)
    scores = retrieval_metrics(candidates, described.described, data.labels)
    t2 = time.perf_counter()
    missing = list(described.missing)
    log.info("zero-shot retrieval (%s, %s space): test micro-F1 %.4f; %d of %d labels described", notes,
             scores["space"], scores["test"]["micro_f1"], int(described.described.sum()), len(label_names))
    return {"name": cfg.name, "training_mode": "zero_shot", "val": scores["val"], "test": scores["test"],
            "coder": {"kind": "retrieval", "notes": notes, "space": scores["space"], "selection": scores["selection"],
                      "threshold_grid_step": float(THRESHOLD_GRID[1] - THRESHOLD_GRID[0])},
            "descriptions": {"described": int(described.described.sum()), "labels": len(label_names),
                             "missing_count": len(missing), "missing": missing},
            "model": {"head": f"zero_shot_{notes}", "parameters": 0, "parameter_bytes": 0},
            "labels": data.label_info, "embedding": embed_info,
            "seconds": {"embed": t1 - t0, "train": 0.0, "score": t2 - t1, "total": t2 - t0},
            "config": config_to_dict(cfg)}
