"""Non-private pre-training of the head on a public corpus, before the private rounds.

``warm_start.public_config`` names an experiment config: its ``[data]`` (and ``seed``) define the public corpus,
its ``[embedding]`` must embed exactly as the run's (same :func:`fedicd.embedding.cache_settings`), so its vectors
live in the run's space and the run's scaler applies to them. The head trains with fedicd's own loop
(:func:`fedicd.train.run_epoch` over shuffled mini-batches, AdamW with a cosine schedule, the run's loss) on the
public corpus's training split, on the loss of the labels both label spaces hold only; the output rows of the
run's other labels are restored afterwards to what they were (description rows or the random initialisation).

A public corpus that shares a note with the run's corpus is not public with respect to the run: refused.

A chunk-sequence head (:data:`fedicd.heads.SEQUENCE_HEADS`) pre-trains on the public notes' chunk sequences
(embedded with chunks kept, each chunk vector through the run's scaler, as the run's own chunks are).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from fedicd.config import ExperimentConfig, load_config
from fedicd.embedding import cache_settings, embed_texts, text_key
from fedicd.errors import ConfigError
from fedicd.heads import SEQUENCE_HEADS, output_layer
from fedicd.sequences import ChunkSequences, as_model_input
from fedicd.train import make_optimizer, plain_step, run_epoch, shuffled_batches

__all__ = ["load_public_config", "shared_labels", "pretrain_public"]

log = logging.getLogger(__name__)
_SHOWN = 10


def load_public_config(path: str | Path, run: ExperimentConfig) -> ExperimentConfig:
    """The public corpus's config; refused unless its embedding settings equal the run's."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"warm_start.public_config = {str(path)!r}: no such file (an experiment config whose "
                          "[data] is the public corpus)")
    public = load_config(path)
    if public.embedding != run.embedding:
        mine, theirs = cache_settings(run.embedding), cache_settings(public.embedding)
        differ = sorted(k for k in mine if mine[k] != theirs.get(k))
        if differ:
            raise ConfigError(f"warm_start.public_config = {str(path)!r}: its [embedding] differs from the run's in "
                              f"{differ} ({ {k: theirs[k] for k in differ} } vs { {k: mine[k] for k in differ} }); "
                              "the public vectors must come from the run's embedding settings: copy the run's "
                              "[embedding] into it")
    return public


def shared_labels(run_labels: Sequence[str], public_labels: Sequence[str], *, where: str = "") -> list[int]:
    """Indices (in the run's label order) of the run's labels that the public corpus also has.

    Raises
    ------
    ConfigError
        The run's label list is empty, or no label is shared.
    """
    run_labels = list(run_labels)
    if not run_labels:
        raise ConfigError("warm_start.public_config: the run's label space is empty (no labels to pre-train)")
    public = set(public_labels)
    shared = [j for j, c in enumerate(run_labels) if c in public]
    if not shared:
        raise ConfigError(f"warm_start.public_config{where}: the public corpus shares none of the run's "
                          f"{len(run_labels)} labels (run: {run_labels[:_SHOWN]}; public: "
                          f"{sorted(public)[:_SHOWN]}): pick a public corpus coded like the run (same code system "
                          "and data.granularity) or unset warm_start.public_config")
    return shared


def _check_disjoint(texts: Sequence[str], run_texts: Sequence[str], where: str) -> None:
    run_keys = {text_key(t) for t in run_texts}
    common = sum(text_key(t) in run_keys for t in texts)
    if common:
        raise ConfigError(f"warm_start.public_config{where}: {common} of its {len(texts)} training notes are notes of "
                          "the run's own corpus, so it is not public with respect to this run: use another corpus "
                          "(or another data.seed for a synthetic one)")


def _label_rows(model: nn.Module) -> list[torch.Tensor]:
    """Parameters with one row per label: the output layer's weight and bias, and a label-attention head's
    queries (``model.attention``); the rows of labels the public corpus lacks are restored after pre-training
    (AdamW's weight decay would otherwise shrink them)."""
    out = output_layer(model)
    rows = [out.weight] + ([out.bias] if out.bias is not None else [])
    attention = getattr(model, "attention", None)
    if isinstance(attention, nn.Linear):
        rows.append(attention.weight)
    return rows


def _masked_loss(loss_fn: nn.Module, columns: torch.Tensor):
    return lambda logits, y: loss_fn(logits[:, columns], y[:, columns])


def _fit(model: nn.Module, x: np.ndarray | ChunkSequences, y: np.ndarray, columns: list[int], run: ExperimentConfig,
         ws) -> float:
    """Pre-train ``model`` in place on the loss of ``columns``; returns the last epoch's mean loss."""
    train = dataclasses.replace(run.train, lr=ws.public_lr)
    batch = ws.public_batch_size or run.train.batch_size
    xt, yt = as_model_input(x), torch.as_tensor(y, dtype=torch.float32)
    loss_fn = _masked_loss(train.loss(), torch.as_tensor(columns))
    loss = float("nan")
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: seeded, and restored after
        torch.manual_seed(train.resolved_seed + 2)
        gen = torch.Generator().manual_seed(train.resolved_seed + 3)
        opt, sched = make_optimizer(model, train, ws.public_epochs)
        for epoch in range(ws.public_epochs):
            loss = run_epoch(model, plain_step(model, opt, loss_fn), shuffled_batches(xt, yt, batch, gen))
            sched.step()
            log.info("warm_start: public epoch %d/%d loss %.4f", epoch + 1, ws.public_epochs, loss)
    model.eval()
    return loss


def _public_features(texts: Sequence[str], run: ExperimentConfig, scaler: StandardScaler,
                     encoder) -> np.ndarray | ChunkSequences:
    """The public notes as the run's head reads them: scaled pooled vectors, or scaled chunk sequences."""
    if run.train.head not in SEQUENCE_HEADS:
        vectors = embed_texts(texts, run.embedding, cache_dir=run.cache_dir, progress=False, encoder=encoder).vectors
        return scaler.transform(vectors).astype(np.float32)
    result = embed_texts(texts, run.embedding, cache_dir=run.cache_dir, progress=False, encoder=encoder,
                         keep_chunks=True)
    return result.sequences.map_chunks(lambda chunks: scaler.transform(chunks).astype(np.float32))


def pretrain_public(model: nn.Module, run: ExperimentConfig, run_labels: Sequence[str], scaler: StandardScaler,
                    run_texts: Sequence[str] = (), *, encoder=None) -> dict:
    """Pre-train ``model`` (in place) on ``run.warm_start.public_config``'s training split; returns the record.

    Inputs pass through the run's ``scaler``; labels the public corpus lacks keep their output rows. The record
    holds the overlap count (``shared_labels`` of ``run_labels``), the public notes used and the last epoch's loss.
    """
    from fedicd.prepare import prepare_data

    ws = run.warm_start
    where = f" = {ws.public_config!r}"
    public_cfg = load_public_config(ws.public_config, run)
    public = prepare_data(public_cfg)
    columns = shared_labels(run_labels, public.binarizer.classes_, where=where)
    train_idx = public.parts["train"]
    texts = [public.notes.texts[i] for i in train_idx]
    _check_disjoint(texts, run_texts, where)
    start = time.perf_counter()
    x = _public_features(texts, run, scaler, encoder)
    position = {c: k for k, c in enumerate(public.binarizer.classes_)}
    y = np.zeros((len(texts), len(run_labels)), dtype=np.float32)
    y[:, columns] = public.labels["train"][:, [position[run_labels[j]] for j in columns]]
    kept = [j for j in range(len(run_labels)) if j not in set(columns)]
    rows = _label_rows(model)
    before = [p.detach()[kept].clone() for p in rows]
    loss = _fit(model, x, y, columns, run, ws)
    with torch.no_grad():
        for p, saved in zip(rows, before, strict=True):
            p[kept] = saved
    log.info("warm_start: pre-trained on %d public notes for %d of the run's %d labels", len(texts), len(columns),
             len(run_labels))
    return {"config": str(ws.public_config), "source": public_cfg.data.source, "notes": len(texts),
            "public_labels": len(public.binarizer.classes_), "shared_labels": len(columns),
            "run_labels": len(run_labels), "shared": [run_labels[j] for j in columns][:_SHOWN],
            "positives": int(y.sum()), "epochs": ws.public_epochs, "lr": ws.public_lr, "final_loss": loss,
            "seconds": time.perf_counter() - start}
