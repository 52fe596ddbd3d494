"""Attacks on fedicd's embeddings; each sees only what an adversary would hold.

A separate top-level package. Every attack takes an :class:`attacks.threat.AdversaryView`
(victims' vectors, the public encoder, public auxiliary text) and returns guesses;
:mod:`attacks.scoring` alone reads the victims' text, to score them. Reports share
one format (:class:`attacks.report.AttackReport`: metrics with bootstrap 95 % CIs,
settings, examples, baselines).

Attacks: bag-of-words inversion (:mod:`attacks.bow`), generative inversion with
optional re-embedding correction (:mod:`attacks.generative`), retrieval inversion
(:mod:`attacks.retrieval`), attribute inference (:mod:`attacks.attribute`); defences
to measure them against in :mod:`attacks.defences`. A new kind of attack declares
what its adversary holds with :func:`attacks.threat.register_threat_model`.
fedicd's glue (its data, the public encoder, the attack registry behind the
``fedicd attack`` CLI) lives in ``fedicd.attack_runs``; this package never
imports fedicd.
"""

from attacks.report import AttackReport
from attacks.threat import THREAT_MODELS, AdversaryView, ThreatModelError, register_threat_model

__all__ = ["THREAT_MODELS", "AdversaryView", "AttackReport", "ThreatModelError", "register_threat_model"]
