"""What threshold CKKS costs per round: bytes per client and seconds per step, at the paper's model sizes.

    python experiments/bench_threshold_ckks.py                          # 10 and 20 clients, 950k and 1.09M values
    python experiments/bench_threshold_ckks.py --clients 3 --sizes 20000 --quick   # a smoke test, seconds
    PYTHONPATH=/elsewhere python experiments/bench_threshold_ckks.py --label before   # another version of the code

For every (model size, clients) pair, ``clients`` parties make a joint key (the chain of
:class:`~fedicd.secure.threshold.party.ThresholdParty`), each encrypts a random update (n_k = ``--count``
examples, values uniform in ±``--scale``), the server (:class:`~fedicd.secure.threshold.server.ThresholdServer`)
adds them, every party partially decrypts the aggregate and the server fuses the parts. Printed and written
(``--json``, default ``experiments/results/secure/threshold_ckks.json``; runs with another ``--label`` are kept
beside this one):

* parameters (:func:`~fedicd.secure.threshold.messages.threshold_params` of the run: what a federated run uses);
* bytes per client: up = the encrypted update and the partial decryption, down = the aggregate a key holder
  receives, each also as a multiple of the fp32 model (4 bytes per value);
* seconds: encryption and partial decryption (mean over the parties), the server's addition and fusion, each
  with every ``--workers`` setting (the pool's start-up is timed apart: the pool stays alive across rounds);
* the measured decryption error (largest distance of a decrypted sum from its integer) against the stated bound,
  and the largest |decrypted average − float64 FedAvg|.

Runs on the CPU only (OpenFHE); set ``OMP_NUM_THREADS`` to what the process may use.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fedicd.secure.threshold.messages import threshold_params
from fedicd.secure.threshold.packing import Layout
from fedicd.secure.threshold.params import precision_bound
from fedicd.secure.threshold.party import ThresholdParty
from fedicd.secure.threshold.server import ThresholdServer

DEFAULT_JSON = Path("experiments/results/secure/threshold_ckks.json")
N_LABELS = 1085  # the paper's label count: the output bias of the MLP head


def layout_of(size: int) -> Layout:
    return Layout((("weights", (size - N_LABELS,)), ("bias", (N_LABELS,))))


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def bench_one(size: int, n: int, workers: list[int], count: int, scale: float, seed: int) -> dict:
    layout = layout_of(size)
    params = threshold_params(n, count)
    parties = [ThresholdParty(params, i) for i in range(n)]
    server = ThresholdServer(params, layout)
    t0, link = time.perf_counter(), None
    for party in parties:
        link = party.keygen(link)
        server.add_link(party.party_id, link)
    for party in parties:
        party.accept_joint_key(server.joint_envelope, server.key_fp)
    keygen_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    updates = [{k: rng.uniform(-scale, scale, shape).astype(np.float32) for k, shape in layout.entries}
               for _ in parties]
    sent, enc_s = [], []
    for party, update in zip(parties, updates):
        (data, _), s = timed(party.encrypt, update, count, round=1, layout=layout)
        sent.append((party.party_id, data))
        enc_s.append(s)
    row = {"size": size, "clients": n, "params": params.to_dict(), "shift_bits": getattr(params, "shift_bits", 0),
           "keygen_s": keygen_s, "encrypt_s": float(np.mean(enc_s)), "add_s": {}, "fuse_s": {},
           "encrypt_workers_s": {}, "partial_workers_s": {}, "pool_start_s": {}}
    aggregate = None
    for w in workers:
        if w != 1:  # start the pool (processes, OpenFHE, crypto context) once: it stays alive across rounds
            server.workers, server.seen = w, set()
            _, cold = timed(server.add, sent, round=1)
        server.workers, server.seen = w, set()
        (aggregate, rejected), row["add_s"][str(w)] = timed(server.add, sent, round=1)
        if w != 1:
            row["pool_start_s"][str(w)] = max(0.0, cold - row["add_s"][str(w)])
        assert not rejected, rejected
    parts, dec_s = {}, []
    for party in parties:
        parts[party.party_id], s = timed(party.partial_decrypt, aggregate, round=1)
        dec_s.append(s)
    row["partial_decrypt_s"] = float(np.mean(dec_s))
    avg = None
    for w in workers:
        server.workers = w
        avg, row["fuse_s"][str(w)] = timed(server.fuse, aggregate, parts, round=1)
    for w in workers:  # one party's encryption / partial decryption with w processes (second call: warm pool)
        if w == 1:
            continue
        probe = ThresholdParty(params, 0, workers=w)
        probe._secret, probe._joint = parties[0]._secret, parties[0]._joint
        probe.joint_bytes, probe.key_fp = parties[0].joint_bytes, parties[0].key_fp
        _, row["encrypt_workers_s"][str(w)] = timed(probe.encrypt, updates[0], count, round=3, layout=layout)
        _, row["partial_workers_s"][str(w)] = timed(probe.partial_decrypt, aggregate, round=1)
    fp32 = 4 * size
    up_update, up_partial = len(sent[0][1]), len(parts[0])
    row["bytes"] = {"fp32": fp32, "up_update": up_update, "up_partial": up_partial, "down_aggregate": len(aggregate)}
    row["x_fp32"] = {"up_update": up_update / fp32, "up_partial": up_partial / fp32,
                     "up_total": (up_update + up_partial) / fp32, "down_aggregate": len(aggregate) / fp32}
    exact = {k: sum(float(count) * u[k].astype(np.float64) for u in updates) / (count * n) for k in updates[0]}
    row["max_error"] = server.last_residual
    row["error_bound"] = params.error_bound(n)
    row["avg_max_diff"] = max(float(np.max(np.abs(avg[k] - exact[k]))) for k in exact)
    row["avg_bound"] = precision_bound(params, n, total_count=count * n) + 2.0**-24 * scale
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'values':>9} {'K':>3} {'f':>3} {'k':>3} {'up upd':>8} {'up part':>8} {'down':>8} {'enc s':>6} "
            f"{'pdec s':>6} {'add s (w)':>18} {'fuse s (w)':>18} {'max err':>9} {'bound':>7}")
    out = [head]
    for r in rows:
        x = r["x_fp32"]
        add = " ".join(f"{v:.2f}({w})" for w, v in r["add_s"].items())
        fuse = " ".join(f"{v:.2f}({w})" for w, v in r["fuse_s"].items())
        out.append(f"{r['size']:>9} {r['clients']:>3} {r['params']['frac_bits']:>3} {r['shift_bits']:>3} "
                   f"{x['up_update']:>7.2f}x {x['up_partial']:>7.2f}x {x['down_aggregate']:>7.2f}x "
                   f"{r['encrypt_s']:>6.2f} {r['partial_decrypt_s']:>6.2f} {add:>18} {fuse:>18} "
                   f"{r['max_error']:>9.3g} {r['error_bound']:>7.3g}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[10, 20])
    ap.add_argument("--sizes", type=int, nargs="+", default=[950_000, 1_090_000])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--count", type=int, default=6000, help="examples per client (n_k)")
    ap.add_argument("--scale", type=float, default=1.0, help="update values uniform in ±scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="current", help="key of this run in the JSON (other labels are kept)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--quick", action="store_true", help="workers 1 only")
    args = ap.parse_args(argv)
    workers = [1] if args.quick else args.workers
    rows = []
    for size in args.sizes:
        for n in args.clients:
            rows.append(bench_one(size, n, workers, args.count, args.scale, args.seed))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    try:
        openfhe = importlib.metadata.version("openfhe")
    except importlib.metadata.PackageNotFoundError:
        openfhe = "unknown"
    record = {"label": args.label, "rows": rows, "openfhe": openfhe, "python": platform.python_version(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""), "cores": len(os.sched_getaffinity(0)),
              "count": args.count, "scale": args.scale,
              "command": "python experiments/bench_threshold_ckks.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    out = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    out.setdefault("runs", {})[args.label] = record
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json} (run {args.label!r})")


if __name__ == "__main__":
    main()
