"""The ``fedicd`` command line: one subcommand per pipeline stage, plus ``run``, ``demo`` and ``report``.

``fedicd --help`` prints :data:`USAGE` (plain text); this docstring is for the API docs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("fedicd")

DEMO_CONFIG = Path(__file__).resolve().parent / "resources" / "demo.toml"

DESCRIPTION = "fedicd: federated ICD coding over frozen text embeddings, one subcommand per pipeline stage."
USAGE = """\
commands:
  fedicd prepare   CONFIG --out DIR    load notes, save DIR/notes.jsonl.gz (+ ground truth)
  fedicd embed     CONFIG --out DIR    embed every note (cached), save vectors
  fedicd train     CONFIG --out DIR    train a head centrally (same as run for now)
  fedicd evaluate  RUN_DIR             re-score a saved run on its config's test split
  fedicd partition CONFIG --out DIR    partition the training notes -> DIR/partition.json
  fedicd run       CONFIG --out DIR    one experiment from a TOML config
  fedicd demo      --out DIR           synthetic notes -> MiniLM -> MLP, in minutes
  fedicd keys      --out DIR           CKKS keys for secure aggregation: secret.ctx (clients,
                                       evaluator), public.ctx (server), params.json
  fedicd attack invert|attribute CONFIG --out DIR
                                       an attack under a sweep of embedding defences:
                                       one JSON report per defence + leakage_utility.png
  fedicd audit     CONFIG_OR_RUN_DIR --out DIR
                                       attacks on a federation (update inversion, membership,
                                       DP audit, embedding attacks): reports + summary
  fedicd report    RUN_DIR... --out DIR  result tables (Markdown + CSV) and plots of run folders
  fedicd report --docs                 regenerate docs/results/*.md from experiments/results/
  fedicd deploy prepare --config CONFIG.toml --sites SITES.toml --labels CODES --out STUDY  (or --from-run RUN):
                                       a study folder + run-config.toml for `flwr run` (deployment)

Commands that read a config accept --set section.key=value overrides (repeatable); see `fedicd COMMAND --help`.
"""

TABLE_KEYS = ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "macro_precision", "macro_recall",
              "top10_f1", "top50_f1", "p_at_5", "p_at_8", "p_at_15", "micro_auc", "macro_auc")


def _add_common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    if config:
        p.add_argument("config", type=Path, help="experiment TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="log each epoch")


def _add_out(p: argparse.ArgumentParser, *, default: Path | None = None) -> None:
    p.add_argument("--out", type=Path, required=default is None, default=default,
                   help="output folder (refused if it already holds files, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier fedicd output in --out (its files are removed first)")


def _claim_out(args: argparse.Namespace) -> None:
    """Check --out before any work: writable, and not holding an earlier result (unless --overwrite/--resume)."""
    from fedicd.output_dir import claim_output_dir

    args.claim = claim_output_dir(args.out, verb=args.command, overwrite=args.overwrite,
                                  resume=getattr(args, "resume", False))
    args.out = args.claim.path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedicd", description=DESCRIPTION, epilog=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("prepare", "load notes and save them (synthetic: with planted-identifier truth)"),
                        ("embed", "embed every note of the configured source (cached)"),
                        ("train", "train a head centrally (same as run)"),
                        ("run", "run one experiment from a TOML config"),
                        ("partition", "partition the training notes among clients; write the manifest")):
        p = sub.add_parser(name, help=help_)
        _add_common(p)
        _add_out(p)
        if name == "run":
            p.add_argument("--resume", action="store_true", help="continue a crashed federated run in --out")
    p = sub.add_parser("evaluate", help="re-score a saved run on its test split")
    p.add_argument("run_dir", type=Path)
    p.add_argument("-v", "--verbose", action="store_true")
    p = sub.add_parser("attack", help="attack the config's embeddings under defences (leakage vs utility)")
    from fedicd.attack_runs import COMMANDS, attack_names

    p.add_argument("attack", choices=list(COMMANDS))
    _add_common(p)
    _add_out(p)
    p.add_argument("--method", choices=list(attack_names("invert")), default="bow", help="inversion attack (invert)")
    p.add_argument("--attribute", default="mental_health",
                   help="mental_health, hiv, pregnancy (ICD-10 codes), female (sex words), site (the site column), "
                        "or any column of a tabular source (column:NAME when it shares a built-in's name); "
                        "see docs/attacks.md")
    p.add_argument("--defences", nargs="+", default=None, metavar="SPEC",
                   help="none, noise:SIGMA, quantize:BITS, pca:K (default: none noise:0.05 noise:0.2 "
                        "quantize:1 pca:16)")
    p.add_argument("--n-labelled", type=int, default=200,
                   help="labelled training notes the adversary uses (attribute; capped, with a warning, at those "
                        "that have a value)")
    p.add_argument("--gen-epochs", type=int, default=8, help="decoder epochs (generative)")
    p.add_argument("--gen-spans", type=int, default=8000, help="auxiliary spans the decoder trains on")
    p.add_argument("--corrector-steps", type=int, default=2, help="re-embed-and-refine steps (generative)")
    p = sub.add_parser("keys", help="make a CKKS key folder for [secure_aggregation] method = 'ckks'")
    p.add_argument("--out", type=Path, required=True, help="key folder (secret.ctx, public.ctx, params.json)")
    p.add_argument("--clip-range", type=float, default=16.0, help="|model value| bound (default 16)")
    p.add_argument("--frac-bits", type=int, default=20, help="fixed-point fraction bits (default 20)")
    p.add_argument("--limbs", type=int, default=2, help="slot components per value, 1-4 (default 2)")
    p.add_argument("--max-clients", type=int, default=32, help="most updates one aggregate sums (default 32)")
    p.add_argument("--max-count", type=int, default=2**20, help="public bound on a client's examples")
    p.add_argument("--overwrite", action="store_true", help="replace existing keys")
    p.add_argument("-v", "--verbose", action="store_true")
    p = sub.add_parser("demo", help="synthetic notes → MiniLM → MLP, end to end")
    _add_common(p, config=False)
    _add_out(p, default=Path("runs/demo"))
    _add_report(sub)
    _add_audit(sub)
    from fedicd.deploy.cli import add_deploy_parser

    add_deploy_parser(sub)
    return parser


def _add_audit(sub) -> None:
    p = sub.add_parser("audit", help="run the attack battery on a federated run (or train one from a config)")
    p.add_argument("target", type=Path, metavar="CONFIG_OR_RUN_DIR", help="TOML config, or a finished run folder")
    _add_common(p, config=False)
    _add_out(p)
    p.add_argument("--attacks", nargs="+", default=None, metavar="NAME", help="embedding_inversion, attribute, "
                   "update_inversion, membership, audit (default: every attack the run allows)")
    p.add_argument("--quick", action="store_true", help="reduced attacks (seconds each)")


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="result tables and plots from run folders; regenerate docs/results",
                       description="Tables (Markdown + CSV) and plots from the results.json, history.csv, "
                                   "partition.json and attack reports of run folders (or folders above them).")
    p.add_argument("run_dirs", type=Path, nargs="*", metavar="RUN_DIR", help="run folders, or folders holding runs")
    p.add_argument("--out", type=Path, default=None, help="write tables.md, one CSV per table and the plots here")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--archive", type=Path, default=None, metavar="DIR",
                   help="copy each run's small files (no models, plots or bulky fields) to DIR/<run folder>")
    p.add_argument("--docs", action="store_true",
                   help="regenerate the per-area pages in --docs-dir from --results-dir, the README's headline "
                        "table and docs/config.md")
    p.add_argument("--results-dir", type=Path, default=Path("experiments/results"),
                   help="archived runs, one folder per area (default experiments/results)")
    p.add_argument("--docs-dir", type=Path, default=Path("docs/results"), help="default docs/results")
    p.add_argument("--readme", type=Path, default=Path("README.md"),
                   help="README whose <!-- results:headline --> block is refreshed (default README.md)")
    p.add_argument("--config-doc", type=Path, default=Path("docs/config.md"),
                   help="config reference page written with --docs (default docs/config.md)")
    p.add_argument("-v", "--verbose", action="store_true")


def format_table(results: dict) -> str:
    """A two-column metrics table (val and test) for the terminal; a run scored by its clients only
    (``federated.server_eval = false``) prints their federated evaluation instead."""
    if "test" not in results:
        return "\n".join([f"no server evaluation notes (federated.server_eval = false): the clients' federated "
                          f"evaluation of round {results.get('evaluation', {}).get('round')}",
                          *(f"{k:<16}{v:>10.4f}" for k, v in sorted((results.get("client_evaluation") or {}).items())
                            if isinstance(v, (int, float)))])
    lines = [f"{'metric':<16}{'val':>10}{'test':>10}", "-" * 36]
    for key in TABLE_KEYS:
        lines.append(f"{key:<16}{results['val'][key]:>10.4f}{results['test'][key]:>10.4f}")
    lab = results["labels"]
    lines.append(f"threshold {results['test']['threshold']:.3f} (chosen on val), {lab['n_labels']} labels, "
                 f"train/val/test = {lab['train_notes']}/{lab['val_notes']}/{lab['test_notes']} notes")
    return "\n".join(lines)


def _cmd_run(args: argparse.Namespace) -> int:
    from fedicd.config import load_config

    cfg = load_config(getattr(args, "config", DEMO_CONFIG), args.overrides)
    if getattr(args, "resume", False) and cfg.train.mode != "federated":
        raise ValueError("--resume applies to federated runs (train.mode = 'federated') only")
    _claim_out(args)
    if cfg.train.mode == "federated":
        from fedicd.runner.simulation import run_federated

        results = run_federated(cfg, args.out, resume=getattr(args, "resume", False))
        print(format_table(results))
        print(f"federated: {cfg.federated.rounds} rounds of {cfg.federated.strategy} over "
              f"{len(results['client_sizes'])} clients; {results['seconds']['simulation']:.1f} s")
        print(f"results: {Path(args.out) / 'results.json'}")
        return 0
    from fedicd.experiment import run_experiment

    results = run_experiment(cfg, args.out)
    print(format_table(results))
    emb = results["embedding"]
    print(f"embedding: {emb['model']} dim {emb['dim']}, {emb['n_chunked']} notes chunked, "
          f"{emb['n_cached']} served from cache{_reembedded(emb)}; total {results['seconds']['total']:.1f} s")
    print(f"results: {Path(args.out) / 'results.json'}")
    return 0


def _reembedded(emb: dict) -> str:
    """``, N re-embedded after failing the cache check`` when the cache held bad vectors."""
    n = emb.get("n_reembedded", 0)
    return f", {n} re-embedded after failing the cache check" if n else ""


def _cmd_prepare(args: argparse.Namespace) -> int:
    from fedicd.config import load_config
    from fedicd.data.sources import load_notes, synthetic_corpus

    cfg = load_config(args.config, args.overrides)
    _claim_out(args)
    if cfg.data.source == "synthetic":  # keep the planted identifiers' ground truth beside the notes
        corpus = synthetic_corpus(cfg.data, cfg.seed)
        corpus.save(args.out)
        notes = corpus.notes
    else:
        notes = load_notes(cfg.data, seed=cfg.seed)
        notes.save(args.out / "notes.jsonl.gz")
    print(notes.summary.describe())
    print(f"{len(notes)} notes, {len(notes.code_counts())} codes → {args.out}; label rules apply at `fedicd run`")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from fedicd.config import load_config
    from fedicd.data.sources import load_notes
    from fedicd.embedding import embed_texts

    cfg = load_config(args.config, args.overrides)
    _claim_out(args)
    notes = load_notes(cfg.data, seed=cfg.seed)
    result = embed_texts(notes.texts, cfg.embedding, cache_dir=cfg.cache_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "embeddings.npy", result.vectors)
    (args.out / "ids.json").write_text(json.dumps(notes.ids))
    print(f"{len(notes)} notes → {args.out / 'embeddings.npy'} {result.vectors.shape}; "
          f"{result.n_chunked} chunked, {result.n_cached} from cache{_reembedded(result.summary())}")
    return 0


def _cmd_partition(args: argparse.Namespace) -> int:
    from fedicd.config import load_config
    from fedicd.partition_run import run_partition

    cfg = load_config(args.config, args.overrides)
    _claim_out(args)
    extra = run_partition(cfg, args.out)
    stats = extra["stats"]
    print(f"{cfg.partition.scheme}: {len(stats['sizes'])} clients, sizes {stats['sizes']}")
    print(f"non-IID degree: mean JSD {stats['mean_jsd']:.4f}, mean absent-label fraction "
          f"{stats['mean_absent_fraction']:.3f}")
    if "feasibility" in extra:
        f = extra["feasibility"]
        print(f"feasibility (>= {f['min_per_client']} notes per client): {f['n_feasible_codes']} codes ok, "
              f"{f['n_violating_codes']} violate it")
    print(f"manifest: {args.out / 'partition.json'}; heat map: {args.out / 'heatmap.png'}")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from attacks.generative import GenerativeConfig
    from fedicd.attack_runs import DEFAULT_SWEEP, run_attack_sweep
    from fedicd.config import load_config

    cfg = load_config(args.config, args.overrides)
    _claim_out(args)
    attack = args.method if args.attack == "invert" else "attribute"
    gen_cfg = GenerativeConfig(seed=cfg.seed, epochs=args.gen_epochs, corrector_steps=args.corrector_steps,
                               candidates=4 if args.corrector_steps else 0)
    rows = run_attack_sweep(cfg, attack, args.out, defences=args.defences or DEFAULT_SWEEP,
                            attribute=args.attribute, n_labelled=args.n_labelled, gen_cfg=gen_cfg,
                            gen_spans=args.gen_spans)
    utility = rows[0]["utility_metric"]
    header = "ICD micro-F1" if utility == "icd_micro_f1" else "label micro-F1"
    print(f"{'defence':<16}{header:>15}{rows[0]['metric']:>28}   95% CI")
    for r in rows:
        leak = r["leakage"]
        name = r["defence"] if r["defence"] == "none" else f"{r['defence']}:{r['strength']}"
        print(f"{name:<16}{r[utility]:>15.4f}{leak['value']:>28.4f}   [{leak['ci_low']:.4f}, "
              f"{leak['ci_high']:.4f}]")
    print(f"reports and leakage_utility.png in {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    if not args.run_dirs and not args.docs:
        raise ValueError("give RUN_DIR... (with --out or --archive) or --docs")
    if args.run_dirs and not (args.out or args.archive):
        raise ValueError("RUN_DIR... needs --out DIR (tables and plots) or --archive DIR")
    if args.run_dirs:
        from fedicd.report import archive_run, collect_runs, report_runs

        if args.out:
            done = report_runs(args.run_dirs, args.out, plots=not args.no_plots)
            print(f"{len(done['runs'])} runs: {len(done['tables'])} tables in {done['markdown']} "
                  f"(+ one CSV each), {len(done['plots'])} plots in {args.out}")
        if args.archive:
            runs = collect_runs(args.run_dirs, progress=not args.out)
            for run in runs:
                archive_run(run, args.archive)
            print(f"{len(runs)} runs archived in {args.archive}")
    if args.docs:
        from fedicd.report.config_docs import write_config_doc
        from fedicd.report.docs import write_docs

        written = write_docs(args.results_dir, args.docs_dir, args.readme)
        written.append(write_config_doc(args.config_doc))
        print(f"{len(written)} files written: {', '.join(str(p) for p in written)}")
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from fedicd.secure.ckks_params import CkksParams, precision_bound
    from fedicd.output_dir import check_writable_location
    from fedicd.secure.ckks_round import write_key_dir

    params = CkksParams(clip_range=args.clip_range, frac_bits=args.frac_bits, limbs=args.limbs,
                        max_clients=args.max_clients, max_count=args.max_count)
    args.out = check_writable_location(args.out)
    info = write_key_dir(args.out, params, overwrite=args.overwrite)
    bound = precision_bound(params, params.max_clients, params.max_count)
    print(f"secret context (clients and the evaluator only): {info['secret']}\n"
          f"public context (the server):                     {info['public']}\n"
          f"key id {info['key_id']}; N = {params.poly_modulus_degree}, primes {list(params.coeff_mod_bit_sizes)}, "
          f"max abs error of the average <= {bound:.3g} for |x| <= {params.clip_range}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from fedicd.attack_runs.audit_command import audit_cli

    _claim_out(args)
    return audit_cli(args)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from fedicd.deploy.cli import deploy_command

    return deploy_command(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fedicd.evaluate import evaluate_run

    metrics = evaluate_run(args.run_dir)
    print(json.dumps({k: metrics[k] for k in TABLE_KEYS}, indent=2))
    return 0


def _settle_out(args: argparse.Namespace, *, ok: bool) -> None:
    """Success: drop what --overwrite set aside. Failure: restore it; remove --out if nothing was written."""
    claim = getattr(args, "claim", None)
    if claim is None:
        return
    try:
        claim.commit() if ok else claim.abandon()
    except OSError as exc:  # the command's own outcome matters more; say what was left
        print(f"fedicd {args.command}: warning: could not tidy {claim.path}: {_message(exc)}", file=sys.stderr)


def _message(exc: BaseException) -> str:
    """One line for the user; an OS error raised below fedicd still names its file."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handlers = {"run": _cmd_run, "train": _cmd_run, "prepare": _cmd_prepare, "embed": _cmd_embed,
                "evaluate": _cmd_evaluate, "partition": _cmd_partition, "demo": _cmd_run, "attack": _cmd_attack,
                "keys": _cmd_keys, "report": _cmd_report, "audit": _cmd_audit, "deploy": _cmd_deploy}
    try:
        code = handlers[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"fedicd {args.command}: error: {_message(exc)}", file=sys.stderr)
        _settle_out(args, ok=False)
        return 2
    except BaseException:  # an interrupt or a bug: put earlier results back before it propagates
        _settle_out(args, ok=False)
        raise
    _settle_out(args, ok=code == 0)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
