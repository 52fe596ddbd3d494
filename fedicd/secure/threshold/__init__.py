"""Threshold (multiparty) CKKS on OpenFHE: no party ever holds the whole secret key.

The shared-key CKKS path (:mod:`fedicd.secure.ckks`) gives every client the one secret key, so the server plus
any single client can decrypt every update. Here the clients generate a joint key among themselves (each keeps
its share s_i; the joint public key is for s = Σ s_i), encrypt their updates under it, and the new global model
is decrypted only from the key holders' partial decryptions, and sent to everyone.

Torch-free (numpy, OpenFHE, ``cryptography`` for sealing key shares); OpenFHE is imported lazily
(:func:`~fedicd.secure.threshold.backend.load_openfhe`). Modules:

* :mod:`~fedicd.secure.threshold.params` — parameters and the error bound that makes integer sums exact;
* :mod:`~fedicd.secure.threshold.party` — a key holder (client): key generation, encryption, partial decryption;
* :mod:`~fedicd.secure.threshold.server` — the server: key chain, addition, fusion;
* :mod:`~fedicd.secure.threshold.packing`, :mod:`~fedicd.secure.threshold.envelope`,
  :mod:`~fedicd.secure.threshold.sealing`, :mod:`~fedicd.secure.threshold.parallel` — their helpers;
* :mod:`~fedicd.secure.threshold.errors` — the named errors.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ThresholdParams", "ThresholdParty", "ThresholdServer", "Layout", "load_openfhe", "openfhe_available",
           "precision_bound", "check_threshold"]

_WHERE = {"ThresholdParams": "params", "precision_bound": "params", "ThresholdParty": "party",
          "ThresholdServer": "server", "check_threshold": "server", "Layout": "packing", "load_openfhe": "backend",
          "openfhe_available": "backend"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fedicd.secure.threshold.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fedicd.secure.threshold' has no attribute {name!r}")
