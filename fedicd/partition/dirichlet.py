"""Dirichlet label skew for multi-label notes.

Three schemes, all with concentration ``alpha`` (``alpha → ∞`` gives IID, small
``alpha`` gives clients dominated by a few codes). The two multi-label schemes
draw, for every code ``c``, client proportions ``p_c ~ Dir(alpha · 1_K)`` and
send a note carrying codes ``L`` to client ``k`` with probability ``q_k``
built from its codes' ``p_c``; a note is never split, so all its labels travel
together, and as ``alpha`` grows every ``p_c`` tends to uniform, so ``q`` does
too: IID.

``"product"`` (default): ``q_k ∝ exp(mean_{c ∈ L} log p_{c,k})``, the
    normalised geometric mean (log-linear pooling, a product of experts): a
    note goes where *all* its codes are common, as a specialised hospital
    gathers whole case mixes. Strong skew at small ``alpha`` (mean JSD 0.22 at
    ``alpha = 0.05`` vs 0.05 for IID on 5,000 synthetic notes, 20 clients).

``"mixture"``: ``q_k = mean_{c ∈ L} p_{c,k}``, the arithmetic mixture: a note
    goes where *any* of its codes is common. Weaker skew for notes with many
    codes (mean JSD 0.11 at ``alpha = 0.05`` on the same notes).

``"primary"`` (single-label literature):
    The classic per-class split (Hsu et al., 2019; NIID-Bench; Flower's
    ``DirichletPartitioner``) applied to each note's *first* code (the primary
    diagnosis in MIMIC): the notes of each primary code are cut among clients
    in proportions ``p_c ~ Dir(alpha · 1_K)`` (largest-remainder rounding, so at
    large ``alpha`` it is a stratified split, slightly more even than random
    IID). Secondary codes are ignored when assigning, which is why it
    understates multi-label skew.

Options: ``min_partition_size`` (whole draws are retried, at most
``max_retries`` times, then :class:`PartitionError` names the constraint) and
``balance``: a cap of ``balance · N / K`` notes per client (``None`` = no cap;
``1.0`` = self-balancing to equal sizes), applied note by note in the multi-label
schemes (a hard cap) and code by code in the primary scheme (Flower's rule: a
full client takes no further codes, so it may overshoot within one code).

Notes without any code are an error by default (``unlabelled="error"``); with
``unlabelled="uniform"`` they are spread uniformly (multi-label schemes) or form one more
group of their own (primary), and their number is recorded in ``params``.
"""

from __future__ import annotations

import math

import numpy as np

from fedicd.partition.base import (Codes, Partition, PartitionError, check_common, check_min_size,
                                   draw_with_retries, label_matrix, sizes_from_proportions)

__all__ = ["dirichlet_partition", "SCHEMES"]

SCHEMES = ("product", "mixture", "primary")


def _check_alpha_balance(alpha: float, balance: float | None) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise PartitionError(f"alpha must be a finite number > 0, got {alpha!r}")
    if balance is not None and (not math.isfinite(balance) or balance < 1.0):
        raise PartitionError(f"balance must be >= 1.0 (cap = balance x N / n_clients) or None, got {balance!r}")


def _sample_rows(q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of the row-stochastic matrix ``q``."""
    cum = np.cumsum(q, axis=1)
    u = rng.random(len(q)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), q.shape[1] - 1)


def _assign_capped(q: np.ndarray, rng: np.random.Generator, cap: int) -> np.ndarray:
    """Assign rows in random order, never letting a client exceed ``cap`` notes."""
    n, k = q.shape
    out = np.empty(n, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    open_ = np.ones(k, dtype=bool)
    for i in rng.permutation(n):
        w = q[i] * open_
        total = w.sum()
        w = w / total if total > 0 else open_ / open_.sum()
        choice = int(min(np.searchsorted(np.cumsum(w), rng.random()), k - 1))
        while not open_[choice]:  # guard against rounding at the top of the cumulative sum
            choice = (choice - 1) % k
        out[i] = choice
        counts[choice] += 1
        if counts[choice] >= cap:
            open_[choice] = False
    return out


def _log_dirichlet(rng: np.random.Generator, alpha: float, rows: int, k: int) -> np.ndarray:
    """``log p`` for ``rows`` draws of ``Dir(alpha · 1_k)``, via Gamma draws (finite for tiny alpha)."""
    g = rng.gamma(alpha, size=(rows, k))
    return np.log(np.maximum(g, 1e-300)) - np.log(np.maximum(g.sum(axis=1, keepdims=True), 1e-300))


def _note_probs(y, log_p: np.ndarray, per_note: np.ndarray, combine: str) -> np.ndarray:
    denom = np.maximum(per_note, 1)[:, None]
    if combine == "mixture":
        q = np.asarray(y @ np.exp(log_p)) / denom
    else:
        s = np.asarray(y @ log_p) / denom
        q = np.exp(s - s.max(axis=1, keepdims=True))
    q[per_note == 0] = 1.0  # unlabelled notes: uniform
    return q / q.sum(axis=1, keepdims=True)


def _multilabel(labels: Codes, n_clients: int, alpha: float, cap: int | None, combine: str):
    y, _ = label_matrix(labels)
    per_note = np.asarray(y.sum(axis=1)).ravel()

    def draw(rng: np.random.Generator) -> list[np.ndarray]:
        q = _note_probs(y, _log_dirichlet(rng, alpha, y.shape[1], n_clients), per_note, combine)
        owner = _assign_capped(q, rng, cap) if cap is not None else _sample_rows(q, rng)
        return [np.flatnonzero(owner == k) for k in range(n_clients)]

    return draw


def _primary(labels: Codes, n_clients: int, alpha: float, cap: int | None):
    primary = np.asarray([cs[0] if len(cs) else "" for cs in labels])
    groups = [np.flatnonzero(primary == c) for c in sorted(set(primary.tolist()))]

    def draw(rng: np.random.Generator) -> list[np.ndarray]:
        owner = np.empty(len(primary), dtype=np.int64)
        counts = np.zeros(n_clients, dtype=np.int64)
        for idx in groups:
            p = rng.dirichlet(np.full(n_clients, alpha))
            if cap is not None:  # Flower's self-balancing: full clients take no more codes
                open_ = counts < cap
                p = np.where(open_, p, 0.0)
                p = p / p.sum() if p.sum() > 0 else open_ / open_.sum()
            sizes = sizes_from_proportions(p, len(idx))
            owner[rng.permutation(idx)] = np.repeat(np.arange(n_clients), sizes)
            counts += sizes
        return [np.flatnonzero(owner == k) for k in range(n_clients)]

    return draw


def dirichlet_partition(labels: Codes, n_clients: int, *, alpha: float, seed: int = 0, scheme: str = "product",
                        min_partition_size: int = 1, balance: float | None = None,
                        max_retries: int = 50, unlabelled: str = "error") -> Partition:
    """Label-skewed partition of multi-label notes (see module docstring)."""
    if scheme not in SCHEMES:
        raise PartitionError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if unlabelled not in ("error", "uniform"):
        raise PartitionError(f"unlabelled must be 'error' or 'uniform', got {unlabelled!r}")
    _check_alpha_balance(alpha, balance)
    n = check_common(labels, n_clients, allow_empty_labels=unlabelled == "uniform")
    check_min_size(min_partition_size, n, n_clients)
    cap = None if balance is None else max(math.ceil(balance * n / n_clients), 1)
    draw = (_primary(labels, n_clients, float(alpha), cap) if scheme == "primary"
            else _multilabel(labels, n_clients, float(alpha), cap, scheme))
    clients, attempts = draw_with_retries(draw, np.random.default_rng(seed), min_partition_size=min_partition_size,
                                          max_retries=max_retries, what=f"dirichlet({scheme}, alpha={alpha})")
    params = {"alpha": alpha, "scheme": scheme, "min_partition_size": min_partition_size, "balance": balance,
              "max_retries": max_retries, "unlabelled": unlabelled,
              "n_unlabelled": sum(1 for cs in labels if len(cs) == 0)}
    return Partition(clients=clients, names=[f"client-{k}" for k in range(n_clients)], scheme="dirichlet",
                     params=params, seed=seed, attempts=attempts)
