"""FedAvgM [Hsu et al., 2019]: FedAvg with server-side momentum (Flower's strategy).

Paper: https://arxiv.org/abs/1909.06335
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvgM

from ._params import Sampling, check_positive, check_unit_interval_open

__all__ = ["build_fedavgm"]


def build_fedavgm(sampling: Sampling, *, server_lr: float = 1.0, server_momentum: float = 0.9) -> FedAvgM:
    """Build Flower's FedAvgM.

    The server treats ``current - average`` as a pseudo-gradient and takes an SGD
    step with heavy-ball momentum: ``v <- momentum * v + g``, ``x <- x - server_lr * v``.

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings.
    server_lr : float
        Server learning rate, > 0 (Flower's ``server_learning_rate``).
    server_momentum : float
        Server momentum in [0, 1) (Flower's ``server_momentum``).

    Returns
    -------
    FedAvgM
        Its state (``current_arrays``, ``momentum_vector``) is saved by ``strategy_state``.
    """
    return FedAvgM(
        **sampling.kwargs(),
        server_learning_rate=check_positive("server_lr", server_lr),
        server_momentum=check_unit_interval_open("server_momentum", server_momentum),
    )
