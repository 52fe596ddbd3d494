"""Attacks on fedicd's embeddings; each sees only what an adversary would hold.

A separate top-level package. Every attack takes an :class:`attacks.threat.AdversaryView`
(victims' vectors, the public encoder, public auxiliary text) and returns guesses;
:mod:`attacks.scoring` alone reads the victims' text, to score them. Reports share
one format (:class:`attacks.report.AttackReport`: metrics with bootstrap 95 % CIs,
settings, examples, baselines).

Implemented: bag-of-words inversion (:mod:`attacks.bow`), retrieval inversion
(:mod:`attacks.retrieval`). In progress (issue 7): generative inversion, attribute
inference, defences, the CLI and the CodiEsp/synthetic report.
"""

from attacks.report import AttackReport
from attacks.threat import THREAT_MODELS, AdversaryView, ThreatModelError

__all__ = ["THREAT_MODELS", "AdversaryView", "AttackReport", "ThreatModelError"]
