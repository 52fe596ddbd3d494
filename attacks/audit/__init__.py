"""Empirical DP audits (one training run, Steinke, Nasr & Jagielski 2023): the bound and the canaries."""

from attacks.audit.canaries import (CanaryDirections, canary_rows, cosine_scores, inclusion_coins, loss_scores,
                                    step_likelihood_scores, sum_scores)
from attacks.audit.one_run import (AuditResult, CanaryCountError, audit_scores, default_grid, epsilon_cap,
                                   epsilon_lower_bound, guess_counts, p_value)

__all__ = ["AuditResult", "CanaryCountError", "CanaryDirections", "audit_scores", "canary_rows", "cosine_scores",
           "default_grid", "epsilon_cap", "epsilon_lower_bound", "guess_counts", "inclusion_coins", "loss_scores",
           "p_value", "step_likelihood_scores", "sum_scores"]
