"""Re-score a saved run: reload its model, scaler and label space, re-embed its test notes.

The test split is rebuilt from the run's resolved config (splits and label
rules are deterministic for a seed), so a saved run can be checked or scored
again after the code changes. A chunk-sequence head's run (:data:`fedicd.heads.SEQUENCE_HEADS`) is scored on the
test notes' chunk sequences, every chunk vector through the run's saved scaler (fitted on chunk rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedicd.config import config_from_dict
from fedicd.data.labels import load_binarizer, transform_codes
from fedicd.embedding import embed_texts
from fedicd.heads import SEQUENCE_HEADS
from fedicd.sequences import ChunkSequences
from fedicd.prepare import ids_digest, prepare_data
from fedicd.metrics import compute_metrics, top_k_labels
from fedicd.scaling import load_scaler
from fedicd.run_plan import train_config_from_dict
from fedicd.train import predict_proba

__all__ = ["load_model", "evaluate_run"]


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild a head saved by :func:`fedicd.experiment.save_model`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    cfg = train_config_from_dict(saved["train_config"])
    model = cfg.build(saved["input_dim"], saved["n_labels"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _features(texts: list[str], cfg, run_dir: Path) -> np.ndarray | ChunkSequences:
    """The notes as the saved head reads them: pooled vectors, or chunk sequences for a chunk-sequence head,
    standardised by the run's saved scaler."""
    scaler = load_scaler(run_dir / "scaler.npz")
    if cfg.train.head not in SEQUENCE_HEADS:
        vectors = embed_texts(texts, cfg.embedding, cache_dir=cfg.cache_dir, progress=False).vectors
        return scaler.transform(vectors).astype(np.float32)
    result = embed_texts(texts, cfg.embedding, cache_dir=cfg.cache_dir, progress=False, keep_chunks=True)
    return result.sequences.map_chunks(lambda chunks: scaler.transform(chunks).astype(np.float32))


def evaluate_run(run_dir: str | Path, *, part: str = "test") -> dict[str, float]:
    """Metrics of the saved model in ``run_dir`` on ``part`` at the run's saved threshold."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    cfg = config_from_dict(results["config"])
    data = prepare_data(cfg)
    mlb = load_binarizer(run_dir / "labels.json")
    if list(mlb.classes_) != list(data.binarizer.classes_):
        raise ValueError(f"label space rebuilt from {run_dir / 'config.json'} differs from the saved "
                         f"{run_dir / 'labels.json'}: the data or label rules changed since the run")
    idx = data.parts[part]
    saved_digest = results.get("split_digests", {}).get(part)
    if saved_digest is not None and saved_digest != ids_digest([data.notes.ids[i] for i in idx]):
        raise ValueError(f"the {part} notes rebuilt from {run_dir / 'config.json'} are not the ones the run was "
                         "scored on: the data or split changed since the run")
    x = _features([data.notes.texts[i] for i in idx], cfg, run_dir)
    y, _ = transform_codes(mlb, [data.notes.codes[i] for i in idx])
    probs = predict_proba(load_model(run_dir / "model.pt"), x)
    return compute_metrics(y, probs, threshold=results[part]["threshold"],
                           frequent=top_k_labels(data.labels["train"], 50), train_counts=data.labels["train"].sum(axis=0))
