"""Scoring guesses against the truth, with bootstrap confidence intervals.

The only place victim text is read. Per-item scores are averaged and a
percentile bootstrap over items (``n_boot`` resamples, fixed seed) gives the 95 %
interval. Text metrics: token precision/recall/F1 over word sets, exact match,
BLEU (sacrebleu, sentence level), ROUGE-L F (rouge-score).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["words", "set_prf", "token_f1", "exact_match", "bleu", "rouge_l", "bootstrap_ci", "summarize"]

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, inner apostrophes and hyphens kept)."""
    return _WORD.findall(text.lower())


def set_prf(guess: Iterable[str], truth: Iterable[str]) -> tuple[float, float, float]:
    """Precision, recall, F1 of a guessed set against a true set (0 when a side is empty)."""
    g, t = set(guess), set(truth)
    hit = len(g & t)
    p = hit / len(g) if g else 0.0
    r = hit / len(t) if t else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def token_f1(guess: str, truth: str) -> float:
    """F1 over the multisets of words (SQuAD-style)."""
    from collections import Counter

    g, t = Counter(words(guess)), Counter(words(truth))
    hit = sum((g & t).values())
    if not hit:
        return 0.0
    p, r = hit / sum(g.values()), hit / sum(t.values())
    return 2 * p * r / (p + r)


def exact_match(guess: str, truth: str) -> float:
    return float(words(guess) == words(truth))


def bleu(guess: str, truth: str) -> float:
    """Sentence BLEU in [0, 100] (sacrebleu, exponential smoothing)."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(guess, [truth]).score)


def rouge_l(guess: str, truth: str) -> float:
    """ROUGE-L F-measure in [0, 1]."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"]).score(truth, guess)["rougeL"].fmeasure)


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of per-item values and its percentile bootstrap interval."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to summarise")
    if not np.isfinite(v).all():
        raise ValueError("per-item values contain NaN/Inf")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(per_item: dict[str, Sequence[float]], **kwargs) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "ci_low", "ci_high", "n"}}`` for each per-item list."""
    out = {}
    for name, values in per_item.items():
        mean, lo, hi = bootstrap_ci(values, **kwargs)
        out[name] = {"value": mean, "ci_low": lo, "ci_high": hi, "n": len(values)}
    return out
