"""What an adversary holds, as types: the boundary every attack is written against.

An attack function takes an :class:`AdversaryView` and nothing else about the
victims: their *embeddings* (float vectors, e.g. intercepted on the way to a
federated client or leaked from a vector store), a *public encoder* (the same
frozen, public model fedicd uses) and *public auxiliary text* (e.g. CodiEsp's
background cases). Victim text only enters :mod:`attacks.scoring`, after the
attack has produced its guesses. The constructor refuses text where vectors
belong, so an attack cannot be handed the answer by mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["AdversaryView", "ThreatModelError", "THREAT_MODELS", "register_threat_model"]

Encoder = Callable[[Sequence[str]], np.ndarray]

THREAT_MODELS = {
    "bow_inversion": "Holds victims' note embeddings, the public encoder and public auxiliary notes; wants the "
                     "set of words (clinical terms, names) in each victim note.",
    "generative_inversion": "Holds victims' embeddings (here of 32-token note prefixes), the public encoder and "
                            "its tokenizer, and public auxiliary notes; trains a decoder from vector to text on "
                            "auxiliary spans and wants each victim's text verbatim (names, MRN, dates, diagnoses).",
    "retrieval_inversion": "Holds victims' embeddings and a candidate pool of texts it guesses the victims wrote "
                           "(embedded with the public encoder); wants to find each victim's text in the pool.",
    "attribute_inference": "Holds victims' embeddings and a few public notes labelled with a sensitive attribute "
                           "(e.g. a mental-health or HIV code, pregnancy, sex words, site); wants that attribute "
                           "for each victim.",
    "update_inversion": "A curious (passive) or malicious (trap-weights) federated server: holds the global weights "
                        "it sent, the weights a client returned (or, under secure aggregation, only the sum over "
                        "the round's clients), the head's architecture, fedicd's shared StandardScaler statistics "
                        "(or its own estimate from public notes), the public encoder and public auxiliary notes; "
                        "wants the client's input embeddings, then their words, names and diagnoses.",
    "membership_inference": "Holds a trained head's weights (the final global model, or one client's returned "
                            "weights), the training recipe, and a population of labelled note embeddings drawn "
                            "from the same distribution; trains reference heads and wants to tell, for each "
                            "target note, whether it was in the training data.",
    "dp_audit": "An auditor who inserts m canaries, each included with probability 1/2, into one DP training run "
                "and observes the final model (black-box) or every update the server receives (white-box); "
                "guesses which canaries were included and turns the number of correct guesses into an empirical "
                "lower bound on epsilon at 95 % confidence (Steinke, Nasr & Jagielski 2023).",
}


def register_threat_model(attack: str, description: str) -> None:
    """Declare a new kind of attack report: what its adversary holds and what it wants.

    :class:`attacks.report.AttackReport` refuses report kinds without a threat model.
    """
    if not description.strip():
        raise ValueError(f"attack {attack!r}: describe its threat model (what the adversary holds and wants)")
    if THREAT_MODELS.get(attack, description) != description:
        raise ValueError(f"attack {attack!r} already has a different threat model")
    THREAT_MODELS[attack] = description


class ThreatModelError(TypeError):
    """An attack was given something outside its threat model (e.g. victim text)."""


@dataclass(frozen=True)
class AdversaryView:
    """Everything an attack may use.

    Parameters
    ----------
    target_embeddings : array [n_victims, dim]
        The victims' vectors (float); never their text.
    aux_texts : sequence of str
        Public auxiliary text the adversary collected itself.
    encoder : callable, optional
        The public encoder: ``encoder(texts) -> array [len(texts), dim]``.
    aux_embeddings : array, optional
        ``encoder(aux_texts)`` if already computed (checked for shape).
    """

    target_embeddings: np.ndarray
    aux_texts: tuple[str, ...]
    encoder: Encoder | None = None
    aux_embeddings: np.ndarray | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.target_embeddings
        if isinstance(t, (str, bytes)) or (isinstance(t, Sequence) and t and isinstance(t[0], str)):
            raise ThreatModelError("target_embeddings must be vectors, got text: an attack never sees victim text")
        t = np.asarray(t)
        if t.dtype.kind not in "fiu" or t.ndim != 2:
            raise ThreatModelError(f"target_embeddings must be a 2-D numeric array [n, dim], got dtype {t.dtype} "
                                   f"and shape {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError("target_embeddings contain NaN/Inf")
        object.__setattr__(self, "target_embeddings", t.astype(np.float32, copy=False))
        aux = tuple(self.aux_texts)
        if not all(isinstance(a, str) for a in aux):
            raise TypeError("aux_texts must be strings")
        object.__setattr__(self, "aux_texts", aux)
        if self.aux_embeddings is None:
            if self.encoder is None:
                raise ValueError("give the public encoder or the auxiliary texts' embeddings")
            object.__setattr__(self, "aux_embeddings", np.asarray(self.encoder(list(aux)), dtype=np.float32))
        a = np.asarray(self.aux_embeddings, dtype=np.float32)
        if a.shape != (len(aux), t.shape[1]):
            raise ValueError(f"aux_embeddings must have shape ({len(aux)}, {t.shape[1]}), got {a.shape}")
        object.__setattr__(self, "aux_embeddings", a)

    @property
    def n_targets(self) -> int:
        return int(self.target_embeddings.shape[0])
