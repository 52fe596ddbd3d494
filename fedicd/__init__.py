"""fedicd: federated ICD coding over frozen text embeddings, built to be attacked.

The top-level verbs are imported lazily so that ``import fedicd`` stays cheap::

    from fedicd import load_notes, embed_texts, train_central, run_experiment
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_VERBS = {
    "load_notes": "fedicd.data.sources",
    "embed_texts": "fedicd.embedding",
    "train_central": "fedicd.train",
    "run_experiment": "fedicd.experiment",
    "load_config": "fedicd.config",
}

__all__ = ["__version__", *_VERBS]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'fedicd' has no attribute {name!r}")
