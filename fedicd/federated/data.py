"""Stage an experiment's data for federated training, and load a client's share of it.

:func:`stage_data` runs once, on the coordinator: notes → labels/split →
partition of the training notes, with ``partition.min_per_client`` /
``drop_infeasible`` applied (:mod:`fedicd.partition.rules`, as in ``fedicd
partition``) → the validation notes each client evaluates on
(``partition.client_validation``, :mod:`fedicd.partition.validation`) →
embeddings (cached) → scaler fitted on the training notes. It writes, under
the run directory, one file per role (:mod:`fedicd.federated.site_data`):
``clients/<pid>/data.npz`` (each client's rows), ``server/eval.npz`` (the
server's evaluation notes, only with ``federated.server_eval``), and
``partition.json``, ``partition_val.json`` (the coordinator's record of who
holds which note), ``scaler.npz`` (the shared scaler's statistics) and
``labels.json`` (the label space). A client reads only its own file
(:func:`load_client_data`), the server only its own; no data travels in messages.

Privacy
-------
As in the paper, one StandardScaler is fitted on all training embeddings
(pooled statistics, i.e. a per-feature mean and variance that the clients
would have to share); a deployment would compute it with secure aggregation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fedicd.config import ExperimentConfig
from fedicd.data.labels import save_binarizer
from fedicd.errors import ConfigError
from fedicd.scaling import save_scaler
from fedicd.prepare import PreparedData, embed_parts, prepare_data
from fedicd.partition import Partition, partition_stats, write_manifest
from fedicd.partition.rules import check_client_counts
from fedicd.partition_run import plan_partition
from fedicd.partition.validation import validation_partition
from fedicd.federated.site_data import (CLIENT_DATA, CLIENTS_DIR, ClientData, check_features_fit, client_data_path,
                                        server_eval_path, write_client_data, write_server_eval)
from fedicd.federated.staged import MANIFEST, SPLITS, VAL_MANIFEST, load_client_data, load_server_data
from fedicd.sequences import ChunkSequences, is_sequence, select_rows

__all__ = ["stage_data", "stage_arrays", "load_client_data", "load_server_data", "ClientData", "StagedInfo"]

log = logging.getLogger(__name__)
LEGACY_FEATURES = "data/features.npz"  # every split in one file, as fedicd staged before per-role files


@dataclass
class StagedInfo:
    """What staging produced.

    ``partition_info`` holds the feasibility summary (``"feasibility"``, with
    the dropped codes) and the client-validation summary
    (``"client_validation"``); the feasibility summary is also in
    ``data.label_info["partition_feasibility"]``.
    """

    n_clients: int
    input_dim: int
    n_labels: int
    data: PreparedData
    embed_info: dict
    partition: Partition
    partition_info: dict = field(default_factory=dict)


def _check_before_loading(cfg: ExperimentConfig) -> None:
    """Refusals that need no data: client counts of the label rule, client evaluation without client data."""
    check_client_counts(cfg)
    if cfg.partition.client_validation == "none" and cfg.federated.fraction_evaluate > 0:
        raise ConfigError(f"partition.client_validation = 'none' gives the clients no validation notes, but "
                          f"federated.fraction_evaluate = {cfg.federated.fraction_evaluate} asks clients to "
                          "evaluate: set federated.fraction_evaluate = 0 (the server still validates on the whole "
                          "validation split)")


def _val_partition(cfg: ExperimentConfig, data: PreparedData, partition: Partition) -> tuple[Partition, dict]:
    val = data.parts["val"]
    sites = [data.notes.sites[i] for i in val] if data.notes.sites is not None else None
    part, info = validation_partition(len(val), partition, mode=cfg.partition.client_validation,
                                      seed=cfg.seed + 1, sites=sites)
    if info["clients_without_validation"] and cfg.federated.fraction_evaluate > 0:
        log.warning("%d of %d clients hold no validation notes (partition.client_validation = %r) and will not "
                    "evaluate: %s", len(info["clients_without_validation"]), partition.n_clients,
                    cfg.partition.client_validation, info["clients_without_validation"])
    return part, info


def stage_data(cfg: ExperimentConfig, run_dir: str | Path) -> StagedInfo:
    """Prepare features and partitions for ``cfg`` under ``run_dir`` (see module docstring).

    Every refusal (label rules, splits, client counts, ``partition.min_per_client``,
    client validation) comes before the notes are embedded.
    """
    _check_before_loading(cfg)
    plan = plan_partition(cfg, prepare_data(cfg), strict=True)
    data, partition = plan.data, plan.partition
    val_part, val_info = _val_partition(cfg, data, partition)
    feats, embed_info, scaler = embed_parts(data, cfg)
    train = data.parts["train"]
    partition_info = {"feasibility": plan.feasibility.summary, "client_validation": val_info}
    stage_arrays(run_dir, feats, data.labels, val_partition=val_part, partition=partition,
                 note_ids=[data.notes.ids[i] for i in train], stats=partition_stats(plan.labels, partition).to_dict(),
                 extra={"feasibility": plan.feasibility.report, "client_validation": val_info}, head=cfg.train.head,
                 label_codes=[str(c) for c in data.binarizer.classes_], server_eval=cfg.federated.server_eval)
    save_binarizer(data.binarizer, Path(run_dir) / "labels.json")
    save_scaler(scaler, Path(run_dir) / "scaler.npz")  # the server's copy of the shared statistics
    return StagedInfo(n_clients=partition.n_clients, input_dim=feats["train"].shape[1],
                      n_labels=data.labels["train"].shape[1], data=data, embed_info=embed_info, partition=partition,
                      partition_info=partition_info)


def stage_arrays(run_dir: str | Path, features: dict[str, np.ndarray | ChunkSequences], labels: dict[str, np.ndarray],
                 partition: Partition, val_partition: Partition, *, note_ids: list[str] | None = None,
                 stats: dict | None = None, extra: dict | None = None, head: str | None = None,
                 label_codes: Sequence[str] | None = None, server_eval: bool = True) -> None:
    """Write precomputed train/val/test features and labels as per-role files, plus the partition manifests.

    The entry point for vectors made elsewhere (any encoder, or random vectors
    in benchmarks); :func:`stage_data` calls it after embedding. ``features`` are pooled vectors ``[N, d]`` or,
    for a chunk-sequence head, :class:`~fedicd.sequences.ChunkSequences` (all three splits alike). ``head``
    (the run's ``train.head``), when given, must be able to read them: a chunk-sequence head on pooled vectors
    raises :class:`~fedicd.sequences.ChunksMissingError`, a pooled head on chunk sequences a ConfigError.

    Writes ``clients/<pid>/data.npz`` for every client of ``partition`` (its training rows, and its validation
    rows from ``val_partition``), ``server/eval.npz`` when ``server_eval`` (the whole validation and test splits
    and the training notes' per-code counts), ``partition.json`` and ``partition_val.json``; site files left by
    an earlier staging of ``run_dir`` are removed first. ``label_codes``: the label space's codes in column order
    (stored in every file, which the clients compare with the run's); None names the columns ``"L0"`` …
    ``"L{n-1}"`` (random vectors in benchmarks and tests; such a folder has no ``labels.json`` unless its caller
    writes one with the same codes).
    """
    run_dir = Path(run_dir)
    for part in SPLITS:
        if part not in features or part not in labels or len(features[part]) != len(labels[part]):
            raise ValueError(f"features and labels must both hold {part!r} with the same number of rows")
    kinds = {part: is_sequence(features[part]) for part in SPLITS}
    if len(set(kinds.values())) > 1:
        raise ValueError(f"features must be all pooled vectors or all chunk sequences, got chunk sequences for "
                         f"{[p for p, k in kinds.items() if k]} only")
    if head is not None:
        check_features_fit(features["train"], head, f"the training features staged into {run_dir}")
    empty = [n for n, idx in zip(partition.names, partition.clients) if len(idx) == 0]
    if empty:
        raise ValueError(f"clients {empty} received no training notes; raise partition.min_partition_size")
    if val_partition.n_clients != partition.n_clients:
        raise ValueError(f"val_partition has {val_partition.n_clients} clients, partition {partition.n_clients}")
    n_labels = np.asarray(labels["train"]).shape[1]
    codes = [f"L{i}" for i in range(n_labels)] if label_codes is None else [str(c) for c in label_codes]
    _remove_site_files(run_dir)
    for pid, (tr, va) in enumerate(zip(partition.clients, val_partition.clients)):
        rows = ClientData(select_rows(features["train"], tr), labels["train"][tr], select_rows(features["val"], va),
                          labels["val"][va])
        write_client_data(client_data_path(run_dir, pid), rows, codes)
    if server_eval:
        write_server_eval(server_eval_path(run_dir), features, labels, codes,
                          np.asarray(labels["train"]).sum(axis=0).round().astype(np.int64))
    write_manifest(partition, run_dir / MANIFEST, n_notes=len(features["train"]), note_ids=note_ids,
                   extra={"stats": stats or {}, **(extra or {})})
    write_manifest(val_partition, run_dir / VAL_MANIFEST, n_notes=len(features["val"]))


def _remove_site_files(run_dir: Path) -> None:
    """The data files of an earlier staging of ``run_dir`` (client state such as SCAFFOLD's stays)."""
    for stale in [*run_dir.glob(f"{CLIENTS_DIR}/*/{CLIENT_DATA}"), server_eval_path(run_dir),
                  run_dir / LEGACY_FEATURES]:
        stale.unlink(missing_ok=True)
    if (run_dir / "data").is_dir() and not any((run_dir / "data").iterdir()):
        (run_dir / "data").rmdir()
