"""DP-SGD hyper-parameter sweep: sample-level DP at a target ε, every trial reported.

    python experiments/dp_sweep.py --config experiments/configs/synthetic_fed.toml --epsilon 8 \
        --grid small --out runs/dp_sweep

Each trial is one of fedicd's own federated runs (``run_federated``, engine
``"inprocess"``) under ``privacy.dp = "sample"`` with σ calibrated to
``--epsilon``. The axes (see ``GRIDS``):

- ``head``: ``mlp`` (the paper's), ``linear`` (Tramèr & Boneh 2021's DP
  baseline), ``bottleneck`` (rank-64 linear map);
- ``input_norm``: ``none`` or ``l2`` (rows scaled to norm √d);
- ``optimizer``: SGD, SGD with momentum 0.9, AdamW, each at its own base
  learning rate;
- ``batch``: the expected Poisson batch; ``FULL_BATCH`` exceeds every client,
  so q = 1 and each local epoch is one full-batch step (DP-GD);
- ``lr_clip``: clip and learning rate chosen together (with every gradient
  clipped an SGD step is about lr·C long, so C ↓ 10 pairs with lr ↑ 10);
- ``schedule``: local epochs versus rounds at the same number of epochs
  (rounds ÷ k, local epochs × k).

``--search coordinate`` (default) tunes one axis at a time in that order, each
at the best values found so far ("each lever alone, then together");
``--search product`` runs every combination (``--max-trials`` caps it).

**Which data tunes, and what tuning costs.** Selection reads only the
validation micro-F1; the test split is never used to choose. Tuning on the
private data itself is not free: every trial is a release, and choosing the
best of many adds to ε (Papernot & Steinke 2022, "Hyperparameter Tuning with
Renyi Differential Privacy", ICLR). This script therefore tunes on a public
stand-in: the synthetic corpus generated with a different seed
(``--tuning-seed``, default 1) than the evaluation federation (the config's
own ``seed``, 0 in fedicd's configs): other notes, other patients, the same
generator; or a public corpus's own config (``--tuning-config``, e.g.
``experiments/configs/synthetic_public.toml``, at its own seed; one whose
``[data]`` and seed are the evaluation config's is reported as private). Only the selected setting then runs once on the evaluation
federation, and its validation and test scores are reported as the result
(``evaluation`` in ``dp_sweep.json``). A run with ``--tuning-seed`` equal to
the evaluation seed says so in its outputs: it tuned on the private
federation's validation split, and that choice has a privacy cost this
script does not account.

Writes ``dp_sweep.json`` (every trial: settings, ε under RDP and PLD where the
run reports them, micro/macro F1 on validation and test of the tuning corpus,
seconds, or the error that stopped it) and ``dp_sweep.md`` (the table).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

FULL_BATCH = 1_000_000  # above any client's notes: q = 1, one full-batch step per local epoch (DP-GD)
AXES = ("head", "input_norm", "optimizer", "batch", "lr_clip", "schedule")
SPECIAL = ("lr", "lr_mult", "rounds_div")  # resolved by trial_overrides, not passed to load_config

_SGD = {"federated.local_optimizer": "sgd", "federated.local_momentum": 0.0, "lr": 10.0}
_SGD_MOMENTUM = {"federated.local_optimizer": "sgd", "federated.local_momentum": 0.9, "lr": 1.0}
_ADAMW = {"federated.local_optimizer": "adamw", "federated.local_momentum": 0.0, "lr": 1e-3}

GRIDS: dict[str, dict[str, list[dict]]] = {
    "smoke": {
        "head": [{"train.head": "linear", "train.dropout": 0.0}, {"train.head": "bottleneck"}],
        "input_norm": [{"train.input_norm": "none"}],
        "optimizer": [_SGD],
        "batch": [{"train.batch_size": FULL_BATCH}],
        "lr_clip": [{"privacy.clip": 1.0, "lr_mult": 1.0}],
        "schedule": [{"rounds_div": 1}],
    },
    "small": {
        "head": [{"train.head": "mlp"}, {"train.head": "linear", "train.dropout": 0.0},
                 {"train.head": "bottleneck"}],
        "input_norm": [{"train.input_norm": "none"}, {"train.input_norm": "l2"}],
        "optimizer": [_SGD, _SGD_MOMENTUM, _ADAMW],
        "batch": [{"train.batch_size": 32}, {"train.batch_size": FULL_BATCH}],
        "lr_clip": [{"privacy.clip": 1.0, "lr_mult": 1.0}, {"privacy.clip": 0.1, "lr_mult": 10.0}],
        "schedule": [{"rounds_div": 1}, {"rounds_div": 4}],
    },
    "full": {
        "head": [{"train.head": "mlp"}, {"train.head": "linear", "train.dropout": 0.0},
                 {"train.head": "bottleneck"}, {"train.head": "bottleneck", "train.hidden": [256]}],
        "input_norm": [{"train.input_norm": "none"}, {"train.input_norm": "l2"}],
        "optimizer": [_SGD, _SGD_MOMENTUM, _ADAMW],
        "batch": [{"train.batch_size": 16}, {"train.batch_size": 64}, {"train.batch_size": 256},
                  {"train.batch_size": FULL_BATCH}],
        "lr_clip": [{"privacy.clip": c, "lr_mult": m} for c, m in ((1.0, 1.0), (0.1, 10.0), (0.1, 3.0),
                                                                    (1.0, 0.3), (0.01, 100.0), (1.0, 3.0))],
        "schedule": [{"rounds_div": k} for k in (1, 2, 4, 10)],
    },
}


def toml_value(value) -> str:
    """A Python value as a TOML literal for a ``--set`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def trial_overrides(settings: dict, base_rounds: int, base_local_epochs: int) -> list[str]:
    """``load_config`` overrides of one trial's merged settings (special keys resolved).

    ``lr`` × ``lr_mult`` becomes ``federated.local_lr``; ``rounds_div = k`` runs ``base_rounds // k`` rounds of
    ``base_local_epochs × k`` local epochs (the same number of epochs). Raises ValueError for a ``rounds_div``
    that leaves no round.
    """
    plain = {k: v for k, v in settings.items() if k not in SPECIAL}
    out = [f"{k}={toml_value(v)}" for k, v in sorted(plain.items())]
    if "lr" in settings:
        out.append(f"federated.local_lr={settings['lr'] * settings.get('lr_mult', 1.0)!r}")
    k = int(settings.get("rounds_div", 1))
    if k < 1 or base_rounds // k < 1:
        raise ValueError(f"rounds_div={k} leaves no round of the config's {base_rounds}; lower it in the grid")
    out += [f"federated.rounds={base_rounds // k}", f"federated.local_epochs={base_local_epochs * k}"]
    return out


def merge(choice: dict[str, dict]) -> dict:
    """One trial's settings: the chosen value of every axis, merged in ``AXES`` order."""
    merged: dict = {}
    for axis in AXES:
        merged.update(choice[axis])
    return merged


def product_choices(grid: dict[str, list[dict]], max_trials: int = 0) -> list[dict[str, dict]]:
    """Every combination of the grid's values (the first ``max_trials`` when > 0)."""
    combos = [dict(zip(AXES, values)) for values in itertools.product(*(grid[a] for a in AXES))]
    return combos[:max_trials] if max_trials > 0 else combos


def validation_score(trial: dict) -> float:
    """What selection reads: the validation micro-F1 (−1 for a failed trial). Never the test split."""
    val = trial.get("val") or {}
    return float(val.get("micro_f1", -1.0))


def select(trials: list[dict]) -> dict:
    """The trial with the best validation micro-F1 (ties: validation macro-F1, then the earlier trial)."""
    ok = [t for t in trials if t.get("error") is None]
    if not ok:
        raise RuntimeError("every trial failed; see their errors in dp_sweep.json")
    return max(ok, key=lambda t: (validation_score(t), float(t["val"].get("macro_f1", -1.0)), -t["index"]))


def coordinate_search(grid: dict[str, list[dict]], run: Callable[[dict[str, dict]], dict]) -> list[dict]:
    """Tune one axis at a time (``AXES`` order), the others at their best so far; returns every trial run.

    ``run(choice)`` runs one trial and returns its record; a choice already run is not run again.
    """
    current = {axis: grid[axis][0] for axis in AXES}
    trials: list[dict] = []
    seen: dict[str, dict] = {}
    for axis in AXES:
        stage = []
        for value in grid[axis]:
            choice = {**current, axis: value}
            key = json.dumps(merge(choice), sort_keys=True)
            if key not in seen:
                seen[key] = run(choice)
                trials.append(seen[key])
            stage.append((seen[key], value))
        best = select([t for t, _ in stage]) if any(t.get("error") is None for t, _ in stage) else None
        if best is not None:
            current[axis] = next(v for t, v in stage if t is best)
    return trials


def summarize_run(results: dict) -> dict:
    """Scores and ε of one finished run's ``results.json`` content."""
    privacy = results.get("privacy") or {}
    pick = ("micro_f1", "macro_f1")
    return {"val": {k: results["val"][k] for k in pick}, "test": {k: results["test"][k] for k in pick},
            "epsilon": privacy.get("epsilon"), "epsilon_rdp": privacy.get("epsilon_rdp"),
            "epsilon_pld": privacy.get("epsilon_pld"), "accountant": privacy.get("accountant"),
            "noise_multiplier": _first_client(privacy, "noise_multiplier"),
            "sample_rate": _first_client(privacy, "sample_rate"),
            "steps": _first_client(privacy, "total_steps")}


def _first_client(privacy: dict, key: str):
    clients = privacy.get("clients") or []
    return clients[0].get(key) if clients else None


def make_runner(config: str | None, base: list[str], out: Path, base_rounds: int, base_local_epochs: int,
                trials_so_far: list[dict]) -> Callable[[dict[str, dict]], dict]:
    """``run(choice)`` for the searches: one federated run per trial under ``out/trial_NNN``."""
    from fedicd.config import load_config
    from fedicd.heads import count_parameters
    from fedicd.runner.simulation import run_federated

    def run(choice: dict[str, dict]) -> dict:
        index = len(trials_so_far)
        settings = merge(choice)
        record = {"index": index, "settings": settings, "error": None}
        t0 = time.perf_counter()
        try:
            overrides = [*base, *trial_overrides(settings, base_rounds, base_local_epochs)]
            record["overrides"] = overrides
            cfg = load_config(config, overrides)
            results = run_federated(cfg, out / f"trial_{index:03d}")
            record.update(summarize_run(results))
            dim, labels = results["embedding"]["dim"], results["labels"]["n_labels"]
            record["parameters"] = count_parameters(cfg.train.build(dim, labels))
        except Exception as exc:  # a failed trial is a result: recorded, the sweep goes on
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc(limit=3)
        record["seconds"] = round(time.perf_counter() - t0, 2)
        trials_so_far.append(record)
        _print_trial(record)
        return record

    return run


def _print_trial(t: dict) -> None:
    if t["error"]:
        print(f"trial {t['index']:>3}: FAILED {t['error']}", flush=True)
    else:
        print(f"trial {t['index']:>3}: val µF1 {t['val']['micro_f1']:.4f}  ε {_fmt(t['epsilon'])}  ε_rdp {_fmt(t['epsilon_rdp'])}  "
              f"ε_pld {_fmt(t['epsilon_pld'])}  {t['seconds']:.0f}s  {describe(t['settings'])}", flush=True)


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def describe(settings: dict) -> str:
    """A short label of a trial's settings."""
    s = settings
    opt = s.get("federated.local_optimizer", "?")
    if s.get("federated.local_momentum"):
        opt += f"+m{s['federated.local_momentum']}"
    batch = s.get("train.batch_size")
    batch = "full" if batch == FULL_BATCH else batch
    head = s.get("train.head", "?") + (f"{s['train.hidden']}" if "train.hidden" in s else "")
    lr = s.get("lr", 0) * s.get("lr_mult", 1.0)
    return (f"{head} in={s.get('train.input_norm', 'none')} {opt} lr={lr:g} C={s.get('privacy.clip')} "
            f"B={batch} rounds/{s.get('rounds_div', 1)}")


def markdown(report: dict) -> str:
    """The sweep's table: every trial (tuning corpus, validation and test), then the evaluation row."""
    lines = [f"# DP-SGD sweep at ε = {report['epsilon']} ({report['accountant']}, sample-level)", "",
             f"Tuning set: {report['tuning_set']}", "", f"Selected on validation micro-F1: trial "
             f"{report['selected']}.", "",
             "| # | settings | params | ε | ε RDP | ε PLD | σ | q | val µF1 | val MF1 | test µF1 | test MF1 | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in report["trials"]:
        if t["error"]:
            lines.append(f"| {t['index']} | {describe(t['settings'])} | failed: {t['error'][:80]} ||||||||||| "
                         f"{t['seconds']:.0f} |")
            continue
        mark = " **(selected)**" if t["index"] == report["selected"] else ""
        lines.append(f"| {t['index']} | {describe(t['settings'])}{mark} | {t.get('parameters', '—')} | "
                     f"{_fmt(t['epsilon'])} | {_fmt(t['epsilon_rdp'])} | {_fmt(t['epsilon_pld'])} | {_fmt(t['noise_multiplier'])} | "
                     f"{_fmt(t['sample_rate'])} | {t['val']['micro_f1']:.4f} | {t['val']['macro_f1']:.4f} | "
                     f"{t['test']['micro_f1']:.4f} | {t['test']['macro_f1']:.4f} | {t['seconds']:.0f} |")
    ev = report.get("evaluation")
    if ev and not ev.get("error"):
        lines += ["", f"Evaluation federation (seed {report['evaluation_seed']}), selected setting: "
                      f"val µF1 {ev['val']['micro_f1']:.4f}, MF1 {ev['val']['macro_f1']:.4f}; "
                      f"**test µF1 {ev['test']['micro_f1']:.4f}, MF1 {ev['test']['macro_f1']:.4f}**; "
                      f"ε RDP {_fmt(ev['epsilon_rdp'])}, ε PLD {_fmt(ev['epsilon_pld'])}."]
    elif ev:
        lines += ["", f"Evaluation run failed: {ev['error']}"]
    return "\n".join(lines) + "\n"


def tuning_set(config: str | None, tuning_seed: int, eval_seed: int, *, tuning_config: str | None = None,
               same_data: bool = False) -> str:
    """The sentence naming the data the sweep tuned on.

    ``tuning_config``: the ``--tuning-config`` tuned on (``tuning_seed`` is then its seed); ``same_data``: its
    ``[data]`` and seed are the evaluation config's, i.e. it is the evaluation federation itself.
    """
    name = config or "fedicd's default config"
    if tuning_config and not same_data:
        return (f"{tuning_config} at seed {tuning_seed} (a public stand-in corpus: not the data of {name} at seed "
                f"{eval_seed}), selection on its validation split; the test split never chooses.")
    if tuning_config:
        return (f"{tuning_config} at seed {tuning_seed}: the same [data] and seed as {name}, i.e. the evaluation "
                "federation itself (its validation split). Tuning on private data has a privacy cost not accounted "
                "here (Papernot & Steinke 2022).")
    if tuning_seed == eval_seed:
        return (f"{name} at seed {tuning_seed}: the evaluation federation itself (its validation split). "
                "Tuning on private data has a privacy cost not accounted here (Papernot & Steinke 2022).")
    return (f"{name} regenerated at seed {tuning_seed} (public stand-in; the evaluation federation uses seed "
            f"{eval_seed}), selection on its validation split; the test split never chooses.")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/configs/synthetic_fed.toml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra load_config overrides")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="small")
    ap.add_argument("--search", choices=("coordinate", "product"), default="coordinate")
    ap.add_argument("--max-trials", type=int, default=0, help="cap of --search product (0 = all)")
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--accountant", choices=("rdp", "pld"), default="rdp")
    ap.add_argument("--tuning-seed", type=int, default=1, help="regenerate --config at this seed to tune on "
                    "(ignored with --tuning-config, which tunes at its own seed)")
    ap.add_argument("--tuning-config", help="tune on this config (a public corpus, at its own seed) instead of "
                    "--config regenerated at --tuning-seed")
    ap.add_argument("--no-evaluate", action="store_true", help="skip the selected setting's evaluation run")
    ap.add_argument("--out", type=Path, default=Path("runs/dp_sweep"))
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    from fedicd.config import load_config

    args = parse_args(argv)
    base_cfg = load_config(args.config, args.overrides)
    eval_seed = base_cfg.seed
    dp = ['privacy.dp="sample"', f"privacy.target_epsilon={args.epsilon!r}",
          f'privacy.accountant="{args.accountant}"', 'federated.engine="inprocess"']
    rounds, local_epochs = base_cfg.federated.rounds, base_cfg.federated.local_epochs
    grid = GRIDS[args.grid]
    trials: list[dict] = []
    tuning_seed, same_data = args.tuning_seed, False
    if args.tuning_config:
        tuning_cfg = load_config(args.tuning_config, args.overrides)
        tuning_seed, same_data = tuning_cfg.seed, (tuning_cfg.data, tuning_cfg.seed) == (base_cfg.data, eval_seed)
        run = make_runner(args.tuning_config, [*args.overrides, *dp], args.out / "tuning", rounds, local_epochs,
                          trials)
    else:
        run = make_runner(args.config, [*args.overrides, *dp, f"seed={args.tuning_seed}"], args.out / "tuning",
                          rounds, local_epochs, trials)
    if args.search == "coordinate":
        coordinate_search(grid, run)
    else:
        for choice in product_choices(grid, args.max_trials):
            run(choice)
    best = select(trials)
    report = {"epsilon": args.epsilon, "accountant": args.accountant, "grid": args.grid, "search": args.search,
              "config": args.config, "overrides": args.overrides, "tuning_seed": tuning_seed,
              "evaluation_seed": eval_seed, "tuning_config": args.tuning_config,
              "tuning_set": tuning_set(args.config, tuning_seed, eval_seed, tuning_config=args.tuning_config,
                                       same_data=same_data),
              "selected": best["index"], "trials": trials}
    if not args.no_evaluate:
        evaluation: list[dict] = []
        choice = {axis: {} for axis in AXES}
        choice["head"] = best["settings"]
        make_runner(args.config, [*args.overrides, *dp, f"seed={eval_seed}"], args.out / "evaluation", rounds,
                    local_epochs, evaluation)(choice)
        report["evaluation"] = evaluation[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dp_sweep.json").write_text(json.dumps(report, indent=2))
    (args.out / "dp_sweep.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
