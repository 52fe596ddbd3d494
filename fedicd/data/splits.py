"""Stratified multi-label train/val/test splits (iterative stratification).

Uses ``iterative-stratification`` (Sechidis et al., 2011, as implemented in
``iterstrat.ml_stratifiers``): first train vs. the rest, then the rest into val
and test. The paper's ablation uses 10 repeated random stratified splits;
:func:`repeated_splits` gives them for seeds ``seed + 1000·k``, k = 0..9.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from sklearn.preprocessing import MultiLabelBinarizer

from fedicd.data.notes import CodedNotes
from fedicd.errors import ShapeError

__all__ = ["stratified_split", "repeated_splits", "with_splits", "holdout_split"]


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers (train, val, test) summing to 1, got {fractions}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def _one_cut(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if y.shape[1] == 1:  # iterstrat needs a multilabel matrix; the complement column keeps the same strata
        y = np.hstack([y, 1 - y])
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    keep, cut = next(splitter.split(np.zeros((len(y), 1)), y))
    return np.sort(keep), np.sort(cut)


def holdout_split(labels: np.ndarray, *, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified two-way split: ``(kept, held_out)`` index arrays, ``fraction`` held out."""
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) < 2:
        raise ShapeError(f"labels must be a 2-D binary matrix with at least 2 rows, got shape {y.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return _one_cut(y, fraction, seed)


def stratified_split(labels: np.ndarray, *, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Split rows of a binary label matrix into train/val/test index arrays.

    Every row lands in exactly one part; label proportions are kept close to
    the global ones in each part. Deterministic for ``seed``.
    """
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) < 3:
        raise ShapeError(f"labels must be a 2-D binary matrix with at least 3 rows, got shape {y.shape}")
    f_train, f_val, f_test = _check_fractions(fractions)
    train, rest = _one_cut(y, 1.0 - f_train, seed)
    val_rel, test_rel = _one_cut(y[rest], f_test / (f_val + f_test), seed + 1)
    return {"train": train, "val": rest[val_rel], "test": rest[test_rel]}


def repeated_splits(labels: np.ndarray, *, n_repeats: int = 10, seed: int = 0,
                    fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> list[dict[str, np.ndarray]]:
    """The paper's repeated random stratified splits: one per seed ``seed + 1000·k``."""
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}")
    return [stratified_split(labels, fractions=fractions, seed=seed + 1000 * k) for k in range(n_repeats)]


def with_splits(notes: CodedNotes, *, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> CodedNotes:
    """A copy of ``notes`` whose ``splits`` column comes from :func:`stratified_split` on its codes."""
    y = MultiLabelBinarizer(sparse_output=False).fit_transform(notes.codes)
    parts = stratified_split(y, fractions=fractions, seed=seed)
    split_col = [""] * len(notes)
    for name, idx in parts.items():
        for i in idx:
            split_col[i] = name
    out = notes.subset(range(len(notes)))
    out.splits = split_col
    out.validate()
    return out
