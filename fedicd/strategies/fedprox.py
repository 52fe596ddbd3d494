"""FedProx [Li et al., 2020]: Flower's server strategy plus the client-side proximal term.

Paper: https://arxiv.org/abs/1812.06127 (Federated Optimization in Heterogeneous Networks).
The server behaves like FedAvg and sends ``mu`` to clients as ``config["proximal-mu"]``;
each client adds :func:`fedicd.local_training.proximal_term` to its local loss.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedProx

from fedicd.local_training import proximal_term

from ._params import Sampling, check_non_negative

__all__ = ["MU_CONFIG_KEY", "build_fedprox", "proximal_term"]

MU_CONFIG_KEY = "proximal-mu"
"""Key under which Flower's FedProx puts ``mu`` in the train ConfigRecord."""


def build_fedprox(sampling: Sampling, *, proximal_mu: float = 0.01) -> FedProx:
    """Build Flower's FedProx.

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings.
    proximal_mu : float
        Proximal weight ``mu >= 0``; 0 makes FedProx identical to FedAvg.

    Returns
    -------
    FedProx
        Stateless server strategy that adds ``"proximal-mu"`` to every train config.
    """
    return FedProx(**sampling.kwargs(), proximal_mu=check_non_negative("proximal_mu", proximal_mu))
