"""TF-IDF + one-vs-rest logistic regression on the same split and label space as a fedicd config.

    python experiments/tfidf_baseline.py experiments/configs/codiesp_central.toml --out runs/codiesp_tfidf
    python experiments/tfidf_baseline.py experiments/configs/codiesp_central.toml --out runs/tfidf_s1 --set seed=1

Uses fedicd's own data preparation (same notes, split, train-fitted label
space, validation-chosen threshold and metrics), so the numbers sit beside
``fedicd run`` of the same config. :func:`tfidf_baseline` is the importable form
(``experiments/coders.py`` runs it as one row of its CodiEsp table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from fedicd.config import config_to_dict, load_config
from fedicd.prepare import prepare_data
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels


def tfidf_baseline(cfg, *, C: float = 100.0, n_jobs: int = 2) -> dict:
    """Fit TF-IDF (1–2 grams) + one-vs-rest logistic regressions on ``cfg``'s training notes.

    Parameters
    ----------
    cfg:
        A :class:`fedicd.config.ExperimentConfig` (its data, split and label rules; nothing is embedded).
    C:
        Inverse L2 strength of the logistic regressions.
    n_jobs:
        Worker processes of the one-vs-rest fit.

    Returns
    -------
    dict
        ``results.json``-like: ``val`` / ``test`` metrics at the validation-chosen threshold, ``model`` (the
        number of fitted coefficients), ``labels``, ``seconds``.
    """
    t0 = time.perf_counter()
    data = prepare_data(cfg)
    texts = {p: [data.notes.texts[i] for i in idx] for p, idx in data.parts.items()}
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=100_000)
    x = {"train": vec.fit_transform(texts["train"])}
    x.update({p: vec.transform(texts[p]) for p in ("val", "test")})
    y_train = data.labels["train"]
    keep = y_train.sum(axis=0) > 0
    t1 = time.perf_counter()
    clf = OneVsRestClassifier(LogisticRegression(C=C, max_iter=2000), n_jobs=n_jobs).fit(x["train"], y_train)
    t2 = time.perf_counter()
    probs = {p: clf.predict_proba(x[p]) for p in ("val", "test")}
    threshold = choose_threshold(data.labels["val"], probs["val"])
    frequent = top_k_labels(y_train, 50)
    results = {p: compute_metrics(data.labels[p], probs[p], threshold=threshold, frequent=frequent,
                                  train_counts=y_train.sum(axis=0))
               for p in ("val", "test")}
    n_features = len(vec.vocabulary_)
    results.update({"name": cfg.name, "training_mode": "tfidf",
                    "model": {"head": "tfidf_lr", "what": f"tfidf(1-2 grams)+OvR-LR(C={C})",
                              "parameters": int(y_train.shape[1] * (n_features + 1)),
                              "parameter_bytes": int(y_train.shape[1] * (n_features + 1) * 8)},
                    "labels": data.label_info, "labels_with_train_positives": int(keep.sum()),
                    "seconds": {"data": t1 - t0, "train": t2 - t1, "total": time.perf_counter() - t0},
                    "config": config_to_dict(cfg)})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--C", type=float, default=100.0, help="inverse L2 strength of the logistic regressions")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, as for `fedicd run` (repeatable)")
    ap.add_argument("--n-jobs", type=int, default=2, help="worker processes of the one-vs-rest fit")
    args = ap.parse_args()
    results = tfidf_baseline(load_config(args.config, args.overrides), C=args.C, n_jobs=args.n_jobs)
    results["config_file"] = str(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "top10_f1", "top50_f1", "micro_auc"):
        print(f"{key:<16}{results['test'][key]:.4f}")


if __name__ == "__main__":
    main()
