"""A SuperNode's own data: its node config read, its data file resolved, notes embedded locally (cached).

Each SuperNode is started with ``--node-config``; the keys this module reads (:data:`NODE_KEYS`):

``partition-id`` (required, int)
    The site's client index in the study's plan (``0 ≤ id < plan.n_clients``).
``data-path`` (required)
    The site's data: a client ``data.npz`` (what a staged simulation run holds as ``clients/<id>/data.npz``:
    scaled vectors and 0/1 labels, :mod:`fedicd.federated.site_data`), or a **notes file** that the node embeds
    itself (``.jsonl`` or ``.csv``, format below).
``state-dir`` (optional)
    The node's own state: SCAFFOLD's client control, the local embedding cache and the embedded notes.
    Default: ``fedicd-state-<partition-id>`` beside the data file.
``model-path`` (optional)
    The local copy of the frozen encoder (notes only); default: the study's ``embedding.model``.
``ckks-secret-key`` (optional)
    The CKKS secret context, under ``secure_aggregation.method = "ckks"``.

Notes format
------------
One note per JSON line (``.jsonl``)::

    {"text": "Patient admitted with ...", "codes": ["I10", "E11.9"], "split": "train"}

``text`` (non-empty), ``codes`` (a list of code strings; may be empty) and ``split`` (``"train"`` or ``"val"``;
default ``"train"``); other keys (``"id"``, …) are ignored. A ``.csv`` file has a header with the columns
``text``, ``codes`` (codes separated by ``;``) and optionally ``split``. Codes must be written as the study's
label space writes them (after its roll-up): codes outside it are counted and logged, never silently dropped,
and a file whose codes share nothing with it is refused (:class:`LabelSpaceMismatchError`).

The node embeds every note with the study's encoder settings (run config ``embedding``; the weights from
``model-path``), applies the study's ``privacy.embedding_noise`` if any (seeded by the plan's seed and the
partition id) and the shared scaler (run config ``scaler``), binarizes the codes in the study's label order,
and writes the result as a client ``data.npz`` in ``<state-dir>/embedded/`` with a record of what it was made
from: later messages and restarts read it instead of embedding again (a changed notes file, scaler, label
space or encoder setting makes it again; the vector cache ``<state-dir>/embedding_cache`` keeps that cheap).

Privacy
-------
Raw text never leaves the node: it is read and embedded here, and only model updates (and evaluation scores)
are sent. The embedded ``data.npz`` stays in the node's state directory. See docs/threat-models.md.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedicd.federated.site_data import ClientData, LabelSpaceMismatchError, read_client_data, write_client_data
from fedicd.run_plan import RunPlan

__all__ = ["NODE_KEYS", "NOTES_SUFFIXES", "NodeConfigError", "NotesFormatError", "LabelSpaceMismatchError",
           "NodeSettings", "NotesFile", "parse_node_config", "data_format", "read_notes", "node_data_path",
           "embed_notes", "EMBEDDED_DATA"]

log = logging.getLogger(__name__)

NODE_KEYS = ("partition-id", "data-path", "state-dir", "model-path", "ckks-secret-key")
NOTES_SUFFIXES = (".jsonl", ".csv")
SPLITS = ("train", "val")
EMBEDDED_DATA = Path("embedded") / "data.npz"
_RECORD = "made_from.json"
EXAMPLE = "--node-config 'partition-id=0 data-path=\"/site/notes.jsonl\"'"


class NodeConfigError(ValueError):
    """A SuperNode's node config (or the data file it names) that this node cannot train with."""


class NotesFormatError(NodeConfigError):
    """A notes file that does not follow the notes format (its path, line and field are named)."""


@dataclass(frozen=True)
class NodeSettings:
    """The node config of one SuperNode, checked (see the module docstring for each key)."""

    partition_id: int
    data_path: Path
    state_dir: Path
    model_path: str | None = None
    ckks_secret_key: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.partition_id, bool) or not isinstance(self.partition_id, int) or self.partition_id < 0:
            raise NodeConfigError(f"partition-id = {self.partition_id!r}: give the site's client index, an "
                                  f"integer >= 0, e.g. {EXAMPLE}")


def _partition_id(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise NodeConfigError(f"partition-id = {value!r}: give the site's client index, an integer >= 0, e.g. {EXAMPLE}")


def _optional(node_config: Mapping[str, object], key: str) -> str | None:
    value = node_config.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise NodeConfigError(f"{key} = {value!r}: give a path (a string)")
    return value


def parse_node_config(node_config: Mapping[str, object]) -> NodeSettings:
    """The checked settings of a node config (``context.node_config``).

    Raises
    ------
    NodeConfigError
        ``partition-id`` or ``data-path`` missing (the message lists the keys received and shows a
        ``--node-config`` example), a partition id that is not an integer >= 0, ``data-path`` not found or
        of a format this module does not read.
    """
    missing = [k for k in ("partition-id", "data-path") if k not in node_config or node_config[k] in ("", None)]
    if missing:
        got = sorted(node_config) or "none"
        raise NodeConfigError(f"the node config lacks {' and '.join(missing)} (it holds the keys {got}): start the "
                              f"SuperNode with {EXAMPLE} (data-path: a client data.npz or a notes file "
                              f"{'/'.join(NOTES_SUFFIXES)} on this node; keys: {', '.join(NODE_KEYS)})")
    pid = _partition_id(node_config["partition-id"])
    data_path = Path(str(node_config["data-path"])).expanduser()
    if not data_path.is_file():
        raise NodeConfigError(f"data-path = {str(data_path)!r} is not a file on this node: give the site's client "
                              f"data.npz or notes file ({'/'.join(NOTES_SUFFIXES)}), e.g. {EXAMPLE}")
    data_format(data_path)
    state = _optional(node_config, "state-dir")
    state_dir = Path(state).expanduser() if state else data_path.parent / f"fedicd-state-{pid}"
    return NodeSettings(pid, data_path, state_dir, _optional(node_config, "model-path"),
                        _optional(node_config, "ckks-secret-key"))


def data_format(path: Path) -> str:
    """``"npz"`` (a client data.npz) or ``"notes"`` (a notes file); refuses other suffixes."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in NOTES_SUFFIXES:
        return "notes"
    raise NodeConfigError(f"data-path = {str(path)!r} has the unknown format {suffix or '(no suffix)'!r}: give a "
                          f"client data.npz (embedded vectors) or a notes file {' or '.join(NOTES_SUFFIXES)}")


@dataclass(frozen=True)
class NotesFile:
    """The notes of a site's notes file, in file order."""

    texts: tuple[str, ...]
    codes: tuple[tuple[str, ...], ...]
    splits: tuple[str, ...]


def _note(path: Path, where: str, text: object, codes: object, split: object) -> tuple[str, tuple[str, ...], str]:
    if not isinstance(text, str) or not text.strip():
        raise NotesFormatError(f"{path} {where}: 'text' is empty or missing; every note needs its text")
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) and c.strip() for c in codes):
        raise NotesFormatError(f"{path} {where}: 'codes' = {codes!r}; give a list of code strings (may be empty)")
    split = "train" if split in (None, "") else split
    if split not in SPLITS:
        raise NotesFormatError(f"{path} {where}: 'split' = {split!r}; allowed: {', '.join(SPLITS)}")
    return text, tuple(c.strip() for c in codes), str(split)


def _jsonl_rows(path: Path):
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NotesFormatError(f"{path} line {number}: not JSON ({exc.msg}); one JSON object per line, "
                                       '{"text": ..., "codes": [...], "split": "train"}') from None
            if not isinstance(row, dict):
                raise NotesFormatError(f"{path} line {number}: a JSON {type(row).__name__}, expected an object")
            yield f"line {number}", row.get("text"), row.get("codes"), row.get("split")


def _csv_rows(path: Path):
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        lacking = [c for c in ("text", "codes") if c not in (reader.fieldnames or [])]
        if lacking:
            raise NotesFormatError(f"{path}: the header lacks the column(s) {lacking} (it has "
                                   f"{reader.fieldnames}); columns: text, codes (';'-separated), split")
        for number, row in enumerate(reader, 2):
            codes = [c.strip() for c in (row.get("codes") or "").split(";") if c.strip()]
            yield f"line {number}", row.get("text"), codes, row.get("split")


def read_notes(path: str | Path) -> NotesFile:
    """A notes file (``.jsonl`` or ``.csv``, module docstring), checked.

    Raises
    ------
    NotesFormatError
        A line that is not a note (its number and field named), no note at all, or no training note.
    """
    path = Path(path)
    rows = _jsonl_rows(path) if path.suffix.lower() == ".jsonl" else _csv_rows(path)
    notes = [_note(path, where, text, codes, split) for where, text, codes, split in rows]
    if not any(split == "train" for _, _, split in notes):
        raise NotesFormatError(f"{path} holds {len(notes)} notes and none with split 'train': a site needs "
                               "training notes")
    texts, codes, splits = zip(*notes)
    return NotesFile(tuple(texts), tuple(codes), tuple(splits))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _binarize(notes: NotesFile, labels: Sequence[str], path: Path) -> tuple[np.ndarray, dict]:
    """0/1 label rows in the study's label order; codes outside the label space counted (and refused if all are)."""
    index = {c: i for i, c in enumerate(labels)}
    y = np.zeros((len(notes.codes), len(labels)), np.float32)
    outside: dict[str, int] = {}
    for row, codes in enumerate(notes.codes):
        for code in codes:
            if code in index:
                y[row, index[code]] = 1.0
            else:
                outside[code] = outside.get(code, 0) + 1
    given = sum(len(c) for c in notes.codes)
    if given and not y.any():
        raise LabelSpaceMismatchError(
            f"{path}: none of its {len(outside)} distinct codes (e.g. {sorted(outside)[:5]}) is in the study's "
            f"label space of {len(labels)} codes (e.g. {list(labels[:5])}): write the codes as the study does "
            "(its label roll-up), or join the study whose label space this is")
    info = {"code_occurrences": given, "outside_label_space": sum(outside.values()),
            "distinct_outside": len(outside), "notes_without_study_codes": int((y.sum(axis=1) == 0).sum())}
    if outside:
        log.warning("%s: %d of %d code occurrences (%d distinct codes, e.g. %s) are outside the study's label "
                    "space of %d codes and are not learned", path, info["outside_label_space"], given,
                    len(outside), sorted(outside)[:5], len(labels))
    return y, info


def _scaler(scaler: Mapping[str, Sequence[float]], dim: int):
    """A fitted StandardScaler of the study's shared statistics (the transform simulation staging applies)."""
    from sklearn.preprocessing import StandardScaler

    mean, scale = (np.asarray(scaler.get(k, ()), dtype=np.float64) for k in ("mean", "scale"))
    if mean.shape != (dim,) or scale.shape != (dim,):
        raise NodeConfigError(f"the run config's scaler has {mean.size} means and {scale.size} scales, but the "
                              f"encoder makes {dim}-dim vectors: the study was embedded with another encoder "
                              "(check model-path and the run config's embedding)")
    out = StandardScaler()
    out.mean_, out.scale_, out.var_ = mean, scale, scale ** 2
    out.n_features_in_ = dim
    return out


def _noise_seed(seed: int, pid: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(pid)]).generate_state(1)[0])


def embed_notes(notes_path: str | Path, out_path: str | Path, *, plan: RunPlan, pid: int, labels: Sequence[str],
                scaler: Mapping[str, Sequence[float]], embedding, cache_dir: str | Path | None = None,
                encoder=None) -> Path:
    """Embed a site's notes into a client ``data.npz`` at ``out_path`` (unless it is already made from them).

    ``embedding`` is the study's :class:`~fedicd.embedding.EmbedConfig` (with the node's ``model-path``);
    ``encoder``: an encoder to reuse (default: loaded when a note is not in ``cache_dir``). Returns ``out_path``.

    Raises
    ------
    NotesFormatError, LabelSpaceMismatchError, NodeConfigError
        The notes file is malformed, its codes share nothing with ``labels``, or the vectors' dimension is not
        the plan's (another encoder) or the plan's head reads chunk sequences.
    """
    from fedicd.heads import SEQUENCE_HEADS

    notes_path, out_path = Path(notes_path), Path(out_path)
    if plan.train.head in SEQUENCE_HEADS:
        raise NodeConfigError(f"train.head = {plan.train.head!r} reads chunk sequences, which a notes file is not "
                              "embedded into here yet: give this node a client data.npz")
    sigma = float(plan.privacy_config.embedding_noise)
    record = {"notes_sha256": _sha256(notes_path.read_bytes()), "labels_sha256": _sha256("\n".join(labels).encode()),
              "scaler_sha256": _sha256(json.dumps(scaler, sort_keys=True).encode()),
              "embedding": json.loads(json.dumps(dataclasses.asdict(embedding))), "embedding_noise": sigma,
              "seed": plan.seed, "partition_id": pid}
    record_path = out_path.with_name(_RECORD)
    if out_path.exists() and record_path.exists() and json.loads(record_path.read_text()).get("made_from") == record:
        return out_path
    notes = read_notes(notes_path)
    y, counts = _binarize(notes, labels, notes_path)
    from fedicd.embedding import embed_texts

    vectors = embed_texts(list(notes.texts), embedding, cache_dir=cache_dir, progress=False, encoder=encoder).vectors
    if sigma > 0:
        from fedicd.privacy.config import noise_embeddings

        vectors = noise_embeddings(vectors, sigma, seed=_noise_seed(plan.seed, pid))
    if vectors.shape[1] != plan.input_dim:
        raise NodeConfigError(f"the encoder makes {vectors.shape[1]}-dim vectors but the study's head reads "
                              f"{plan.input_dim}: check model-path and the run config's embedding")
    x = _scaler(scaler, vectors.shape[1]).transform(vectors).astype(np.float32)
    train = np.array([s == "train" for s in notes.splits])
    data = ClientData(x[train], y[train], x[~train], y[~train])
    write_client_data(out_path, data, labels)  # written whole or not at all (a temporary file renamed)
    record_path.write_text(json.dumps({"made_from": record, "notes": {"train": int(train.sum()),
                                                                       "val": int((~train).sum())},
                                       "codes": counts}, indent=1))
    log.info("embedded %d notes of %s (%d train, %d val) into %s", len(train), notes_path, int(train.sum()),
             int((~train).sum()), out_path)
    return out_path


def _embed_config(embedding: Mapping[str, object] | None, plan: RunPlan, model_path: str | None):
    from fedicd.embedding import EmbedConfig
    from fedicd.run_plan import section_from_dict

    raw = dict(embedding) if embedding else dict(plan.config.get("embedding") or {})
    try:
        cfg = section_from_dict(EmbedConfig, raw)
    except (TypeError, ValueError) as exc:
        raise NodeConfigError(f"the run config's embedding {raw!r} is not an embedding config: {exc}") from None
    return dataclasses.replace(cfg, model=model_path) if model_path else cfg


def node_data_path(settings: NodeSettings, plan: RunPlan, labels: Sequence[str], *,
                   scaler: Mapping[str, Sequence[float]] | None = None, embedding: Mapping[str, object] | None = None,
                   encoder=None) -> Path:
    """The client ``data.npz`` this node trains on, checked against the plan: its ``data-path`` itself, or the
    notes it names embedded into ``<state-dir>/embedded/data.npz`` (:func:`embed_notes`, made once).

    Raises
    ------
    NodeConfigError
        A partition id outside the plan's clients; notes without the run config's scaler; a data file whose
        rows the head cannot read or of another dimension (:class:`~fedicd.federated.site_data.SiteDataError`
        from the reader is a ValueError too).
    LabelSpaceMismatchError
        The data's label codes differ from the study's.
    """
    if settings.partition_id >= plan.n_clients:
        raise NodeConfigError(f"partition-id = {settings.partition_id} is outside the study's {plan.n_clients} "
                              f"clients (0..{plan.n_clients - 1})")
    path = settings.data_path
    if data_format(path) == "notes":
        if not scaler:
            raise NodeConfigError(f"data-path {str(path)!r} is a notes file, but the run config holds no scaler to "
                                  "standardise its vectors: run with the study's run-config.toml (fedicd deploy "
                                  "prepare writes it)")
        path = embed_notes(path, settings.state_dir / EMBEDDED_DATA, plan=plan, pid=settings.partition_id,
                           labels=labels, scaler=scaler, embedding=_embed_config(embedding, plan, settings.model_path),
                           cache_dir=settings.state_dir / "embedding_cache", encoder=encoder)
    data = read_client_data(path, labels=labels, input_dim=plan.input_dim, head=plan.train.head)
    planned = plan.client_sizes[settings.partition_id]
    if len(data.x_train) != planned:
        if plan.privacy.sample_level:
            raise NodeConfigError(f"{path} holds {len(data.x_train)} training notes but the study planned DP-SGD for "
                                  f"client {settings.partition_id} with {planned}: its noise was calibrated for "
                                  "that many; prepare the study with this site's size")
        log.warning("%s holds %d training notes; the study's plan counted %d for client %d", path,
                    len(data.x_train), planned, settings.partition_id)
    return path
