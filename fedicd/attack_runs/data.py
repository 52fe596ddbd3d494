"""A config's notes as an adversary and a defender see them: the data side of ``fedicd attack``.

``attacks`` never imports fedicd (it sees only what an adversary holds); this
module loads a config's notes, embeds them with the public encoder and sorts
them into the defender's parts and the adversary's public material.

* :func:`load_attack_data`: victims = the test split; the adversary's public
  auxiliary text = CodiEsp's uncoded background cases for ``data.source =
  "codiesp"``, the training split's texts otherwise (other patients of the same
  distribution); its few labelled notes = the training split.
* Attributes (:func:`resolve_attribute`): the built-ins ``mental_health``,
  ``hiv``, ``pregnancy`` (ICD-10 codes), ``female`` (sex words), ``site`` (the
  notes' site column, any source), or any other column of a tabular source
  (``CodedNotes.attributes``); ``column:NAME`` / ``builtin:NAME`` settle a
  column that shares a built-in's name.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from attacks.attribute import check_attribute_values, code_attributes, text_attributes
from attacks.scoring import words

__all__ = ["AttackData", "load_attack_data", "clinical_vocabulary", "embed", "resolve_attribute",
           "attribute_values", "public_encoder", "ATTRIBUTES", "CODE_ATTRIBUTES"]

ATTRIBUTES = ("mental_health", "hiv", "pregnancy", "female", "site")
CODE_ATTRIBUTES = ("mental_health", "hiv", "pregnancy")

_ENCODERS: dict = {}


def public_encoder(cfg):
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
                       encoder=public_encoder(cfg)).vectors

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
    from fedicd.prepare import prepare_data

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
