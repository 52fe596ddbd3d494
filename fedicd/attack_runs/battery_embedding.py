"""The embedding attacks of the battery: bag-of-words inversion and attribute inference on a run's test notes.

These are fedicd's existing attacks on the embeddings (:mod:`fedicd.attack_runs.reports`),
pointed at what a finished federated run staged: the test notes' vectors as
the run holds them (after ``privacy.embedding_noise``, when the run used it,
and before the shared scaler), so that the embedding defence of a run shows in
the battery's leakage. The adversary's auxiliary material is the config's
public material (:func:`fedicd.attack_runs.data.load_attack_data`); under
embedding noise it is *adaptive*: it knows the public mechanism and noises its
auxiliary vectors alike (its own copy, :func:`attacks.defences.gaussian_noise`,
with its own seed).
"""

from __future__ import annotations

import logging

import numpy as np

from attacks import AdversaryView, AttackReport
from attacks.bow import BowConfig
from attacks.defences import gaussian_noise
from fedicd.errors import ConfigError

from .data import AttackData, attribute_values
from .federation import FederationRun
from .reports import bow_report, column_report

__all__ = ["battery_embedding_inversion", "battery_attribute", "run_attack_data", "embedding_noise_of",
           "QUICK_VICTIMS"]

log = logging.getLogger(__name__)

QUICK_VICTIMS = 64  # quick=True: at most this many test notes are attacked


def embedding_noise_of(run: FederationRun) -> float:
    """The run's ``privacy.embedding_noise`` σ (0 for runs staged before the key existed)."""
    return float((run.plan.config.get("privacy") or {}).get("embedding_noise", 0.0) or 0.0)


def run_attack_data(run: FederationRun) -> AttackData:
    """The run's config's notes as the attacks see them (texts, public auxiliary material, planted names).

    Loads the public encoder and embeds the notes (cached): the expensive part of the embedding attacks.
    """
    from fedicd.config import config_from_dict

    from .data import load_attack_data

    return load_attack_data(config_from_dict(run.plan.config))


def _check_alignment(run: FederationRun, data: AttackData) -> None:
    n_run, n_data = run.features["x_test"].shape[0], len(data.texts["test"])
    if n_run != n_data:
        raise ValueError(f"the run's test split holds {n_run} notes but its config's test split {n_data}; "
                         f"was {run.run_dir} staged from another corpus?")


def _adversary_aux(run: FederationRun, vectors: np.ndarray, seed: int) -> np.ndarray:
    sigma = embedding_noise_of(run)
    return gaussian_noise(vectors, sigma, seed=seed + 1) if sigma > 0 else np.asarray(vectors, np.float32)


def _settings(run: FederationRun, n_victims: int) -> dict:
    sigma = embedding_noise_of(run)
    return {"attacked": "the run's test notes as staged (after embedding noise, before the scaler)",
            "victims_attacked": n_victims, "embedding_noise": sigma,
            "adversary": "adaptive: noises its auxiliary vectors alike" if sigma > 0 else "no defence to adapt to"}


def battery_embedding_inversion(run: FederationRun, *, seed: int = 0, quick: bool = False,
                                data: AttackData | None = None) -> list[AttackReport]:
    """Bag-of-words inversion of the run's test-note embeddings, scored by word F1 (and planted names).

    Parameters
    ----------
    run : FederationRun
        A finished federated run.
    seed : int
        Seed of the inverter and of the adversary's noise.
    quick : bool
        At most :data:`QUICK_VICTIMS` victims and a smaller inverter (seconds).
    data : AttackData, optional
        The run's notes (:func:`run_attack_data`); loaded when omitted.

    Notes
    -----
    Threat model (``bow_inversion``): the adversary holds the victims' vectors
    and public auxiliary notes it can embed. Song & Raghunathan (CCS 2020).
    """
    data = data if data is not None else run_attack_data(run)
    _check_alignment(run, data)
    n = min(len(data.texts["test"]), QUICK_VICTIMS) if quick else len(data.texts["test"])
    target = run.unscale(run.features["x_test"][:n])
    view = AdversaryView(target_embeddings=target, aux_texts=data.aux_texts,
                         aux_embeddings=_adversary_aux(run, data.aux_vectors, seed))
    config = BowConfig(seed=seed, epochs=10, hidden=256, max_words=800) if quick else BowConfig(seed=seed)
    ids = data.identifiers[:n] if data.identifiers is not None else None
    report = bow_report(view, data.texts["test"][:n], identifiers=ids, seed=seed, config=config)
    report.settings.update(_settings(run, n))
    return [report]


def battery_attribute(run: FederationRun, *, seed: int = 0, quick: bool = False, data: AttackData | None = None,
                      attribute: str = "female", n_labelled: int = 200) -> list[AttackReport]:
    """Attribute inference (default ``female``) from the run's test-note embeddings, scored by AUC.

    The adversary's labelled notes are ``n_labelled`` of the run's training notes
    (their staged vectors); see :func:`fedicd.attack_runs.reports.column_report`.
    An attribute that cannot be scored on these notes raises
    :class:`fedicd.errors.ConfigError` naming it (the battery then records it as skipped).
    """
    data = data if data is not None else run_attack_data(run)
    _check_alignment(run, data)
    try:
        key, values = attribute_values(data, attribute)
    except ValueError as exc:
        raise ConfigError(f"attribute {attribute!r}: {exc}") from exc
    n = min(len(data.texts["test"]), QUICK_VICTIMS) if quick else len(data.texts["test"])
    aux = run.unscale(run.features["x_train"])
    view = AdversaryView(target_embeddings=run.unscale(run.features["x_test"][:n]), aux_texts=data.texts["train"],
                         aux_embeddings=aux)
    try:
        report = column_report(view, values["train"], values["test"][:n], name=key,
                               n_labelled=min(n_labelled, 100) if quick else n_labelled, seed=seed)
    except ValueError as exc:
        raise ConfigError(f"attribute {key!r} cannot be scored on this run's notes: {exc}") from exc
    report.settings.update({**_settings(run, n), "adversary": "labels some of the run's training notes (their staged "
                                                              "vectors, defended like the victims')"})
    return [report]
