"""What limits an ICD coder over frozen embeddings: training notes per code, or the encoder?

    python experiments/coder_limits.py experiments/configs/codiesp_central.toml --head mlp --seeds 0 1 2 \
        --out runs/coders/limits_mlp --archive

One process, one split and one embedding (``fedicd.prepare.prepare_data`` + ``embed_parts`` of the config, its
``seed``: the label space, validation and test notes are the full run's for every seed; a seed changes the head's
initialisation and shuffling, ``train.seed``, and the training subsets). ``train.head`` picks pooled vectors or
chunk sequences. Four measurements:

1. **learning curve**: the head trained on nested random subsets (``FRACTIONS`` of the training notes, one
   permutation per seed, each subset a prefix of it; ``--schedule steps``, the default, trains a subset for
   ``epochs / fraction`` epochs, so every point gets the full run's optimizer steps); test micro/macro-F1, P@8 and mAP per fraction at the
   threshold chosen on the (full) validation split;
2. **F1 by training frequency**: the full-data model's per-code test F1 grouped by the code's training notes
   (``BUCKET_EDGES``): codes, their share of the test code occurrences, mean per-code F1 (a code without test
   notes counts 0, as in fedicd's macro-F1) and the micro-F1 within the bucket;
3. **fit vs generalisation**: training-set vs validation and test micro-F1 of the full-data model (same threshold);
4. **encoder probe**: cosine k-nearest-neighbour label transfer (score of a code = similarity-weighted share of
   the k nearest training notes carrying it; k from ``KNN_KS`` and the threshold chosen on validation) in the
   embedding space (the raw, unstandardised mean-pooled note vectors) and in the TF-IDF space of
   ``experiments/tfidf_baseline.py`` (1–2 grams, sublinear tf, min_df 2, 100,000 features, l2-normed).

``--out DIR`` gets ``limits_<head>.json`` (with the exact command line); ``--archive`` copies it to
``experiments/results/coders/`` where ``fedicd report --docs`` renders it in ``docs/results/coders.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "experiments" / "results" / "coders"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
BUCKET_EDGES = (5, 10, 20, 50)  # buckets: < 5, 5–9, 10–19, 20–49, >= 50 training notes
KNN_KS = (5, 10, 20, 50)
CURVE_KEYS = ("micro_f1", "macro_f1", "p_at_8", "map")
SCHEDULES = ("steps", "epochs")


# --- pure parts (tested) --------------------------------------------------------------------------------------
def nested_subsets(n: int, fractions: tuple[float, ...], seed: int) -> dict[float, np.ndarray]:
    """Row indices of ``round(f * n)`` training notes per fraction: prefixes of one seeded permutation (nested).

    Parameters
    ----------
    n:
        Training notes.
    fractions:
        Increasing fractions in (0, 1].
    seed:
        Seed of the permutation.

    Returns
    -------
    dict
        ``{fraction: sorted indices}``; a smaller fraction's indices are a subset of every larger one's.
    """
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    return {f: np.sort(order[:max(1, int(round(f * n)))]) for f in fractions}


def bucket_labels(edges: tuple[int, ...] = BUCKET_EDGES) -> list[str]:
    """Names of the buckets cut at ``edges``: ``"< 5", "5–9", …, "≥ 50"``."""
    inner = [f"{lo}–{hi - 1}" for lo, hi in zip(edges, edges[1:])]
    return [f"< {edges[0]}", *inner, f"≥ {edges[-1]}"]


def assign_buckets(train_counts: np.ndarray, edges: tuple[int, ...] = BUCKET_EDGES) -> np.ndarray:
    """Bucket index (into :func:`bucket_labels`) of each code from its training-note count."""
    return np.searchsorted(np.asarray(edges), np.asarray(train_counts), side="right")


def per_code_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per code: true positives, false positives, false negatives."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    return ((y_true & y_pred).sum(0), (~y_true & y_pred).sum(0), (y_true & ~y_pred).sum(0))


def _f1(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def bucket_f1(y_true: np.ndarray, y_pred: np.ndarray, train_counts: np.ndarray,
              edges: tuple[int, ...] = BUCKET_EDGES) -> list[dict]:
    """Per bucket of training-note counts: codes, codes with test notes, share of test occurrences, macro-F1
    (mean per-code F1, 0/0 = 0) and micro-F1 within the bucket; empty buckets are left out."""
    tp, fp, fn = per_code_counts(y_true, y_pred)
    per_code, occurrences = _f1(tp, fp, fn), np.asarray(y_true).sum(0)
    which, names, total = assign_buckets(train_counts, edges), bucket_labels(edges), occurrences.sum()
    out = []
    for b, name in enumerate(names):
        cols = which == b
        if not cols.any():
            continue
        out.append({"bucket": name, "codes": int(cols.sum()), "codes_in_test": int((occurrences[cols] > 0).sum()),
                    "test_share": float(occurrences[cols].sum() / total) if total else 0.0,
                    "macro_f1": float(per_code[cols].mean()),
                    "micro_f1": float(_f1(tp[cols].sum(), fp[cols].sum(), fn[cols].sum()))})
    return out


def cosine_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def knn_scores(similarity: np.ndarray, y_train: np.ndarray, k: int) -> np.ndarray:
    """Scores ``[queries, codes]``: over each query's ``k`` most similar training notes, the similarity-weighted
    share carrying each code, ``sum_j max(s_j, 0) y_jc / sum_j max(s_j, 0)`` (0 when every weight is 0)."""
    similarity = np.asarray(similarity, dtype=np.float64)
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.clip(np.take_along_axis(similarity, top, axis=1), 0, None)
    labels = np.asarray(y_train, dtype=np.float64)[top]  # [q, k, codes]
    sums = weights.sum(1, keepdims=True)
    return np.divide(np.einsum("qk,qkc->qc", weights, labels), sums, out=np.zeros((len(top), labels.shape[2])),
                     where=sums > 0)


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std", "values"}`` (sample standard deviation; 0 for one value)."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "values": vals}


# --- measurements ---------------------------------------------------------------------------------------------
def _metrics(y, scores, threshold, y_train):
    from fedicd.metrics import compute_metrics, top_k_labels

    return compute_metrics(y, scores, threshold=threshold, frequent=top_k_labels(y_train, 50), with_auc=False,
                           train_counts=y_train.sum(0))


def train_and_score(feats: dict, labels: dict, train_rows: np.ndarray, train_cfg, initialise=None) -> dict:
    """Train ``train_cfg``'s head on ``train_rows`` of the training notes (``initialise``: the run's
    description init, :func:`fedicd.warm_start.central.central_initialiser`, or None); probabilities of every split
    (the training split: the rows trained on) and the validation-chosen threshold."""
    from fedicd.metrics import choose_threshold
    from fedicd.sequences import select_rows
    from fedicd.train import predict_proba, train_central

    x_train = select_rows(feats["train"], train_rows)
    y_train = labels["train"][train_rows]
    trained = train_central(x_train, y_train, train_cfg, initialise=initialise)
    probs = {"train": predict_proba(trained.model, x_train),
             **{p: predict_proba(trained.model, feats[p]) for p in ("val", "test")}}
    return {"probs": probs, "y_train": y_train, "threshold": choose_threshold(labels["val"], probs["val"]),
            "seconds": trained.seconds, "final_train_loss": trained.history[-1]["train_loss"]}


def epochs_for(fraction: float, epochs: int, schedule: str) -> int:
    """Epochs of a run on ``fraction`` of the notes: ``"steps"`` keeps the full run's number of optimizer steps
    (``round(epochs / fraction)``), ``"epochs"`` keeps its epochs."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r} (--schedule)")
    return max(1, int(round(epochs / fraction))) if schedule == "steps" else epochs


def seed_runs(feats: dict, labels: dict, train_cfg, seed: int, schedule: str = "steps", initialise=None) -> dict:
    """One seed: the learning curve, and the full-data model's buckets and fit."""
    subsets = nested_subsets(len(labels["train"]), FRACTIONS, seed)
    curve, full = {}, None
    for fraction, rows in subsets.items():
        cfg = dataclasses.replace(train_cfg, seed=seed, epochs=epochs_for(fraction, train_cfg.epochs, schedule))
        run = train_and_score(feats, labels, rows, cfg, initialise)
        test = _metrics(labels["test"], run["probs"]["test"], run["threshold"], labels["train"])
        curve[fraction] = {"notes": int(len(rows)), "epochs": cfg.epochs, **{k: test[k] for k in CURVE_KEYS},
                           "seconds": run["seconds"]}
        print(f"seed {seed} fraction {fraction}: {len(rows)} notes, test micro {test['micro_f1']:.4f} macro "
              f"{test['macro_f1']:.4f} ({run['seconds']:.0f} s)", flush=True)
        if fraction == 1.0:
            full = run
    t = full["threshold"]
    fit = {"threshold": t, "final_train_loss": full["final_train_loss"],
           **{f"{p}_micro_f1": _metrics(labels[p], full["probs"][p], t, labels["train"])["micro_f1"]
              for p in ("train", "val", "test")},
           "train_macro_f1": _metrics(labels["train"], full["probs"]["train"], t, labels["train"])["macro_f1"]}
    buckets = bucket_f1(labels["test"], full["probs"]["test"] >= t, labels["train"].sum(0))
    return {"curve": curve, "fit": fit, "buckets": buckets}


def knn_probe(sims: dict[str, np.ndarray], labels: dict, ks: tuple[int, ...] = KNN_KS) -> dict:
    """Cosine kNN label transfer from ``sims`` (``{"val"|"test": cosine [notes, training notes]}``): k and
    threshold chosen by validation micro-F1; the test metrics."""
    from fedicd.metrics import choose_threshold

    tried = {}
    for k in ks:
        scores = knn_scores(sims["val"], labels["train"], k)
        t = choose_threshold(labels["val"], scores)
        tried[k] = {"threshold": t, "val_micro_f1": _metrics(labels["val"], scores, t, labels["train"])["micro_f1"]}
    k = max(ks, key=lambda kk: (tried[kk]["val_micro_f1"], -kk))
    t = tried[k]["threshold"]
    test = _metrics(labels["test"], knn_scores(sims["test"], labels["train"], k), t, labels["train"])
    return {"k": k, "threshold": t, "tried": {str(kk): v for kk, v in tried.items()},
            "test": {key: test[key] for key in ("micro_f1", "macro_f1", "p_at_8", "map", "rare_macro_f1")}}


def encoder_probe(data, feats: dict, scaler) -> dict:
    """kNN in the embedding space (raw mean-pooled vectors) and in the TF-IDF space of the training notes."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from fedicd.sequences import is_sequence

    raw = {p: scaler.inverse_transform(x.mean_pooled() if is_sequence(x) else x) for p, x in feats.items()}
    texts = {p: [data.notes.texts[i] for i in idx] for p, idx in data.parts.items()}
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=100_000)
    tfidf = {"train": vec.fit_transform(texts["train"])}
    tfidf.update({p: vec.transform(texts[p]) for p in ("val", "test")})
    unit = {p: cosine_rows(x) for p, x in raw.items()}
    embedding = {p: unit[p] @ unit["train"].T for p in ("val", "test")}
    lexical = {p: (tfidf[p] @ tfidf["train"].T).toarray() for p in ("val", "test")}  # rows l2-normed: cosines
    return {"embedding": knn_probe(embedding, data.labels),
            "tfidf": {**knn_probe(lexical, data.labels), "features": len(vec.vocabulary_)}}


def summarise(per_seed: list[dict]) -> dict:
    """Mean ± std over seeds of the curve, the fit and the bucket rows."""
    curve = [{"fraction": f, "notes": per_seed[0]["curve"][f]["notes"], "epochs": per_seed[0]["curve"][f]["epochs"],
              **{k: mean_std([s["curve"][f][k] for s in per_seed]) for k in CURVE_KEYS}} for f in FRACTIONS]
    fit = {k: mean_std([s["fit"][k] for s in per_seed]) for k in per_seed[0]["fit"]}
    buckets = [{**{k: row[k] for k in ("bucket", "codes", "codes_in_test", "test_share")},
                **{k: mean_std([s["buckets"][i][k] for s in per_seed]) for k in ("macro_f1", "micro_f1")}}
               for i, row in enumerate(per_seed[0]["buckets"])]
    return {"learning_curve": curve, "fit": fit, "buckets": buckets}


def run(args: argparse.Namespace) -> dict:
    """Every measurement for ``args.head`` over ``args.seeds``; the JSON document."""
    from fedicd.config import load_config
    from fedicd.prepare import embed_parts, prepare_data

    t0 = time.perf_counter()
    cfg = load_config(args.config, [f'train.head="{args.head}"', *args.overrides])
    data = prepare_data(cfg)
    feats, embed_info, scaler = embed_parts(data, cfg)
    from fedicd.warm_start.central import central_initialiser

    initialise = central_initialiser(cfg, scaler, list(data.binarizer.classes_))  # None unless [warm_start] asks
    per_seed = [seed_runs(feats, data.labels, cfg.train, s, args.schedule, initialise) for s in args.seeds]
    probe = encoder_probe(data, feats, scaler)
    counts = data.labels["train"].sum(0)
    return {"kind": "coder_limits", "head": args.head, "config": str(args.config), "seeds": list(args.seeds),
            "overrides": args.overrides, "command": shlex.join(["python", "experiments/coder_limits.py",
                                                                *args.argv]),
            "data": {"train_notes": len(data.parts["train"]), "val_notes": len(data.parts["val"]),
                     "test_notes": len(data.parts["test"]), "codes": int(len(counts)),
                     "median_train_notes_per_code": float(np.median(counts)), "data_seed": cfg.seed,
                     "embedding_model": embed_info["model"]},
            "fractions": list(FRACTIONS), "schedule": args.schedule, "bucket_edges": list(BUCKET_EDGES), **summarise(per_seed),
            "knn": probe, "per_seed": [{**s, "curve": {str(f): v for f, v in s["curve"].items()}} for s in per_seed],
            "seconds": time.perf_counter() - t0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--head", default="mlp", help="train.head of the coder studied (default mlp)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as for `fedicd run` (repeatable)")
    ap.add_argument("--schedule", choices=SCHEDULES, default="steps",
                    help="learning curve: a subset's run keeps the full run's optimizer steps (more epochs) or epochs")
    ap.add_argument("--out", type=Path, required=True, help="folder for limits_<head>.json")
    ap.add_argument("--archive", action="store_true", help="copy the JSON to experiments/results/coders/")
    args = ap.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    doc = run(args)
    text = json.dumps(doc, indent=2)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"limits_{args.head}.json").write_text(text)
    if args.archive:
        ARCHIVE.mkdir(parents=True, exist_ok=True)
        (ARCHIVE / f"limits_{args.head}.json").write_text(text)
        print(f"archived {ARCHIVE / f'limits_{args.head}.json'}")
    for key in ("embedding", "tfidf"):
        kn = doc["knn"][key]
        print(f"kNN {key}: k {kn['k']}, test micro {kn['test']['micro_f1']:.4f} macro {kn['test']['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
