"""FedAdam [Reddi et al., 2021]: adaptive server optimiser (Flower's strategy).

Paper: https://arxiv.org/abs/2003.00295
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam

from ._params import Sampling, check_positive, check_unit_interval_open

__all__ = ["build_fedadam", "build_adaptive"]


def build_fedadam(sampling: Sampling, **params: float) -> FedAdam:
    """Build Flower's FedAdam (parameters as :func:`build_adaptive`)."""
    return build_adaptive(FedAdam, sampling, **params)


def build_adaptive(
    cls: type,
    sampling: Sampling,
    *,
    eta: float = 1e-2,
    eta_l: float = 1e-3,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    tau: float = 1e-3,
):
    """Build one of Flower's adaptive server optimisers (FedAdam, FedYogi) with checked parameters.

    Parameters
    ----------
    sampling : Sampling
        Node-sampling settings.
    eta : float
        Server learning rate, > 0.
    eta_l : float
        Client learning rate, > 0. Flower only stores it; clients use their own optimiser.
    beta_1 : float
        First-moment decay in [0, 1).
    beta_2 : float
        Second-moment decay in [0, 1).
    tau : float
        Adaptivity (epsilon) term, > 0.

    Returns
    -------
    FedAdam or FedYogi
        Its moments (m_t, v_t) and current_arrays are saved by strategy_state.
    """
    return cls(
        **sampling.kwargs(),
        eta=check_positive("eta", eta),
        eta_l=check_positive("eta_l", eta_l),
        beta_1=check_unit_interval_open("beta_1", beta_1),
        beta_2=check_unit_interval_open("beta_2", beta_2),
        tau=check_positive("tau", tau),
    )
