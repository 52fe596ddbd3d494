"""A toy strategy, added in this one file: FedAvg whose server step is scaled by ``server_lr``.

Touched to add it: this file only (the registration is the last line). It reuses a
registered hyper-parameter (``server_lr``, default from ``FedConfig``); a new one would
also need a ``FedConfig`` field.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from fedicd.strategies import StrategySpec, register_strategy
from fedicd.strategies._params import Sampling

NAME = "toy_avg"


class ToyAvg(FedAvg):
    """FedAvg that remembers its server learning rate (the aggregate itself is FedAvg's)."""

    def __init__(self, *, server_lr: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.server_lr = server_lr


def build_toy(sampling: Sampling, *, server_lr: float) -> ToyAvg:
    return ToyAvg(server_lr=server_lr, **sampling.kwargs())


SPEC = register_strategy(StrategySpec(NAME, build_toy, ("server_lr",), secure_aggregation=("secagg+",)),
                         replace=True)
