"""Per-note membership signals of a multi-label head, computed from its logits.

A fedicd head outputs one logit ``z_c`` per ICD code and is trained with
independent sigmoids (HybridLoss = BCE + focal). The signal LiRA reads
(Carlini et al. 2022, "Membership inference attacks from first principles",
§4.2/§5) is the *logit-scaled confidence* ``φ(p) = log(p / (1 - p))`` of the
probability ``p`` the model gives the true label. For a multi-label head the
"true label" is the note's whole code vector ``y``, and under the head's own
model (independent Bernoullis) its probability is

    ``p(y | x) = Π_c σ((2 y_c − 1) z_c)``,  ``log p = −Σ_c softplus(−(2 y_c − 1) z_c)``.

Why this statistic:

* it reduces to Carlini's statistic for a single label (``C = 1`` gives
  ``φ = (2y − 1) z``, the logit of the correct class);
* ``log p`` is a sum of ``C`` per-label terms, so across reference models it is
  close to Gaussian (central limit), and the logit scaling ``φ`` undoes the
  squashing near ``p = 1`` that makes raw confidences (or losses) heavy-tailed
  for well-fitted training notes;
* ``−log p`` is the BCE part of the training loss summed over labels, so the
  loss-threshold baseline (Yeom et al. 2018) is the same quantity without
  per-note calibration, which makes the comparison fair.

RMIA (Zarifzadeh et al. 2024) reads ``p`` itself (:func:`log_label_probability`,
kept in log space to avoid underflow over 30+ labels).

Privacy
-------
Signals are functions of a model's outputs on notes the adversary already holds
(their embeddings and codes); no membership truth enters here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MembershipInputError", "log_label_probability", "scaled_logit", "check_logits"]


class MembershipInputError(ValueError):
    """Membership-attack input of the wrong shape or with NaN/Inf values."""


def check_logits(logits: np.ndarray, labels: np.ndarray, *, name: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)`` as float64 arrays ``[..., n, C]`` / ``[n, C]``; named errors for NaN or shape mismatch."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if y.ndim != 2 or z.ndim < 2 or z.shape[-2:] != y.shape:
        raise MembershipInputError(f"{name} must end in the labels' shape {y.shape} ([n_notes, n_codes]), "
                                   f"got {z.shape}")
    if not np.isfinite(z).all():
        raise MembershipInputError(f"{name} contain {int((~np.isfinite(z)).sum())} NaN/Inf values; a diverged "
                                   "model cannot be scored")
    if not np.isin(y, (0, 1)).all():
        raise MembershipInputError("labels must be 0/1 code indicators")
    return z, y.astype(np.float64)


def log_label_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p(y | x) = −Σ_c softplus(−(2 y_c − 1) z_c)`` per note: shape ``logits.shape[:-1]``."""
    z, y = check_logits(logits, labels)
    margin = (2.0 * y - 1.0) * z
    return -np.logaddexp(0.0, -margin).sum(axis=-1)


def scaled_logit(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's statistic ``φ = log p − log(1 − p)`` with ``p = p(y | x)`` (stable for ``p`` near 0 or 1)."""
    log_p = np.minimum(log_label_probability(logits, labels), -1e-300)
    return log_p - np.log(-np.expm1(log_p))
