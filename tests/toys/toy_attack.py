"""A toy attack, added in this one file: nearest-neighbour retrieval of each victim's note among public notes.

Touched to add it: this file only (threat model and registration at the end). Its
adversary sees an :class:`attacks.AdversaryView` (the victims' vectors and public
notes with their vectors); only the scoring reads the victims' text.
"""

from __future__ import annotations

from attacks import AdversaryView, AttackReport, register_threat_model
from attacks.retrieval import rank_candidates
from attacks.scoring import summarize
from fedicd.attack_runs import Attack, register_attack

NAME = "toy_nearest"


def run_toy(d, defend, options) -> AttackReport:
    view = AdversaryView(target_embeddings=defend(d.vectors["test"]), aux_texts=d.aux_texts,
                         aux_embeddings=defend(d.aux_vectors))
    nearest = rank_candidates(view, view.aux_embeddings, k=1)[:, 0]  # the adversary's guesses
    guesses = [view.aux_texts[j] for j in nearest]
    hits = [float(g == t) for g, t in zip(guesses, d.texts["test"])]  # scoring: the victims' text
    chance = [1.0 / max(1, len(view.aux_texts))] * len(hits)
    return AttackReport(NAME, summarize({"hit@1": hits}, seed=d.cfg.seed), settings={"victims": view.n_targets},
                        baselines=summarize({"hit@1": chance}, seed=d.cfg.seed))


register_threat_model(NAME, "Holds victims' embeddings and public notes with their embeddings; wants the public "
                            "note nearest to each victim's (a near-duplicate of the victim's text).")
SPEC = register_attack(Attack(NAME, "invert", NAME, run_toy, leakage="hit@1"), replace=True)
