"""Numerical-equivalence harness: fingerprint what fedicd computes, and compare two fingerprints.

README
======
The refactor ("typed run plan, defences as wrappers, one local training loop") must change nothing
numerically. This script runs a fixed set of small, seeded experiments with whatever ``fedicd`` is on the
current ``PYTHONPATH``, writes a small JSON fingerprint of their numbers, and compares two fingerprints.

Runs (each in its own child process, through the CLI entry ``fedicd.cli:main``, in-process there):

``demo_small`` (default) / ``demo`` (only with ``--runs demo,...``)
    ``fedicd demo`` (fixed seed 0, MiniLM, MLP, 20 epochs): sha256 of the ``model.pt`` state_dict
    tensors (name, dtype, shape and bytes of each tensor in state_dict order, so pickling metadata does
    not matter; the raw file's sha256 is recorded for information only), the val/test metrics of
    ``results.json`` and its per-epoch history (minus ``seconds`` fields). ``demo_small`` is ``fedicd demo
    --set`` :data:`DEMO_SMALL` (the federated runs' 150 notes, 128-token chunks): same code path, but it
    shares their embedding cache. The full ``demo`` (1,500 notes) embeds ~1,400 chunked notes: 2 min on
    an idle 2-core machine, but ~1 h on the shared, loaded machine this harness was built on, so it is
    not in the default set.
``fedavg``, ``scaffold``, ``dp_sample``, ``dp_client``, ``ckks``, ``secagg``
    ``fedicd run experiments/equivalence/configs/<name>.toml``: 150 synthetic notes, 3 IID clients,
    5 rounds of Flower simulation on Ray. Fingerprint: the history rows of ``results.json`` minus every
    column whose name contains ``seconds`` (wall clock), the val/test metrics, and the final global
    model's arrays (``checkpoint/arrays.npz``, ``model/*``; under CKKS the checkpoint holds the encrypted
    aggregate, which the harness decrypts with the run's secret key: the ciphertext itself is random).

Determinism (measured: two fingerprints of the baseline, run concurrently on a loaded machine, compared).
Everything in fedicd is seeded from the experiment seed except client-level DP: Flower's
``DifferentialPrivacyServerSideFixedClipping`` adds its Gaussian noise with numpy's *global* RNG
(``flwr.supercore.differential_privacy.add_gaussian_noise_inplace``), unseeded. The ServerApp runs in a
thread of the driver process, so the harness seeds the driver's global RNGs (``random``, ``numpy``,
``torch``; :data:`HARNESS_SEED`) right before it calls the CLI: the server's noise is then repeatable
without touching library code (``FEDICD_FP_NO_SEED=1`` turns the seeding off, to see the difference).
What the baseline-vs-baseline comparison still showed, and how ``--compare`` treats it:

* CKKS: the decrypted global model, val/test metrics and losses are bit-identical (fixed-point digits are
  rounded after decryption, so the sum is exact whatever SEAL's random encryption noise and even whatever
  the key), but ``bytes_received`` / ``bytes_sent`` vary by a few hundred bytes (zstd-compressed random
  ciphertexts): :data:`VOLATILE_COLUMNS`, recorded, not compared.
* Every federated run: the clients' evaluation means (``client_eval_loss``, ``client_micro_f1``,
  ``client_macro_f1``) are Flower's weighted means over the evaluate replies in *arrival* order, so they
  differ by ~3e-17 between identical runs: :data:`COLUMN_TOLERANCES` (1e-12 relative). The global model
  arrays, the server-side val/test scores and the final metrics are compared exactly.

* SecAgg+: ``bytes_sent`` differed by 3 bytes: volatile like CKKS's byte counts; the model is bit-identical.
* SCAFFOLD: NOT reproducible at the baseline (global model max abs diff 3.4e-3 after 5 rounds). The cause is
  not in the driver's RNGs (seeded); it was not found in the time available. :data:`NONDETERMINISTIC`:
  ``--compare`` prints its differences but does not fail on them, so it proves nothing for SCAFFOLD.
* Seeding matters: ``dp_client`` with ``FEDICD_FP_NO_SEED=1`` differed from the seeded baseline by up to 3.0
  in the model's weights; the two seeded baseline runs were bit-identical.

Runs listed in :data:`TOLERANCES` would be compared with an absolute tolerance instead (none needed).

Commands (from the repository root, with the venv active)::

    # fingerprint the baseline checkout (a git worktree of the reference commit) and the working tree
    PYTHONPATH=/work/baseline python experiments/equivalence/fingerprint.py --out runs/equivalence/base.json
    python experiments/equivalence/fingerprint.py --out runs/equivalence/main.json
    # compare (exit 0: identical within the tolerances; 1: something differs; 2: bad input)
    python experiments/equivalence/fingerprint.py --compare experiments/equivalence/baseline.json runs/equivalence/main.json

Options: ``--runs fedavg,ckks`` runs a subset; ``--work DIR`` keeps the run directories (default: a new
folder under ``runs/equivalence/``, git-ignored); ``--cache DIR`` reuses an embedding cache (default: a
fresh cache per fingerprint, so the embedding code is exercised too; a reused cache saves ~2 min of
embedding but would hide a change in the embedding numbers). The fingerprint names the fedicd source
directory and its git commit (``meta``); each run also records its wall time, and the final model arrays
are saved beside the run (``<work>/<run>/final_arrays.npz``, path in the JSON) so that ``--compare`` can
print the max abs difference per array when both sides' arrays still exist (otherwise it compares
per-array sha256 and summary statistics).

``experiments/equivalence/baseline.json`` is the committed reference (fingerprint of commit 2311ab1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
FED_RUNS = ("fedavg", "scaffold", "dp_sample", "dp_client", "ckks", "secagg")
DEFAULT_RUNS = ("demo_small", *FED_RUNS)
ALL_RUNS = ("demo", *DEFAULT_RUNS)
# `fedicd demo` on the federated runs' tiny corpus (same notes and embedding settings, so one embedding cache)
DEMO_SMALL = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128"]
HARNESS_SEED = 12345
# run -> absolute tolerance for its numbers; a run missing here is compared exactly
TOLERANCES: dict[str, float] = {}
# run -> history columns recorded but not compared (wall-clock columns are dropped before recording):
# CKKS uploads are zstd-compressed ciphertexts of SEAL's random encryption noise, so their byte counts
# vary by a few hundred bytes from run to run (measured at the baseline); they are sizes, not numerics
# (SecAgg+: bytes_sent varied by 3 bytes between two baseline runs, the same kind of thing)
VOLATILE_COLUMNS: dict[str, frozenset[str]] = {"ckks": frozenset({"bytes_received", "bytes_sent"}),
                                               "secagg": frozenset({"bytes_received", "bytes_sent"})}
# run -> why it is not reproducible at the baseline: its differences are printed but do not fail --compare
NONDETERMINISTIC: dict[str, str] = {
    "scaffold": "two baseline runs differ (global model max abs diff 3.4e-3 after 5 rounds, val micro-precision "
                "1.2e-2): the baseline's control variate drew dropout from the worker's unseeded global RNG; "
                "fedicd now seeds it by (seed, round, client), so two fingerprints of the current code agree "
                "exactly, but not with the baseline",
}
# history column -> relative tolerance (|a-b| <= tol * max(1, |a|, |b|)). At the baseline the clients'
# evaluation metrics were Flower's weighted means over the evaluate replies *in arrival order* (Ray actors
# finish in any order): differences of ~3e-17 at the baseline itself (fedicd now sorts the replies). Everything else, the global model included, is compared exactly.
COLUMN_TOLERANCES: dict[str, float] = {"client_eval_loss": 1e-12, "client_macro_f1": 1e-12,
                                       "client_micro_f1": 1e-12}
# a loaded machine: Ray's head node may not come up within its fixed 30 s; such runs are retried
RAY_STARTUP_ERRORS = ("timed out during startup", "Simulation Runtime crashed", "GCS has become overloaded")
RAY_ATTEMPTS = 3
CHILD_TIMEOUT_S = 1200
CLI = "import sys; from fedicd.cli import main; sys.exit(main(sys.argv[1:]))"


# --------------------------------------------------------------------------- hashing helpers

def _array_entry(name: str, arr) -> dict:
    import numpy as np

    a = np.ascontiguousarray(arr)
    f = a.astype(np.float64) if a.dtype.kind in "fiub" else None
    entry = {"dtype": str(a.dtype), "shape": list(a.shape), "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if f is not None and f.size:
        entry.update({"sum": float(f.sum()), "abs_sum": float(np.abs(f).sum()), "min": float(f.min()),
                      "max": float(f.max())})
    return entry


def hash_arrays(arrays: dict) -> dict:
    """sha256 over (name, dtype, shape, bytes) of each array in the given order, plus one entry per array."""
    import numpy as np

    h = hashlib.sha256()
    per = {}
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        h.update(name.encode() + b"\0" + str(a.dtype).encode() + b"\0" + repr(tuple(a.shape)).encode() + b"\0")
        h.update(a.tobytes())
        per[name] = _array_entry(name, a)
    return {"sha256": h.hexdigest(), "names": list(arrays), "arrays": per}


def _clean(value):
    """JSON-safe: NaN/inf as strings (json.dumps would write invalid JSON otherwise)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def strip_history(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows or []]


def metrics_of(results: dict) -> dict:
    return {p: {k: v for k, v in results[p].items() if "seconds" not in k}
            for p in ("val", "test") if isinstance(results.get(p), dict)}


# --------------------------------------------------------------------------- child: one run

def _seed_driver() -> None:
    import random

    import numpy as np
    import torch

    random.seed(HARNESS_SEED)
    np.random.seed(HARNESS_SEED)
    torch.manual_seed(HARNESS_SEED)


def _cli(argv: list[str]) -> int:
    from fedicd.cli import main

    if not os.environ.get("FEDICD_FP_NO_SEED"):  # set only to show what the seeding fixes
        _seed_driver()
    return main(argv)


def _find(name: str, *modules: str):
    """``name`` from the first of ``modules`` that has it (the refactor may move helpers between modules)."""
    import importlib

    for mod in modules:
        try:
            obj = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if obj is not None:
            return obj
    raise ImportError(f"none of {modules} defines {name}")


def _final_arrays(run_dir: Path, results: dict) -> dict:
    import numpy as np

    with np.load(run_dir / "checkpoint" / "arrays.npz") as z:
        arrays = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("model/")}
    if "__ckks_aggregate__" in arrays:  # decrypt with the clients' key, as the run's driver did
        EncryptedUpdate, decrypt_average, load_context, read_params = (
            _find(n, "fedicd.secure.ckks", "fedicd.secure.ckks_round", "fedicd.secure.ckks_keys",
                  "fedicd.secure.ckks_update") for n in ("EncryptedUpdate", "decrypt_average", "load_context",
                                                          "read_params"))
        sa = results["config"]["secure_aggregation"]
        secret = sa.get("evaluator_key") or str(Path(sa["key_dir"]) / "secret.ctx")
        update = EncryptedUpdate.from_bytes(arrays["__ckks_aggregate__"].tobytes())
        avg, _ = decrypt_average(load_context(secret), update, read_params(sa["key_dir"]))
        arrays = {k: np.asarray(v).astype(np.float32) for k, v in avg.items()}
    return arrays


def child(name: str, work: Path, cache: Path, keys: Path | None) -> dict:
    """Run one experiment in this process and return its fingerprint (raises on failure)."""
    import numpy as np

    out = work / name
    sets = ["--set", f'cache_dir="{cache}"']
    t0 = time.perf_counter()
    if name in ("demo", "demo_small"):
        extra = [a for kv in DEMO_SMALL for a in ("--set", kv)] if name == "demo_small" else []
        code = _cli(["demo", "--out", str(out), *sets, *extra])
    else:
        if name == "ckks":
            sets += ["--set", f'secure_aggregation.key_dir="{keys}"',
                     "--set", f'secure_aggregation.evaluator_key="{keys / "secret.ctx"}"']
        code = _cli(["run", str(CONFIGS / f"{name}.toml"), "--out", str(out), *sets])
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"fedicd exited with {code}")
    results = json.loads((out / "results.json").read_text())
    import re

    import fedicd

    src = str(Path(fedicd.__file__).resolve().parent.parent)
    log = out / "framework.log"  # client tracebacks name the fedicd they imported: it must be ours
    foreign = sorted({m for m in re.findall(r"(/[^\s'\"<>]*?)/fedicd/", log.read_text(errors="replace"))
                      if m != src}) if log.exists() else []
    fp: dict = {"fedicd_source": src, **({"foreign_fedicd_in_log": foreign} if foreign else {}),
                "wall_seconds": round(wall, 1), "metrics": metrics_of(results),
                "history": strip_history(results.get("history"))}
    if name in ("demo", "demo_small"):
        import torch

        saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
        state = {k: v.detach().cpu().numpy() for k, v in saved["state_dict"].items()}
        fp["model_file_sha256"] = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    else:
        state = _final_arrays(out, results)
        fp["rejections"] = results.get("rejections")
        fp["outcome_status"] = (results.get("outcome") or {}).get("status")
        for key in ("epsilon", "releases", "noise_std"):
            if key in (results.get("privacy") or {}):
                fp.setdefault("privacy", {})[key] = results["privacy"][key]
    fp["model"] = hash_arrays(state)
    np.savez(out / "final_arrays.npz", **state)
    fp["arrays_file"] = str((out / "final_arrays.npz").resolve())
    return _clean(fp)


# --------------------------------------------------------------------------- parent: fingerprint

def _meta() -> dict:
    import fedicd

    src = Path(fedicd.__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--", "fedicd")
    import numpy
    import torch

    return {"fedicd_source": str(src), "git_commit": git("rev-parse", "HEAD"),
            "fedicd_dirty_files": status.splitlines() if status else [],
            "python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
            "harness_seed": HARNESS_SEED, "host": platform.node(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fingerprint(out_file: Path, runs: list[str], work: Path | None, cache: Path | None) -> int:
    work = Path(work or tempfile.mkdtemp(prefix=time.strftime("fp-%H%M%S-"), dir=_runs_dir())).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(cache or work / "cache").resolve()
    fp = {"meta": _meta(), "work": str(work), "runs": {}}
    print(f"fingerprinting {fp['meta']['fedicd_source']} @ {fp['meta']['git_commit']} in {work}", flush=True)
    keys = None
    if "ckks" in runs and (work / "keys" / "secret.ctx").exists():  # a resumed --work: keep its keys
        keys = work / "keys"
    elif "ckks" in runs:
        keys = work / "keys"
        r = subprocess.run([sys.executable, "-c", CLI, "keys", "--out", str(keys)], capture_output=True, text=True,
                           cwd=work)
        if r.returncode != 0:  # `fedicd keys` broken: make them with the library (keys do not change results)
            fp["meta"]["keys_cli_error"] = (r.stdout + r.stderr).strip().splitlines()[-3:]
            print("`fedicd keys` failed, making CKKS keys with the library:", *fp["meta"]["keys_cli_error"],
                  sep="\n  ", file=sys.stderr)
            code = ("import sys; sys.path.insert(0, %r); from fingerprint import _find; "
                    "_find('write_key_dir', 'fedicd.secure.ckks_round', 'fedicd.secure.ckks_keys', "
                    "'fedicd.secure.ckks')(sys.argv[1])" % str(HERE))
            r = subprocess.run([sys.executable, "-c", code, str(keys)], capture_output=True, text=True, cwd=work)
            if r.returncode != 0:
                print(r.stdout + r.stderr, file=sys.stderr)
                keys = None
    t_all = time.perf_counter()
    for name in runs:
        t0 = time.perf_counter()
        res_file = work / f"{name}.fp.json"
        log = work / f"{name}.log"
        if res_file.exists():  # --work of an interrupted fingerprint: keep the runs it finished
            fp["runs"][name] = json.loads(res_file.read_text())
            print(f"  {name:<10} ok (kept from {res_file})", flush=True)
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", name, "--work", str(work),
               "--cache", str(cache), "--_result", str(res_file)] + (["--_keys", str(keys)] if keys else [])
        for attempt in range(1, RAY_ATTEMPTS + 1):
            shutil.rmtree(work / name, ignore_errors=True)
            with log.open("w") as fh:
                # cwd = the work folder: a checkout in the caller's cwd must not shadow PYTHONPATH (Ray's workers
                # put the driver's cwd on their sys.path)
                try:
                    rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=work,
                                        timeout=CHILD_TIMEOUT_S).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
            text = log.read_text(errors="replace")
            flaky = rc == "timeout" or any(m in text for m in RAY_STARTUP_ERRORS)
            if (rc == 0 and res_file.exists()) or not flaky:
                break
            print(f"  {name:<10} Ray did not start or the run hung (attempt {attempt}); retrying", flush=True)
        if rc == 0 and res_file.exists():
            fp["runs"][name] = json.loads(res_file.read_text())
            fp["runs"][name]["attempts"] = attempt
            status = "ok"
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            fp["runs"][name] = {"error": f"child exited with {rc}", "log_tail": tail}
            status = f"FAILED (rc {rc}; log {log})"
        fp["runs"][name]["process_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"  {name:<10} {status}  {time.perf_counter() - t0:6.1f} s", flush=True)
    fp["meta"]["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(fp, indent=1, sort_keys=False) + "\n")
    print(f"fingerprint: {out_file} ({fp['meta']['total_seconds']:.0f} s)")
    return 0 if all("error" not in r for r in fp["runs"].values()) else 1


def _runs_dir() -> Path:
    d = Path("runs") / "equivalence"
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------- compare

def _num(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return None


def _diff(a, b) -> float | None:
    """0.0 when equal, the abs difference for numbers, inf for other unequal values, None when equal non-numbers."""
    if a == b:
        return 0.0
    x, y = _num(a), _num(b)
    if x is not None and y is not None:
        if math.isnan(x) and math.isnan(y):
            return 0.0
        if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
            return math.inf
        return abs(x - y)
    return math.inf


def _compare_history(ha: list[dict], hb: list[dict], lines: list[str], volatile=frozenset()) -> float:
    """Worst difference beyond the column tolerances (differences within them are listed, not counted)."""
    worst = 0.0
    if len(ha) != len(hb):
        lines.append(f"    history: {len(ha)} vs {len(hb)} rows")
        worst = math.inf
    cols_a = {k for r in ha for k in r} - volatile
    cols_b = {k for r in hb for k in r} - volatile
    if volatile:
        lines.append(f"    history: not compared (volatile here): {', '.join(sorted(volatile))}")
    for c in sorted(cols_a ^ cols_b):
        lines.append(f"    history column {c!r} only in {'A' if c in cols_a else 'B'}")
        worst = math.inf
    diffs = []
    for c in sorted(cols_a & cols_b):
        d = max((_diff(ra.get(c), rb.get(c)) for ra, rb in zip(ha, hb)), default=0.0)
        tol = COLUMN_TOLERANCES.get(c, 0.0)
        scale = max([1.0] + [abs(x) for r in (*ha, *hb) if (x := _num(r.get(c))) is not None and math.isfinite(x)])
        within = 0 < d <= tol * scale
        if d:
            diffs.append((c, d, within))
        if not within:
            worst = max(worst, d)
    same = len(cols_a & cols_b) - len(diffs)
    lines.append(f"    history: {len(ha)} rows, {same} of {len(cols_a & cols_b)} common columns identical")
    for c, d, within in diffs:
        note = f"  (within its tolerance {COLUMN_TOLERANCES[c]:g} relative: reply-order summation)" if within else ""
        lines.append(f"      {c:<36} max abs diff {d:.3g}{note}")
    return worst


def _compare_metrics(ma: dict, mb: dict, lines: list[str]) -> float:
    worst, diffs, n = 0.0, [], 0
    for part in sorted(set(ma) | set(mb)):
        a, b = ma.get(part, {}), mb.get(part, {})
        for k in sorted(set(a) | set(b)):
            n += 1
            d = _diff(a.get(k), b.get(k)) if k in a and k in b else math.inf
            if d:
                diffs.append((f"{part}.{k}", d))
            worst = max(worst, d)
    lines.append(f"    metrics: {n - len(diffs)} of {n} identical")
    for k, d in diffs:
        lines.append(f"      {k:<36} max abs diff {d:.3g}")
    return worst


def _compare_model(ra: dict, rb: dict, lines: list[str]) -> float:
    ma, mb = ra.get("model", {}), rb.get("model", {})
    if ma.get("sha256") == mb.get("sha256"):
        lines.append(f"    model: identical (sha256 {str(ma.get('sha256'))[:16]}…, {len(ma.get('names', []))} arrays)")
        return 0.0
    worst = math.inf
    loaded = []
    for r in (ra, rb):
        try:
            import numpy as np

            with np.load(r["arrays_file"]) as z:
                loaded.append({k: z[k] for k in z.files})
        except (KeyError, OSError, ValueError):
            loaded.append(None)
    if ma.get("names") != mb.get("names"):
        lines.append(f"    model: array names/order differ: {ma.get('names')} vs {mb.get('names')}")
    lines.append("    model: DIFFERS")
    worst_arr = 0.0
    for name in [n for n in ma.get("names", []) if n in mb.get("arrays", {})]:
        ea, eb = ma["arrays"][name], mb["arrays"][name]
        if ea["sha256"] == eb["sha256"]:
            continue
        if ea["shape"] != eb["shape"] or ea["dtype"] != eb["dtype"]:
            lines.append(f"      {name}: {ea['dtype']}{ea['shape']} vs {eb['dtype']}{eb['shape']}")
            worst_arr = math.inf
            continue
        if loaded[0] is not None and loaded[1] is not None and name in loaded[0] and name in loaded[1]:
            import numpy as np

            d = float(np.max(np.abs(loaded[0][name].astype(np.float64) - loaded[1][name].astype(np.float64))))
            worst_arr = max(worst_arr, d)
            lines.append(f"      {name:<36} max abs diff {d:.3g}")
        else:
            lines.append(f"      {name:<36} sha differs; sum {ea.get('sum')} vs {eb.get('sum')} "
                         "(arrays files gone: no max abs diff)")
            worst_arr = math.inf
    if ma.get("names") == mb.get("names") and worst_arr < math.inf and loaded[0] is not None:
        worst = worst_arr
    return worst


def compare(file_a: Path, file_b: Path) -> int:
    A, B = json.loads(file_a.read_text()), json.loads(file_b.read_text())
    print(f"A: {file_a}  ({A['meta'].get('fedicd_source')} @ {A['meta'].get('git_commit')})")
    print(f"B: {file_b}  ({B['meta'].get('fedicd_source')} @ {B['meta'].get('git_commit')})")
    failed = []
    for name in [*A["runs"], *[n for n in B["runs"] if n not in A["runs"]]]:
        ra, rb = A["runs"].get(name), B["runs"].get(name)
        tol = TOLERANCES.get(name, 0.0)
        lines: list[str] = []
        if ra is None or rb is None:
            verdict, worst = f"only in {'A' if rb is None else 'B'}", math.inf
        elif "error" in ra or "error" in rb:
            worst = math.inf
            verdict = "ERROR"
            for side, r in (("A", ra), ("B", rb)):
                if "error" in r:
                    lines.append(f"    {side}: {r['error']}")
                    lines.extend(f"      | {t}" for t in r.get("log_tail", [])[-8:])
        else:
            worst = max(_compare_model(ra, rb, lines), _compare_history(ra.get("history", []), rb.get("history", []), lines,
                                         VOLATILE_COLUMNS.get(name, frozenset())),
                        _compare_metrics(ra.get("metrics", {}), rb.get("metrics", {}), lines))
            for key in ("privacy", "rejections", "outcome_status"):
                if ra.get(key) != rb.get(key):
                    lines.append(f"    {key}: {ra.get(key)!r} vs {rb.get(key)!r}")
                    worst = math.inf
            if name.startswith("demo") and ra.get("model_file_sha256") != rb.get("model_file_sha256"):
                lines.append("    (info) model.pt file bytes differ; tensors compared above")
            verdict = ("identical" if not any("max abs diff" in x for x in lines) else "identical within the "
                       "column tolerances") if worst == 0 else (f"within tolerance {tol:g} (max abs diff {worst:.3g})"
                                                    if worst <= tol else f"DIFFERS (max abs diff {worst:.3g})")
        if worst > tol and name in NONDETERMINISTIC:
            verdict += f" -- NOT GATING: non-deterministic at the baseline ({NONDETERMINISTIC[name]})"
        elif worst > tol:
            failed.append(name)
        print(f"{name:<10} {verdict}")
        print("\n".join(lines))
    print(f"\n{'OK: no run differs' if not failed else 'DIFFERENT: ' + ', '.join(failed)}"
          f" (exact, except run tolerances {TOLERANCES or 'none'}, relative column tolerances {COLUMN_TOLERANCES}, "
          f"not compared {({k: sorted(v) for k, v in VOLATILE_COLUMNS.items()})})")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the fingerprint of the fedicd on PYTHONPATH here")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    p.add_argument("--runs", default=",".join(DEFAULT_RUNS), help=f"comma-separated subset of {','.join(ALL_RUNS)}")
    p.add_argument("--work", type=Path, help="run directories (default: new folder under runs/equivalence/)")
    p.add_argument("--cache", type=Path, help="embedding cache to (re)use (default: fresh, <work>/cache)")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    p.add_argument("--_result", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--_keys", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        # os._exit: after a failed Ray start the interpreter can hang at exit (Ray's threads) for many minutes
        try:
            fp = child(args._child, args.work, args.cache, args._keys)
            args._result.write_text(json.dumps(fp))
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(1)
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        p.error("give --out FILE or --compare A B")
    runs = [r for r in args.runs.split(",") if r]
    bad = [r for r in runs if r not in ALL_RUNS]
    if bad:
        p.error(f"unknown runs {bad}; choose from {ALL_RUNS}")
    return fingerprint(args.out, runs, args.work, args.cache)


if __name__ == "__main__":
    sys.exit(main())
