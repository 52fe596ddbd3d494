"""Attribute inference: a sensitive attribute of each victim from its embedding alone.

Threat model (``"attribute_inference"``): the adversary labels a few public
notes with the attribute (a mental-health code, HIV, pregnancy, sex words, the
site), fits a logistic regression on their embeddings and scores the victims.
Reported against the majority-class baseline: AUC (binary) or top-k accuracy
(several classes), each with a bootstrap interval over victims.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from attacks.threat import AdversaryView

__all__ = ["infer_attribute", "code_attributes", "text_attributes", "ATTRIBUTES", "auc_with_ci", "topk_accuracy"]

FEMALE_WORDS = frozenset("she her hers herself woman women female girl mrs ms mother daughter wife".split())
MALE_WORDS = frozenset("he him his himself man men male boy mr father son husband".split())


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


def infer_attribute(view: AdversaryView, aux_labels: Sequence, *, n_labelled: int | None = None, seed: int = 0,
                    C: float = 1.0) -> tuple[np.ndarray, list]:
    """Class probabilities [n_victims, n_classes] for each victim, and the class order.

    ``aux_labels`` label the view's auxiliary texts; only ``n_labelled`` of them
    (a random subset, default all) are used, as an adversary with little labelled data would.
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


def auc_with_ci(y_true: np.ndarray, score: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ROC-AUC and its percentile bootstrap 95 % interval over victims (resamples with one class are skipped)."""
    y_true, score = np.asarray(y_true), np.asarray(score)
    if len(np.unique(y_true)) < 2:
        raise ValueError("AUC needs both classes among the victims")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[i])) == 2:
            boots.append(roc_auc_score(y_true[i], score[i]))
    return {"value": float(roc_auc_score(y_true, score)), "ci_low": float(np.quantile(boots, 0.025)),
            "ci_high": float(np.quantile(boots, 0.975)), "n": int(len(y_true))}


def topk_accuracy(y_true: Sequence, probs: np.ndarray, classes: list, k: int) -> np.ndarray:
    """Per victim, 1.0 if its true class is among the ``k`` most probable."""
    top = np.argsort(-probs, axis=1)[:, :k]
    pos = {c: i for i, c in enumerate(classes)}
    return np.array([float(pos.get(t, -1) in row) for t, row in zip(y_true, top)])
