"""ICD coders over frozen embeddings, compared: pooled and chunk-sequence heads, description init, zero-shot.

    python experiments/coders.py --suite codiesp --out runs/coders --archive
    python experiments/coders.py --suite synthetic --out runs/coders --archive
    python experiments/coders.py --suite all --out runs/coders --collect --archive   # re-read finished runs only
    python experiments/coders.py zero-shot experiments/configs/codiesp_central.toml --out runs/zs --notes chunks

Suites (``SUITES``):

- ``codiesp``: ``experiments/configs/codiesp_central.toml`` (its split and label space): TF-IDF + logistic
  regression, the zero-shot retrieval coder (pooled vectors and chunk-max), the heads mlp, deep_mlp, deep_res_mlp,
  linear, label_attention, multires_cnn, and linear / label_attention / multires_cnn initialised from the codes'
  descriptions (``warm_start.init = "descriptions"``); seeds 0, 1, 2.
- ``synthetic``: ``experiments/configs/synthetic_fed.toml``: each head trained centrally (AdamW, 100 epochs) and
  by FedAvg over the config's 20 clients with local SGD (100 rounds × 1 local epoch, lr 100: the federated-parity
  recipe of docs/findings.md; in-process engine).

Every (row, seed) is its own process (``fedicd run``, ``experiments/tfidf_baseline.py`` or this script's
``zero-shot`` command) in ``<out>/<suite>/<row>/seed<s>/``: ``run/`` holds the run's files, ``log.txt`` its output,
``row.json`` the command, its overrides, wall seconds and the process's own peak RSS (``os.wait4``; it includes the
few MiB this driver held when it started the process: the driver imports only the standard library). A row whose
``run/results.json`` exists is read, not re-run (``--fresh`` re-runs); one made with other overrides is reported
as stale, never silently mixed in. Rows are written to ``<out>/<suite>.json``; ``--archive`` copies it to
``experiments/results/coders/`` where ``fedicd report --docs`` renders ``docs/results/coders.md``.

Choices made on validation only: the sequence heads' chunk length (``--max-tokens 128 256`` runs each value; the
value with the best mean validation micro-F1 is the row's reported one) and any ``--set`` override tried in a
separate ``--out``. ``--set key=value`` applies to every row; ``--set HEAD.key=value`` (e.g.
``--set label_attention.train.epochs=40``) only to the rows of that head (or that row name).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "experiments" / "results" / "coders"
CODIESP = "experiments/configs/codiesp_central.toml"
SYNTHETIC = "experiments/configs/synthetic_fed.toml"
INPROCESS = ('federated.engine="inprocess"', "federated.fraction_evaluate=0.0", "federated.min_evaluate=0")
SEQUENCE_HEADS = ("label_attention", "multires_cnn")
POOLED_HEADS = ("mlp", "deep_mlp", "deep_res_mlp", "linear")
DESCRIPTIONS = 'warm_start.init="descriptions"'
METRICS = ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "p_at_8", "p_at_15", "r_precision", "map",
           "rare_macro_f1", "rare_labels", "threshold")


@dataclass(frozen=True)
class Row:
    """One coder of a suite: how it is run and the overrides that make it."""

    name: str
    what: str
    kind: str = "fedicd"  # "fedicd" (fedicd run), "tfidf" or "zero_shot"
    head: str | None = None
    overrides: tuple[str, ...] = ()
    notes: str = "pooled"  # the zero-shot coder's note form
    group: str = ""  # synthetic: "central" or "fedavg"
    init_of: str | None = None  # a description-initialised row: the randomly initialised row it is compared with

    @property
    def sequence(self) -> bool:
        """Reads chunk sequences (the chunk length settings apply)."""
        return self.head in SEQUENCE_HEADS or self.notes == "chunks"


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    config: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    goal: dict = field(default_factory=dict)


def _head(name: str, **kw) -> Row:
    return Row(name, f"{name} head", head=name, overrides=(f'train.head="{name}"',), **kw)


def _desc(name: str) -> Row:
    return Row(f"{name}+descriptions", f"{name} head, output rows initialised from the codes' descriptions",
               head=name, overrides=(f'train.head="{name}"', DESCRIPTIONS), init_of=name)


CODIESP_ROWS = (
    Row("tfidf_lr", "TF-IDF (1–2 grams) + one-vs-rest logistic regression (C = 100)", kind="tfidf"),
    Row("zero_shot_pooled", "zero-shot retrieval: cosine(note vector, description)", kind="zero_shot"),
    Row("zero_shot_chunks", "zero-shot retrieval: max over the note's chunks of the cosine", kind="zero_shot",
        notes="chunks"),
    *(_head(h) for h in (*POOLED_HEADS, *SEQUENCE_HEADS)),
    *(_desc(h) for h in ("linear", *SEQUENCE_HEADS)),
    # the best row's settings chosen on validation micro-F1 (seed 0) among: epochs 40, lr 2e-3, scale 20,
    # hidden [1024, 256] / [2048, 256] / [1024, 512], dropout 0.3, 256-token chunks, and pairs of these
    Row("label_attention+descriptions_wide", "label_attention head, hidden [1024, 256], dropout 0.3, descriptions "
        "init (settings chosen on validation)", head="label_attention", init_of="label_attention",
        overrides=('train.head="label_attention"', DESCRIPTIONS, "train.hidden=[1024, 256]", "train.dropout=0.3")),
)
# FedAvg with local SGD (the federated-parity recipe of docs/findings.md: 100 rounds × 1 local epoch, lr 100) against
# central AdamW over the same 100 epochs
LOCAL_SGD = ("federated.rounds=100", 'federated.local_optimizer="sgd"', "federated.local_lr=100")
SYNTHETIC_ROWS = tuple(
    Row(f"{h}_{group}", f"{h} head, {what}", head=h, group=group, overrides=(f'train.head="{h}"', *sets))
    for h in (*POOLED_HEADS, *SEQUENCE_HEADS)
    for group, what, sets in (("central", "central, AdamW, 100 epochs", ('train.mode="central"', "train.epochs=100")),
                              ("fedavg", "FedAvg, 20 clients, 100 rounds × 1 local epoch of SGD (lr 100)",
                               (*INPROCESS, *LOCAL_SGD))))
SUITES = {
    "codiesp": Suite("codiesp", "CodiEsp (English, diagnosis codes), central training", CODIESP, CODIESP_ROWS,
                     goal={"micro_f1": 0.40, "macro_f1": 0.25}),
    "synthetic": Suite("synthetic", "Synthetic 3,000-note corpus: central vs FedAvg over 20 clients", SYNTHETIC,
                       SYNTHETIC_ROWS, goal={"fedavg_gap_points": 1.0}),
}


# --- overrides ------------------------------------------------------------------------------------------------
def row_overrides(row: Row, seed: int, *, max_tokens: int | None, chunk_overlap: int,
                  extra: list[str]) -> list[str]:
    """The config overrides of one (row, seed, chunk length) run: row, chunk settings, seed, then ``--set``."""
    out = [*row.overrides]
    if row.sequence and max_tokens is not None:
        out += [f"embedding.max_tokens={max_tokens}", f"embedding.chunk_overlap={chunk_overlap}"]
    out.append(f"seed={seed}")
    for item in extra:
        key, _, value = item.partition("=")
        first, _, rest = key.partition(".")
        if first in (row.name, row.head):
            out.append(f"{rest}={value}")
        elif not any(first in (r.name, r.head) for s in SUITES.values() for r in s.rows):
            out.append(item)  # every row: the split and label space stay those of the trained rows
    return out


def variant(row: Row, max_tokens: int | None) -> str:
    return f"t{max_tokens}" if row.sequence and max_tokens is not None else "default"


def command(row: Row, config: str, run_dir: Path, overrides: list[str]) -> list[str]:
    """The process that runs one row (cwd: the repository root)."""
    sets = [a for o in overrides for a in ("--set", o)]
    if row.kind == "tfidf":
        return [sys.executable, "experiments/tfidf_baseline.py", config, "--out", str(run_dir), *sets]
    if row.kind == "zero_shot":
        return [sys.executable, "experiments/coders.py", "zero-shot", config, "--out", str(run_dir),
                "--notes", row.notes, *sets]
    return [sys.executable, "-m", "fedicd.cli", "run", config, "--out", str(run_dir), "--overwrite", *sets]


# --- running --------------------------------------------------------------------------------------------------
def run_process(cmd: list[str], log: Path, timeout: float | None) -> dict:
    """Run ``cmd``; its return code, wall seconds and its own peak resident memory (MiB, from ``os.wait4``)."""
    t0 = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.5)
    return {"returncode": os.waitstatus_to_exitcode(status), "wall_seconds": time.time() - t0,
            "peak_rss_mib": usage.ru_maxrss / 1024}  # Linux: KiB


class NotRun(Exception):
    """``--collect``: the row has no results.json."""


class Stale(Exception):
    """The row's folder holds a run made with other overrides."""


def run_row(suite: Suite, row: Row, seed: int, out: Path, *, max_tokens: int | None, chunk_overlap: int,
            extra: list[str], fresh: bool, collect: bool, timeout: float | None) -> dict:
    """Run (or read) one (row, seed, chunk length); returns its record."""
    folder = out / suite.name / f"{row.name}@{variant(row, max_tokens)}" / f"seed{seed}"
    overrides = row_overrides(row, seed, max_tokens=max_tokens, chunk_overlap=chunk_overlap, extra=extra)
    done, meta = folder / "run" / "results.json", folder / "row.json"
    if done.exists() and meta.exists() and not fresh:
        info = json.loads(meta.read_text())
        if info["overrides"] != overrides:
            raise Stale(f"{folder} was run with {info['overrides']}, not {overrides}: pass the same flags, --fresh, "
                        "or another --out")
        return record(row, seed, variant(row, max_tokens), json.loads(done.read_text()), info)
    if collect:
        raise NotRun(f"{folder} has no results.json")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cmd = command(row, suite.config, folder / "run", overrides)
    info = {"command": shlex.join(["python", *cmd[1:]]), "overrides": overrides,
            **run_process(cmd, folder / "log.txt", timeout)}
    meta.write_text(json.dumps(info, indent=2))
    if info["returncode"] != 0 or not done.exists():
        tail = (folder / "log.txt").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"exit {info['returncode']} after {info['wall_seconds']:.0f} s: {' | '.join(tail)}")
    return record(row, seed, variant(row, max_tokens), json.loads(done.read_text()), info)


def _train_seconds(res: dict) -> float | None:
    seconds = res.get("seconds") or {}
    for key in ("simulation", "train"):
        if seconds.get(key) is not None:
            return float(seconds[key])
    return None


def _bytes_per_round(res: dict) -> float | None:
    rows = [h for h in res.get("history") or [] if "bytes_sent" in h]
    if res.get("training_mode") == "central" or not rows:
        return None
    return sum(h["bytes_sent"] + h.get("bytes_received", 0) for h in rows) / len(rows)


def record(row: Row, seed: int, variant_name: str, res: dict, info: dict) -> dict:
    """The archived record of one run: the metrics the report shows, its size and costs."""
    model = res.get("model") if isinstance(res.get("model"), dict) else {}
    ws = res.get("warm_start") or {}
    described = res.get("descriptions") or (ws.get("descriptions") if isinstance(ws.get("descriptions"), dict)
                                            else ws)
    missing = described.get("missing")
    return {"row": row.name, "variant": variant_name, "seed": seed, "head": row.head or model.get("head"),
            "group": row.group, "val": {k: res["val"].get(k) for k in METRICS},
            "test": {k: res["test"].get(k) for k in METRICS},
            "parameters": model.get("parameters"), "parameter_bytes": model.get("parameter_bytes"),
            "train_seconds": _train_seconds(res), "wall_seconds": info.get("wall_seconds"),
            "peak_rss_mib": info.get("peak_rss_mib"), "bytes_per_round": _bytes_per_round(res),
            "rounds": len(res.get("history") or []) if res.get("training_mode") != "central" else None,
            "described": described.get("described"),
            "missing_descriptions": None if missing is None else len(missing),
            "space": (res.get("coder") or {}).get("space"), "command": info.get("command")}


def select_variants(records: list[dict]) -> dict[str, str]:
    """Per row, the chunk-length variant with the best mean validation micro-F1 (the only one reported)."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in records:
        by.setdefault(r["row"], {}).setdefault(r["variant"], []).append(r["val"]["micro_f1"])
    return {row: max(v, key=lambda name: sum(v[name]) / len(v[name])) for row, v in by.items()}


def run_suite(suite: Suite, out: Path, args: argparse.Namespace) -> dict:
    """Every (row, chunk length, seed) of ``suite``; the suite's JSON document.

    Rows outside ``--rows`` are only read (so the document always covers the whole suite).
    """
    rows = suite.rows
    seeds = tuple(args.seeds) if args.seeds else suite.seeds
    records, failures, not_run = [], [], []
    for row in rows:
        only_read = args.collect or bool(args.rows and row.name not in args.rows and row.head not in args.rows)
        for max_tokens in (args.max_tokens if row.sequence else [None]):
            for seed in seeds:
                where = {"row": row.name, "variant": variant(row, max_tokens), "seed": seed}
                try:
                    records.append(run_row(suite, row, seed, out, max_tokens=max_tokens,
                                           chunk_overlap=args.chunk_overlap, extra=args.extra,
                                           fresh=args.fresh and not only_read, collect=only_read,
                                           timeout=args.timeout))
                    r = records[-1]
                    print(f"{suite.name} {row.name}@{r['variant']} seed {seed}: test micro {r['test']['micro_f1']:.4f}"
                          f" macro {r['test']['macro_f1']:.4f}", flush=True)
                except NotRun:
                    not_run.append(where)
                except Exception as exc:  # a failed row is a result too: recorded, never dropped
                    failures.append({**where, "error": f"{type(exc).__name__}: {exc}"})
                    print(f"{suite.name} {row.name} seed {seed}: FAILED {exc}", file=sys.stderr, flush=True)
    doc = {"suite": suite.name, "title": suite.title, "config": suite.config, "seeds": list(seeds),
           "max_tokens": list(args.max_tokens), "chunk_overlap": args.chunk_overlap, "extra_overrides": args.extra,
           "command": shlex.join(["python", "experiments/coders.py", *args.argv]), "goal": suite.goal,
           "rows": [{"name": r.name, "what": r.what, "kind": r.kind, "head": r.head, "group": r.group,
                     "init_of": r.init_of, "overrides": list(r.overrides)} for r in rows],
           "selected": select_variants(records), "records": records, "failures": failures, "not_run": not_run}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{suite.name}.json").write_text(json.dumps(doc, indent=2))
    return doc


def archive(doc: dict) -> Path:
    ARCHIVE.mkdir(parents=True, exist_ok=True)
    path = ARCHIVE / f"{doc['suite']}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


# --- command line ---------------------------------------------------------------------------------------------
def zero_shot_main(argv: list[str]) -> None:
    """``coders.py zero-shot CONFIG --out DIR [--notes pooled|chunks] [--set k=v]``: one zero-shot run."""
    from fedicd.config import load_config
    from fedicd.provenance import provenance
    from fedicd.retrieval import NOTE_FORMS, zero_shot_coder

    ap = argparse.ArgumentParser(prog="coders.py zero-shot", description="the zero-shot retrieval coder")
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--notes", choices=NOTE_FORMS, default="pooled")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    results = zero_shot_coder(load_config(args.config, args.overrides), notes=args.notes)
    results["provenance"] = provenance()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    d = results["descriptions"]
    print(f"zero-shot ({args.notes}, {results['coder']['space']} space): test micro-F1 "
          f"{results['test']['micro_f1']:.4f}, macro-F1 {results['test']['macro_f1']:.4f}; {d['described']} of "
          f"{d['labels']} codes described, {d['missing_count']} without a description")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=[*SUITES, "all"], default="all")
    ap.add_argument("--out", type=Path, default=Path("runs/coders"))
    ap.add_argument("--rows", nargs="+", help="run only these rows (row names or heads); the others are read")
    ap.add_argument("--seeds", type=int, nargs="+", help="override the suite's seeds")
    ap.add_argument("--max-tokens", type=int, nargs="+", default=[128],
                    help="chunk length(s) of the chunk-sequence rows (several: chosen by validation micro-F1)")
    ap.add_argument("--chunk-overlap", type=int, default=32, help="tokens shared by consecutive chunks")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="[HEAD.]KEY=VALUE",
                    help="config override for every row, or for one head's rows (repeatable)")
    ap.add_argument("--timeout", type=float, help="seconds after which one run is killed (recorded as failed)")
    ap.add_argument("--fresh", action="store_true", help="re-run rows that already finished")
    ap.add_argument("--collect", action="store_true", help="only read finished rows (list the others as not run)")
    ap.add_argument("--archive", action="store_true", help="copy <out>/<suite>.json to experiments/results/coders/")
    args = ap.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["zero-shot"]:
        zero_shot_main(argv[1:])
        return
    args = parse_args(argv)
    for name in (SUITES if args.suite == "all" else [args.suite]):
        doc = run_suite(SUITES[name], args.out, args)
        if args.archive:
            print(f"archived {archive(doc)}")


if __name__ == "__main__":
    main()
