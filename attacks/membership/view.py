"""What a membership adversary holds (:class:`MembershipView`), and every attack run on it.

The view holds model *outputs* on notes the adversary already has: the target
head's logits on the candidate notes, its own reference heads' logits on the
same notes, which candidates each reference trained on (the adversary's own
choice), and the candidates' codes. It never holds which candidates the target
trained on: the constructor refuses anything that looks like that truth with
:class:`attacks.threat.ThreatModelError`, and only :mod:`attacks.membership.roc`
(the scoring side) is given it.

:func:`membership_scores` runs LiRA (online, offline; Carlini et al. 2022), RMIA
(online, offline; Zarifzadeh et al. 2024) and the loss-threshold baseline (Yeom
et al. 2018, "Privacy risk in machine learning: analyzing the connection to
overfitting") on one view.

Privacy
-------
Threat model ``membership_inference`` (:data:`attacks.threat.THREAT_MODELS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.membership.lira import NoReferenceModelsError, lira_offline, lira_online
from attacks.membership.rmia import rmia_scores, tune_offline_a
from attacks.membership.signals import MembershipInputError, check_logits, log_label_probability, scaled_logit
from attacks.threat import ThreatModelError

__all__ = ["MembershipView", "membership_scores", "ATTACKS", "FIXED_VARIANCE_BELOW"]

ATTACKS = ("lira_online", "lira_offline", "rmia_online", "rmia_offline")
FIXED_VARIANCE_BELOW = 64
"""Reference models per candidate below which LiRA uses the fixed (global) variance (Carlini et al. §VI-A)."""

_TRUTH_KEYS = frozenset({"members", "is_member", "membership", "member_mask", "target_members", "in_target"})


@dataclass(frozen=True)
class MembershipView:
    """Everything a membership attack may use.

    Parameters
    ----------
    target_logits : array [n, C]
        The target head's logits on the candidate notes.
    labels : array [n, C]
        The candidates' 0/1 codes (the adversary holds labelled notes).
    ref_logits : array [R, n, C]
        Each reference head's logits on the candidates.
    ref_keep : bool array [R, n]
        Which candidates each reference head trained on (the adversary's own split).
    settings : dict
        What the adversary held, for the report (e.g. ``{"observed": "final global model"}``).
    """

    target_logits: np.ndarray
    labels: np.ndarray
    ref_logits: np.ndarray
    ref_keep: np.ndarray
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        leaked = _TRUTH_KEYS & {str(k).lower() for k in self.settings}
        if leaked:
            raise ThreatModelError(f"settings hold {sorted(leaked)}: the target's membership is the answer, which "
                                   "only the scoring side (attacks.membership.roc) gets")
        keep = np.asarray(self.ref_keep)
        if keep.ndim == 1:
            raise ThreatModelError(f"ref_keep has shape {keep.shape}: it must be [n_refs, n] (which candidates "
                                   "each reference trained on); a 1-D mask is the target's membership truth, "
                                   "which an attack never sees")
        z, y = check_logits(self.target_logits, self.labels, name="target_logits")
        refs = np.asarray(self.ref_logits)
        if refs.ndim != 3 or refs.shape[0] == 0:
            raise NoReferenceModelsError(f"ref_logits must be [n_refs >= 1, {y.shape[0]}, {y.shape[1]}], got shape "
                                         f"{refs.shape}: train reference models first")
        r, _ = check_logits(refs, y, name="ref_logits")
        if keep.shape != r.shape[:2] or keep.dtype != bool:
            raise MembershipInputError(f"ref_keep must be a bool [n_refs, n] = {r.shape[:2]} mask, got "
                                       f"{keep.dtype} {keep.shape}")
        for name, value in (("target_logits", z), ("labels", y), ("ref_logits", r), ("ref_keep", keep)):
            object.__setattr__(self, name, value)

    @property
    def n_candidates(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_refs(self) -> int:
        return int(self.ref_logits.shape[0])


def membership_scores(view: MembershipView, *, attacks: tuple[str, ...] = ATTACKS, fix_variance: bool | None = None,
                      offline_a: float | None = None) -> dict[str, np.ndarray]:
    """Scores ``[n]`` (higher = member) of each attack in ``attacks``, plus ``"loss"`` (the Yeom baseline).

    ``fix_variance=None`` fixes LiRA's variance when a candidate has fewer than
    :data:`FIXED_VARIANCE_BELOW` IN (or OUT) references; ``offline_a=None`` tunes RMIA's ``a`` on the
    references (:func:`attacks.membership.rmia.tune_offline_a`).
    """
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown membership attack(s) {unknown}; known: {list(ATTACKS)}")
    phi_t, phi_r = scaled_logit(view.target_logits, view.labels), scaled_logit(view.ref_logits, view.labels)
    lp_t, lp_r = log_label_probability(view.target_logits, view.labels), log_label_probability(view.ref_logits,
                                                                                                 view.labels)
    if fix_variance is None:
        fix_variance = int(view.ref_keep.sum(axis=0).min()) < FIXED_VARIANCE_BELOW
    out: dict[str, np.ndarray] = {"loss": lp_t}
    if "lira_online" in attacks:
        out["lira_online"] = lira_online(phi_t, phi_r, view.ref_keep, fix_variance=fix_variance)
    if "lira_offline" in attacks:
        out["lira_offline"] = lira_offline(phi_t, phi_r, view.ref_keep, fix_variance=fix_variance)
    if "rmia_online" in attacks:
        out["rmia_online"] = rmia_scores(lp_t, lp_r, view.ref_keep, offline=False)
    if "rmia_offline" in attacks:
        a = tune_offline_a(lp_r, view.ref_keep) if offline_a is None else offline_a
        out["rmia_offline"] = rmia_scores(lp_t, lp_r, view.ref_keep, offline=True, a=a)
    return out
