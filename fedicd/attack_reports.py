"""Attack reports on fedicd's own notes and embeddings: the glue between fedicd data and the ``attacks`` package.

``attacks`` never imports fedicd (it sees only what an adversary holds); this
module loads a config's notes, embeds them with the public encoder, hands the
adversary its view, and scores the guesses against the victims' text.

* :func:`load_attack_data`: victims = the test split; the adversary's public
  auxiliary text = CodiEsp's uncoded background cases for ``data.source =
  "codiesp"``, the training split's texts otherwise (other patients of the same
  distribution); its few labelled notes = the training split.
* :func:`bow_report`, :func:`generative_report`, :func:`attribute_report`,
  :func:`column_report`: one :class:`attacks.report.AttackReport` each, with
  bootstrap CIs and a baseline.
* Attributes (:func:`resolve_attribute`): the built-ins ``mental_health``,
  ``hiv``, ``pregnancy`` (ICD-10 codes), ``female`` (sex words), ``site`` (the
  notes' site column, any source), or any other column of a tabular source
  (``CodedNotes.attributes``); ``column:NAME`` / ``builtin:NAME`` settle a
  column that shares a built-in's name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.attribute import attack_attribute, check_attribute_values, code_attributes, text_attributes
from attacks.bow import BowConfig, invert_bag_of_words
from attacks.generative import GenerativeConfig, GenerativeInverter, token_spans
from attacks.scoring import identifier_recovery, reconstruction_scores, set_prf, summarize, words

__all__ = ["AttackData", "load_attack_data", "clinical_vocabulary", "embed", "bow_report", "generative_report",
           "attribute_report", "column_report", "resolve_attribute", "attribute_values", "ATTRIBUTES"]

ATTRIBUTES = ("mental_health", "hiv", "pregnancy", "female", "site")
CODE_ATTRIBUTES = ("mental_health", "hiv", "pregnancy")
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
    labels: dict[str, np.ndarray]           # part -> label matrix (for the utility of a defence)
    aux_texts: list[str]                    # the adversary's public auxiliary notes
    aux_vectors: np.ndarray
    identifiers: list | None = None         # planted truth of the test notes (synthetic corpus only)
    sites: dict[str, list] | None = None
    settings: dict = field(default_factory=dict)
    columns: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # column -> part -> values
    icd10_codes: bool = True                # every label is an ICD-10 code (the code built-ins apply)
    label_kind: str = "icd10"
    attribute: tuple[str, dict[str, list]] | None = None  # the attacked attribute's key and values per part

    @property
    def utility_metric(self) -> str:
        """``icd_micro_f1``, or ``label_micro_f1`` where the labels are not ICD codes."""
        return "label_micro_f1" if self.label_kind == "free" else "icd_micro_f1"


def _label_kind(cfg, notes) -> tuple[str, bool]:
    """``data.label_kind`` and whether every note is ICD-10 coded."""
    kind = cfg.data.label_kind
    return kind, kind == "icd10" and all(v == 10 for v in notes.icd_version)


def _by_part(column, parts: dict[str, np.ndarray]) -> dict[str, list]:
    return {p: [column[i] for i in idx] for p, idx in parts.items()}


def load_attack_data(cfg, attribute: str | None = None) -> AttackData:
    """Prepare, split and embed a config's notes; ``attribute`` is checked before anything is embedded."""
    from fedicd.experiment import prepare_data

    data = prepare_data(cfg)
    notes, parts = data.notes, {p: np.asarray(idx) for p, idx in data.parts.items()}
    kind, icd10 = _label_kind(cfg, notes)
    texts = _by_part(notes.texts, parts)
    sites = None if notes.sites is None else _by_part(notes.sites, parts)
    columns = {c: _by_part(v, parts) for c, v in (notes.attributes or {}).items()}
    d = AttackData(cfg, {}, texts, _by_part(notes.codes, parts), data.labels, [], np.empty((0, 0), np.float32),
                   sites=sites, columns=columns, icd10_codes=icd10, label_kind=kind)
    if attribute is not None:
        d.attribute = attribute_values(d, attribute)
        check_attribute_values(d.attribute[1]["train"], d.attribute[1]["test"], name=d.attribute[0])
    _embed_parts(d, notes, parts)
    return d


def _embed_parts(d: AttackData, notes, parts: dict[str, np.ndarray]) -> None:
    """Fill in the vectors, the adversary's auxiliary material and (synthetic corpus) the planted identifiers."""
    cfg = d.cfg
    vec = embed(list(notes.texts), cfg)
    d.vectors = {p: vec[idx] for p, idx in parts.items()}
    if cfg.data.source == "synthetic":
        from fedicd.data.sources import synthetic_corpus

        by_id = {p.note_id: p for p in synthetic_corpus(cfg.data, cfg.seed).identifiers}
        d.identifiers = [by_id[notes.ids[i]] for i in parts["test"]]
    if cfg.data.source == "codiesp":
        from fedicd.data.codiesp import load_codiesp_background

        _, aux = load_codiesp_background(cfg.data.path, language=cfg.data.language)
        d.aux_texts = [t for t in aux if t.strip()]
        d.aux_vectors, aux_from = embed(d.aux_texts, cfg), "CodiEsp background cases"
    else:
        d.aux_texts, d.aux_vectors, aux_from = d.texts["train"], d.vectors["train"], "training split"
    d.settings.update({"aux_texts": aux_from, "source": cfg.data.source})


def resolve_attribute(name: str, *, columns: Collection[str], has_sites: bool, icd10_codes: bool = True,
                      label_kind: str = "icd10") -> tuple[str, str]:
    """``("builtin" | "column", key)`` for an ``--attribute`` name; ``ValueError`` naming what is allowed.

    A bare built-in name means the built-in, ``site`` meaning the notes' site column;
    ``column:NAME`` and ``builtin:NAME`` choose explicitly (needed when a column shares a
    built-in's name other than ``site``). Code built-ins need ICD-10 labels.
    """
    available = f"built-in: {', '.join(ATTRIBUTES)}; columns of this corpus: {sorted(columns) or 'none'}"
    prefix, _, rest = name.partition(":")
    if prefix == "column" and rest:
        if rest not in columns:
            raise ValueError(f"unknown attribute column {rest!r}; {available}")
        return "column", rest
    key = rest if prefix == "builtin" and rest else name
    if key not in ATTRIBUTES:
        if key in columns and key == name:
            return "column", key
        raise ValueError(f"unknown attribute {name!r}; {available}")
    if key == name and key in columns and key != "site":
        raise ValueError(f"attribute {name!r} is both a built-in and a column of this corpus; "
                         f"use builtin:{name} or column:{name}")
    if key == "site" and not has_sites:
        raise ValueError(f"attribute 'site' needs a site column (data.site_column for a tabular source; the "
                         f"synthetic corpus has sites), and these notes have none; {available}")
    if key in CODE_ATTRIBUTES and not icd10_codes:
        raise ValueError(f"attribute {key!r} is read from ICD-10 codes, but these labels are {label_kind!r}"
                         f"{' or not all ICD-10' if label_kind == 'icd10' else ''}; use female, site or a column "
                         f"({sorted(columns) or 'none'})")
    return "builtin", key


def attribute_values(d: AttackData, name: str) -> tuple[str, dict[str, list]]:
    """The attribute's key and its values per part (``"1"``/``"0"`` for binary built-ins, ``""`` if missing)."""
    kind, key = resolve_attribute(name, columns=d.columns, has_sites=d.sites is not None,
                                  icd10_codes=d.icd10_codes, label_kind=d.label_kind)
    if kind == "column":
        return key, d.columns[key]
    if key == "site":
        return key, d.sites
    if key == "female":
        return key, {p: [str(v) for v in text_attributes(t)["female"]] for p, t in d.texts.items()}
    return key, {p: [str(v) for v in code_attributes(c)[key]] for p, c in d.codes.items()}


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
