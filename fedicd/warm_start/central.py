"""The description warm start of a central run's head.

A central run with ``[warm_start] init = "descriptions"`` starts its head as the zero-shot coder of
:mod:`fedicd.warm_start.zero_shot` (heads in :data:`~fedicd.warm_start.config.DESCRIPTION_HEADS`), exactly as a
federated run's round-0 model (:mod:`fedicd.warm_start.stage`). The descriptions are embedded once, when the
initialiser is made (so a missing description or a head without a zero-shot form fails before training); the
returned callable writes the rows into the freshly built head that :func:`fedicd.train.train_central` passes it and
returns the record ``results.json["warm_start"]`` holds. Public pre-training (``warm_start.public_config``) warm-starts
federated runs only: refused here.
"""

from __future__ import annotations

from typing import Callable, Sequence

from sklearn.preprocessing import StandardScaler
from torch import nn

from fedicd.config import ExperimentConfig
from fedicd.errors import ConfigError
from fedicd.warm_start.descriptions import description_vectors
from fedicd.warm_start.zero_shot import apply_descriptions, check_description_head

__all__ = ["central_initialiser"]


def central_initialiser(cfg: ExperimentConfig, scaler: StandardScaler, labels: Sequence[str], *,
                        encoder=None) -> Callable[[nn.Module], dict] | None:
    """The initialiser of a central run's head, or None when ``cfg.warm_start.init == "random"``.

    Parameters
    ----------
    cfg:
        The run's config (its ``warm_start``, ``train``, ``embedding``, ``data.label_kind`` and ``cache_dir``).
    scaler:
        The run's fitted scaler (for chunk-sequence heads fitted on chunk rows): descriptions pass through it.
    labels:
        The run's label space, in output order.
    encoder:
        An encoder already loaded for ``cfg.embedding`` (tests pass a fake one); None loads it.

    Returns
    -------
    callable or None
        ``initialise(model) -> record``: writes the description rows into ``model`` (in place) and returns
        ``{"method": "descriptions", "described": n, "labels": L, "missing": [codes], ...}``.

    Raises
    ------
    ConfigError
        ``warm_start.public_config`` is set (federated runs only), the head has no zero-shot form, or no label
        has a description.
    """
    ws = cfg.warm_start
    if ws.public_config:
        raise ConfigError(f"warm_start.public_config = {ws.public_config!r} pre-trains federated runs only (train.mode "
                          "= 'federated'); this run is central: unset warm_start.public_config (warm_start.init = "
                          "'descriptions' applies to central runs)")
    if ws.init == "random":
        return None
    check_description_head(cfg.train)
    described = description_vectors(labels, cfg.data.label_kind, cfg.embedding, scaler, cache_dir=cfg.cache_dir,
                                     encoder=encoder)

    def initialise(model: nn.Module) -> dict:
        return {"method": "descriptions", **apply_descriptions(model, cfg.train, described, ws)}

    return initialise
