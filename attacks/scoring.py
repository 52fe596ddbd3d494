"""Scoring guesses against the truth, with bootstrap confidence intervals.

The only place victim text is read. Per-item scores are averaged and a
percentile bootstrap over items (``n_boot`` resamples, fixed seed) gives the 95 %
interval. Text metrics: token precision/recall/F1 over word sets, exact match,
BLEU (sacrebleu, sentence level, case-insensitive), ROUGE-L F (rouge-score).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["words", "set_prf", "token_f1", "exact_match", "bleu", "rouge_l", "bootstrap_ci", "summarize",
           "identifier_recovery", "reconstruction_scores"]

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
    """Sentence BLEU in [0, 100] (sacrebleu, exponential smoothing), case-insensitive: an uncased encoder
    (all-MiniLM-L6-v2) keeps no case for an inverter to recover."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(guess, [truth], lowercase=True).score)


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


def identifier_recovery(guessed_words: Sequence[set[str]], identifiers: Sequence) -> dict[str, list[float]]:
    """Per victim: 1.0 if the planted first name, last name, both, or every MRN token is among its guessed words.

    ``identifiers`` have ``first_name``, ``last_name`` and ``mrn`` attributes (the
    synthetic corpus's planted truth).
    """
    if len(guessed_words) != len(identifiers):
        raise ValueError(f"{len(guessed_words)} guesses for {len(identifiers)} victims")
    first = [float(w.first_name.lower() in g) for g, w in zip(guessed_words, identifiers)]
    last = [float(w.last_name.lower() in g) for g, w in zip(guessed_words, identifiers)]
    return {"first_name_recovered": first, "last_name_recovered": last,
            "full_name_recovered": [a * b for a, b in zip(first, last)],
            "mrn_recovered": [float(set(words(w.mrn)) <= g) for g, w in zip(guessed_words, identifiers)]}


def reconstruction_scores(guesses: Sequence[str], truths: Sequence[str], *, guess_vectors: np.ndarray | None = None,
                          target_vectors: np.ndarray | None = None, identifiers: Sequence | None = None
                          ) -> dict[str, list[float]]:
    """Per-item BLEU, ROUGE-L, token F1, exact match; cosine(guess vector, target) when both are given
    (a zero vector, e.g. an empty guess, scores 0); identifier recovery when ``identifiers`` are given."""
    if len(guesses) != len(truths):
        raise ValueError(f"{len(guesses)} guesses for {len(truths)} true texts")
    per = {"bleu": [bleu(g, t) for g, t in zip(guesses, truths)],
           "rouge_l": [rouge_l(g, t) for g, t in zip(guesses, truths)],
           "token_f1": [token_f1(g, t) for g, t in zip(guesses, truths)],
           "exact_match": [exact_match(g, t) for g, t in zip(guesses, truths)]}
    if guess_vectors is not None and target_vectors is not None:
        a, b = np.asarray(guess_vectors, dtype=float), np.asarray(target_vectors, dtype=float)
        if a.shape != b.shape or len(a) != len(guesses):
            raise ValueError(f"guess vectors {a.shape} and target vectors {b.shape} must both be [{len(guesses)}, d]")
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        per["cosine"] = np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1), 0.0).tolist()
    if identifiers is not None:
        per.update(identifier_recovery([set(words(g)) for g in guesses], identifiers))
    return per
