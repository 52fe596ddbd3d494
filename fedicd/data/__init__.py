"""Coded clinical notes: one shape (:class:`CodedNotes`), several sources, labels and splits.

Sources: :func:`load_mimic` (MIMIC-IV-Note + hosp), :func:`load_codiesp`,
:func:`load_tabular` (CSV/JSONL), :func:`generate_synthetic` (the embedded
default); :func:`load_notes` picks one from a config.
"""

from fedicd.data.codiesp import load_codiesp, load_codiesp_background
from fedicd.data.labels import filter_rare_codes, fit_binarizer, roll_up, roll_up_notes
from fedicd.data.mimic import MimicConfig, load_mimic
from fedicd.data.notes import CodedNotes, LoadSummary, unique_codes
from fedicd.data.sources import load_notes
from fedicd.data.splits import holdout_split, repeated_splits, stratified_split, with_splits
from fedicd.data.synthetic import SyntheticConfig, SyntheticCorpus, generate_synthetic
from fedicd.data.tabular import load_tabular

__all__ = ["CodedNotes", "LoadSummary", "unique_codes", "load_codiesp", "load_codiesp_background", "load_mimic",
           "MimicConfig", "load_tabular", "generate_synthetic", "SyntheticConfig", "SyntheticCorpus", "load_notes",
           "filter_rare_codes", "fit_binarizer", "roll_up", "roll_up_notes", "stratified_split", "repeated_splits",
           "holdout_split", "with_splits"]
