"""Stratified multi-label train/val/test splits and cross-validation folds (iterative stratification).

Uses ``iterative-stratification`` (Sechidis et al., 2011, as implemented in
``iterstrat.ml_stratifiers``): first train vs. the rest, then the rest into val
and test. The paper's ablation uses 10 repeated random stratified splits;
:func:`repeated_splits` gives them for seeds ``seed + 1000·k``, k = 0..9.
For small corpora, :func:`kfold_split` gives fold ``k`` of ``n_folds``
stratified folds as the test set and a stratified share of the rest as val.

Iterative stratification keeps label proportions, not part sizes: on a small
corpus with rare codes a part can come out smaller than ``fraction × N`` (a
40-note corpus cut 70/15/15 can give 36/2/2), or empty. When it leaves a part
empty although ``round(fraction × N) >= 1``, that cut is redrawn at random
(unstratified) with a WARNING; a part that is still empty (``fraction × N``
rounds to 0) raises :class:`EmptySplitError`, never an empty array that fails
later.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit
from sklearn.preprocessing import MultiLabelBinarizer

from fedicd.data.notes import CodedNotes
from fedicd.errors import ShapeError

log = logging.getLogger(__name__)

__all__ = ["stratified_split", "repeated_splits", "with_splits", "holdout_split", "kfold_split", "fold_assignment",
           "EmptySplitError"]


class EmptySplitError(ValueError):
    """A split part came out empty.

    Attributes
    ----------
    part:
        The empty part (``"train"``, ``"val"``, ``"test"``, ``"kept"``, ``"held_out"``).
    sizes:
        Notes per part of the split that was attempted.
    total, fraction:
        The part was meant to get ``fraction`` of ``total`` notes.
    """

    def __init__(self, part: str, sizes: dict[str, int], total: int, fraction: float):
        shown = "/".join(sizes) + " = " + "/".join(str(v) for v in sizes.values())
        super().__init__(f"the {part} split is empty ({shown} of {sum(sizes.values())} notes; {total} notes × "
                         f"{fraction:g} = {total * fraction:.2f} expected in {part})")
        self.part, self.sizes, self.total, self.fraction = part, dict(sizes), int(total), float(fraction)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or not all(0 < f < 1 for f in fractions) or not abs(sum(fractions) - 1.0) <= 1e-9:
        raise ValueError(f"fractions must be three positive numbers (train, val, test) summing to 1, got {fractions}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def _strata(y: np.ndarray) -> np.ndarray:
    """iterstrat needs a multilabel matrix; one column gets its complement (same strata), none a constant."""
    if y.shape[1] == 0:
        y = np.ones((len(y), 1), dtype=np.int64)
    if y.shape[1] == 1:
        return np.hstack([y, 1 - y])
    return y


def _one_cut(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(kept, cut)``; a random cut of ``round(test_size · N)`` rows when stratification leaves a side
    empty although that size is possible (codes too rare to stratify), with a WARNING."""
    if len(y) < 2:  # nothing to cut: everything stays on the kept side
        return np.arange(len(y)), np.empty(0, dtype=np.int64)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    try:
        keep, cut = next(splitter.split(np.zeros((len(y), 1)), _strata(y)))
    except ValueError:  # scikit-learn refuses a size that rounds one side to nothing: treat it as an empty side
        keep, cut = np.arange(len(y)), np.empty(0, dtype=np.int64)
    n_cut = int(round(test_size * len(y)))
    if (len(cut) == 0 or len(keep) == 0) and 1 <= n_cut < len(y):
        log.warning("iterative stratification left one side of a %d-note cut empty (the codes are too rare to "
                    "stratify): cut it at random instead, %d / %d notes", len(y), len(y) - n_cut, n_cut)
        order = np.random.default_rng(seed).permutation(len(y))
        keep, cut = order[n_cut:], order[:n_cut]
    return np.sort(keep), np.sort(cut)


def _check_nonempty(parts: dict[str, np.ndarray], expected: dict[str, tuple[int, float]]) -> None:
    """Raise :class:`EmptySplitError` for the first empty part (``expected``: part → (total, fraction))."""
    for name, idx in parts.items():
        if len(idx) == 0:
            raise EmptySplitError(name, {k: len(v) for k, v in parts.items()}, *expected[name])


def holdout_split(labels: np.ndarray, *, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified two-way split: ``(kept, held_out)`` index arrays, ``fraction`` held out.

    Raises :class:`EmptySplitError` when either side comes out empty.
    """
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) < 2:
        raise ShapeError(f"labels must be a 2-D binary matrix with at least 2 rows, got shape {y.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    kept, held = _one_cut(y, fraction, seed)
    _check_nonempty({"kept": kept, "held_out": held}, {"kept": (len(y), 1 - fraction), "held_out": (len(y), fraction)})
    return kept, held


def stratified_split(labels: np.ndarray, *, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Split rows of a binary label matrix into train/val/test index arrays.

    Every row lands in exactly one part; label proportions are kept close to
    the global ones in each part. Deterministic for ``seed``. Raises
    :class:`EmptySplitError` when a part comes out empty.
    """
    y = np.asarray(labels)
    if y.ndim != 2 or len(y) < 3:
        raise ShapeError(f"labels must be a 2-D binary matrix with at least 3 rows, got shape {y.shape}")
    f_train, f_val, f_test = _check_fractions(fractions)
    train, rest = _one_cut(y, 1.0 - f_train, seed)
    val_rel, test_rel = _one_cut(y[rest], f_test / (f_val + f_test), seed + 1)
    parts = {"train": train, "val": np.sort(rest[val_rel]), "test": np.sort(rest[test_rel])}
    _check_nonempty(parts, {"train": (len(y), f_train), "val": (len(y), f_val), "test": (len(y), f_test)})
    return parts


def fold_assignment(labels: np.ndarray, *, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold id (0..n_folds-1) of every row: ``n_folds`` iteratively stratified, shuffled folds."""
    y = np.asarray(labels)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if y.ndim != 2 or len(y) < n_folds:
        raise ShapeError(f"{n_folds} folds need a 2-D label matrix with at least {n_folds} rows, got shape {y.shape}")
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros((len(y), 1)), _strata(y))):
        folds[test] = k
    return folds


def kfold_split(labels: np.ndarray, *, n_folds: int, fold: int, val_fraction: float = 0.15,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Cross-validation split ``fold`` of ``n_folds``: test = that fold, val = a stratified share of the rest.

    Over ``fold = 0..n_folds-1`` the test parts are disjoint and cover every
    row exactly once (same ``seed``). Raises :class:`EmptySplitError` when a
    part comes out empty.
    """
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < n_folds:
        raise ValueError(f"fold must be an integer in 0..{n_folds - 1}, got {fold!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    y = np.asarray(labels)
    folds = fold_assignment(y, n_folds=n_folds, seed=seed)
    test, rest = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
    kept, held = _one_cut(y[rest], val_fraction, seed + 1)
    parts = {"train": rest[kept], "val": rest[held], "test": test}
    _check_nonempty(parts, {"train": (len(rest), 1 - val_fraction), "val": (len(rest), val_fraction),
                            "test": (len(y), 1 / n_folds)})
    return parts


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
