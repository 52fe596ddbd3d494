"""One centralized experiment: notes → labels/splits → embeddings → head → metrics.

:func:`run_experiment` writes, under ``out_dir``: ``results.json`` (metrics on
val and test, the resolved config, the load summary, timings, versions),
``model.pt``, ``scaler.npz``, ``labels.json`` and ``config.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.preprocessing import MultiLabelBinarizer, StandardScaler

from fedicd.config import ExperimentConfig, config_to_dict
from fedicd.data.labels import filter_rare_codes, fit_binarizer, roll_up_notes, save_binarizer, transform_codes
from fedicd.data.notes import CodedNotes
from fedicd.data.sources import load_notes
from fedicd.data.splits import holdout_split, stratified_split
from fedicd.embed import embed_texts
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels
from fedicd.scaling import save_scaler
from fedicd.train import predict_proba, train_central

__all__ = ["PreparedData", "prepare_data", "embed_parts", "run_experiment", "save_model", "ids_digest"]

log = logging.getLogger(__name__)
PARTS = ("train", "val", "test")


@dataclass
class PreparedData:
    """Notes with their split indices and the train-fitted label space."""

    notes: CodedNotes
    parts: dict[str, np.ndarray]
    binarizer: MultiLabelBinarizer
    labels: dict[str, np.ndarray]
    label_info: dict[str, int]


def _official_parts(notes: CodedNotes, cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    if notes.splits is None:
        raise ValueError(f"data.split = 'official' but source {cfg.data.source!r} gave no split column; "
                         "use data.split = 'stratified' or provide a split file/column")
    split = np.asarray(notes.splits)
    train = np.flatnonzero(np.isin(split, cfg.data.train_parts))
    test = np.flatnonzero(split == "test")
    if len(test) == 0:
        raise ValueError("data.split = 'official' but no note is in the 'test' split")
    val = np.flatnonzero(split == "val")
    if "val" in cfg.data.train_parts or len(val) == 0:
        y = MultiLabelBinarizer().fit_transform([notes.codes[i] for i in train])
        keep, held = holdout_split(y, fraction=cfg.data.val_fraction, seed=cfg.seed)
        train, val = train[keep], train[held]
    return {"train": train, "val": val, "test": test}


def _parts(notes: CodedNotes, cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    if cfg.data.split == "official":
        return _official_parts(notes, cfg)
    y = MultiLabelBinarizer().fit_transform(notes.codes)
    return stratified_split(y, fractions=cfg.data.fractions, seed=cfg.seed)


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load notes, apply roll-up and label rules, split, and binarize (train-fitted)."""
    notes = load_notes(cfg.data, seed=cfg.seed)
    if cfg.data.granularity != "full":
        notes = roll_up_notes(notes, cfg.data.granularity)
    if cfg.data.min_per_client > 0:
        notes = filter_rare_codes(notes, min_count=cfg.data.min_per_client * cfg.data.n_clients)
    parts = _parts(notes, cfg)
    train_codes = [notes.codes[i] for i in parts["train"]]
    counts: dict[str, int] = {}
    for cs in train_codes:
        for c in cs:
            counts[c] = counts.get(c, 0) + 1
    keep = {c for c, n in counts.items() if n >= cfg.data.min_train_count}
    mlb = fit_binarizer([[c for c in cs if c in keep] for cs in train_codes])
    labels, info = {}, {"n_labels": len(mlb.classes_), "train_codes_seen": len(counts)}
    for name, idx in parts.items():
        labels[name], unseen = transform_codes(mlb, [notes.codes[i] for i in idx])
        info[f"{name}_notes"] = int(len(idx))
        info[f"{name}_notes_without_labels"] = int((labels[name].sum(axis=1) == 0).sum())
        info[f"{name}_code_occurrences_outside_label_space"] = int(unseen)
    return PreparedData(notes=notes, parts=parts, binarizer=mlb, labels=labels, label_info=info)


def embed_parts(data: PreparedData, cfg: ExperimentConfig) -> tuple[dict[str, np.ndarray], dict, StandardScaler]:
    """Embed every note once (cached), then standardise with a train-fitted scaler."""
    result = embed_texts(data.notes.texts, cfg.embedding, cache_dir=cfg.cache_dir)
    info = {"model": result.model_id, "dim": result.dim, "n_chunked": result.n_chunked,
            "n_chunks": result.n_chunks, "n_cached": result.n_cached}
    data.notes.summary.info["notes_chunked"] = result.n_chunked
    scaler = StandardScaler().fit(result.vectors[data.parts["train"]])
    feats = {p: scaler.transform(result.vectors[idx]).astype(np.float32) for p, idx in data.parts.items()}
    return feats, info, scaler


def ids_digest(ids: list[str]) -> str:
    """sha256 of a list of note ids (to check a split is rebuilt identically)."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def save_model(model: torch.nn.Module, cfg: ExperimentConfig, input_dim: int, n_labels: int, path: Path) -> None:
    torch.save({"state_dict": model.state_dict(), "train_config": config_to_dict(cfg)["train"],
                "input_dim": input_dim, "n_labels": n_labels}, path)


def _versions() -> dict[str, str]:
    import sklearn
    import transformers

    from fedicd import __version__

    return {"fedicd": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path) -> dict:
    """Run one centralized experiment and write its artifacts; returns ``results.json``'s content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    t1 = time.perf_counter()
    feats, embed_info, scaler = embed_parts(data, cfg)
    t2 = time.perf_counter()
    trained = train_central(feats["train"], data.labels["train"], cfg.train,
                            x_val=feats["val"], y_val=data.labels["val"])
    probs = {p: predict_proba(trained.model, feats[p]) for p in ("val", "test")}
    threshold = choose_threshold(data.labels["val"], probs["val"])
    frequent = top_k_labels(data.labels["train"], 50)
    metrics = {p: compute_metrics(data.labels[p], probs[p], threshold=threshold, frequent=frequent)
               for p in ("val", "test")}
    results = {"name": cfg.name, "training_mode": "central", "val": metrics["val"], "test": metrics["test"],
               "history": trained.history, "labels": data.label_info, "embedding": embed_info,
               "split_digests": {p: ids_digest([data.notes.ids[i] for i in idx]) for p, idx in data.parts.items()},
               "load_summary": data.notes.summary.to_dict(),
               "seconds": {"data": t1 - t0, "embed": t2 - t1, "train": trained.seconds,
                           "total": time.perf_counter() - t0},
               "config": config_to_dict(cfg), "versions": _versions()}
    save_model(trained.model, cfg, feats["train"].shape[1], len(data.binarizer.classes_), out / "model.pt")
    save_scaler(scaler, out / "scaler.npz")
    save_binarizer(data.binarizer, out / "labels.json")
    (out / "config.json").write_text(json.dumps(results["config"], indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    log.info("results written to %s", out / "results.json")
    return results
