"""The battery: every attack on one finished federated run, one AttackReport each, and a summary.

:data:`BATTERY` lists the attacks by name, in order:

* ``embedding_inversion``: bag-of-words inversion of the run's test-note embeddings
  (:func:`fedicd.attack_runs.battery_embedding.battery_embedding_inversion`);
* ``attribute``: attribute inference from the same embeddings (AUC);
* ``update_inversion``: a curious or malicious server inverts a client's update into
  input embeddings, then text (:mod:`fedicd.attack_runs.update_inversion`);
* ``membership``: LiRA and RMIA against the final model and a client's update
  (:mod:`fedicd.attack_runs.membership`; log-scale ROC PNGs);
* ``audit``: the one-run empirical ε lower bound of the run's DP claim
  (:mod:`fedicd.attack_runs.audit`; needs a run with DP).

:func:`run_battery` runs them and writes ``OUT/reports/<attack>_<k>.json``, the
summary (``summary.json``, ``summary.csv``, ``summary.md``, ``summary.png``;
:mod:`fedicd.attack_runs.battery_summary`). One attack's failure is recorded in
the summary with its error and the others still run. An attack that raises
:class:`fedicd.errors.ConfigError` (the run is outside what it can do, e.g. the
audit of a run without DP) is recorded as skipped with the reason, unless it was
asked for by name: then the error propagates.
"""

from __future__ import annotations

import importlib
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attacks import AttackReport
from fedicd.errors import ConfigError

from .federation import FederationRun

__all__ = ["BatteryAttack", "BATTERY", "battery_names", "resolve_attacks", "run_battery", "headline_metric"]

log = logging.getLogger(__name__)

VARIANT_KEYS = ("variant", "attack", "server", "auditor", "canaries", "target", "observed", "mode")
"""Report settings that name a variant in the summary (in this order; each cut at its first " (" and 40 characters)."""


@dataclass(frozen=True)
class BatteryAttack:
    """One attack of the battery.

    Attributes
    ----------
    name : str
        The name ``fedicd audit --attacks`` takes.
    run : callable or str
        ``run(run, *, seed, quick, **options) -> list[AttackReport]``, or ``"module:function"`` naming it.
    headline : tuple of str
        The metrics the summary shows, first found wins (else the report's first metric).
    needs_dp : bool
        Only meaningful on a run with differential privacy (refused before any attack when asked by name).
    needs_text : bool
        Reads the run's notes and public material (:func:`~fedicd.attack_runs.battery_embedding.run_attack_data`,
        loaded once per battery and passed as ``data=``).
    wants_out : bool
        Writes its own figures: gets ``out=`` (the battery's ``plots/`` folder).
    """

    name: str
    run: Callable[..., list[AttackReport]] | str
    headline: tuple[str, ...] = ()
    needs_dp: bool = False
    needs_text: bool = False
    wants_out: bool = False

    def runner(self) -> Callable[..., list[AttackReport]]:
        if not isinstance(self.run, str):
            return self.run
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module), attr)


BATTERY: tuple[BatteryAttack, ...] = (
    BatteryAttack("embedding_inversion", "fedicd.attack_runs.battery_embedding:battery_embedding_inversion",
                  ("word_f1",), needs_text=True),
    BatteryAttack("attribute", "fedicd.attack_runs.battery_embedding:battery_attribute", ("female_auc",),
                  needs_text=True),
    BatteryAttack("update_inversion", "fedicd.attack_runs.update_inversion:battery_update_inversion",
                  ("word_f1", "recovered", "full_name_recovered")),
    BatteryAttack("membership", "fedicd.attack_runs.membership:battery_membership",
                  ("tpr_at_1pct_fpr", "auc"), wants_out=True),
    BatteryAttack("audit", "fedicd.attack_runs.audit:battery_audit", ("epsilon_ratio", "epsilon_lower_bound"),
                  needs_dp=True),
)
"""The battery's attacks, in the order they run."""


def battery_names(battery: Sequence[BatteryAttack] = BATTERY) -> tuple[str, ...]:
    return tuple(a.name for a in battery)


def resolve_attacks(names: Sequence[str] | None, battery: Sequence[BatteryAttack] = BATTERY) -> list[BatteryAttack]:
    """The attacks ``names`` picks (all when None), in battery order; :class:`ConfigError` listing the valid names."""
    valid = battery_names(battery)
    if names is None:
        return list(battery)
    if not names:
        raise ConfigError(f"--attacks is empty; give one or more of {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ConfigError(f"unknown attack {unknown[0]!r} for the battery; valid: {', '.join(valid)}")
    return [a for a in battery if a.name in set(names)]


def headline_metric(attack: BatteryAttack, report: AttackReport) -> str | None:
    """The metric the summary shows for ``report``: the first of ``attack.headline`` it has, else its first."""
    for name in attack.headline:
        if name in report.metrics:
            return name
    for name in report.metrics:
        if name.endswith("_auc") and attack.name == "attribute":
            return name
    return next(iter(report.metrics), None)


def _check_dp(chosen: list[BatteryAttack], run: FederationRun, explicit: bool) -> None:
    for attack in chosen:
        if attack.needs_dp and run.dp == "none" and explicit:
            raise ConfigError(f"attack {attack.name!r} audits a differential-privacy claim, but {run.run_dir} was "
                              "trained without DP (privacy.dp = 'none'); train with privacy.dp = 'sample' or "
                              "'client', or leave it out of --attacks")


def _call(attack: BatteryAttack, run: FederationRun, *, seed: int, quick: bool, options: dict) -> list[AttackReport]:
    reports = attack.runner()(run, seed=seed, quick=quick, **options)
    if not isinstance(reports, list) or not all(isinstance(r, AttackReport) for r in reports):
        raise TypeError(f"attack {attack.name!r} returned {type(reports).__name__}, not a list of AttackReport")
    if not reports:
        raise ValueError(f"attack {attack.name!r} returned no report")
    return reports


def _options(attack: BatteryAttack, out: Path, options: dict[str, dict], text: Callable[[], Any]) -> dict:
    opts = dict(options.get(attack.name, {}))
    if attack.needs_text and "data" not in opts:
        opts["data"] = text()
    if attack.wants_out:
        opts.setdefault("out", out / "plots")
    return opts


def run_battery(run: FederationRun, out: str | Path, *, attacks: Sequence[str] | None = None, seed: int = 0,
                quick: bool = False, battery: Sequence[BatteryAttack] = BATTERY,
                options: dict[str, dict] | None = None) -> dict:
    """Run the battery on ``run``; write one report per attack result and the summary under ``out``.

    Parameters
    ----------
    run : FederationRun
        A finished federated run (:func:`fedicd.attack_runs.federation.load_federation_run`).
    out : path
        Output folder (``reports/``, ``plots/``, ``summary.*``).
    attacks : sequence of str, optional
        Names from ``battery`` (default: all; an attack outside what the run allows is then skipped).
    seed, quick :
        Passed to every attack (``quick``: reduced versions, seconds each).
    battery : sequence of BatteryAttack
        The attacks to choose from (default :data:`BATTERY`).
    options : dict, optional
        Extra keyword options per attack name.

    Returns
    -------
    dict
        The summary (also written as ``summary.json``).
    """
    from .battery_embedding import run_attack_data
    from .battery_summary import defence_of, write_summary

    chosen = resolve_attacks(attacks, battery)
    stray = sorted(set(options or {}) - set(battery_names(battery)))
    if stray:
        raise ConfigError(f"options for unknown attack(s) {stray}; valid: {', '.join(battery_names(battery))}")
    explicit = attacks is not None
    _check_dp(chosen, run, explicit)
    out = Path(out)
    (out / "reports").mkdir(parents=True, exist_ok=True)
    text = _once(lambda: run_attack_data(run))
    rows, t_all = [], time.perf_counter()
    for attack in chosen:
        rows += _run_one(attack, run, out, seed=seed, quick=quick, explicit=explicit, options=options or {},
                         text=text)
    return write_summary(out, rows, run=run, defence=defence_of(run), seed=seed, quick=quick,
                         seconds=time.perf_counter() - t_all)


def _once(load: Callable[[], Any]) -> Callable[[], Any]:
    """``load()`` on the first call, the same value after (the notes are embedded once per battery)."""
    cache: list = []

    def get() -> Any:
        if not cache:
            cache.append(load())
        return cache[0]

    return get


def _run_one(attack: BatteryAttack, run: FederationRun, out: Path, *, seed: int, quick: bool, explicit: bool,
             options: dict[str, dict], text: Callable[[], Any]) -> list[dict]:
    """Summary rows of one attack: one per report, or one ``skipped`` / ``failed`` row with the reason."""
    base = {"attack": attack.name}
    if attack.needs_dp and run.dp == "none":
        return [{**base, "status": "skipped", "error": "the run has no differential privacy (privacy.dp = 'none'): "
                                                        "no ε to audit"}]
    t0 = time.perf_counter()
    try:
        reports = _call(attack, run, seed=seed, quick=quick, options=_options(attack, out, options, text))
    except ConfigError as exc:
        if explicit:
            raise
        log.warning("battery: %s skipped: %s", attack.name, exc)
        return [{**base, "status": "skipped", "error": str(exc), "seconds": time.perf_counter() - t0}]
    except Exception as exc:  # one attack's failure must not hide the others' results
        log.error("battery: %s failed:\n%s", attack.name, traceback.format_exc())
        return [{**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                 "seconds": time.perf_counter() - t0}]
    seconds = time.perf_counter() - t0
    rows = []
    for k, report in enumerate(reports):
        path = out / "reports" / f"{attack.name}_{k}.json"
        report.save(path)
        rows.append(_row(attack, report, k, path.relative_to(out), seconds / len(reports)))
    return rows


def _short(value: object, limit: int = 40) -> str:
    text = str(value).split(" (")[0]
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _row(attack: BatteryAttack, report: AttackReport, k: int, path: Path, seconds: float) -> dict:
    metric = headline_metric(attack, report)
    m = report.metrics.get(metric, {}) if metric else {}
    b = report.baselines.get(metric) if metric else None
    st = report.settings
    variant = " / ".join(_short(st[key]) for key in VARIANT_KEYS if isinstance(st.get(key), (str, int, float)))
    return {"attack": attack.name, "status": "ok", "report": k, "kind": report.attack, "variant": variant,
            "metric": metric, "value": m.get("value"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
            "n": m.get("n"), "baseline": None if b is None else b.get("value"), "file": str(path),
            "seconds": seconds}
