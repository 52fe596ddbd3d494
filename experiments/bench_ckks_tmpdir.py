"""Where SEAL's file round trips go: the default temp dir vs /dev/shm, interleaved in one run.

    python experiments/bench_ckks_tmpdir.py [--params 1085585] [--clients 3] [--repeats 2]

TenSEAL's SEAL bindings only load and save ciphertexts through files; fedicd.secure.ckks_seal keeps
them in /dev/shm when it exists. Prints mean seconds per client encryption, for adding the
clients' updates, and for decrypting the sum, under each directory.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tenseal as ts

from fedicd.secure import ckks, ckks_keys, ckks_seal


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=int, default=1_085_585)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    secret, public = ckks_keys.make_keys()
    cs, cp = ts.context_from(secret), ts.context_from(public)
    arrays = {"w": np.random.default_rng(0).normal(size=args.params).astype(np.float32) * 0.05}
    times: dict[str, list] = {"default temp dir": [], "/dev/shm": []}
    for _ in range(args.repeats):
        for label, where in (("default temp dir", None), ("/dev/shm", "/dev/shm")):
            ckks_seal._MEMORY_TMP = where
            t = time.perf_counter()
            ups = [ckks.encrypt_update(cs, arrays, 100 + i) for i in range(args.clients)]
            enc = (time.perf_counter() - t) / args.clients
            t = time.perf_counter()
            agg = ckks.aggregate_encrypted(cp, ups)
            add = time.perf_counter() - t
            t = time.perf_counter()
            ckks.decrypt_average(cs, agg)
            times[label].append((enc, add, time.perf_counter() - t))
    for label, rows in times.items():
        enc, add, dec = np.mean(rows, axis=0)
        print(f"{label:<18} encrypt/client {enc:.3f} s   add {args.clients} updates {add:.3f} s   decrypt {dec:.3f} s")


if __name__ == "__main__":
    main()
