"""A study folder prepared from a config by a coordinator who holds no site's data.

:func:`prepare_study` is what a real multi-hospital study starts from. The coordinator gives

* the experiment config (``[train] mode = "federated"``, the head, the strategy, privacy, secure aggregation);
* a **sites file** (TOML): one ``[[site]]`` table per hospital with ``partition-id`` (0 … K−1, each once) and
  ``train-notes`` (the number of training notes the site declares; the privacy plan needs it, and a site whose
  data holds another number is refused under DP-SGD), optionally ``name``::

      [[site]]
      name = "site-a"
      partition-id = 0
      train-notes = 6012

* the **label space**: a JSON list of codes, a ``labels.json`` written by fedicd (``{"classes": [...]}``) or a
  text file with one code per line, in the order every site's labels follow;
* optionally the **shared scaler** (an ``.npz`` with ``mean`` and ``scale``, e.g. ``scaler.npz`` of a pilot run
  or statistics of a public corpus; sites that embed notes need it) and the server's **evaluation notes**
  (an ``eval.npz`` in the server format of :mod:`fedicd.federated.site_data`; required with
  ``federated.server_eval = true``).

The input dimension is the scaler's, else the evaluation notes', else ``input_dim``. The plan is built and
checked exactly as staging builds it (:func:`fedicd.runner.staging.build_plan`: privacy calibrated per site,
the strategy's arguments, secure aggregation's limits) before anything is written.

Privacy
-------
Everything written here is public study protocol except ``server/eval.npz``, the coordinator's own notes.
Declared site sizes become part of the plan every node receives (docs/threat-models.md, Deployment).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np

from fedicd.config import ExperimentConfig
from fedicd.deploy.study import (LABELS_FILE, RUN_CONFIG_FILE, SCALER_FILE, StudyError, study_run_config,
                                 write_run_config)
from fedicd.federated.site_data import SERVER_EVAL, read_server_eval
from fedicd.run_plan import PLAN_FILE, resolved_config, write_plan
from fedicd.sequences import is_sequence

__all__ = ["read_sites", "read_label_space", "prepare_study"]


def read_sites(path: str | Path) -> list[int]:
    """The declared training-note counts of a sites file, in partition-id order.

    Raises
    ------
    StudyError
        The file is missing or not TOML, has no ``[[site]]``, a site without ``partition-id`` or
        ``train-notes``, a count < 1, or partition ids that are not 0 … K−1 each once.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"sites file {path} not found (a TOML file with one [[site]] per hospital: partition-id, "
                         "train-notes)")
    try:
        sites = tomllib.loads(path.read_text(encoding="utf-8")).get("site")
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"sites file {path} is not TOML: {exc}") from None
    if not isinstance(sites, list) or not sites:
        raise StudyError(f"sites file {path} holds no [[site]] table: add one per hospital with partition-id and "
                         "train-notes")
    sizes: dict[int, int] = {}
    for i, site in enumerate(sites):
        missing = [k for k in ("partition-id", "train-notes") if k not in site]
        if missing:
            raise StudyError(f"sites file {path}: site {i + 1} ({site.get('name', 'unnamed')}) lacks {missing}")
        pid, n = site["partition-id"], site["train-notes"]
        if not isinstance(pid, int) or not isinstance(n, int) or isinstance(pid, bool) or isinstance(n, bool):
            raise StudyError(f"sites file {path}: site {i + 1}'s partition-id and train-notes must be integers, got "
                             f"{pid!r} and {n!r}")
        if n < 1:
            raise StudyError(f"sites file {path}: site {i + 1} (partition-id {pid}) declares {n} training notes; "
                             "a site needs at least 1")
        if pid in sizes:
            raise StudyError(f"sites file {path}: partition-id {pid} appears twice")
        sizes[pid] = n
    if sorted(sizes) != list(range(len(sizes))):
        raise StudyError(f"sites file {path}: partition ids must be 0 … {len(sizes) - 1}, each once; got "
                         f"{sorted(sizes)}")
    return [sizes[p] for p in range(len(sizes))]


def read_label_space(path: str | Path) -> list[str]:
    """The label codes of a JSON list, a fedicd ``labels.json`` or a one-code-per-line text file.

    Raises
    ------
    StudyError
        Missing file, no codes, an empty or duplicated code.
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"label space file {path} not found (a JSON list of codes, labels.json, or one code per line)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        raw = json.loads(text)
        codes = raw.get("classes") if isinstance(raw, dict) else raw
        if not isinstance(codes, list):
            raise StudyError(f"label space file {path} holds neither a JSON list nor {{\"classes\": [...]}}")
    else:
        codes = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    codes = [str(c).strip() for c in codes]
    if not codes or any(not c for c in codes):
        raise StudyError(f"label space file {path} holds {'no codes' if not codes else 'an empty code'}")
    dupes = sorted({c for c in codes if codes.count(c) > 1})
    if dupes:
        raise StudyError(f"label space file {path} lists codes more than once: {dupes[:10]}")
    return codes


def _scaler(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise StudyError(f"scaler file {path} not found (an .npz with mean and scale, e.g. a pilot run's scaler.npz)")
    with np.load(path) as z:
        missing = [k for k in ("mean", "scale") if k not in z.files]
        if missing:
            raise StudyError(f"scaler file {path} lacks {missing} (it holds {z.files})")
        mean, scale = np.asarray(z["mean"], np.float64), np.asarray(z["scale"], np.float64)
    if mean.ndim != 1 or mean.shape != scale.shape or not (np.isfinite(mean).all() and (scale > 0).all()):
        raise StudyError(f"scaler file {path}: mean and scale must be finite vectors of one length with scale > 0, "
                         f"got shapes {mean.shape} and {scale.shape}")
    return {"mean": mean, "scale": scale}


def _input_dim(scaler, eval_dim: int | None, input_dim: int | None) -> int:
    dims = {name: d for name, d in (("scaler", None if scaler is None else scaler["mean"].size),
                                    ("evaluation notes", eval_dim), ("input_dim", input_dim)) if d is not None}
    if not dims:
        raise StudyError("the input dimension is unknown: give the shared scaler, the server's evaluation notes or "
                         "input_dim (the encoder's output dimension)")
    if len(set(dims.values())) > 1:
        raise StudyError(f"the input dimensions disagree: {dims}")
    return next(iter(dims.values()))


def prepare_study(cfg: ExperimentConfig, study_dir: str | Path, *, sites: str | Path, labels: str | Path,
                  scaler: str | Path | None = None, eval_data: str | Path | None = None,
                  input_dim: int | None = None) -> Path:
    """Write a study folder for ``cfg`` (see the module docstring); returns the run config's path.

    Raises
    ------
    StudyError
        A bad sites, label-space or scaler file, a config that is not federated or asks for a warm start (it needs
        the notes: use ``prepare_study_from_run`` on a pilot run), evaluation notes missing with
        ``federated.server_eval`` (or given without it), dimensions that disagree, or a folder holding a study.
    SiteDataError
        Evaluation notes whose label codes or dimension differ from the study's.
    """
    from fedicd.runner.apps import build_run_strategy
    from fedicd.runner.staging import _check_secure, build_plan

    study = Path(study_dir).resolve()
    if cfg.train.mode != "federated":
        raise StudyError(f"train.mode = {cfg.train.mode!r}: a study needs train.mode = 'federated'")
    if cfg.warm_start.init != "random" or cfg.warm_start.public_config:
        raise StudyError("[warm_start] needs notes to embed descriptions or a public corpus at staging: prepare "
                         "the study from a pilot run instead (fedicd deploy prepare --from-run RUN)")
    if (study / PLAN_FILE).exists():
        raise StudyError(f"{study} already holds a study ({PLAN_FILE}): give a new folder")
    sizes, codes, stats = read_sites(sites), read_label_space(labels), _scaler(Path(scaler) if scaler else None)
    fed = cfg.federated
    if fed.server_eval and eval_data is None:
        raise StudyError("federated.server_eval = true needs the server's evaluation notes (eval_data, an eval.npz "
                         "in the server format); or set federated.server_eval = false")
    if eval_data is not None and not fed.server_eval:
        raise StudyError("evaluation notes were given but federated.server_eval = false: the server would hold "
                         "notes it never uses; drop them or set federated.server_eval = true")
    evaluation = None
    if eval_data is not None:
        if not Path(eval_data).is_file():
            raise StudyError(f"evaluation notes {eval_data} not found (an eval.npz in the server format)")
        evaluation = read_server_eval(eval_data, labels=codes, head=cfg.train.head)
    eval_dim = None
    if evaluation is not None:
        x = evaluation["x_val"]
        eval_dim = int((x.chunks if is_sequence(x) else np.asarray(x)).shape[-1])
    dim = _input_dim(stats, eval_dim, input_dim)
    plan = build_plan(cfg, input_dim=dim, n_labels=len(codes), client_sizes=sizes,
                      labels={"n_labels": len(codes), "source": str(Path(labels).name)},
                      embedding=resolved_config(cfg).get("embedding"))
    build_run_strategy(plan)
    _check_secure(plan)
    study.mkdir(parents=True, exist_ok=True)
    (study / LABELS_FILE).write_text(json.dumps({"classes": codes}, indent=1))
    if stats is not None:
        # save_scaler's keys (load_scaler reads them); the variance is the scale squared
        np.savez(study / SCALER_FILE, mean=stats["mean"], scale=stats["scale"], var=stats["scale"] ** 2,
                 n_samples_seen=np.asarray(0))
    if eval_data is not None:
        (study / SERVER_EVAL).parent.mkdir(parents=True, exist_ok=True)
        (study / SERVER_EVAL).write_bytes(Path(eval_data).read_bytes())
    write_plan(study, plan)
    return write_run_config(study / RUN_CONFIG_FILE, study_run_config(study))
