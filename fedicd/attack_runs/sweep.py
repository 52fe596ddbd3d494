"""Leakage vs utility: one attack under a sweep of embedding defences (``fedicd attack invert|attribute``).

For each defence (``none``, ``noise:SIGMA``, ``quantize:BITS``, ``pca:K``) the
defender applies it to every vector it releases (train, val, test, and the
victims' prefix vectors for generative inversion). *Utility* is the test
micro-F1 of the config's head (``[train]``, run centrally; the paper's MLP by
default) trained on the defended training vectors (threshold chosen on defended
validation vectors): ``icd_micro_f1``, or
``label_micro_f1`` for a corpus whose labels are not ICD codes
(``data.label_kind = "free"``). The adversary is *adaptive*: the defence is
public, so it defends its auxiliary vectors the same way before training.
The attacks come from :mod:`fedicd.attack_runs.registry`. Writes one
:class:`attacks.report.AttackReport` JSON per defence,
``leakage_utility.json`` (rows: defence, utility, leakage with CI; rewritten
after every defence, ``"complete": true`` once all ran) and
``leakage_utility.png``. A progress bar counts the defences on a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from attacks.attribute import clamp_labelled, is_missing
from attacks.defences import DimensionReducer, fit_range, gaussian_noise, quantize
from attacks.generative import GenerativeConfig
from fedicd.errors import ConfigError
from fedicd.plots import plot_leakage_utility
from fedicd.train_config import TrainConfig

from .data import AttackData, load_attack_data
from .registry import Attack, AttackOptions, attack_spec

__all__ = ["DEFENCES", "DEFAULT_SWEEP", "parse_defence", "make_defence", "label_utility", "icd_utility",
           "run_attack_sweep"]

log = logging.getLogger(__name__)

DEFENCES = ("none", "noise", "quantize", "pca")
DEFAULT_SWEEP = ("none", "noise:0.05", "noise:0.2", "quantize:1", "pca:16")


def parse_defence(spec: str) -> tuple[str, float]:
    """``"noise:0.1"`` → ``("noise", 0.1)``; ``"none"`` → ``("none", 0)``; bad specs name the problem."""
    kind, _, value = spec.partition(":")
    if kind not in DEFENCES:
        raise ConfigError(f"unknown defence {spec!r}; use one of none, noise:SIGMA, quantize:BITS, pca:K")
    if kind == "none":
        if value:
            raise ConfigError(f"defence 'none' takes no value, got {spec!r}")
        return kind, 0
    try:
        strength = float(value)
    except ValueError:
        raise ConfigError(f"defence {spec!r} needs a number after ':' (e.g. {kind}:1)") from None
    if kind == "noise" and not strength >= 0:
        raise ConfigError(f"noise sigma must be >= 0, got {spec!r}")
    if kind in ("quantize", "pca"):
        if strength != int(strength) or strength < 1:
            raise ConfigError(f"{kind} needs a positive integer, got {spec!r}")
        strength = int(strength)
    return kind, strength


def make_defence(kind: str, strength, fit_on: np.ndarray, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """The defender's transform; quantisation ranges and PCA are fitted on the defender's training vectors.

    Noise comes from one generator per defence (seeded by ``seed``), so every call — each split,
    and every vector the adversary's encoder re-embeds — draws fresh noise: no two calls share it.
    """
    if kind == "none":
        return lambda x: np.asarray(x, dtype=np.float32)
    if kind == "noise":
        rng = np.random.default_rng(seed)
        return lambda x: gaussian_noise(x, strength, seed=rng)
    if kind == "quantize":
        value_range = fit_range(fit_on)
        return lambda x: quantize(x, strength, value_range)
    if kind == "pca":
        return DimensionReducer(strength).fit(fit_on)
    raise ConfigError(f"unknown defence {kind!r}; known: {DEFENCES}")


def label_utility(defended: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int,
                  train: TrainConfig | None = None) -> float:
    """Test micro-F1 of a head trained centrally on defended vectors (any multi-label matrix: ICD or free labels).

    ``train``: the experiment's ``[train]`` section (head, epochs, ...), run centrally with ``seed``;
    default the paper's MLP.
    """
    from sklearn.preprocessing import StandardScaler

    from fedicd.metrics import choose_threshold, f1_scores
    from fedicd.train import predict_proba, train_central

    train = replace(train or TrainConfig(), mode="central", seed=seed)
    scaler = StandardScaler().fit(defended["train"])
    x = {p: scaler.transform(v).astype(np.float32) for p, v in defended.items()}
    model = train_central(x["train"], labels["train"], train).model
    pv, pt = predict_proba(model, x["val"]), predict_proba(model, x["test"])
    return float(f1_scores(labels["test"], pt, threshold=choose_threshold(labels["val"], pv))[0])


icd_utility = label_utility  # the name experiments/defence_curve.py imports


def _labelled_budget(d: AttackData, n_labelled: int) -> int:
    """``n_labelled`` clamped once (logged) to the training notes that have a value for the attribute."""
    key, values = d.attribute
    available = sum(not is_missing(v) for v in values["train"])
    return clamp_labelled(n_labelled, available, key) if available >= 2 else n_labelled  # < 2: the attack says why


def _check_request(attack: str, specs: list, options: AttackOptions) -> Attack:
    """Refuse bad arguments before any data is loaded; returns the registered attack."""
    spec = attack_spec(attack)
    if not specs:
        raise ConfigError("give at least one defence (e.g. none)")
    if spec.check is not None:
        spec.check(options)
    return spec


def _refuse_sequence_head(head: str) -> None:
    """The sweep's utility trains ``[train]``'s head on the defended pooled vectors: a chunk-sequence head cannot
    read them (refused before any note is embedded)."""
    from fedicd.heads import SEQUENCE_HEADS

    if head in SEQUENCE_HEADS:
        raise ConfigError(f"train.head = {head!r} reads chunk sequences, but the attack sweep defends and scores one "
                          "pooled vector per note (its utility trains train.head on them): set train.head to a "
                          "pooled head (mlp, deep_mlp, deep_res_mlp, linear, bottleneck)")


def _progress(total: int, progress: bool | None):
    """A bar over the defences on stderr: on a terminal (``progress=None``), always (True) or never (False)."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc="defences", unit="defence", disable=not show, leave=False)


def run_attack_sweep(cfg, attack: str, out: str | Path, *, defences: Sequence[str] = DEFAULT_SWEEP,
                     attribute: str = "mental_health", n_labelled: int = 200,
                     gen_cfg: GenerativeConfig | None = None, gen_spans: int = 8000,
                     progress: bool | None = None) -> list[dict]:
    """Run ``attack`` (a registered name: ``bow``, ``generative``, ``attribute``) under each defence.

    ``attribute``: a built-in (``mental_health``, ``hiv``, ``pregnancy``, ``female``, ``site``) or a column of
    the notes (see :func:`fedicd.attack_runs.data.resolve_attribute`); checked before anything is embedded.
    Nothing is written before the first defence has been attacked. ``progress``: the defences' progress bar
    (None: only when stderr is a terminal).
    """
    specs = [parse_defence(s) for s in defences]
    options = AttackOptions(attribute=attribute, n_labelled=n_labelled, gen_spans=gen_spans, gen_cfg=gen_cfg)
    spec = _check_request(attack, specs, options)
    _refuse_sequence_head(cfg.train.head)
    if gen_cfg is None:
        options = replace(options, gen_cfg=GenerativeConfig(seed=cfg.seed, corrector_steps=2, candidates=4))
    d = load_attack_data(cfg, attribute=attribute if spec.needs_attribute else None)
    extra = {"n_labelled_requested": n_labelled} if spec.needs_attribute else {}
    if spec.needs_attribute:
        options = replace(options, n_labelled=_labelled_budget(d, n_labelled))
    out, rows, metric = Path(out), [], None
    with _progress(len(specs), progress) as bar:
        for kind, strength in specs:
            bar.set_postfix_str(kind if kind == "none" else f"{kind}:{strength}")
            report, utility = _defended_report(d, spec, kind, strength, options)
            metric = metric or spec.leakage_metric(report)
            report.settings.update(extra)
            _save_report(out, report, kind, strength)
            rows.append({"defence": kind, "strength": strength, "utility_metric": d.utility_metric,
                         d.utility_metric: utility, "metric": metric, "leakage": report.metrics[metric],
                         "baseline": report.baselines.get(metric)})
            _write_rows(out, attack, rows, complete=len(rows) == len(specs))
            log.info("%s %s: utility %.4f, %s %.4f", kind, strength, utility, metric, rows[-1]["leakage"]["value"])
            bar.update()
    plot_leakage_utility(rows, out / "leakage_utility.png")
    return rows


def _defended_report(d: AttackData, spec: Attack, kind: str, strength, options: AttackOptions):
    """The attack's report under one defence, with the defended head's utility recorded in its settings."""
    defend = make_defence(kind, strength, d.vectors["train"], seed=d.cfg.seed)
    report = spec.runner()(d, defend, options)
    utility = label_utility({p: defend(v) for p, v in d.vectors.items()}, d.labels, d.cfg.seed, d.cfg.train)
    report.settings.update({"defence": kind, "strength": strength, d.utility_metric: utility,
                            "utility_metric": d.utility_metric,
                            "adversary": "adaptive (auxiliary vectors defended the same way)", **d.settings})
    return report, utility


def _save_report(out: Path, report, kind: str, strength) -> None:
    name = f"{kind}" if kind == "none" else f"{kind}_{strength}"
    out.mkdir(parents=True, exist_ok=True)
    report.save(out / f"{report.attack}_{name}.json")


def _write_rows(out: Path, attack: str, rows: list[dict], *, complete: bool) -> None:
    from fedicd.provenance import provenance

    doc = {"attack": attack, "complete": complete, "rows": rows, "provenance": provenance()}
    (out / "leakage_utility.json").write_text(json.dumps(doc, indent=2))


