"""Multi-label ICD coding metrics.

- micro/macro precision, recall, F1 at a decision threshold (macro averages
  over every label in the label space; 0/0 counts as 0);
- ``top{k}_f1``: micro-F1 restricted to the ``k`` codes most frequent in the
  *training* labels (Xu & Dray report top-10 and top-50);
- ``p_at_{k}``: precision at k of the ranked scores (Mullenbach et al., 2018);
- ``r_precision`` and ``map``: per note, precision at R (R = the note's number of true codes) and the average
  precision of its ranked codes, averaged over the notes with at least one true code (``ranked_notes`` of them):
  the ranking metrics of the MIMIC benchmark of Edin et al. (2023); ties in the scores are broken by label order;
- ``rare_macro_f1``: macro-F1 over the ``rare_labels`` codes with fewer than ``RARE_BELOW`` (10) *training* notes
  (given ``train_counts``; NaN when no code is that rare);
- micro/macro ROC-AUC (macro over labels with both classes present; the count
  used is reported as ``macro_auc_labels``).

The decision threshold is chosen on validation data by
:func:`choose_threshold` (one global threshold maximising micro-F1).
"""

from __future__ import annotations

import numpy as np

from fedicd.errors import ShapeError

__all__ = ["compute_metrics", "f1_scores", "choose_threshold", "precision_at_k", "ranking_metrics", "top_k_labels",
           "METRIC_KEYS", "RARE_BELOW"]

METRIC_KEYS = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1",
               "top10_f1", "top50_f1", "p_at_5", "p_at_8", "p_at_15", "r_precision", "map", "rare_macro_f1",
               "micro_auc", "macro_auc")
RARE_BELOW = 10  # a code with fewer training notes than this is "rare" for rare_macro_f1

DEFAULT_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 3)


def _check(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise ShapeError(f"y_true {y_true.shape} and scores {scores.shape} must be equal 2-D shapes")
    if not np.isfinite(scores).all():
        raise ShapeError(f"scores contain {int((~np.isfinite(scores)).sum())} NaN/Inf values")
    if not np.isin(y_true, (0, 1)).all():
        raise ShapeError("y_true must be binary (0/1)")
    return y_true.astype(np.int8), scores


def top_k_labels(train_labels: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` most frequent labels in training (ties: lower index first)."""
    counts = np.asarray(train_labels).sum(axis=0)
    return np.argsort(-counts, kind="stable")[:k]


def precision_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean over notes of (true codes among the k highest scores) / k."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.take_along_axis(y_true, top, axis=1).sum(axis=1).mean() / k)


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """``r_precision`` and ``map`` (per-note averages over notes with a true code) and ``ranked_notes``."""
    y_true, scores = _check(y_true, scores)
    has = y_true.sum(axis=1) > 0
    if not has.any():
        return {"r_precision": float("nan"), "map": float("nan"), "ranked_notes": 0}
    y, s = y_true[has], scores[has]
    order = np.argsort(-s, axis=1, kind="stable")
    hits = np.take_along_axis(y, order, axis=1).astype(np.float64)
    n_true = hits.sum(axis=1)
    found = np.cumsum(hits, axis=1)
    ranks = np.arange(1, y.shape[1] + 1)
    average_precision = (found / ranks * hits).sum(axis=1) / n_true
    r_precision = found[np.arange(len(y)), n_true.astype(np.int64) - 1] / n_true
    return {"r_precision": float(r_precision.mean()), "map": float(average_precision.mean()),
            "ranked_notes": int(has.sum())}


def _rare(y_true: np.ndarray, y_pred: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    counts = np.asarray(train_counts).reshape(-1)
    if counts.shape != (y_true.shape[1],):
        raise ShapeError(f"train_counts has {counts.shape} entries for {y_true.shape[1]} labels")
    rare = counts < RARE_BELOW
    f1 = _prf(y_true[:, rare], y_pred[:, rare], "macro")[2] if rare.any() else float("nan")
    return {"rare_macro_f1": f1, "rare_labels": int(rare.sum())}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _prf(y_true: np.ndarray, y_pred: np.ndarray, average: str) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; 0/0 counts as 0 (a label never true and never
    predicted scores 0, as in most ICD coding work; recent scikit-learn returns 1 there)."""
    axis = None if average == "micro" else 0
    tp = np.logical_and(y_true, y_pred).sum(axis=axis)
    n_pred, n_true = y_pred.sum(axis=axis), y_true.sum(axis=axis)
    p, r, f = _ratio(tp, n_pred), _ratio(tp, n_true), _ratio(2 * tp, n_pred + n_true)
    return float(np.mean(p)), float(np.mean(r)), float(np.mean(f))


def _aucs(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score  # here, not at import: clients score F1 only, without scikit-learn

    has_both = (y_true.sum(axis=0) > 0) & (y_true.sum(axis=0) < len(y_true))
    out: dict[str, float] = {"macro_auc_labels": int(has_both.sum())}
    if has_both.any():
        out["macro_auc"] = float(roc_auc_score(y_true[:, has_both], scores[:, has_both], average="macro"))
    else:
        out["macro_auc"] = float("nan")
    flat = y_true.ravel()
    out["micro_auc"] = float(roc_auc_score(flat, scores.ravel())) if 0 < flat.sum() < flat.size else float("nan")
    return out


def f1_scores(y_true: np.ndarray, scores: np.ndarray, *, threshold: float) -> tuple[float, float]:
    """(micro-F1, macro-F1) only: the cheap subset for per-round monitoring."""
    y_true, scores = _check(y_true, scores)
    y_pred = scores >= threshold
    return _prf(y_true, y_pred, "micro")[2], _prf(y_true, y_pred, "macro")[2]


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5,
                    frequent: np.ndarray | None = None, with_auc: bool = True,
                    train_counts: np.ndarray | None = None) -> dict[str, float]:
    """All metrics for probabilities ``scores`` against binary ``y_true`` (both ``[N, C]``).

    ``frequent`` is the label order from :func:`top_k_labels` on the training
    labels; without it, frequency in ``y_true`` is used (documented, but biased).
    ``with_auc=False`` skips the ROC-AUCs, by far the slowest part (one sort per
    label): per-round monitoring of federated runs uses it. ``train_counts`` (training notes per label,
    ``y_train.sum(axis=0)``) adds ``rare_macro_f1`` and ``rare_labels``.
    """
    y_true, scores = _check(y_true, scores)
    y_pred = (scores >= threshold).astype(np.int8)
    out: dict[str, float] = {"threshold": float(threshold), "n_notes": int(len(y_true)), "n_labels": int(y_true.shape[1])}
    for avg in ("micro", "macro"):
        p, r, f = _prf(y_true, y_pred, avg)
        out.update({f"{avg}_precision": p, f"{avg}_recall": r, f"{avg}_f1": f})
    order = frequent if frequent is not None else top_k_labels(y_true, y_true.shape[1])
    for k in (10, 50):
        cols = np.asarray(order)[:k]
        out[f"top{k}_f1"] = _prf(y_true[:, cols], y_pred[:, cols], "micro")[2]
    for k in (5, 8, 15):
        out[f"p_at_{k}"] = precision_at_k(y_true, scores, k)
    out.update(ranking_metrics(y_true, scores))
    if train_counts is not None:
        out.update(_rare(y_true, y_pred, train_counts))
    if with_auc:
        out.update(_aucs(y_true, scores))
    return out


def choose_threshold(y_val: np.ndarray, scores_val: np.ndarray, *, grid: np.ndarray = DEFAULT_THRESHOLDS) -> float:
    """The grid threshold with the highest validation micro-F1 (lowest threshold on ties)."""
    y_val, scores_val = _check(y_val, scores_val)
    true = y_val.astype(bool)
    n_true = int(np.count_nonzero(true))
    positive_scores = scores_val[true]  # small: the true-positive count only needs these
    best_t, best_f = float(grid[0]), -1.0
    for t in grid:
        tp = np.count_nonzero(positive_scores >= t)
        denom = np.count_nonzero(scores_val >= t) + n_true
        f = 2 * tp / denom if denom else 0.0
        if f > best_f + 1e-12:
            best_t, best_f = float(t), f
    return best_t
