"""``fedicd audit CONFIG_OR_RUN_DIR --out DIR``: train a federation (or read a finished one), then run the battery.

* A TOML config is trained federated into ``DIR/run`` (:func:`fedicd.runner.simulation.run_federated`),
  on fedicd's in-process engine unless the config (or a ``--set``) names ``federated.engine``.
  A config with ``train.mode = "central"`` is refused (:class:`NotAFederationError`): the battery
  attacks what a federation's server sees.
* A finished run folder (``run_plan.json`` and a last-round checkpoint) is attacked as it is;
  a folder whose run never finished is refused by :func:`~fedicd.attack_runs.federation.load_federation_run`.

Then :func:`fedicd.attack_runs.battery.run_battery` writes ``DIR/reports/``, ``DIR/plots/`` and
``DIR/summary.{json,csv,md,png}``. Attack names and the DP precondition of the audit are checked
before anything is trained.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Sequence
from pathlib import Path

from fedicd.errors import ConfigError

__all__ = ["NotAFederationError", "audit", "audit_cli", "engine_overrides", "INPROCESS_OVERRIDE"]

log = logging.getLogger(__name__)

INPROCESS_OVERRIDE = 'federated.engine="inprocess"'


class NotAFederationError(ConfigError):
    """The battery was given a central (non-federated) config: there is no federation to attack."""


def engine_overrides(config: Path, overrides: Sequence[str]) -> list[str]:
    """``overrides`` with the in-process engine first, unless the config or an override names an engine."""
    try:
        raw = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return list(overrides)  # load_config reports the problem with its own message
    named = "engine" in (raw.get("federated") or {}) or any(o.strip().startswith("federated.engine")
                                                              for o in overrides)
    return list(overrides) if named else [INPROCESS_OVERRIDE, *overrides]


def _train(config: Path, out: Path, overrides: Sequence[str], attacks: Sequence[str] | None) -> Path:
    from fedicd.config import load_config

    from .battery import resolve_attacks

    cfg = load_config(config, engine_overrides(config, overrides))
    if cfg.train.mode != "federated":
        raise NotAFederationError(f"{config}: train.mode = {cfg.train.mode!r}; the battery attacks a federation "
                                  "(model updates, a global model), so give a config with train.mode = 'federated' "
                                  "(or --set train.mode=\"federated\")")
    from fedicd.heads import SEQUENCE_HEADS

    if cfg.train.head in SEQUENCE_HEADS:  # refused before a federation is trained for nothing
        raise ConfigError(f"{config}: train.head = {cfg.train.head!r} trains on chunk sequences, but the battery's "
                          "attacks read one pooled vector per note: set train.head to a pooled head (mlp, deep_mlp, "
                          "deep_res_mlp, linear, bottleneck)")
    chosen = resolve_attacks(attacks)
    if attacks is not None and cfg.privacy.dp == "none" and any(a.needs_dp for a in chosen):
        raise ConfigError(f"--attacks names the DP audit, but {config} trains without DP (privacy.dp = 'none'); "
                          "set privacy.dp = 'sample' or 'client', or leave 'audit' out")
    from fedicd.runner.simulation import run_federated

    run_dir = out / "run"
    log.info("audit: training %s federated into %s (engine %s)", config, run_dir, cfg.federated.engine)
    run_federated(cfg, run_dir)
    return run_dir


def audit(target: str | Path, out: str | Path, *, attacks: Sequence[str] | None = None, quick: bool = False,
          overrides: Sequence[str] = (), seed: int | None = None, options: dict[str, dict] | None = None) -> dict:
    """Run the battery on a run folder, or on a federation trained from a TOML config; returns the summary.

    Parameters
    ----------
    target : path
        A TOML config (trained into ``out/run``) or a finished federated run folder.
    out : path
        Where reports, plots and the summary go.
    attacks : sequence of str, optional
        Battery attacks by name (default: all that apply to the run).
    quick : bool
        Reduced attacks (seconds each; for tests and CI).
    overrides : sequence of str
        ``section.key=value`` for a config; refused with a run folder (its config is fixed).
    seed : int, optional
        The attacks' seed (default: the run's seed).
    options : dict, optional
        Extra keyword options per attack name (:func:`~fedicd.attack_runs.battery.run_battery`).
    """
    from .battery import resolve_attacks, run_battery
    from .federation import load_federation_run

    target, out = Path(target), Path(out)
    resolve_attacks(attacks)
    if target.is_dir():
        if overrides:
            raise ConfigError(f"--set applies to a config, but {target} is a run folder (its config is fixed); "
                              f"got {list(overrides)}")
        run_dir = target
    elif target.suffix == ".toml" or target.is_file():
        run_dir = _train(target, out, overrides, attacks)
    else:
        raise FileNotFoundError(f"{target}: neither a TOML config nor a run folder")
    run = load_federation_run(run_dir)
    return run_battery(run, out, attacks=attacks, seed=run.plan.seed if seed is None else seed, quick=quick,
                       options=options)


def audit_cli(args) -> int:
    """``fedicd audit``'s handler: run :func:`audit`, print the summary table; 1 when an attack failed."""
    from .battery_summary import summary_markdown

    summary = audit(args.target, args.out, attacks=args.attacks, quick=args.quick, overrides=args.overrides)
    print(summary_markdown(summary))
    print(f"reports: {Path(args.out) / 'reports'}; summary: {Path(args.out) / 'summary.md'} (+ .json, .csv, .png)")
    if summary["failed"]:
        print(f"failed: {', '.join(summary['failed'])} (errors in the summary)")
        return 1
    return 0
