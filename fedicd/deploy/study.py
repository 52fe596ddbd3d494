"""The study folder a coordinator prepares for a deployment, and the run config that carries its protocol.

A study folder is what the server of a deployed run holds (:func:`prepare_study_from_run` copies it from a run
staged for simulation)::

    <study>/run_plan.json      the plan (public: no data)
    <study>/labels.json        the label space
    <study>/scaler.npz         the shared scaler's statistics (when the run has one)
    <study>/server/eval.npz    the server's own evaluation notes (only with federated.server_eval)
    <study>/initial_model.npz, warm_start.json   a public warm start (when the run was staged with one)
    <study>/run-config.toml    for ``flwr run . <federation> --run-config <study>/run-config.toml``

and, once the run has started, its checkpoint, history and ``results.json``. No client's data, no partition
manifest: the sites hold their own data (:mod:`fedicd.deploy.node_data`).

The run config (``[tool.flwr.app.config]`` in pyproject.toml, every value a string, :data:`RUN_CONFIG_KEYS`):
``study-dir`` (the server's study folder; the nodes ignore it), ``plan`` (run_plan.json's text), ``labels`` (a
JSON list of the label codes, in the run's order), ``scaler`` (JSON ``{"mean": [...], "scale": [...]}``, for
nodes that embed notes; "" when the run has no scaler) and ``embedding`` (JSON of the config's embedding
section). It is written as TOML basic strings that Flower's own reader
(``flwr.common.config.parse_config_args``) reads back exactly.

Privacy
-------
Everything in the run config is public study protocol, sent to every node: the plan, the label codes, the
scaler's per-dimension mean and scale (aggregate statistics of the training embeddings, as the paper's shared
scaler; see docs/threat-models.md) and the encoder settings. No note, vector or label row.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedicd.federated.model import INITIAL_MODEL
from fedicd.federated.site_data import SERVER_EVAL
from fedicd.run_plan import PLAN_FILE, read_plan

__all__ = ["RUN_CONFIG_FILE", "RUN_CONFIG_KEYS", "STUDY_FILES", "StudyError", "RunConfigError",
           "prepare_study_from_run", "study_run_config", "write_run_config", "toml_string", "run_config_text",
           "run_config_json"]

RUN_CONFIG_FILE = "run-config.toml"
RUN_CONFIG_KEYS = ("study-dir", "plan", "labels", "scaler", "embedding")
LABELS_FILE, SCALER_FILE, WARM_START_FILE = "labels.json", "scaler.npz", "warm_start.json"
STUDY_FILES = (PLAN_FILE, LABELS_FILE, SCALER_FILE, SERVER_EVAL, INITIAL_MODEL, WARM_START_FILE)
_STARTED = ("checkpoint", "results.json")


class StudyError(ValueError):
    """A study folder that cannot be prepared from what was given (the run folder or the target)."""


class RunConfigError(ValueError):
    """A run config (``context.run_config``) without the study's protocol, or with an unreadable value."""


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (quotes, backslashes and control characters escaped)."""
    # JSON's string escapes are TOML's; ensure_ascii=False keeps non-ASCII as UTF-8 (TOML refuses escaped
    # surrogate pairs), and TOML (unlike JSON) refuses a raw DEL
    return json.dumps(str(text), ensure_ascii=False).replace("\x7f", "\\u007f")


def write_run_config(path: str | Path, values: Mapping[str, str]) -> Path:
    """Write ``values`` (strings) as a flat TOML file for ``flwr run --run-config``."""
    path = Path(path)
    lines = ["# fedicd study protocol for `flwr run . <federation> --run-config <this file>` (fedicd deploy prepare)"]
    lines += [f"{key} = {toml_string(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _labels(run_dir: Path) -> list[str]:
    path = run_dir / LABELS_FILE
    if path.exists():
        return [str(c) for c in json.loads(path.read_text())["classes"]]
    eval_path = run_dir / SERVER_EVAL
    if eval_path.exists():
        with np.load(eval_path, allow_pickle=False) as z:
            return [str(c) for c in z["labels"]]
    raise StudyError(f"{run_dir} holds neither {LABELS_FILE} nor {SERVER_EVAL}: the study's label space is unknown "
                     "(stage the run with fedicd run, which writes labels.json)")


def study_run_config(study_dir: str | Path) -> dict[str, str]:
    """The run config of a prepared study folder (every :data:`RUN_CONFIG_KEYS` entry, as strings)."""
    study = Path(study_dir).resolve()
    plan = read_plan(study)
    scaler = ""
    if (study / SCALER_FILE).exists():
        with np.load(study / SCALER_FILE) as z:
            scaler = json.dumps({"mean": z["mean"].tolist(), "scale": z["scale"].tolist()})
    return {"study-dir": str(study), "plan": (study / PLAN_FILE).read_text(encoding="utf-8"),
            "labels": json.dumps(_labels(study)), "scaler": scaler,
            "embedding": json.dumps(plan.config.get("embedding") or {})}


def prepare_study_from_run(run_dir: str | Path, study_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the public and server parts of a staged run folder into ``study_dir``; write its run config.

    Copies :data:`STUDY_FILES` that the run holds (``server/eval.npz`` only with ``federated.server_eval``);
    never the clients' files or the partition manifests. Returns the run config's path.

    Raises
    ------
    StudyError
        ``run_dir`` holds no run plan, lacks ``server/eval.npz`` though its plan asks for server evaluation, or
        is ``study_dir``; ``study_dir`` already holds a study (unless ``overwrite``) or a started run.
    """
    run, study = Path(run_dir).resolve(), Path(study_dir).resolve()
    if not (run / PLAN_FILE).exists():
        raise StudyError(f"{run} holds no {PLAN_FILE}: give a run folder staged by fedicd (fedicd run)")
    if run == study:
        raise StudyError(f"--out {study} is the run folder itself: give a new folder for the study")
    plan = read_plan(run)
    if plan.federated.server_eval and not (run / SERVER_EVAL).exists():
        raise StudyError(f"{run}'s plan asks for server evaluation (federated.server_eval = true) but it holds no "
                         f"{SERVER_EVAL}: stage the run again")
    started = [name for name in _STARTED if (study / name).exists()]
    if started:
        raise StudyError(f"{study} holds a started run ({', '.join(started)}): give a new folder for the study")
    if (study / PLAN_FILE).exists() and not overwrite:
        raise StudyError(f"{study} already holds a study ({PLAN_FILE}): give a new folder, or overwrite it")
    labels = _labels(run)  # before anything is written
    for name in STUDY_FILES:
        if name == SERVER_EVAL and not plan.federated.server_eval:
            continue
        source, target = run / name, study / name
        target.unlink(missing_ok=True)
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    if not (study / LABELS_FILE).exists():
        (study / LABELS_FILE).write_text(json.dumps({"classes": labels}, indent=1))
    return write_run_config(study / RUN_CONFIG_FILE, study_run_config(study))


def run_config_text(run_config: Mapping[str, object], key: str) -> str:
    """The run config's ``key``, a non-empty string.

    Raises
    ------
    RunConfigError
        ``key`` missing or empty: the run was not started with the study's run config.
    """
    value = run_config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RunConfigError(f"the run config's {key!r} is {'missing' if value is None else repr(value)[:40]}: start "
                             "the run with the study's run config, `flwr run . <federation> --run-config "
                             f"<study>/{RUN_CONFIG_FILE}` (fedicd deploy prepare writes it)")
    return value


def run_config_json(run_config: Mapping[str, object], key: str, *, required: bool = True):
    """The run config's ``key`` parsed as JSON (None when empty and not ``required``)."""
    if not required and not str(run_config.get(key) or "").strip():
        return None
    text = run_config_text(run_config, key)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunConfigError(f"the run config's {key!r} is not JSON ({exc}): write the run config again with "
                             "fedicd deploy prepare") from None
