"""Update inversion: a federated server recovers a client's input embeddings from its update, then their text.

Threat model: :data:`attacks.threat.THREAT_MODELS` ``"update_inversion"``. The
server's view is an :class:`UpdateView`; :func:`recover_inputs` is the analytic
attack on the first linear layer (exact for a unit that one sample activates),
:func:`craft_trap` the malicious server's trap weights, and
:mod:`attacks.update_inversion.chain` hands the recovered vectors to the
embedding inverters and scores them.
"""

from attacks.update_inversion.analytic import (AnalyticConfig, Recovery, deduplicate, estimate_scaler,
                                               recover_inputs, to_raw)
from attacks.update_inversion.chain import (NameGuesser, candidate_view, invert_candidates, match_to_truth, raw_candidates,
                                            recovery_scores, score_views, text_scores)
from attacks.update_inversion.trap import TrapConfig, activation_rate, craft_trap
from attacks.update_inversion.view import (EmptyUpdateError, LocalRecipe, NonFiniteUpdateError, UpdateShapeError,
                                           UpdateView)

__all__ = ["AnalyticConfig", "Recovery", "deduplicate", "estimate_scaler", "recover_inputs", "to_raw",
           "candidate_view", "invert_candidates", "match_to_truth", "raw_candidates", "recovery_scores",
           "text_scores", "score_views", "NameGuesser", "TrapConfig", "activation_rate", "craft_trap", "EmptyUpdateError", "LocalRecipe",
           "NonFiniteUpdateError", "UpdateShapeError", "UpdateView"]
