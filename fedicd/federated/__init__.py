"""The generic federated engine on Flower: the round loop, the client handlers, staging, checkpoints.

Defences plug in through its interfaces (:mod:`fedicd.federated.rounds`, :mod:`fedicd.federated.local`);
the apps of a planned run and the simulation driver are assembled in :mod:`fedicd.runner`.
"""

from fedicd.federated.config import FedConfig

__all__ = ["FedConfig"]
