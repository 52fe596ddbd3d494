"""Bytes, time and error of CKKS secure aggregation of FedAvg updates, for several encodings.

    python experiments/bench_ckks_codec.py --params 500000 --clients 10 --out runs/bench_ckks_codec/results.json

K clients hold one float32 update each (``--params`` values, 0.1·N(0, 1) clipped to ±4) and an
example count n_k (uniform in 50..4096). Each setting encrypts every client's update weighted by
n_k together with n_k, adds the K ciphertexts (server side, public context only) and decrypts
the sum into the weighted average, compared with the float64 weighted average.

Settings:

* ``tenseal-naive``: TenSEAL ``CKKSVector`` (real slots), N=8192, primes [60, 40, 40, 60], Δ=2^40,
  public-key encryption; the client sends [n_k, n_k·x_k] in chunks of N/2 values.
* ``tenseal-add-only``: the same with primes [50, 50] (no multiplicative depth).
* ``fedicd-default``: :class:`fedicd.secure.ckks_params.CkksParams` defaults (2 limbs per value).
* ``fedicd-compact``: one limb per value (half the bytes; coarse fixed point, small counts only).
* ``fedicd-precise``: a 54-bit data prime, Δ=2^19 and 28 fraction bits (up to 16 clients, 2^16 examples).

Reported per setting: bytes per client / fp32 bytes (from the serialised bytes actually sent),
aggregate bytes / fp32 bytes (what the server sends back), mean encryption seconds per client,
aggregation seconds (all K), decryption seconds, max |error| and, for fedicd settings, the
documented :func:`~fedicd.secure.ckks_params.precision_bound`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tenseal as ts

from fedicd.secure.ckks import aggregate_encrypted, decrypt_average, encrypt_update
from fedicd.secure.ckks_keys import make_keys
from fedicd.secure.ckks_params import CkksParams, precision_bound

FEDICD_SETTINGS = {
    "fedicd-default": CkksParams(),
    "fedicd-compact": CkksParams(limbs=1, clip_range=4.0, frac_bits=9, max_clients=16, max_count=4096),
    "fedicd-precise": CkksParams(coeff_mod_bit_sizes=(54, 55), global_scale=19, frac_bits=28, max_clients=16,
                                 max_count=2**16),
}
TENSEAL_SETTINGS = {"tenseal-naive": [60, 40, 40, 60], "tenseal-add-only": [50, 50]}


def make_clients(n_params: int, n_clients: int, seed: int) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    """K updates of two arrays (a weight matrix and a vector) and their example counts."""
    rng = np.random.default_rng(seed)
    rows = n_params // 1000
    updates = []
    for _ in range(n_clients):
        w = np.clip(0.1 * rng.standard_normal((rows, 1000)), -4, 4).astype(np.float32)
        b = np.clip(0.1 * rng.standard_normal(n_params - rows * 1000), -4, 4).astype(np.float32)
        updates.append({"w": w, "b": b})
    return updates, [int(n) for n in rng.integers(50, 4097, n_clients)]


def weighted_average(updates: list[dict[str, np.ndarray]], counts: list[int]) -> np.ndarray:
    flat = [np.concatenate([a.astype(np.float64).ravel() for a in u.values()]) for u in updates]
    return sum(n * f for n, f in zip(counts, flat)) / sum(counts)


def run_tenseal(bits: list[int], updates, counts) -> dict:
    """Baseline: TenSEAL CKKSVectors of [n_k, n_k·x_k...], streamed into a running encrypted sum."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=bits)
    ctx.global_scale = 2.0**40
    public = ts.context_from(ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False))
    chunk = 4096
    encrypt_s = aggregate_s = 0.0
    sums, sent = None, []
    for update, n in zip(updates, counts):
        flat = np.concatenate([[float(n)], *(n * a.astype(np.float64).ravel() for a in update.values())])
        t0 = time.perf_counter()
        blobs = [ts.ckks_vector(ctx, flat[i:i + chunk].tolist()).serialize() for i in range(0, flat.size, chunk)]
        encrypt_s += time.perf_counter() - t0
        sent.append(sum(len(b) for b in blobs))
        t0 = time.perf_counter()
        vectors = [ts.ckks_vector_from(public, b) for b in blobs]
        sums = vectors if sums is None else [s + v for s, v in zip(sums, vectors)]
        aggregate_s += time.perf_counter() - t0
    aggregate_bytes = sum(len(v.serialize()) for v in sums)
    t0 = time.perf_counter()
    for v in sums:
        v.link_context(ctx)
    total = np.concatenate([np.asarray(v.decrypt()) for v in sums])
    average = total[1:] / total[0]
    decrypt_s = time.perf_counter() - t0
    return {"bytes_per_client": float(np.mean(sent)), "aggregate_bytes": aggregate_bytes,
            "encrypt_s_per_client": encrypt_s / len(updates), "aggregate_s": aggregate_s, "decrypt_s": decrypt_s,
            "average": average, "total_count": float(total[0]), "bound": None}


def run_fedicd(params: CkksParams, updates, counts) -> dict:
    secret, public = (ts.context_from(b) for b in make_keys(params))
    t0 = time.perf_counter()
    encrypted = [encrypt_update(secret, u, n, params) for u, n in zip(updates, counts)]
    encrypt_s = (time.perf_counter() - t0) / len(updates)
    wires = [e.to_bytes() for e in encrypted]
    t0 = time.perf_counter()
    aggregate = aggregate_encrypted(public, encrypted)
    aggregate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    average, total = decrypt_average(secret, aggregate, params)
    decrypt_s = time.perf_counter() - t0
    flat = np.concatenate([a.ravel() for a in average.values()])
    return {"bytes_per_client": float(np.mean([len(w) for w in wires])), "aggregate_bytes": len(aggregate.to_bytes()),
            "encrypt_s_per_client": encrypt_s, "aggregate_s": aggregate_s, "decrypt_s": decrypt_s,
            "average": flat, "total_count": total,
            "bound": precision_bound(params, len(updates), max(counts), sum(counts)),
            "bound_worst_case": precision_bound(params, len(updates), params.max_count),
            "params": params.to_dict(), "limb_bits": params.limb_bits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=int, default=500_000, help="values per update")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", nargs="+", default=[*TENSEAL_SETTINGS, *FEDICD_SETTINGS])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_ckks_codec/results.json"))
    args = ap.parse_args()
    updates, counts = make_clients(args.params, args.clients, args.seed)
    reference = weighted_average(updates, counts)
    fp32_bytes = 4 * args.params
    results = {}
    for name in args.settings:
        if name in TENSEAL_SETTINGS:
            r = run_tenseal(TENSEAL_SETTINGS[name], updates, counts)
        else:
            r = run_fedicd(FEDICD_SETTINGS[name], updates, counts)
        average = r.pop("average")
        r.update(bytes_ratio=r["bytes_per_client"] / fp32_bytes,
                 aggregate_bytes_ratio=r["aggregate_bytes"] / fp32_bytes,
                 max_abs_error=float(np.abs(average - reference).max()),
                 count_error=abs(r["total_count"] - sum(counts)))
        results[name] = r
        bound = "" if r["bound"] is None else f"  (bound {r['bound']:.2e}, worst case {r['bound_worst_case']:.2e})"
        print(f"{name:<18} bytes/client {r['bytes_ratio']:6.2f}x fp32  aggregate {r['aggregate_bytes_ratio']:6.2f}x  "
              f"encrypt {r['encrypt_s_per_client']:6.2f} s/client  aggregate {r['aggregate_s']:6.2f} s  "
              f"decrypt {r['decrypt_s']:5.2f} s  max|err| {r['max_abs_error']:.2e}{bound}", flush=True)
    report = {"params": args.params, "clients": args.clients, "seed": args.seed, "counts": counts,
              "fp32_bytes_per_client": fp32_bytes, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
