"""FedProx [Li et al., 2020]: Flower's server strategy plus the client-side proximal term.

Paper: https://arxiv.org/abs/1812.06127 (Federated Optimization in Heterogeneous Networks).
The server behaves like FedAvg and sends ``mu`` to clients as ``config["proximal-mu"]``;
each client adds :func:`proximal_term` to its local loss.
"""

from __future__ import annotations

import torch
from flwr.serverapp.strategy import FedProx

from fedicd.errors import ShapeError

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

def proximal_term(model: torch.nn.Module, global_params: list[torch.Tensor], mu: float) -> torch.Tensor:
    r"""FedProx proximal penalty :math:`\frac{\mu}{2} \sum_j \lVert w_j - w^t_j \rVert_2^2`.

    This is the *squared* Euclidean norm of Li et al. (2020), Eq. (2), whose
    gradient is :math:`\mu (w - w^t)`. Note that the code example in Flower's
    ``FedProx`` docstring sums the unsquared norms ``(w - w_g).norm(2)``, which is
    a different penalty (its gradient has unit norm per tensor); we follow the paper.

    Parameters
    ----------
    model : torch.nn.Module
        The local model being trained; its ``parameters()`` are compared in order.
    global_params : list[torch.Tensor]
        The received global parameters, in ``model.parameters()`` order, captured
        after loading the global model and before local training. They are
        detached here, so no gradient flows into them.
    mu : float
        Proximal weight, ``>= 0`` (the value of ``config["proximal-mu"]``).

    Returns
    -------
    torch.Tensor
        Scalar tensor to add to the local loss.

    Raises
    ------
    ConfigError
        If ``mu`` is negative or not finite.
    ShapeError
        If ``global_params`` does not match ``model.parameters()`` in count or shapes.
    """
    mu = check_non_negative("mu", mu)
    params = list(model.parameters())
    if len(params) != len(global_params):
        raise ShapeError(
            f"global_params has {len(global_params)} tensors but model.parameters() has {len(params)}"
        )
    total = params[0].new_zeros(()) if params else torch.zeros(())
    for i, (local, reference) in enumerate(zip(params, global_params, strict=True)):
        if local.shape != reference.shape:
            raise ShapeError(
                f"global_params[{i}] has shape {tuple(reference.shape)}, expected {tuple(local.shape)}"
            )
        total = total + (local - reference.detach().to(local.device, local.dtype)).pow(2).sum()
    return 0.5 * mu * total
