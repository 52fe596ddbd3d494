"""Data preparation shared by central and federated runs.

notes → roll-up → corpus label rule → train/val/test split → train-fitted label
space (:func:`prepare_data`); label-space restriction (:func:`restrict_label_space`);
embedding + train-fitted standardisation (:func:`embed_parts`); and the split
digest (:func:`ids_digest`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

from fedicd.config import ExperimentConfig
from fedicd.data.labels import filter_rare_codes, fit_binarizer, roll_up_notes, transform_codes
from fedicd.data.notes import CodedNotes
from fedicd.data.sources import load_notes
from fedicd.data.splits import EmptySplitError, holdout_split, kfold_split, stratified_split
from fedicd.embedding import embed_texts
from fedicd.errors import ConfigError, DataFormatError
from fedicd.heads import SEQUENCE_HEADS
from fedicd.privacy.config import noise_embeddings
from fedicd.sequences import ChunkSequences, ChunksMissingError

__all__ = ["PreparedData", "prepare_data", "restrict_label_space", "embed_parts", "ids_digest", "MIN_EVAL_NOTES",
           "MIN_EVAL_CODE_SHARE", "PARTS"]

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")
MIN_EVAL_NOTES = 10  # a val or test split with fewer notes gets a WARNING: its metrics rest on too few notes
MIN_EVAL_CODE_SHARE = 0.5  # ... or one carrying under half of the label-space codes (macro metrics miss most)


@dataclass
class PreparedData:
    """Notes with their split indices and the train-fitted label space."""

    notes: CodedNotes
    parts: dict[str, np.ndarray]
    binarizer: MultiLabelBinarizer
    labels: dict[str, np.ndarray]
    label_info: dict[str, Any]


def _where(cfg: ExperimentConfig) -> str:
    return f"data.source = {cfg.data.source!r}" + (f" (data.path = {cfg.data.path})" if cfg.data.path else "")


def _load(cfg: ExperimentConfig) -> tuple[CodedNotes, str]:
    """Notes from the source, rolled up to ``data.granularity``; and a roll-up note for messages."""
    notes = load_notes(cfg.data, seed=cfg.seed)
    if len(notes) == 0:
        raise DataFormatError(f"{_where(cfg)} gave no notes ({notes.summary.describe()})")
    if not any(notes.codes):
        raise DataFormatError(f"none of the {len(notes)} notes from {_where(cfg)} carries a code: nothing to learn")
    if cfg.data.granularity == "full":
        return notes, ""
    before = len(notes.code_counts())
    try:
        notes = roll_up_notes(notes, cfg.data.granularity)
    except ValueError as exc:
        raise ConfigError(f"data.granularity = {cfg.data.granularity!r}: {exc}") from exc
    return notes, (f" (after rolling codes up to data.granularity = {cfg.data.granularity!r}: "
                   f"{before} codes → {len(notes.code_counts())})")


def _corpus_rule(notes: CodedNotes, cfg: ExperimentConfig, rolled: str) -> CodedNotes:
    """The paper's rule: codes with >= data.min_per_client × data.n_clients notes over the whole corpus."""
    d = cfg.data
    if d.min_per_client == 0:
        return notes
    threshold = d.min_per_client * d.n_clients
    out = filter_rare_codes(notes, min_count=threshold)
    if len(out) == 0:
        raise ConfigError(f"data.min_per_client={d.min_per_client} × data.n_clients={d.n_clients} keeps codes with "
                          f">= {threshold} notes; it removed all {len(notes.code_counts())} codes and left 0 of "
                          f"{len(notes)} notes{rolled} — lower data.min_per_client (or data.n_clients) or set it "
                          "to 0")
    return out


def _split_error(cfg: ExperimentConfig, n: int, exc: Exception) -> ConfigError:
    d = cfg.data
    how = {"stratified": f" with data.fractions = {list(d.fractions)}",
           "kfold": f" with data.n_folds = {d.n_folds}, data.fold = {d.fold}, data.val_fraction = {d.val_fraction}",
           "official": f" with data.train_parts = {list(d.train_parts)}, data.val_fraction = {d.val_fraction}"}
    return ConfigError(f"data.split = {d.split!r}{how[d.split]} on the {n} notes left after the label rules: {exc} "
                       "— iterative stratification keeps label proportions, not part sizes; use a larger corpus, "
                       "a larger share for that split, or data.split = 'kfold' (cross-validation folds)")


def _official_parts(notes: CodedNotes, cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    if notes.splits is None:
        raise ConfigError(f"data.split = 'official' but source {cfg.data.source!r} gave no split column; "
                          "use data.split = 'stratified' or provide a split file/column")
    split = np.asarray(notes.splits)
    train = np.flatnonzero(np.isin(split, cfg.data.train_parts))
    test = np.flatnonzero(split == "test")
    if len(test) == 0:
        raise ConfigError("data.split = 'official' but no note is in the 'test' split")
    val = np.flatnonzero(split == "val")
    if "val" in cfg.data.train_parts or len(val) == 0:
        if len(train) < 2:
            raise ConfigError(f"data.split = 'official': {len(train)} notes are in data.train_parts = "
                              f"{list(cfg.data.train_parts)}; holding out a validation share needs at least 2")
        y = MultiLabelBinarizer().fit_transform([notes.codes[i] for i in train])
        try:
            keep, held = holdout_split(y, fraction=cfg.data.val_fraction, seed=cfg.seed)
        except EmptySplitError as exc:
            names = {"kept": "train", "held_out": "val"}
            raise EmptySplitError(names[exc.part], {names[k]: v for k, v in exc.sizes.items()}, exc.total,
                                  exc.fraction) from exc
        train, val = train[keep], train[held]
    return {"train": train, "val": val, "test": test}


def _parts(notes: CodedNotes, cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    d, n = cfg.data, len(notes)
    need = {"official": 1, "stratified": 3, "kfold": max(3, d.n_folds or 0)}[d.split]
    if n < need:
        raise _split_error(cfg, n, ValueError(f"it needs at least {need} notes"))
    try:
        if d.split == "official":
            return _official_parts(notes, cfg)
        y = MultiLabelBinarizer().fit_transform(notes.codes)
        if d.split == "kfold":
            return kfold_split(y, n_folds=d.n_folds, fold=d.fold, val_fraction=d.val_fraction, seed=cfg.seed)
        return stratified_split(y, fractions=d.fractions, seed=cfg.seed)
    except EmptySplitError as exc:
        raise _split_error(cfg, n, exc) from exc


def _label_space(notes: CodedNotes, train: np.ndarray, cfg: ExperimentConfig, rolled: str) -> MultiLabelBinarizer:
    """Binarizer over the codes with >= data.min_train_count training notes."""
    train_codes = [notes.codes[i] for i in train]
    counts = Counter(c for cs in train_codes for c in cs)
    if not counts:
        raise ConfigError(f"the {len(train)} training notes (data.split = {cfg.data.split!r}) carry no code: "
                          "the label space would be empty")
    keep = {c for c, k in counts.items() if k >= cfg.data.min_train_count}
    if not keep:
        raise ConfigError(f"data.min_train_count={cfg.data.min_train_count} keeps codes with >= "
                          f"{cfg.data.min_train_count} training notes; it removed all {len(counts)} codes seen in "
                          f"the {len(train)} training notes{rolled} — lower data.min_train_count (1 keeps every "
                          "code seen in training)")
    return fit_binarizer([[c for c in cs if c in keep] for cs in train_codes])


def _binarize(notes: CodedNotes, parts: dict[str, np.ndarray],
              mlb: MultiLabelBinarizer) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Label matrices per split, and per split: notes, label-space codes present, unlabelled notes, unseen codes."""
    labels, info = {}, {"n_labels": len(mlb.classes_)}
    for name, idx in parts.items():
        labels[name], unseen = transform_codes(mlb, [notes.codes[i] for i in idx])
        info[f"{name}_notes"] = int(len(idx))
        info[f"{name}_codes"] = int((labels[name].sum(axis=0) > 0).sum())
        info[f"{name}_notes_without_labels"] = int((labels[name].sum(axis=1) == 0).sum())
        info[f"{name}_code_occurrences_outside_label_space"] = int(unseen)
    return labels, info


def _report_split(info: dict[str, Any]) -> None:
    """Log split sizes and codes per split; WARN when val or test is too small to trust its metrics."""
    sizes = ", ".join(f"{p} {info[f'{p}_notes']} notes / {info[f'{p}_codes']} codes" for p in PARTS)
    log.info("split %s: %s (label space: %d codes)", info["split"], sizes, info["n_labels"])
    for p in ("val", "test"):
        notes, codes = info[f"{p}_notes"], info[f"{p}_codes"]
        if notes < MIN_EVAL_NOTES:
            advice = ("report the mean over every data.fold" if info["split"] == "kfold" else
                      "for a corpus this small use data.split = 'kfold' and run every data.fold")
            log.warning("the %s split has only %d note(s) (fewer than %d): its metrics rest on very few notes; %s",
                        p, notes, MIN_EVAL_NOTES, advice)
        elif codes < MIN_EVAL_CODE_SHARE * info["n_labels"]:
            log.warning("the %s split carries only %d of the %d label-space codes: macro metrics on it miss most "
                        "codes", p, codes, info["n_labels"])


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load notes, apply roll-up and label rules, split, and binarize (train-fitted).

    Every refusal (no notes, no codes, a label rule that removes every code, an
    empty split) is a :class:`ConfigError` or :class:`DataFormatError` raised
    here, before any embedding. ``label_info`` records the split kind (and
    fold), notes and label-space codes per split.
    """
    notes, rolled = _load(cfg)
    n_loaded = len(notes)
    notes = _corpus_rule(notes, cfg, rolled)
    parts = _parts(notes, cfg)
    mlb = _label_space(notes, parts["train"], cfg, rolled)
    labels, info = _binarize(notes, parts, mlb)
    info = {"split": cfg.data.split, **({"fold": cfg.data.fold, "n_folds": cfg.data.n_folds}
                                        if cfg.data.split == "kfold" else {}),
            "notes_loaded": n_loaded, "notes_after_label_rules": len(notes),
            "train_codes_seen": len({c for i in parts["train"] for c in notes.codes[i]}), **info}
    _report_split(info)
    return PreparedData(notes=notes, parts=parts, binarizer=mlb, labels=labels, label_info=info)


def restrict_label_space(data: PreparedData, drop: Iterable[str]) -> PreparedData:
    """``data`` with the codes ``drop`` removed from the label space (binarizer refitted, labels re-binarized).

    Notes are never removed: a note left without a label-space code counts in
    ``<split>_notes_without_labels``. ``label_info["codes_removed"]`` lists the
    codes taken out.
    """
    removed = sorted(set(drop) & set(data.binarizer.classes_))
    kept = [c for c in data.binarizer.classes_ if c not in set(removed)]
    if not kept:
        raise ConfigError(f"removing {len(removed)} codes would leave an empty label space")
    mlb = fit_binarizer([kept])
    labels, info = _binarize(data.notes, data.parts, mlb)
    label_info = {**data.label_info, **info,
                  "codes_removed": [*data.label_info.get("codes_removed", []), *removed]}
    return PreparedData(notes=data.notes, parts=data.parts, binarizer=mlb, labels=labels, label_info=label_info)


def embed_parts(data: PreparedData, cfg: ExperimentConfig
                ) -> tuple[dict[str, np.ndarray | ChunkSequences], dict, StandardScaler]:
    """Embed every note once (cached), noise the vectors if ``privacy.embedding_noise`` > 0 (every note, before
    the scaler and training; seed ``cfg.seed``), then standardise with a train-fitted scaler.

    For a chunk-sequence head (``train.head`` in :data:`fedicd.heads.SEQUENCE_HEADS`) the notes are embedded with
    their chunks kept and each split's features are a :class:`fedicd.sequences.ChunkSequences`: the noise applies
    to every chunk vector, and the scaler is fitted on the training notes' chunk rows (one row per chunk);
    ``info["sequences"]`` gives notes, chunks, longest and mean length and bytes per split. Other heads get one
    standardised vector per note, ``float32 [notes, dim]``.
    """
    keep_chunks = cfg.train.head in SEQUENCE_HEADS
    chunks = {"keep_chunks": True} if keep_chunks else {}  # pooled heads: the call of old, unchanged
    result = embed_texts(data.notes.texts, cfg.embedding, cache_dir=cfg.cache_dir, **chunks)
    info = {"model": result.model_id, "dim": result.dim, "n_chunked": result.n_chunked,
            "n_chunks": result.n_chunks, "n_cached": result.n_cached, "n_reembedded": result.n_reembedded,
            "n_corrupt": result.n_corrupt, "cache_problems": list(result.cache_problems),
            "language_check": dict(result.language_check)}
    data.notes.summary.info["notes_chunked"] = result.n_chunked
    sigma = cfg.privacy.embedding_noise
    if sigma > 0:
        info["embedding_noise"] = sigma
    if keep_chunks:
        return _standardised_sequences(result.sequences, data.parts, sigma, cfg.seed, info)
    vectors = noise_embeddings(result.vectors, sigma, seed=cfg.seed) if sigma > 0 else result.vectors
    scaler = StandardScaler().fit(vectors[data.parts["train"]])
    feats = {p: scaler.transform(vectors[idx]).astype(np.float32) for p, idx in data.parts.items()}
    return feats, info, scaler


def _standardised_sequences(sequences: ChunkSequences | None, parts: dict[str, np.ndarray], sigma: float, seed: int,
                            info: dict) -> tuple[dict[str, ChunkSequences], dict, StandardScaler]:
    """Noised (σ > 0), then standardised chunk sequences per split; the scaler fitted on the training chunk rows."""
    if sequences is None:
        raise ChunksMissingError("embed_texts(..., keep_chunks=True) returned no chunk sequences")
    if sigma > 0:
        sequences = sequences.map_chunks(lambda chunks: noise_embeddings(chunks, sigma, seed=seed))
    taken = {p: sequences.take(idx) for p, idx in parts.items()}  # copies: standardised in place below
    scaler = StandardScaler().fit(taken["train"].chunks)
    feats = {p: x.map_chunks(lambda chunks: scaler.transform(chunks, copy=False)) for p, x in taken.items()}
    info["sequences"] = {p: {"notes": len(x), "chunks": int(len(x.chunks)), "max_length": x.max_length,
                             "mean_length": float(x.lengths.mean()) if len(x) else 0.0, "bytes": x.nbytes}
                         for p, x in feats.items()}
    return feats, info, scaler


def ids_digest(ids: list[str]) -> str:
    """sha256 of a list of note ids (to check a split is rebuilt identically)."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()
