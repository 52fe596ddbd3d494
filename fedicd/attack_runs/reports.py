"""Attack reports: the adversary's guesses scored against the victims' text, one AttackReport each.

:func:`bow_report`, :func:`generative_report`, :func:`attribute_report` and
:func:`column_report` hand the adversary its :class:`attacks.AdversaryView`,
run an attack of the ``attacks`` package, and score the guesses (bootstrap CIs
and a baseline). Only this scoring step reads the victims' text.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.attribute import attack_attribute, code_attributes, text_attributes
from attacks.bow import BowConfig, invert_bag_of_words
from attacks.generative import GenerativeConfig, GenerativeInverter, token_spans
from attacks.scoring import identifier_recovery, reconstruction_scores, set_prf, summarize, words

from . import data

__all__ = ["bow_report", "generative_report", "attribute_report", "column_report", "Defence"]

Defence = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def bow_report(view: AdversaryView, victims: list[str], clinical: set[str] | None = None, identifiers=None,
               seed: int = 0, config: BowConfig | None = None) -> AttackReport:
    """Bag-of-words inversion scored on word sets, clinical terms and planted identifiers."""
    guesses, inverter = invert_bag_of_words(view, config or BowConfig(seed=seed))
    truth = [set(words(t)) for t in victims]
    prf = [set_prf(g, t) for g, t in zip(guesses, truth)]
    per = {"word_precision": [x[0] for x in prf], "word_recall": [x[1] for x in prf],
           "word_f1": [x[2] for x in prf]}
    if clinical is not None:
        per["clinical_f1"] = [set_prf(g & clinical, t & clinical)[2] for g, t in zip(guesses, truth)]
    if identifiers is not None:
        per.update(identifier_recovery(guesses, identifiers))
    # baseline: guess the auxiliary corpus's most frequent words for everyone (as many as the median guess)
    k = int(np.median([len(g) for g in guesses])) or 1
    common = set(inverter.vocab[:k])
    base = {"word_f1": [set_prf(common, t)[2] for t in truth]}
    if clinical is not None:
        base["clinical_f1"] = [set_prf(common & clinical, t & clinical)[2] for t in truth]
    examples = [{"victim": i, "guessed_words": sorted(guesses[i])[:30],
                 "true_words_found": sorted(guesses[i] & truth[i])[:30], "true_text_start": victims[i][:200]}
                for i in range(min(5, len(victims)))]
    return AttackReport("bow_inversion", summarize(per, seed=seed),
                        settings={"vocabulary": len(inverter.vocab), "threshold": float(inverter.threshold),
                                  "aux_texts": len(view.aux_texts), "victims": view.n_targets},
                        examples=examples, baselines=summarize(base, seed=seed))


def _aux_spans(aux_texts: list[str], tok, max_tokens: int, max_spans: int) -> list[str]:
    """Every auxiliary note's prefix first, then windows every ``max_tokens`` tokens; no repeats, at most ``max_spans``."""
    starts = token_spans(aux_texts, tok, max_tokens)
    windows = token_spans(aux_texts, tok, max_tokens, stride=max_tokens)
    return list(dict.fromkeys(starts + windows))[:max_spans]


def _nearest_spans(target: np.ndarray, span_emb: np.ndarray, spans: list[str]) -> list[str]:
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    return [spans[j] for j in (unit(target) @ unit(span_emb).T).argmax(1)]


def _reconstruction(guesses: list[str], prefixes: list[str], clean_target: np.ndarray, cfg,
                    identifiers) -> dict[str, list[float]]:
    vec = np.zeros_like(clean_target)
    keep = [i for i, g in enumerate(guesses) if g.strip()]
    if keep:
        vec[keep] = data.embed([guesses[i] for i in keep], cfg, cache=False)
    return reconstruction_scores(guesses, prefixes, guess_vectors=vec, target_vectors=clean_target,
                                 identifiers=identifiers)


def generative_report(victims: list[str], aux_texts: list[str], cfg, identifiers=None, *,
                      gen_cfg: GenerativeConfig | None = None, max_spans: int = 8000,
                      defend: Defence = _identity, seed: int = 0) -> AttackReport:
    """GEIA-style inversion of the victims' ``max_tokens``-token prefixes.

    The decoder trains on auxiliary spans (every auxiliary note's prefix, then
    windows every ``max_tokens`` tokens, at most ``max_spans``), embedded by the
    public encoder and passed through ``defend`` (an adaptive adversary knows a
    public defence). Scored: BLEU, ROUGE-L, token F1, exact match, cosine between
    the re-embedded guess and the target, and planted identifiers; baseline: the
    auxiliary span whose vector is nearest to the target.
    """
    gen_cfg = gen_cfg or GenerativeConfig(seed=seed, corrector_steps=2, candidates=4)
    tok = data.public_encoder(cfg).tokenizer
    t0 = time.perf_counter()
    prefixes = token_spans(victims, tok, gen_cfg.max_tokens)
    if len(prefixes) != len(victims):
        raise ValueError("a victim note has no token to attack")
    spans = _aux_spans(aux_texts, tok, gen_cfg.max_tokens, max_spans)
    span_emb = defend(data.embed(spans, cfg))
    clean_target = data.embed(prefixes, cfg)
    target = defend(clean_target)
    view = AdversaryView(target_embeddings=target, aux_texts=spans, aux_embeddings=span_emb,
                         encoder=lambda texts: defend(data.embed(list(texts), cfg, cache=False)))
    t1 = time.perf_counter()
    inverter = GenerativeInverter(gen_cfg, tok).fit(view.aux_embeddings, list(view.aux_texts))
    t2 = time.perf_counter()
    final, trail = inverter.invert(view.target_embeddings, view.encoder if gen_cfg.corrector_steps else None)
    t3 = time.perf_counter()
    nearest = _nearest_spans(target, span_emb, spans)
    scores = lambda guesses: _reconstruction(guesses, prefixes, clean_target, cfg, identifiers)  # noqa: E731
    metrics = summarize(scores(final), seed=seed)
    if gen_cfg.corrector_steps:
        greedy = summarize(scores(trail[0]), seed=seed)
        metrics.update({f"greedy_{k}": v for k, v in greedy.items()
                        if k in ("bleu", "token_f1", "cosine", "full_name_recovered")})
    examples = [{"victim": i, "true_prefix": prefixes[i], "greedy": trail[0][i], "corrected": final[i],
                 "nearest_aux_span": nearest[i]} for i in range(min(5, len(victims)))]
    return AttackReport("generative_inversion", metrics, baselines=summarize(scores(nearest), seed=seed),
                        settings={**gen_cfg.__dict__, "aux_spans": len(spans), "victims": len(prefixes),
                                  "decoder_vocab": int(inverter.vocab_size),
                                  "train_loss_first_last": [inverter.losses[0], inverter.losses[-1]],
                                  "seconds": {"embed": t1 - t0, "train": t2 - t1, "invert": t3 - t2},
                                  "cosine": "between the clean vectors of guess and true prefix",
                                  "baseline": "the auxiliary span nearest to the target vector"},
                        examples=examples)


def column_report(view: AdversaryView, aux_values, victim_values, *, name: str, n_labelled: int | None,
                  seed: int = 0) -> AttackReport:
    """One attribute (a built-in's ``"0"/"1"`` values or a column's strings) inferred and scored.

    Two values: AUC (baseline 0.5); more: top-1 (and top-3 past 3 classes) accuracy against
    the majority-class baseline, and macro one-vs-rest AUC (see :func:`attacks.attribute.attack_attribute`).
    Raises ``ValueError`` naming the attribute when it cannot be scored on these notes.
    """
    metrics, base, settings = attack_attribute(view, aux_values, victim_values, name=name, n_labelled=n_labelled,
                                               seed=seed)
    return AttackReport("attribute_inference", metrics, settings={"attribute": name, "n_labelled": n_labelled,
                                                                  **settings}, baselines=base)


def attribute_report(view: AdversaryView, aux_codes, victim_codes, n_labelled: int, victims: list[str],
                     aux_sites=None, victim_sites=None, seed: int = 0,
                     only: tuple[str, ...] | None = None) -> AttackReport:
    """Every built-in attribute at once (``only`` picks some): AUC for the binary ones, site as a categorical.

    An attribute that cannot be scored on these notes is listed under ``{name}_skipped`` in the settings.
    """
    aux_attr = {**code_attributes(aux_codes), **text_attributes(list(view.aux_texts))}
    vic_attr = {**code_attributes(victim_codes), **text_attributes(victims)}
    values = {n: ([str(v) for v in aux_attr[n]], [str(v) for v in vic_attr[n]]) for n in aux_attr}
    if aux_sites is not None:
        values["site"] = (list(aux_sites), list(victim_sites))
    metrics, base, settings = {}, {}, {"n_labelled": n_labelled}
    for name, (aux, vic) in values.items():
        if only is not None and name not in only:
            continue
        try:
            m, b, st = attack_attribute(view, aux, vic, name=name, n_labelled=n_labelled, seed=seed)
        except ValueError as exc:
            settings[f"{name}_skipped"] = str(exc)
            continue
        metrics, base, settings = {**metrics, **m}, {**base, **b}, {**settings, **st}
    return AttackReport("attribute_inference", metrics, settings=settings, baselines=base)
