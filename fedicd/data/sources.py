"""Load notes for a :class:`fedicd.data.config.DataConfig`, whatever the source."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from fedicd.data.notes import CodedNotes
from fedicd.errors import ConfigError

if TYPE_CHECKING:
    from fedicd.data.config import DataConfig

__all__ = ["load_notes", "synthetic_corpus"]


def synthetic_corpus(cfg: "DataConfig", seed: int):
    """The :class:`~fedicd.data.synthetic.SyntheticCorpus` a config describes (notes + ground truth)."""
    from fedicd.data.synthetic import SyntheticConfig, generate_synthetic

    return generate_synthetic(SyntheticConfig(n_notes=cfg.n_notes, n_sites=cfg.n_sites, n_codes=cfg.n_codes,
                                              seed=seed))


def _synthetic(cfg: "DataConfig", seed: int) -> CodedNotes:
    notes = synthetic_corpus(cfg, seed).notes
    if notes.attributes is None and notes.sites is not None:  # the site is the corpus's one natural attribute
        notes = dataclasses.replace(notes, attributes={"site": list(notes.sites)})
    return notes


def _codiesp(cfg: "DataConfig", seed: int) -> CodedNotes:
    from fedicd.data.codiesp import load_codiesp

    return load_codiesp(cfg.path, language=cfg.language, codes=cfg.codes)


def _mimic(cfg: "DataConfig", seed: int) -> CodedNotes:
    from fedicd.data.mimic import load_mimic

    return load_mimic(cfg.path, hosp_root=cfg.hosp_path, icd_version=cfg.icd_version,
                      include_procedures=cfg.include_procedures, min_per_client=0, split_file=cfg.split_file,
                      split_id_column=cfg.split_id_column, split_column=cfg.split_column or "split",
                      split_match_on=cfg.split_match_on)


def _tabular(cfg: "DataConfig", seed: int) -> CodedNotes:
    from fedicd.data.tabular import load_tabular

    return load_tabular(cfg.path, text_column=cfg.text_column, codes_column=cfg.codes_column,
                        codes_delimiter=cfg.codes_delimiter, id_column=cfg.id_column, site_column=cfg.site_column,
                        split_column=cfg.split_column, label_kind=cfg.label_kind)


def _saved(cfg: "DataConfig", seed: int) -> CodedNotes:
    notes = CodedNotes.load(cfg.path)
    _check_saved_kind(notes, cfg)
    return notes


def _check_saved_kind(notes: CodedNotes, cfg: "DataConfig") -> None:
    """Refuse saved notes whose labels are not the kind ``data.label_kind`` names."""
    if notes.label_kind == "free":
        found = "free labels (label_kind = 'free')"
    else:
        found = " and ".join(f"ICD-{v} codes" for v in sorted(set(notes.icd_version)))
    wanted = {"free": {0}, "icd9": {9}, "icd10": {10}}[cfg.label_kind]
    if len(notes) and set(notes.icd_version) != wanted:
        raise ConfigError(f"notes file {cfg.path} holds {found} but data.label_kind = {cfg.label_kind!r}; "
                          "set data.label_kind to the kind of the saved labels")


_LOADERS = {"synthetic": _synthetic, "codiesp": _codiesp, "mimic": _mimic, "tabular": _tabular, "notes": _saved}


def load_notes(cfg: "DataConfig", *, seed: int = 0) -> CodedNotes:
    """Load the notes ``cfg`` names (no label filtering or splitting yet).

    The paper's global frequency rule is applied later, in one place for every
    source (:func:`fedicd.prepare.prepare_data`). Tabular sources get
    ``data.label_kind``; saved notes (``"notes"``) must hold labels of that
    kind. Synthetic notes carry their site as the attribute ``"site"``.
    """
    if cfg.source not in _LOADERS:
        raise ValueError(f"unknown data source {cfg.source!r}; choose one of {sorted(_LOADERS)}")
    return _LOADERS[cfg.source](cfg, seed)
