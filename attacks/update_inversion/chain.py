"""Update → embeddings → words, names and diagnoses: the recovered vectors handed to the embedding inverters.

:func:`candidate_view` turns the raw candidates recovered from an update
(:mod:`attacks.update_inversion.analytic`) into an :class:`attacks.threat.AdversaryView`
(targets = candidates; public auxiliary notes and their embeddings), the input
of :func:`attacks.bow.invert_bag_of_words` and :mod:`attacks.attribute`.

Scoring (truth side only): the server does not know which candidate belongs to
which sample, so each true sample is scored by its best candidate in cosine
(:func:`match_to_truth`), as breaching scores analytic attacks. That matching is
an optimistic *attribution* (it reads the truth), not something the attack uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import logging

import numpy as np

from attacks.bow import BowConfig, BowInverter, invert_bag_of_words
from attacks.scoring import identifier_recovery, set_prf, words
from attacks.threat import AdversaryView, ThreatModelError
from attacks.update_inversion.analytic import Recovery, estimate_scaler, recover_inputs, to_raw
from attacks.update_inversion.view import EmptyUpdateError, UpdateView

__all__ = ["raw_candidates", "candidate_view", "invert_candidates", "match_to_truth", "recovery_scores",
           "text_scores", "score_views", "NameGuesser", "SCALER_MODES"]

SCALER_MODES = ("known", "estimated")

log = logging.getLogger(__name__)


def raw_candidates(recovery: Recovery, view: UpdateView, *, scaler: str = "known",
                   aux_raw: np.ndarray | None = None) -> np.ndarray:
    """The candidates in raw embedding space.

    ``scaler="known"``: fedicd's shared StandardScaler (``view`` must hold its statistics: the
    server staged the run and holds ``scaler.npz``). ``scaler="estimated"``: mean and scale of
    the adversary's public auxiliary raw embeddings ``aux_raw``.
    """
    if scaler == "known":
        if view.scaler is None:
            raise ThreatModelError("scaler='known' but the view holds no scaler statistics; use "
                                   "scaler='estimated' with public auxiliary embeddings")
        mean, scale = view.scaler
    elif scaler == "estimated":
        if aux_raw is None:
            raise ValueError("scaler='estimated' needs the adversary's public auxiliary raw embeddings (aux_raw)")
        mean, scale = estimate_scaler(aux_raw)
    else:
        raise ValueError(f"scaler must be one of {list(SCALER_MODES)}, got {scaler!r}")
    return to_raw(recovery.candidates, mean, scale)


def candidate_view(raw: np.ndarray, aux_texts: Sequence[str], aux_raw: np.ndarray) -> AdversaryView:
    """An :class:`AdversaryView` whose targets are the recovered raw candidates."""
    return AdversaryView(target_embeddings=np.asarray(raw, dtype=np.float32), aux_texts=tuple(aux_texts),
                         aux_embeddings=np.asarray(aux_raw, dtype=np.float32))


def invert_candidates(raw: np.ndarray, aux_texts: Sequence[str], aux_raw: np.ndarray,
                      config: BowConfig = BowConfig(), *, inverter: BowInverter | None = None
                      ) -> tuple[list[set[str]], BowInverter]:
    """Each candidate's guessed word set (Song & Raghunathan 2020's bag-of-words inversion) and the inverter.

    The inverter is trained on the public auxiliary pairs only; pass one already trained (``inverter``)
    to reuse it across updates.
    """
    view = candidate_view(raw, aux_texts, aux_raw)
    if inverter is None:
        return invert_bag_of_words(view, config)
    return inverter.predict(view.target_embeddings), inverter


class NameGuesser:
    """Top-1 first and last name of each vector over a closed pool of names (planted identifiers).

    The same estimator as :func:`attacks.attribute.infer_attribute` (logistic regression on the raw
    vectors), trained once on the adversary's public notes labelled with the names it reads off their
    headers, then applied to every recovered candidate: names become attributes to infer.
    """

    def __init__(self, aux_raw: np.ndarray, first: Sequence[str], last: Sequence[str], *, C: float = 1.0):
        from sklearn.linear_model import LogisticRegression

        a = np.asarray(aux_raw, dtype=np.float32)
        if not len(first) == len(last) == len(a):
            raise ValueError(f"{len(first)} first and {len(last)} last names for {len(a)} auxiliary vectors")
        self.models = [LogisticRegression(C=C, max_iter=2000).fit(a, np.asarray(y)) for y in (first, last)]

    def __call__(self, raw: np.ndarray) -> list[set[str]]:
        x = np.asarray(raw, dtype=np.float32)
        if len(x) == 0:
            return []
        preds = [m.predict(x) for m in self.models]
        return [{str(f).lower(), str(s).lower()} for f, s in zip(*preds)]


def match_to_truth(candidates: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best cosine [n], index of the best candidate [n]) of each true vector; cosine 0 and index -1 without
    candidates. Truth side only."""
    t = np.asarray(truth, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64).reshape(-1, t.shape[1])
    if len(c) == 0:
        return np.zeros(len(t)), np.full(len(t), -1)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-300)
    cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)
    sims = tn @ cn.T
    best = sims.argmax(axis=1)
    return sims[np.arange(len(t)), best], best


def recovery_scores(candidates: np.ndarray, truth: np.ndarray, *, threshold: float = 0.99) -> dict[str, list[float]]:
    """Per true sample: best cosine over the candidates, and 1.0 when it exceeds ``threshold``."""
    cos, _ = match_to_truth(candidates, truth)
    return {"cosine": cos.tolist(), "recovered": (cos > threshold).astype(float).tolist()}


def text_scores(guesses: Sequence[set[str]], best: np.ndarray, true_texts: Sequence[str], *,
                identifiers: Sequence | None = None) -> dict[str, list[float]]:
    """Per true sample: word-set F1 of its best candidate's guess (0 without a candidate); with the planted
    identifiers, whether its names / MRN are among the guessed words (:func:`attacks.scoring.identifier_recovery`)."""
    if len(best) != len(true_texts):
        raise ValueError(f"{len(best)} matches for {len(true_texts)} true texts")
    matched = [guesses[i] if i >= 0 else set() for i in best]
    per = {"word_f1": [set_prf(g, words(t))[2] for g, t in zip(matched, true_texts)]}
    if identifiers is not None:
        per.update(identifier_recovery(matched, identifiers))
    return per


def score_views(views: Sequence[tuple[UpdateView, np.ndarray, Sequence[tuple[int, int]]]], *,
                texts: Sequence[Sequence[str]] | None = None, identifiers: Sequence[Sequence] | None = None,
                chain: dict | None = None, scaler_mode: str = "known") -> dict[str, list[float]]:
    """Attack every view and score it against its truth: ``(view, true scaled rows, (client, row) of each)``.

    Per true sample: best cosine, recovered (> 0.99) and, with ``chain`` (a trained ``inverter``,
    ``aux_texts``, ``aux_raw``, optionally a :class:`NameGuesser` ``names``) and the rows' ``texts`` per client, the chained word F1 and the planted
    ``identifiers`` recovered. An update that moved no bias scores as nothing recovered.
    """
    per: dict[str, list[float]] = {}
    for view, truth, rows in views:
        try:
            rec = recover_inputs(view)
        except EmptyUpdateError:
            log.warning("an update moved no first-layer bias: scored as nothing recovered")
            rec = None
        cands = rec.candidates if rec is not None else np.zeros((0, truth.shape[1]), np.float32)
        _extend(per, recovery_scores(cands, truth))
        if chain is None or texts is None:
            continue
        _, best = match_to_truth(cands, truth)
        raw = raw_candidates(rec, view, scaler=scaler_mode, aux_raw=chain["aux_raw"]) if rec is not None else cands
        guesses, _ = invert_candidates(raw, chain["aux_texts"], chain["aux_raw"], inverter=chain["inverter"])
        if chain.get("names") is not None:
            guesses = [g | n for g, n in zip(guesses, chain["names"](raw))]
        ids = [identifiers[c][i] for c, i in rows] if identifiers is not None else None
        _extend(per, text_scores(guesses, best, [texts[c][i] for c, i in rows], identifiers=ids))
    return per


def _extend(per: dict[str, list[float]], new: dict[str, list[float]]) -> None:
    for k, v in new.items():
        per.setdefault(k, []).extend(v)
