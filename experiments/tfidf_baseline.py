"""TF-IDF + one-vs-rest logistic regression on the same split and label space as a fedicd config.

    python experiments/tfidf_baseline.py experiments/configs/codiesp_central.toml --out runs/codiesp_tfidf

Uses fedicd's own data preparation (same notes, split, train-fitted label
space, validation-chosen threshold and metrics), so the numbers sit beside
``fedicd run`` of the same config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from fedicd.config import load_config
from fedicd.prepare import prepare_data
from fedicd.metrics import choose_threshold, compute_metrics, top_k_labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--C", type=float, default=100.0, help="inverse L2 strength of the logistic regressions")
    args = ap.parse_args()
    cfg = load_config(args.config)
    data = prepare_data(cfg)
    texts = {p: [data.notes.texts[i] for i in idx] for p, idx in data.parts.items()}
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=100_000)
    x = {"train": vec.fit_transform(texts["train"])}
    x.update({p: vec.transform(texts[p]) for p in ("val", "test")})
    y_train = data.labels["train"]
    keep = y_train.sum(axis=0) > 0
    clf = OneVsRestClassifier(LogisticRegression(C=args.C, max_iter=2000), n_jobs=2).fit(x["train"], y_train)
    probs = {p: clf.predict_proba(x[p]) for p in ("val", "test")}
    threshold = choose_threshold(data.labels["val"], probs["val"])
    frequent = top_k_labels(y_train, 50)
    results = {p: compute_metrics(data.labels[p], probs[p], threshold=threshold, frequent=frequent,
                                  train_counts=y_train.sum(axis=0))
               for p in ("val", "test")}
    results.update({"model": f"tfidf(1-2 grams)+OvR-LR(C={args.C})", "labels": data.label_info,
                    "labels_with_train_positives": int(keep.sum()), "config": str(args.config)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    for key in ("micro_f1", "macro_f1", "micro_precision", "micro_recall", "top10_f1", "top50_f1", "micro_auc"):
        print(f"{key:<16}{results['test'][key]:.4f}")


if __name__ == "__main__":
    main()
