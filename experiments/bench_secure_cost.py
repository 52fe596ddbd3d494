"""What secure aggregation costs a site: bytes per round and seconds, for every mechanism in one run.

    python experiments/bench_secure_cost.py                       # paper scale: 20 clients x 6,000 notes
    python experiments/bench_secure_cost.py --quick               # small sizes, one to two minutes
    python experiments/bench_secure_cost.py --mechanisms none secagg+ ckks

Mechanisms: ``none`` (plain FedAvg), ``secagg+`` (Flower's SecAgg+), ``ckks`` (one key shared by the
clients, TenSEAL) and ``ckks-threshold`` (a joint OpenFHE key no party holds; skipped with its reason where
``openfhe`` or its round code cannot be imported). The data are the paper's scale without the embedding: random
768-d vectors with 1,085 labels that depend on them (``bench_federated_speed.fake_features``), the MLP head
(950k parameters), IID clients. Per mechanism, three measures of time:

1. **Wall on this machine** (2 shared cores here): ``--rounds`` real rounds of the Flower round loop on the
   in-process engine (the clients one after another, ``--threads`` each), the train exchange of rounds 2.. timed
   (round 1 of CKKS sends the public initial model in plain text, and threshold CKKS makes its joint key; evaluation
   is off in rounds 1..R-1 and not timed).
2. **Critical path**, as if every client were its own machine: per message stage of the round, the slowest
   client's call, plus the server's own work (the exchange minus the clients' calls), plus ``--stage-latency-s``
   per stage (a network round trip). Mechanisms without round code are timed piece by piece instead
   (:class:`CkksPieces`, :class:`ThresholdPieces`: ``--paper-clients`` parties encrypt, the server adds, they
   decrypt or partially decrypt, the server fuses), on top of the plain round's non-training work. The pieces are
   timed for every mechanism that has them (their bytes and seconds are in the record beside the round's).
3. **Overhead at paper scale**: (the mechanism's critical path minus plain FedAvg's, training excluded) over the
   plain round's critical path with one local epoch on ``--paper-rows`` notes, timed with
   :func:`fedicd.local_training.local_train`. Server work measured with fewer clients is scaled linearly.

The goal (shared-key and threshold CKKS add at most 20 % to a paper-scale round, upload at most 4x fp32) is
checked here and written as verdicts. Writes ``--json`` after every mechanism (default
``experiments/results/secure/secure_cost.json``), rendered by :mod:`fedicd.report.secure_cost`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below, and bench_federated_speed
from secure_cost_pieces import PIECES, Unavailable, time_pieces  # noqa: E402
from secure_cost_round import run_round_loop  # noqa: E402

MECHANISMS = ("none", "secagg+", "ckks", "ckks-threshold")
GOAL = {"mechanisms": ["ckks", "ckks-threshold"], "max_overhead": 0.20, "max_upload_vs_fp32": 4.0}
DIM, LABELS = 768, 1085
LABEL_TEXT = {"none": "plain FedAvg", "secagg+": "SecAgg+ (Flower)", "ckks": "CKKS, one shared key (TenSEAL)",
              "ckks-threshold": "threshold CKKS, joint key (OpenFHE)"}


def _speed_bench():
    """``experiments/bench_federated_speed.py``, whose random-vector setup and commit reader are reused here."""
    return importlib.import_module("bench_federated_speed")


def paper_local_training(args) -> dict:
    """One client's local epoch on ``--paper-rows`` notes with the library's trainer (median of 3 after a warm-up)."""
    import torch

    from fedicd.federated.model import initial_arrays
    from fedicd.local_training import LocalTrainConfig, build_model, local_train
    from fedicd.train import TrainConfig

    x, y = _speed_bench().fake_features(args.paper_rows, DIM, LABELS, seed=2)
    data = SimpleNamespace(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0])
    cfg, init = TrainConfig(), initial_arrays(TrainConfig(), DIM, LABELS)
    torch.set_num_threads(args.threads)
    seconds = []
    for rep in range(4):
        local = LocalTrainConfig(server_round=rep + 1, total_rounds=20, local_epochs=1, partition_id=0, seed=0)
        model = build_model(cfg, DIM, LABELS, init)
        t0 = time.perf_counter()
        local_train(model, data, cfg, local)
        seconds.append(time.perf_counter() - t0)
    return {"rows": args.paper_rows, "seconds": seconds[1:], "local_train_s": statistics.median(seconds[1:]),
            "torch_threads": torch.get_num_threads(), "params": int(sum(v.size for v in init.values()))}


def cost_row(mechanism: str, round_: dict | None, pieces: dict | None, plain: dict, paper: dict, args) -> dict:
    """Bytes, critical path and paper-scale overhead of one mechanism (``plain``: the plain round's summary)."""
    fp32 = 4 * paper["params"]
    if round_ is not None:
        up, down, source = round_["up_bytes"], round_["down_bytes"], "round"
        scale = args.paper_clients / round_["clients"]
        client_s, server_s, stages = round_["client_other_max_s"], round_["server_s"] * scale, round_["stages"]
    else:
        up, source = pieces["upload_bytes"], "pieces"
        down = pieces["aggregate_bytes"] + (fp32 if pieces["exchanges"] > 1 else 0)  # threshold: the fused model
        scale = args.paper_clients / plain["clients"]
        client_s = plain["client_other_max_s"] + pieces["client_s"]
        server_s = plain["server_s"] * scale + pieces["server_s"]
        stages = plain["stages"] + pieces["exchanges"] - 1
    base_s = client_s + server_s + stages * args.stage_latency_s  # everything on the critical path but training
    transfer_s = (up + down) * 8 / (args.link_mbit_s * 1e6)
    return {"mechanism": mechanism, "label": LABEL_TEXT[mechanism], "params": paper["params"], "fp32_bytes": fp32,
            "bytes": {"up_per_client": up, "down_per_client": down, "up_vs_fp32": up / fp32,
                      "down_vs_fp32": down / fp32, "source": source},
            "round": round_, "pieces": pieces,
            "critical_path": {"source": source, "client_non_training_s": client_s, "server_s": server_s,
                              "stages": stages, "stage_latency_s": args.stage_latency_s, "non_training_s": base_s,
                              "round_critical_path_s": None if round_ is None else round_["critical_path_s"],
                              "transfer_s": transfer_s},
            "wall_s": None if round_ is None else round_["exchange_wall_s"]}


def add_paper_overheads(rows: list[dict], paper: dict) -> None:
    plain = next(r for r in rows if r["mechanism"] == "none")["critical_path"]
    plain_cp = paper["local_train_s"] + plain["non_training_s"]
    for row in rows:
        if "skipped" in row:
            continue
        cp = row["critical_path"]
        added = cp["non_training_s"] - plain["non_training_s"]
        row["paper_scale"] = {"local_train_s": paper["local_train_s"], "plain_critical_path_s": plain_cp,
                              "critical_path_s": plain_cp + added, "added_s": added, "overhead": added / plain_cp,
                              "overhead_with_transfer": (added + cp["transfer_s"] - plain["transfer_s"])
                              / (plain_cp + plain["transfer_s"])}


def verdicts(rows: list[dict]) -> dict:
    """The goal, checked for every mechanism it names (a skipped one: "not measured")."""
    out = {}
    by_name = {r["mechanism"]: r for r in rows}
    for name in GOAL["mechanisms"]:
        row = by_name.get(name)
        if row is None or "skipped" in row:
            why = "not in --mechanisms" if row is None else row["skipped"]
            out[name] = {"verdict": "not measured", "met": None, "text": why}
            continue
        overhead, upload = row["paper_scale"]["overhead"], row["bytes"]["up_vs_fp32"]
        met = overhead <= GOAL["max_overhead"] and upload <= GOAL["max_upload_vs_fp32"]
        out[name] = {"verdict": "met" if met else "not met", "met": met, "overhead": overhead,
                     "upload_vs_fp32": upload,
                     "text": f"adds {100 * overhead:.1f} % to a paper-scale round (goal ≤ "
                             f"{100 * GOAL['max_overhead']:.0f} %), uploads {upload:.2f}× fp32 (goal ≤ "
                             f"{GOAL['max_upload_vs_fp32']:g}×)"}
    return out


def machine_facts(args) -> dict:
    versions = {}
    for package in ("tenseal", "openfhe", "flwr", "torch", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "threads_per_party": args.threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions}


def build_data(args) -> tuple:
    from fedicd.partition import iid_partition

    sizes = {"train": args.clients * args.rows_per_client, "val": args.clients * 20, "test": 500}
    x, y = _speed_bench().fake_features(sum(sizes.values()), DIM, LABELS, seed=0)
    cut = np.cumsum([0, *sizes.values()])
    feats = {p: x[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    labels = {p: y[a:b] for p, a, b in zip(sizes, cut[:-1], cut[1:])}
    return (feats, labels, iid_partition([()] * sizes["train"], args.clients, seed=0),
            iid_partition([()] * sizes["val"], args.clients, seed=1))


def measure(mechanism: str, args, data, work: Path, plain: dict | None, paper: dict) -> dict:
    """One mechanism's row. A mechanism that cannot run here is a row with ``skipped`` and the reason; a failure of
    its pieces or of its round is recorded in the row (``pieces_error``, ``round_error``) and the other stands."""
    from fedicd.federated.model import initial_arrays
    from fedicd.train import TrainConfig

    pieces = round_ = None
    errors: dict[str, str] = {}
    if mechanism in PIECES:
        try:
            pieces = time_pieces(mechanism, initial_arrays(TrainConfig(), DIM, LABELS), args, work)
        except Unavailable as exc:
            return {"mechanism": mechanism, "label": LABEL_TEXT[mechanism], "skipped": str(exc)}
        except Exception as exc:  # recorded; the round may still run
            errors["pieces_error"] = f"{type(exc).__name__}: {exc}"[:400]
    try:
        round_ = run_round_loop(mechanism, args, data, work, (DIM, LABELS))
    except Exception as exc:  # e.g. no round code yet: the pieces stand alone
        if mechanism == "none":
            raise  # the baseline of every other row
        errors["round_error"] = f"{type(exc).__name__}: {exc}"[:400]
    if round_ is None and pieces is None:
        return {"mechanism": mechanism, "label": LABEL_TEXT[mechanism], "skipped": "failed: " + "; ".join(
            f"{key.split('_')[0]}: {why}" for key, why in errors.items()), **errors}
    return {**cost_row(mechanism, round_, pieces, plain or round_, paper, args), **errors}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mechanisms", nargs="+", choices=MECHANISMS, default=list(MECHANISMS),
                    help="which to measure (plain FedAvg is always measured: it is the baseline)")
    ap.add_argument("--quick", action="store_true",
                    help="4 clients x 300 notes, 2 rounds: a check in one to two minutes")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rows-per-client", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the real loop (2..; round 1 is not timed)")
    ap.add_argument("--paper-rows", type=int, default=6000, help="notes per client at paper scale")
    ap.add_argument("--paper-clients", type=int, default=20, help="clients at paper scale (uploads the server adds)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="cores of each party: torch threads, federated.client_cpus, secure_aggregation.workers")
    ap.add_argument("--stage-latency-s", type=float, default=0.05, help="network round trip per message stage")
    ap.add_argument("--link-mbit-s", type=float, default=100.0, help="a site's link, for the transfer-time figure")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep-runs", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("experiments/results/secure/secure_cost.json"))
    args = ap.parse_args()
    if args.quick:
        args.clients, args.rows_per_client, args.rounds = 4, 300, 2
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (round 1 is not timed)")
    args.mechanisms = ["none", *[m for m in MECHANISMS[1:] if m in args.mechanisms]]
    return args


def main() -> None:
    args = parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_secure_cost-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start, load_before = time.perf_counter(), os.getloadavg()
    report = {"command": "python experiments/bench_secure_cost.py " + " ".join(sys.argv[1:]),
              "commit": _speed_bench().git_commit(),
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_facts(args),
              "settings": {k: getattr(args, k) for k in ("clients", "rows_per_client", "rounds", "paper_rows",
                                                         "paper_clients", "stage_latency_s",
                                                         "link_mbit_s", "quick")},
              "goal": GOAL, "mechanisms": [], "complete": False}
    report["machine"]["load_average_before"] = load_before
    paper = paper_local_training(args)
    report["paper_local_training"] = paper
    data, plain = build_data(args), None
    for mechanism in args.mechanisms:
        print(f"[{mechanism}] measuring ...", flush=True)
        row = measure(mechanism, args, data, work, plain, paper)
        plain = row["round"] if mechanism == "none" else plain
        report["mechanisms"].append(row)
        add_paper_overheads(report["mechanisms"], paper)
        report["verdicts"] = verdicts(report["mechanisms"])
        report["machine"]["load_average_after"] = os.getloadavg()
        report["total_seconds"] = time.perf_counter() - t_start
        report["complete"] = len(report["mechanisms"]) == len(args.mechanisms)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: row.get(k) for k in ("bytes", "critical_path", "paper_scale", "skipped")}), flush=True)
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    for name, v in report["verdicts"].items():
        print(f"{name}: {v['verdict']} ({v['text']})")
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
