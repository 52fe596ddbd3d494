"""FedAdagrad [Reddi et al., 2021]: adaptive server optimiser (Flower's strategy).

Paper: https://arxiv.org/abs/2003.00295
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdagrad

from ._params import Sampling, check_positive

__all__ = ["build_fedadagrad"]


def build_fedadagrad(sampling: Sampling, *, eta: float = 1e-2, eta_l: float = 1e-3, tau: float = 1e-3) -> FedAdagrad:
    """Build Flower's FedAdagrad (``beta_1 = 0``; no ``beta_2``).

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings.
    eta : float
        Server learning rate, > 0.
    eta_l : float
        Client learning rate, > 0. Flower only stores it; clients use their own optimiser.
    tau : float
        Adaptivity (epsilon) term, > 0.

    Returns
    -------
    FedAdagrad
        Its accumulators (``m_t``, ``v_t``) and ``current_arrays`` are saved by ``strategy_state``.
    """
    return FedAdagrad(
        **sampling.kwargs(),
        eta=check_positive("eta", eta),
        eta_l=check_positive("eta_l", eta_l),
        tau=check_positive("tau", tau),
    )
