"""Membership inference on a trained head: LiRA and RMIA with reference heads, scored as ROC / TPR at low FPR.

* :mod:`~attacks.membership.signals`: the per-note statistic of a multi-label head;
* :mod:`~attacks.membership.view`: :class:`MembershipView` (what the adversary holds) and
  :func:`membership_scores` (every attack on one view);
* :mod:`~attacks.membership.lira`: LiRA online/offline (Carlini et al. 2022);
* :mod:`~attacks.membership.rmia`: RMIA online/offline (Zarifzadeh et al. 2024);
* :mod:`~attacks.membership.roc`: the scoring side (AUC, TPR at 0.1 % / 1 % FPR, bootstrap intervals).

Training reference heads needs fedicd's recipe; that glue is :mod:`fedicd.attack_runs.membership`.
"""

from attacks.membership.lira import NoReferenceModelsError, lira_offline, lira_online, reference_keep
from attacks.membership.rmia import rmia_scores, tune_offline_a
from attacks.membership.roc import auc_score, membership_metrics, roc_curve, tpr_at_fpr
from attacks.membership.signals import MembershipInputError, log_label_probability, scaled_logit
from attacks.membership.view import ATTACKS, MembershipView, membership_scores

__all__ = ["ATTACKS", "MembershipInputError", "MembershipView", "NoReferenceModelsError", "auc_score",
           "lira_offline", "lira_online", "log_label_probability", "membership_metrics", "membership_scores",
           "reference_keep", "rmia_scores", "roc_curve", "scaled_logit", "tpr_at_fpr", "tune_offline_a"]
