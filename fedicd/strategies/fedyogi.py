"""FedYogi [Reddi et al., 2021]: adaptive server optimiser (Flower's strategy).

Paper: https://arxiv.org/abs/2003.00295. Same parameters as FedAdam; Yogi's
second-moment update grows more slowly when gradients are sparse.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedYogi

from ._params import Sampling
from .fedadam import build_adaptive

__all__ = ["build_fedyogi"]


def build_fedyogi(sampling: Sampling, **params: float) -> FedYogi:
    """Build Flower's FedYogi (parameters as :func:`fedicd.strategies.fedadam.build_adaptive`)."""
    return build_adaptive(FedYogi, sampling, **params)
