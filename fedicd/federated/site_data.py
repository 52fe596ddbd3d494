"""One site's data file, and the server's own evaluation file: the per-role files of a staged run.

A staged run folder holds one file per client and one for the server, so that each process opens only what its
role holds (docs/threat-models.md):

``clients/<pid>/data.npz`` (:func:`client_data_path`)
    One client's rows: ``x_train``, ``y_train``, ``x_val``, ``y_val`` (``float32`` features, 0/1 ``float32``
    labels) and ``labels``, the label codes in the run's label order. A chunk-sequence head's features are flat
    chunk rows with their note boundaries ``x_train_offsets``, ``x_val_offsets``
    (:meth:`fedicd.sequences.ChunkSequences.to_arrays`). In a deployment this is the file a SuperNode's
    ``data-path`` names.
``server/eval.npz`` (:func:`server_eval_path`)
    Only when ``federated.server_eval``: the server's validation and test notes (``x_val``, ``y_val``,
    ``x_test``, ``y_test``, offsets alike), ``labels`` and ``train_label_counts`` (``int64 [n_labels]``, the
    training notes of each code: public aggregate statistics, used to order the top-50 codes and to find rare
    codes; no training row).

:func:`read_client_data` and :func:`read_server_eval` check what they read and refuse it with a named error
(:class:`SiteDataError`, :class:`LabelSpaceMismatchError`) that says which file, what is wrong and what produces
a good one.

Privacy
-------
The server process never opens a client's file or the partition manifests (the coordinator's record); a
client opens only its own file. The server's evaluation notes are a separate, explicit option
(``federated.server_eval``): without them the server holds no notes at all and only the clients' federated
evaluation scores the model.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedicd.errors import ConfigError, ShapeError
from fedicd.sequences import ChunkSequences, is_sequence

__all__ = ["ClientData", "SiteDataError", "LabelSpaceMismatchError", "client_data_path", "server_eval_path",
           "write_client_data", "read_client_data", "client_labels", "write_server_eval", "read_server_eval",
           "load_server_data", "check_features_fit", "CLIENTS_DIR", "CLIENT_DATA", "SERVER_EVAL"]

CLIENTS_DIR = "clients"
CLIENT_DATA = "data.npz"
SERVER_EVAL = "server/eval.npz"
_CLIENT_SPLITS = ("train", "val")
_SERVER_SPLITS = ("val", "test")


class SiteDataError(ValueError):
    """A site's data file is missing or does not hold what the run needs (keys, values, rows, dimensions)."""


class LabelSpaceMismatchError(SiteDataError):
    """A site's data file was made for another label space than the run's (other codes or another order)."""


@dataclass
class ClientData:
    """One client's training and validation rows: pooled vectors or chunk sequences, and 0/1 labels."""

    x_train: np.ndarray | ChunkSequences
    y_train: np.ndarray
    x_val: np.ndarray | ChunkSequences
    y_val: np.ndarray


def client_data_path(run_dir: str | Path, pid: int) -> Path:
    """``<run_dir>/clients/<pid>/data.npz``: client ``pid``'s rows in a staged run folder."""
    return Path(run_dir) / CLIENTS_DIR / str(int(pid)) / CLIENT_DATA


def server_eval_path(run_dir: str | Path) -> Path:
    """``<run_dir>/server/eval.npz``: the server's own evaluation notes (only with ``federated.server_eval``)."""
    return Path(run_dir) / SERVER_EVAL


def check_features_fit(features: object, head: str, where: str) -> None:
    """Refuse features the head cannot read.

    Raises
    ------
    ChunksMissingError
        ``head`` is a chunk-sequence head and ``features`` are pooled vectors.
    ConfigError
        ``head`` reads pooled vectors and ``features`` are chunk sequences.
    """
    from fedicd.heads import SEQUENCE_HEADS
    from fedicd.sequences import require_sequences

    if head in SEQUENCE_HEADS:
        require_sequences(features, head, where)
    elif is_sequence(features):
        raise ConfigError(f"train.head = {head!r} reads one pooled vector per note, but {where} holds chunk "
                          f"sequences (made for a chunk-sequence head): choose one of {list(SEQUENCE_HEADS)} or make "
                          "the features again for this head (a staged run: stage it again with this train.head)")


# --- writing ------------------------------------------------------------------------------------------------
def _feature_entries(name: str, x: np.ndarray | ChunkSequences) -> dict[str, np.ndarray]:
    if is_sequence(x):
        return x.to_arrays(name)
    return {name: np.ascontiguousarray(x, dtype=np.float32)}


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temporary file renamed into place: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)


def _codes(labels: Sequence[str], n_labels: int, what: str) -> np.ndarray:
    codes = np.asarray([str(c) for c in labels], dtype=np.str_)
    if len(codes) != n_labels:
        raise SiteDataError(f"{what}: {len(codes)} label codes given for label matrices of {n_labels} columns")
    if len(set(codes.tolist())) != len(codes):
        raise SiteDataError(f"{what}: the label codes repeat a code")
    return codes


def write_client_data(path: str | Path, data: ClientData, labels: Sequence[str]) -> None:
    """Write one client's rows as :func:`read_client_data` reads them (``labels``: the run's codes, in order)."""
    path = Path(path)
    codes = _codes(labels, np.asarray(data.y_train).shape[1], f"client data {path}")
    arrays = {"labels": codes}
    for part in _CLIENT_SPLITS:
        arrays.update(_feature_entries(f"x_{part}", getattr(data, f"x_{part}")))
        arrays[f"y_{part}"] = np.asarray(getattr(data, f"y_{part}"), dtype=np.float32)
    _save(path, arrays)


def write_server_eval(path: str | Path, features: dict[str, np.ndarray | ChunkSequences], labels: dict[str, np.ndarray],
                      codes: Sequence[str], train_label_counts: np.ndarray) -> None:
    """Write the server's evaluation notes (``features``/``labels`` hold ``"val"`` and ``"test"``)."""
    path = Path(path)
    arrays = {"labels": _codes(codes, np.asarray(labels["val"]).shape[1], f"server evaluation data {path}"),
              "train_label_counts": np.asarray(train_label_counts, dtype=np.int64)}
    for part in _SERVER_SPLITS:
        arrays.update(_feature_entries(f"x_{part}", features[part]))
        arrays[f"y_{part}"] = np.asarray(labels[part], dtype=np.float32)
    _save(path, arrays)


# --- reading ------------------------------------------------------------------------------------------------
def _parse(path: Path, splits: tuple[str, ...], extra: tuple[str, ...], produced_by: str) -> dict:
    """The checked arrays of a site file (keys, finite values, 0/1 labels, row counts, one dimension)."""
    if not path.is_file():
        raise SiteDataError(f"site data file not found: {path} ({produced_by})")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise SiteDataError(f"{path} is not a readable .npz file ({exc}); {produced_by}") from None
    required = ["labels", *extra, *(f"{p}_{s}" for s in splits for p in ("x", "y"))]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise SiteDataError(f"{path} lacks {missing} (it holds {sorted(arrays)}; a site file holds {required} and, for "
                            f"chunk sequences, x_<split>_offsets); {produced_by}")
    n_labels = len(arrays["labels"])
    out: dict = {"labels": tuple(str(c) for c in arrays["labels"])}
    dims = set()
    for s in splits:
        name = f"x_{s}"
        try:
            x = ChunkSequences.from_arrays(arrays, name) if f"{name}_offsets" in arrays else arrays[name]
        except ShapeError as exc:
            raise SiteDataError(f"{path}: {name} is not valid chunk sequences ({exc})") from None
        y = arrays[f"y_{s}"]
        if not is_sequence(x):
            if x.ndim != 2:
                raise SiteDataError(f"{path}: {name} must be a [notes, dim] matrix, got shape {x.shape}")
            if not np.isfinite(x).all():
                raise SiteDataError(f"{path}: {name} holds NaN or infinite values "
                                    f"({int((~np.isfinite(x)).any(axis=1).sum())} rows)")
            x = x.astype(np.float32, copy=False)
        if y.ndim != 2 or y.shape[1] != n_labels:
            raise SiteDataError(f"{path}: y_{s} must be [notes, {n_labels}] (one column per label code), got shape "
                                f"{y.shape}")
        if len(x) != len(y):
            raise SiteDataError(f"{path}: {name} has {len(x)} notes but y_{s} has {len(y)} rows")
        if y.size and not np.isin(y, (0.0, 1.0)).all():
            raise SiteDataError(f"{path}: y_{s} must hold 0/1 labels, got values such as "
                                f"{np.unique(y[~np.isin(y, (0.0, 1.0))])[:3].tolist()}")
        dims.add(int(x.shape[1]))
        out[name], out[f"y_{s}"] = x, y.astype(np.float32, copy=False)
    if len(dims) > 1:
        raise SiteDataError(f"{path}: the splits' features differ in dimension {sorted(dims)}")
    out["input_dim"] = dims.pop()
    for k in extra:
        out[k] = arrays[k]
    return out


def _check_run(parsed: dict, path: Path, labels: Sequence[str] | None, input_dim: int | None,
               head: str | None) -> None:
    """Refuse a site file made for another label space, dimension or kind of head than the run's."""
    if labels is not None:
        _check_labels(tuple(str(c) for c in labels), parsed["labels"], path)
    if input_dim is not None and parsed["input_dim"] != int(input_dim):
        raise SiteDataError(f"{path} holds {parsed['input_dim']}-dimensional features but the run's model reads "
                            f"input_dim = {input_dim} (embedded with another encoder or chunking than the run's)")
    if head is not None:
        check_features_fit(parsed["x_val" if "x_train" not in parsed else "x_train"], head, f"the site data {path}")


def _check_labels(expected: tuple[str, ...], got: tuple[str, ...], path: Path) -> None:
    if expected == got:
        return
    have, want = set(got), set(expected)
    missing = [c for c in expected if c not in have]
    extra = [c for c in got if c not in want]
    first = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    detail = [f"the run has {len(expected)} label codes, the file {len(got)}"]
    if missing:
        detail.append(f"codes missing from the file: {missing[:10]}{' …' if len(missing) > 10 else ''}")
    if extra:
        detail.append(f"codes the run does not have: {extra[:10]}{' …' if len(extra) > 10 else ''}")
    if not missing and not extra:
        detail.append(f"the same codes in another order, first differing at position {first}: "
                      f"run {expected[first]!r}, file {got[first]!r}")
    raise LabelSpaceMismatchError(f"{path} was made for another label space than the run's: {'; '.join(detail)} "
                                  "(make the site's file again for the run's label space: its labels.json)")


def _version(path: str | Path) -> tuple[str, int, int]:
    """The cache key of a file version: (path, mtime in ns, size); (path, -1, -1) for a missing file."""
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        return str(path), -1, -1
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _client_file(path: str, mtime_ns: int, size: int) -> dict:
    return _parse(Path(path), _CLIENT_SPLITS, (), "staging writes it (fedicd run / fedicd deploy prepare), or a "
                  "node's data-path names it")


def client_labels(path: str | Path) -> tuple[str, ...]:
    """The label codes a client's file was made for (the file checked as :func:`read_client_data` checks it)."""
    return _client_file(*_version(path))["labels"]


def read_client_data(path: str | Path, *, labels: Sequence[str] | None = None, input_dim: int | None = None,
                     head: str | None = None) -> ClientData:
    """One client's checked rows (parsed once per file version and cached: a client reads it every round).

    ``labels``: the run's label codes (None: not compared); ``input_dim``: the model's input dimension;
    ``head``: the run's ``train.head`` (chunk sequences vs pooled vectors).

    Raises
    ------
    SiteDataError
        The file is missing or unreadable, lacks a key, holds NaN/inf or non-0/1 labels, row counts or
        dimensions disagree, it holds no training rows, or its features are not the run's dimension.
    LabelSpaceMismatchError
        ``labels`` given and the file's codes differ (the message lists missing and extra codes).
    ChunksMissingError, ConfigError
        ``head`` cannot read the file's features (:func:`check_features_fit`).
    """
    path = Path(path)
    parsed = _client_file(*_version(path))
    if len(parsed["x_train"]) == 0:
        raise SiteDataError(f"{path} holds no training rows (an empty client partition: raise "
                            "partition.min_partition_size)")
    _check_run(parsed, path, labels, input_dim, head)
    # copies of the cached arrays (as row selections used to give): a trainer may change its rows in place
    return ClientData(*(x if is_sequence(x) else x.copy() for x in (parsed["x_train"], parsed["y_train"],
                                                                     parsed["x_val"], parsed["y_val"])))


@functools.lru_cache(maxsize=4)
def _server_file(path: str, mtime_ns: int, size: int) -> dict:
    return _parse(Path(path), _SERVER_SPLITS, ("train_label_counts",), "staging writes it when "
                  "federated.server_eval = true")


def read_server_eval(path: str | Path, *, labels: Sequence[str] | None = None, input_dim: int | None = None,
                     head: str | None = None) -> dict:
    """The server's checked evaluation notes: ``x_val``, ``y_val``, ``x_test``, ``y_test``, ``train_label_counts``,
    ``labels`` (the codes); errors as :func:`read_client_data`'s."""
    path = Path(path)
    parsed = _server_file(*_version(path))
    counts = parsed["train_label_counts"]
    if counts.shape != (len(parsed["labels"]),):
        raise SiteDataError(f"{path}: train_label_counts must hold one count per label code "
                            f"({len(parsed['labels'])}), got shape {counts.shape}")
    _check_run(parsed, path, labels, input_dim, head)
    return {k: parsed[k] for k in ("x_val", "y_val", "x_test", "y_test", "train_label_counts", "labels")}


def load_server_data(run_dir: str | Path) -> dict | None:
    """The server's evaluation notes of a staged run or study folder (``server/eval.npz``, read and checked by
    :func:`read_server_eval`) for threshold choice and global evaluation; None when it was staged without them
    (``federated.server_eval = false``). Features are chunk sequences where the run was staged with them."""
    path = server_eval_path(run_dir)
    return read_server_eval(path) if path.exists() else None
