"""FedAvg [McMahan et al., 2017]: Flower's strategy with checked sampling parameters.

Paper: https://arxiv.org/abs/1602.05629
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg

from ._params import Sampling

__all__ = ["build_fedavg"]


def build_fedavg(sampling: Sampling) -> FedAvg:
    """Build Flower's FedAvg, averaging client arrays weighted by ``"num-examples"``.

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings (fractions and minimum node counts).

    Returns
    -------
    FedAvg
        Stateless server strategy; ``strategy_state`` returns ``{}`` for it.
    """
    return FedAvg(**sampling.kwargs())
