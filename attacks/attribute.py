"""Attribute inference: a sensitive attribute of each victim from its embedding alone.

Threat model (``"attribute_inference"``): the adversary labels a few public
notes with the attribute (a mental-health code, HIV, pregnancy, sex words, the
site, or any other per-note value such as a ward or a severity), fits a
logistic regression on their embeddings and scores the victims.

Scoring (:func:`attack_attribute`): an attribute with two values is scored by
ROC-AUC (baseline 0.5); one with more values by top-k accuracy (k = 1, and 3
when there are more than 3 classes) against the majority-class baseline (the
k most frequent classes of the labelled notes), and by macro one-vs-rest AUC
(baseline 0.5). Every number carries a bootstrap 95 % interval over victims.
Empty values are left out of training and scoring, and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression

from attacks.scoring import summarize
from attacks.threat import AdversaryView

__all__ = ["infer_attribute", "attack_attribute", "code_attributes", "text_attributes", "ATTRIBUTES", "auc_with_ci",
           "macro_auc_with_ci", "topk_accuracy", "majority_topk", "clamp_labelled", "is_missing", "positive_class",
           "check_attribute_values"]

log = logging.getLogger(__name__)

FEMALE_WORDS = frozenset("she her hers herself woman women female girl mrs ms mother daughter wife".split())
MALE_WORDS = frozenset("he him his himself man men male boy mr father son husband".split())
_TRUTHY = ("1", "true", "yes", "y", "t", "positive", "pos")


def _any_prefix(prefixes: tuple[str, ...]) -> Callable[[Sequence[str]], bool]:
    return lambda codes: any(c.upper().startswith(prefixes) for c in codes)


ATTRIBUTES: dict[str, Callable[[Sequence[str]], bool]] = {
    "mental_health": _any_prefix(("F",)),               # ICD-10 chapter V (F00-F99)
    "hiv": _any_prefix(("B20", "Z21")),                 # HIV disease, asymptomatic HIV status
    "pregnancy": _any_prefix(("O", "Z33", "Z34", "Z3A")),  # chapter XV, pregnancy state/supervision/weeks
}


def code_attributes(codes: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Binary attributes from each note's ICD-10 codes (ground truth for scoring or the adversary's labels)."""
    return {name: np.array([rule(c) for c in codes], dtype=int) for name, rule in ATTRIBUTES.items()}


def text_attributes(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """``female``: 1 when a note has more female than male words (she, her, woman, mrs, ...), else 0."""
    from attacks.scoring import words

    out = []
    for t in texts:
        w = words(t)
        out.append(int(sum(x in FEMALE_WORDS for x in w) > sum(x in MALE_WORDS for x in w)))
    return {"female": np.array(out, dtype=int)}


def is_missing(value: object) -> bool:
    """True for ``None``, NaN and blank strings: a note without a value for the attribute."""
    return value is None or (isinstance(value, float) and value != value) or (
        isinstance(value, str) and not value.strip())


def positive_class(values: Sequence[str]) -> str:
    """The class an AUC is reported for among two values: a truthy one (1, true, yes...), else the later sorted."""
    for v in sorted(values):
        if v.strip().lower() in _TRUTHY:
            return v
    return sorted(values)[1]


def clamp_labelled(n_labelled: int | None, available: int, name: str) -> int:
    """``n_labelled`` capped at the ``available`` labelled notes, with a logged notice when it is capped."""
    if n_labelled is not None and n_labelled < 2:
        raise ValueError(f"n_labelled must be at least 2 (two classes need two labelled notes), got {n_labelled}")
    if n_labelled is None or n_labelled >= available:
        if n_labelled is not None and n_labelled > available:
            log.warning("attribute %r: n_labelled=%d exceeds the %d labelled notes that have a value; using all %d",
                        name, n_labelled, available, available)
        return available
    return int(n_labelled)


def infer_attribute(view: AdversaryView, aux_labels: Sequence, *, n_labelled: int | None = None, seed: int = 0,
                    C: float = 1.0) -> tuple[np.ndarray, list]:
    """Class probabilities [n_victims, n_classes] for each victim, and the class order.

    ``aux_labels`` label the view's auxiliary texts; only ``n_labelled`` of them
    (a random subset, default all) are used, as an adversary with little labelled data would.
    A plain logistic regression: no cross-validation, so a class with one example is fine.
    """
    y = np.asarray(aux_labels)
    if len(y) != len(view.aux_texts):
        raise ValueError(f"{len(y)} labels for {len(view.aux_texts)} auxiliary texts")
    idx = np.arange(len(y))
    if n_labelled is not None:
        if n_labelled > len(y):
            raise ValueError(f"n_labelled={n_labelled} exceeds the {len(y)} auxiliary texts")
        idx = np.random.default_rng(seed).permutation(len(y))[:n_labelled]
    classes = np.unique(y[idx])
    if len(classes) < 2:
        raise ValueError(f"the {len(idx)} labelled auxiliary notes hold one class only ({classes.tolist()}); "
                         "label more")
    clf = LogisticRegression(C=C, max_iter=2000).fit(view.aux_embeddings[idx], y[idx])
    return clf.predict_proba(view.target_embeddings), clf.classes_.tolist()


def _aucs(y: np.ndarray, scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """ROC-AUC of every column (``axis=0``) or row (``axis=1``) by the rank-sum formula (ties averaged, as
    scikit-learn's ``roc_auc_score``); NaN where one outcome is absent."""
    ranks = rankdata(scores, axis=axis)
    pos, n = y.sum(axis=axis), y.shape[axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        return ((ranks * y).sum(axis=axis) - pos * (pos + 1) / 2) / (pos * (n - pos))


def _interval(value: float, boots: np.ndarray, n: int) -> dict[str, float]:
    boots = boots[np.isfinite(boots)]
    lo, hi = (np.quantile(boots, 0.025), np.quantile(boots, 0.975)) if boots.size else (value, value)
    return {"value": float(value), "ci_low": float(lo), "ci_high": float(hi), "n": int(n)}


def auc_with_ci(y_true: np.ndarray, score: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ROC-AUC and its percentile bootstrap 95 % interval over victims (resamples with one class are skipped)."""
    y_true, score = np.asarray(y_true).astype(bool), np.asarray(score, dtype=float)
    if len(np.unique(y_true)) < 2:
        raise ValueError("AUC needs both classes among the victims")
    idx = np.random.default_rng(seed).integers(0, len(y_true), (n_boot, len(y_true)))
    value = float(_aucs(y_true[:, None], score[:, None])[0])
    return _interval(value, _aucs(y_true[idx], score[idx], axis=1), len(y_true))


def _macro_auc(onehot: np.ndarray, scores: np.ndarray) -> float:
    """Mean one-vs-rest AUC over the classes (columns) with both outcomes present; NaN if none."""
    aucs = _aucs(onehot, scores)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def macro_auc_with_ci(y_true: Sequence, probs: np.ndarray, classes: list, *, n_boot: int = 1000,
                      seed: int = 0) -> dict[str, float] | None:
    """Macro one-vs-rest AUC over the victims' classes, with a bootstrap 95 % interval; None if one class only.

    A victim class the classifier never saw gets a constant score of 0 (its AUC is 0.5: the
    adversary knows nothing about it). Each resample averages the classes present with both
    outcomes in it.
    """
    truth = np.asarray([str(t) for t in y_true])
    victim_classes = sorted(set(truth.tolist()))
    col = {str(c): j for j, c in enumerate(classes)}
    scores = np.stack([probs[:, col[c]] if c in col else np.zeros(len(truth)) for c in victim_classes], axis=1)
    onehot = truth[:, None] == np.asarray(victim_classes)[None, :]
    value = _macro_auc(onehot, scores)
    if not np.isfinite(value):
        return None
    rng = np.random.default_rng(seed)
    boots = np.array([_macro_auc(onehot[i], scores[i])
                      for i in (rng.integers(0, len(truth), len(truth)) for _ in range(n_boot))])
    return _interval(value, boots, len(truth))


def topk_accuracy(y_true: Sequence, probs: np.ndarray, classes: list, k: int) -> np.ndarray:
    """Per victim, 1.0 if its true class is among the ``k`` most probable (0.0 for a class never labelled)."""
    top = np.argsort(-probs, axis=1)[:, :k]
    pos = {c: i for i, c in enumerate(classes)}
    return np.array([float(pos.get(t, -1) in row) for t, row in zip(y_true, top)])


def majority_topk(y_true: Sequence, labelled: Sequence, k: int) -> np.ndarray:
    """Per victim, 1.0 if its class is among the ``k`` most frequent labelled classes (ties: sorted order)."""
    counts = Counter(labelled)
    top = {c for c, _ in sorted(counts.items(), key=lambda cn: (-cn[1], str(cn[0])))[:k]}
    return np.array([float(t in top) for t in y_true])


def _present(values: Sequence, n: int, what: str, name: str) -> tuple[list[int], list[str]]:
    """Indices and stripped string values of the entries that have a value."""
    if len(values) != n:
        raise ValueError(f"attribute {name!r}: {len(values)} {what} values for {n} {what} notes")
    keep = [i for i, v in enumerate(values) if not is_missing(v)]
    return keep, [str(values[i]).strip() for i in keep]


def check_attribute_values(aux_labels: Sequence, victim_labels: Sequence, *, name: str) -> list[str]:
    """The attribute's distinct values; ``ValueError`` naming it when it cannot be inferred and scored.

    Needed: a victim with a value, two values among the labelled notes (the adversary
    trains on them) and, for a two-valued attribute, both values among the victims (AUC).
    """
    aux = [str(v).strip() for v in aux_labels if not is_missing(v)]
    truth = [str(v).strip() for v in victim_labels if not is_missing(v)]
    values = sorted(set(aux) | set(truth))
    if not truth:
        raise ValueError(f"attribute {name!r}: none of the {len(victim_labels)} victim notes has a value")
    if len(set(aux)) < 2:
        raise ValueError(f"attribute {name!r} cannot be inferred: the {len(aux)} labelled notes with a value hold "
                         f"{len(set(aux))} distinct value(s) {sorted(set(aux))[:5]}; the adversary needs two")
    if len(values) == 2 and len(set(truth)) < 2:
        raise ValueError(f"attribute {name!r}: all {len(truth)} victims with a value have the value {truth[0]!r}; "
                         "an AUC needs both values among the victims")
    return values


def attack_attribute(view: AdversaryView, aux_labels: Sequence, victim_labels: Sequence, *, name: str,
                     n_labelled: int | None = None, seed: int = 0) -> tuple[dict, dict, dict]:
    """Infer one attribute for every victim and score it: ``(metrics, baselines, settings)``.

    ``aux_labels`` are the adversary's labels of ``view.aux_texts``; ``victim_labels``
    the truth, used for scoring only. Values are compared as stripped strings; empty
    ones are excluded and counted (``{name}_labelled_without_value``,
    ``{name}_victims_without_value``). Raises ``ValueError`` naming the attribute when
    it cannot be scored (see :func:`check_attribute_values`, or one class in the labelled subset).
    """
    keep_a, aux = _present(aux_labels, len(view.aux_texts), "auxiliary", name)
    keep_v, truth = _present(victim_labels, view.n_targets, "victim", name)
    values = check_attribute_values(aux_labels, victim_labels, name=name)
    settings = {f"{name}_labelled_without_value": len(aux_labels) - len(aux),
                f"{name}_victims_without_value": len(victim_labels) - len(truth), f"{name}_victims_scored": len(truth)}
    n_use = clamp_labelled(n_labelled, len(aux), name)
    pick = np.sort(np.random.default_rng(seed).permutation(len(aux))[:n_use])
    labelled = [aux[i] for i in pick]
    sub = AdversaryView(target_embeddings=view.target_embeddings[keep_v],
                        aux_texts=[view.aux_texts[keep_a[i]] for i in pick],
                        aux_embeddings=view.aux_embeddings[[keep_a[i] for i in pick]])
    try:
        probs, classes = infer_attribute(sub, labelled, seed=seed)
    except ValueError as exc:
        raise ValueError(f"attribute {name!r}: {exc}") from None
    settings.update({f"{name}_labelled_notes": n_use, f"{name}_classes": len(values)})
    if len(values) == 2:
        metrics, base, extra = _binary_scores(name, truth, probs, classes, positive_class(values), seed)
    else:
        metrics, base, extra = _categorical_scores(name, truth, labelled, probs, classes, len(values), seed)
    return metrics, base, {**settings, **extra}


def _binary_scores(name: str, truth: list[str], probs: np.ndarray, classes: list, positive: str,
                   seed: int) -> tuple[dict, dict, dict]:
    y = np.array([t == positive for t in truth])
    auc = auc_with_ci(y, probs[:, classes.index(positive)], seed=seed)
    base = {f"{name}_auc": {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": int(len(y))}}
    return {f"{name}_auc": auc}, base, {f"{name}_positive_class": positive,
                                        f"{name}_victim_prevalence": float(y.mean())}


def _categorical_scores(name: str, truth: list[str], labelled: list[str], probs: np.ndarray, classes: list,
                        n_classes: int, seed: int) -> tuple[dict, dict, dict]:
    metrics, base = {}, {}
    for k in (1, 3) if n_classes > 3 else (1,):
        metrics[f"{name}_top{k}_accuracy"] = summarize({"a": topk_accuracy(truth, probs, classes, k)}, seed=seed)["a"]
        base[f"{name}_top{k}_accuracy"] = summarize({"a": majority_topk(truth, labelled, k)}, seed=seed)["a"]
    unseen = sorted(set(truth) - set(classes))
    settings = {f"{name}_classes_unseen_by_attacker": len(unseen),
                f"{name}_victims_in_unseen_classes": sum(t in unseen for t in truth)}
    macro = macro_auc_with_ci(truth, probs, classes, seed=seed)
    if macro is None:
        settings[f"{name}_macro_auc_skipped"] = "the scored victims hold one class only"
    else:
        metrics[f"{name}_macro_auc"] = macro
        base[f"{name}_macro_auc"] = {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": len(truth)}
    return metrics, base, settings
