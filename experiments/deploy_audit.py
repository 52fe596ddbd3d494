"""A real Flower deployment on loopback, recorded: equivalence with simulation, and which files each role opened.

    python experiments/deploy_audit.py --out runs/deploy_audit

The tiny study of ``experiments/deploy_faults.py`` (3 clients, 16-d vectors, 5 labels, FedAvg, no client
evaluation) on a SuperLink and 3 SuperNodes with TLS and node authentication
(:class:`fedicd.deploy.local.LocalFederation`), every process recording the files it opens
(``FEDICD_OPEN_AUDIT``, :mod:`fedicd.deploy.audit`):

1. **plain**: 4 rounds deployed; the final global model against the simulation of the same staged run and seed;
2. **CKKS**: 1 round under ``secure_aggregation.method = "ckks"``, the server's key folder holding ``public.ctx``
   only and each node its own copy of the secret context (node config ``ckks-secret-key``).

Writes ``<out>/deployment.json`` and, with ``--results``, a copy (default experiments/results/deploy/
deployment.json): the equivalence (max abs difference), seconds, and each role's opened files grouped by what they
are (study folder, server evaluation notes, CKKS public or secret context, a client's data file, a partition
manifest, other), with the paths relative to the experiment folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from fedicd.deploy.audit import AUDIT_ENV, read_open_audit
from fedicd.deploy.local import LocalFederation
from fedicd.deploy.study import prepare_study_from_run
from fedicd.federated.checkpoint import load_checkpoint
from fedicd.federated.site_data import client_data_path
from fedicd.runner.simulation import simulate

APP_DIR = Path(__file__).resolve().parents[1]
N = 3


def _stage(run: Path, overrides: list[str]):
    """deploy_faults.py's tiny study with this run's keys (rounds, CKKS)."""
    import deploy_faults

    return deploy_faults.stage(run, tuple(overrides))


def _kind(path: str, root: Path) -> str:
    name = Path(path).name
    if "/clients/" in path and name == "data.npz":
        return "a client's data file"
    if name in ("partition.json", "partition_val.json"):
        return "a partition manifest"
    if name == "secret.ctx":
        return "CKKS secret context"
    if name == "public.ctx":
        return "CKKS public context"
    if path.endswith("server/eval.npz"):
        return "server evaluation notes"
    if path.startswith(str(root)):
        return "experiment folder: " + str(Path(path).relative_to(root).parts[0])
    return "outside the experiment (Python, libraries, /proc, /tmp)"


def _opened(audit: Path, role: str, root: Path, logs: list[Path] | None = None) -> dict:
    paths = sorted({p for log in logs for p in log.read_text().splitlines()} if logs is not None
                   else set(read_open_audit(audit, role)))
    grouped: dict[str, list[str]] = {}
    for p in paths:
        kind = _kind(p, root)
        if not kind.startswith("outside"):
            grouped.setdefault(kind, []).append(str(Path(p).relative_to(root)) if p.startswith(str(root)) else p)
        else:
            grouped.setdefault(kind, [])
    counts = {k: len(v) for k, v in grouped.items()}
    outside = sum(1 for p in paths if _kind(p, root).startswith("outside"))
    counts["outside the experiment (Python, libraries, /proc, /tmp)"] = outside
    return {"files": {k: v for k, v in grouped.items() if v}, "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/deploy_audit"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--results", type=Path, default=Path("experiments/results/deploy/deployment.json"))
    args = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fedicd.secure.ckks_params import CkksParams
    from fedicd.secure.ckks_round import write_key_dir

    root = args.out.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    plan = _stage(root / "run", [f"federated.rounds={args.rounds}"])
    t0 = time.perf_counter()
    simulate(root / "run", plan, verbose=False)
    sim_seconds = time.perf_counter() - t0
    simulated = load_checkpoint(root / "run")["arrays"]
    keys = root / "server-keys"
    write_key_dir(keys, CkksParams(max_clients=N))
    (root / "node-secret").mkdir()
    secret = shutil.move(keys / "secret.ctx", root / "node-secret" / "secret.ctx")
    shutil.copyfile(keys / "params.json", root / "node-secret" / "params.json")  # the site's copy of the public parameters
    _stage(root / "ckks-run", ["federated.rounds=1", 'secure_aggregation.method="ckks"',
                               f'secure_aggregation.key_dir="{keys}"', 'train.norm="layer"'])
    plain_cfg = prepare_study_from_run(root / "run", root / "study")
    ckks_cfg = prepare_study_from_run(root / "ckks-run", root / "ckks-study")
    nodes = [{"partition-id": i, "data-path": str(client_data_path(root / "run", i)),
              "state-dir": str(root / f"state-{i}"), "ckks-secret-key": str(secret)} for i in range(N)]
    audit = root / "audit"
    with LocalFederation(nodes, env={AUDIT_ENV: str(audit), "OMP_NUM_THREADS": "1"}) as fed:
        plain = fed.run(APP_DIR, plain_cfg, timeout_s=1200)
        plain_logs = sorted(audit.glob("server-*.log"))
        ckks = fed.run(APP_DIR, ckks_cfg, timeout_s=1200)
        ckks_logs = [p for p in sorted(audit.glob("server-*.log")) if p not in plain_logs]
    deployed = load_checkpoint(root / "study")
    diff = max(float(np.abs(deployed["arrays"][k] - v).max()) for k, v in simulated.items())
    ckks_server = _opened(audit, "server", root, ckks_logs)
    record = {
        "what": "loopback deployment: SuperLink + 3 SuperNodes, TLS, SuperNode authentication, fedicd's Flower App",
        "rounds": args.rounds, "clients": N, "cpus": os.cpu_count(), "load_avg_at_end": list(os.getloadavg()),
        "plain": {"returncode": plain.returncode, "deploy_seconds": round(plain.seconds, 1),
                  "simulation_seconds": round(sim_seconds, 1),
                  "final_model_max_abs_diff_vs_simulation": diff,
                  "client_failures": [r["client_failures"] for r in deployed["history"]],
                  "server_opened": _opened(audit, "server", root, plain_logs)},
        "ckks": {"returncode": ckks.returncode, "deploy_seconds": round(ckks.seconds, 1),
                 "server_opened": ckks_server,
                 "server_opened_a_secret_key": "CKKS secret context" in ckks_server["files"],
                 "server_opened_client_data": "a client's data file" in ckks_server["files"]
                 or "a partition manifest" in ckks_server["files"]},
        "clients_opened": _opened(audit, "client", root),
        "command": f"python experiments/deploy_audit.py --out {args.out} --rounds {args.rounds}",
    }
    (root / "deployment.json").write_text(json.dumps(record, indent=1))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("plain", "ckks")}, indent=1)[:4000])


if __name__ == "__main__":
    main()
