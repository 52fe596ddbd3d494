"""Stage a run's public warm start: the warm-started head, its record and its zero-shot scores.

:func:`check_warm_start` runs before any note is embedded; :func:`stage_warm_start` runs after
:func:`fedicd.federated.data.stage_data` (it needs the run's scaler, label space and the server's evaluation
notes ``server/eval.npz``). It writes ``initial_model.npz`` (the round-0 global model,
:data:`fedicd.federated.model.INITIAL_MODEL`) and ``warm_start.json`` (what was done: method, described and
missing labels, public overlap, and the ``zero_shot`` validation/test scores of the warm-started head before any
private step; None when the run has no server evaluation, ``federated.server_eval = false``), which
``results.json`` copies as its ``warm_start`` block.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

from fedicd.config import ExperimentConfig
from fedicd.data.labels import load_binarizer
from fedicd.federated.model import INITIAL_MODEL, save_initial_arrays, seeded_model
from fedicd.federated.staged import load_server_data
from fedicd.scaling import load_scaler
from fedicd.train_config import TrainConfig

__all__ = ["WARM_START_FILE", "check_warm_start", "stage_warm_start", "warm_start_results"]

log = logging.getLogger(__name__)
WARM_START_FILE = "warm_start.json"


def check_warm_start(cfg: ExperimentConfig) -> None:
    """Refusals that need no data: a head without a zero-shot form, a missing or mismatched public config."""
    from fedicd.warm_start.pretrain import load_public_config
    from fedicd.warm_start.zero_shot import check_description_head

    ws = cfg.warm_start
    if ws.init == "descriptions":
        check_description_head(cfg.train)
    if ws.public_config:
        load_public_config(ws.public_config, cfg)


def stage_warm_start(cfg: ExperimentConfig, run_dir: str | Path, *, input_dim: int, run_texts: Sequence[str] = (),
                     encoder=None, train: TrainConfig | None = None) -> dict | None:
    """Build, save and score ``cfg``'s warm start under ``run_dir`` (staged already); None when there is none.

    A warm start left in ``run_dir`` by an earlier staging is removed first. ``run_texts``: the notes of the
    run's corpus (a public corpus sharing one is refused); ``encoder``: an
    encoder loaded for ``cfg.embedding`` (tests pass a fake one); ``train``: the run plan's train config, the head
    the rounds build (under sample-level DP a BatchNorm head becomes ``norm = "group"``); None = ``cfg.train``.
    """
    if train is not None:
        cfg = dataclasses.replace(cfg, train=train)
    from fedicd.warm_start.descriptions import description_vectors
    from fedicd.warm_start.pretrain import pretrain_public
    from fedicd.warm_start.zero_shot import apply_descriptions, zero_shot_scores

    ws, run_dir = cfg.warm_start, Path(run_dir)
    for stale in (run_dir / INITIAL_MODEL, run_dir / WARM_START_FILE):  # from an earlier staging of this folder
        stale.unlink(missing_ok=True)
    if not ws.enabled:
        return None
    check_warm_start(cfg)
    labels = [str(c) for c in load_binarizer(run_dir / "labels.json").classes_]
    scaler = load_scaler(run_dir / "scaler.npz")
    model = seeded_model(cfg.train, input_dim, len(labels))
    record: dict = {"method": ws.method}
    if ws.init == "descriptions":
        described = description_vectors(labels, cfg.data.label_kind, cfg.embedding, scaler,
                                        cache_dir=cfg.cache_dir, encoder=encoder)
        record["descriptions"] = apply_descriptions(model, cfg.train, described, ws)
    if ws.public_config:
        record["public"] = pretrain_public(model, cfg, labels, scaler, run_texts, encoder=encoder)
    save_initial_arrays(run_dir, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    server = load_server_data(run_dir)  # the server's own evaluation notes; None without federated.server_eval
    record["zero_shot"] = None if server is None else zero_shot_scores(model, server)
    (run_dir / WARM_START_FILE).write_text(json.dumps(record, indent=2))
    if server is None:
        log.info("warm_start %s: no zero-shot scores (federated.server_eval = false: the server holds no "
                 "evaluation notes)", ws.method)
    else:
        log.info("warm_start %s: zero-shot test micro-F1 %.4f, macro-F1 %.4f", ws.method,
                 record["zero_shot"]["test"]["micro_f1"], record["zero_shot"]["test"]["macro_f1"])
    return record


def warm_start_results(run_dir: str | Path) -> dict:
    """``results.json``'s ``warm_start`` block: the staged record, or ``{"method": "random"}``."""
    path = Path(run_dir) / WARM_START_FILE
    return json.loads(path.read_text()) if path.exists() else {"method": "random"}
