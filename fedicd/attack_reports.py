"""Attack reports on fedicd's own notes and embeddings: the glue between fedicd data and the ``attacks`` package.

``attacks`` never imports fedicd (it sees only what an adversary holds); this
module loads a config's notes, embeds them with the public encoder, hands the
adversary its view, and scores the guesses against the victims' text.

* :func:`load_attack_data`: victims = the test split; the adversary's public
  auxiliary text = CodiEsp's uncoded background cases for ``data.source =
  "codiesp"``, the training split's texts otherwise (other patients of the same
  distribution); its few labelled notes = the training split.
* :func:`bow_report`, :func:`generative_report`, :func:`attribute_report`: one
  :class:`attacks.report.AttackReport` each, with bootstrap CIs and a baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.attribute import auc_with_ci, code_attributes, infer_attribute, text_attributes, topk_accuracy
from attacks.bow import BowConfig, invert_bag_of_words
from attacks.generative import GenerativeConfig, GenerativeInverter, token_spans
from attacks.scoring import identifier_recovery, reconstruction_scores, set_prf, summarize, words

__all__ = ["AttackData", "load_attack_data", "clinical_vocabulary", "embed", "bow_report", "generative_report",
           "attribute_report", "ATTRIBUTES"]

ATTRIBUTES = ("mental_health", "hiv", "pregnancy", "female", "site")
Defence = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


_ENCODERS: dict = {}


def _encoder(cfg):
    """One loaded public encoder per embedding config (re-embedding guesses calls it many times)."""
    from fedicd.embedding import load_encoder

    key = repr(cfg.embedding)
    if key not in _ENCODERS:
        _ENCODERS[key] = load_encoder(cfg.embedding)
    return _ENCODERS[key]


def embed(texts: list[str], cfg, *, cache: bool = True) -> np.ndarray:
    """The public encoder's vectors (cached in ``cfg.cache_dir`` unless ``cache=False``)."""
    from fedicd.embedding import embed_texts

    return embed_texts(texts, cfg.embedding, cache_dir=cfg.cache_dir if cache else None, progress=False,
                       encoder=_encoder(cfg)).vectors


@dataclass
class AttackData:
    """A config's notes split into the defender's parts and the adversary's public material."""

    cfg: object
    vectors: dict[str, np.ndarray]          # part -> note vectors (train / val / test)
    texts: dict[str, list[str]]
    codes: dict[str, list]
    labels: dict[str, np.ndarray]           # part -> ICD label matrix (for the utility of a defence)
    aux_texts: list[str]                    # the adversary's public auxiliary notes
    aux_vectors: np.ndarray
    identifiers: list | None = None         # planted truth of the test notes (synthetic corpus only)
    sites: dict[str, list] | None = None
    settings: dict = field(default_factory=dict)


def load_attack_data(cfg) -> AttackData:
    from fedicd.experiment import prepare_data

    data = prepare_data(cfg)
    notes = data.notes
    vec = embed(list(notes.texts), cfg)
    parts = {p: np.asarray(idx) for p, idx in data.parts.items()}
    texts = {p: [notes.texts[i] for i in idx] for p, idx in parts.items()}
    codes = {p: [notes.codes[i] for i in idx] for p, idx in parts.items()}
    identifiers = None
    if cfg.data.source == "synthetic":
        from fedicd.data.sources import synthetic_corpus

        by_id = {p.note_id: p for p in synthetic_corpus(cfg.data, cfg.seed).identifiers}
        identifiers = [by_id[notes.ids[i]] for i in parts["test"]]
    if cfg.data.source == "codiesp":
        from fedicd.data.codiesp import load_codiesp_background

        _, aux = load_codiesp_background(cfg.data.path, language=cfg.data.language)
        aux_texts = [t for t in aux if t.strip()]
        aux_vectors, aux_from = embed(aux_texts, cfg), "CodiEsp background cases"
    else:
        aux_texts, aux_vectors, aux_from = texts["train"], vec[parts["train"]], "training split"
    sites = None
    if getattr(notes, "sites", None) is not None:
        sites = {p: [notes.sites[i] for i in idx] for p, idx in parts.items()}
    return AttackData(cfg, {p: vec[idx] for p, idx in parts.items()}, texts, codes, data.labels, aux_texts,
                      aux_vectors, identifiers, sites, settings={"aux_texts": aux_from, "source": cfg.data.source})


def clinical_vocabulary() -> set[str]:
    """Words of ICD-10-CM code descriptions that are not everyday English function words."""
    import simple_icd_10_cm as icd

    stop = set("a an and or of the in on with without to for by due not other unspecified as at from than "
               "into other specified type site part left right".split())
    vocab = {w for code in icd.get_all_codes(with_dots=False) for w in words(icd.get_description(code))}
    return {w for w in vocab if w not in stop and not w.isdigit() and len(w) > 2}


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
    tok = _encoder(cfg).tokenizer
    t0 = time.perf_counter()
    prefixes = token_spans(victims, tok, gen_cfg.max_tokens)
    if len(prefixes) != len(victims):
        raise ValueError("a victim note has no token to attack")
    starts = token_spans(aux_texts, tok, gen_cfg.max_tokens)
    windows = token_spans(aux_texts, tok, gen_cfg.max_tokens, stride=gen_cfg.max_tokens)
    spans = list(dict.fromkeys(starts + windows))[:max_spans]  # every prefix first, then windows; no repeats
    span_emb = defend(embed(spans, cfg))
    clean_target = embed(prefixes, cfg)
    target = defend(clean_target)
    view = AdversaryView(target_embeddings=target, aux_texts=spans, aux_embeddings=span_emb,
                         encoder=lambda texts: defend(embed(list(texts), cfg, cache=False)))
    t1 = time.perf_counter()
    inverter = GenerativeInverter(gen_cfg, tok).fit(view.aux_embeddings, list(view.aux_texts))
    t2 = time.perf_counter()
    final, trail = inverter.invert(view.target_embeddings, view.encoder if gen_cfg.corrector_steps else None)
    t3 = time.perf_counter()
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    nearest = [spans[j] for j in (unit(target) @ unit(span_emb).T).argmax(1)]

    def scores(guesses: list[str]) -> dict[str, list[float]]:
        vec = np.zeros_like(clean_target)
        keep = [i for i, g in enumerate(guesses) if g.strip()]
        if keep:
            vec[keep] = embed([guesses[i] for i in keep], cfg, cache=False)
        return reconstruction_scores(guesses, prefixes, guess_vectors=vec, target_vectors=clean_target,
                                     identifiers=identifiers)

    metrics = summarize(scores(final), seed=seed)
    if gen_cfg.corrector_steps:
        greedy = summarize(scores(trail[0]), seed=seed)
        metrics.update({f"greedy_{k}": v for k, v in greedy.items() if k in ("bleu", "token_f1", "cosine", "full_name_recovered")})
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


def attribute_report(view: AdversaryView, aux_codes, victim_codes, n_labelled: int, victims: list[str],
                     aux_sites=None, victim_sites=None, seed: int = 0,
                     only: tuple[str, ...] | None = None) -> AttackReport:
    """AUC per binary attribute (majority/chance baseline 0.5) and site top-k accuracy (majority baseline)."""
    aux_attr = {**code_attributes(aux_codes), **text_attributes(list(view.aux_texts))}
    vic_attr = {**code_attributes(victim_codes), **text_attributes(victims)}
    if only is not None:
        aux_attr = {k: v for k, v in aux_attr.items() if k in only}
    metrics, base, settings = {}, {}, {"n_labelled": n_labelled}
    if aux_sites is not None and (only is None or "site" in only):
        probs, classes = infer_attribute(view, aux_sites, n_labelled=n_labelled, seed=seed)
        majority = max(set(aux_sites), key=list(aux_sites).count)
        for k in (1, 2):
            metrics[f"site_top{k}_accuracy"] = summarize({"a": topk_accuracy(victim_sites, probs, classes, k)})["a"]
        base["site_top1_accuracy"] = summarize({"a": [float(s == majority) for s in victim_sites]})["a"]
    for name in aux_attr:
        y_v = vic_attr[name]
        settings[f"{name}_victim_prevalence"] = float(y_v.mean())
        if len(np.unique(y_v)) < 2 or aux_attr[name].sum() < 2:
            settings[f"{name}_skipped"] = "one class only among victims or labelled notes"
            continue
        try:
            probs, classes = infer_attribute(view, aux_attr[name], n_labelled=n_labelled, seed=seed)
        except ValueError as exc:
            settings[f"{name}_skipped"] = str(exc)
            continue
        metrics[f"{name}_auc"] = auc_with_ci(y_v, probs[:, classes.index(1)], seed=seed)
        base[f"{name}_auc"] = {"value": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": int(len(y_v))}
    return AttackReport("attribute_inference", metrics, settings=settings, baselines=base)
