"""``fedicd deploy``: the command line of deployment (``fedicd deploy prepare``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedicd.config import load_config
from fedicd.deploy.study import StudyError, prepare_study_from_run
from fedicd.deploy.study_config import prepare_study

__all__ = ["add_deploy_parser", "deploy_command"]


def add_deploy_parser(sub) -> None:
    """``fedicd deploy prepare (--from-run RUN | --config CFG --sites S --labels L [...]) --out STUDY``."""
    p = sub.add_parser("deploy", help="deployment on Flower's SuperLink: prepare a study folder")
    steps = p.add_subparsers(dest="deploy_command", required=True)
    prep = steps.add_parser("prepare", help="a study folder and its run config: from a config and a sites file "
                                            "(no site data needed), or from a run staged for simulation")
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-run", type=Path, metavar="RUN",
                        help="a run folder staged by fedicd run (its public and server parts are copied)")
    source.add_argument("--config", type=Path, metavar="CONFIG.toml", help="the study's experiment config")
    prep.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    prep.add_argument("--sites", type=Path, help="with --config: TOML, one [[site]] per hospital "
                                                 "(partition-id, train-notes)")
    prep.add_argument("--labels", type=Path, help="with --config: the label space (JSON list, labels.json, or one "
                                                  "code per line)")
    prep.add_argument("--scaler", type=Path, help="with --config: the shared scaler (.npz with mean, scale)")
    prep.add_argument("--eval-data", type=Path, help="with --config: the server's evaluation notes (eval.npz)")
    prep.add_argument("--input-dim", type=int, help="with --config: the encoder's dimension when neither --scaler "
                                                    "nor --eval-data gives it")
    prep.add_argument("--out", type=Path, required=True, metavar="STUDY", help="the study folder (server side)")
    prep.add_argument("--overwrite", action="store_true", help="replace an earlier study in --out")
    p.add_argument("-v", "--verbose", action="store_true")


def deploy_command(args: argparse.Namespace) -> int:
    """Run ``fedicd deploy`` (parsed by :func:`add_deploy_parser`)."""
    if args.from_run is not None:
        path = prepare_study_from_run(args.from_run, args.out, overwrite=args.overwrite)
    else:
        missing = [f"--{k}" for k in ("sites", "labels") if getattr(args, k) is None]
        if missing:
            raise StudyError(f"fedicd deploy prepare --config needs {' and '.join(missing)}")
        path = prepare_study(load_config(args.config, args.set), args.out, sites=args.sites, labels=args.labels,
                             scaler=args.scaler, eval_data=args.eval_data, input_dim=args.input_dim)
    print(f"study folder {path.parent}: {', '.join(sorted(p.name for p in path.parent.iterdir()))}\n"
          f"start the run with: flwr run . <federation> --run-config {path}")
    return 0
