"""Federated training on Flower: ClientApp, ServerApp, simulation, checkpoints.

:func:`run_federated` runs a whole experiment; the apps from
:func:`make_client_app` / :func:`make_server_app` also run unchanged on
Flower's deployment engine (``run-dir`` in the run config).
"""

from fedicd.federated.config import FedConfig

__all__ = ["FedConfig", "run_federated", "make_client_app", "make_server_app"]


def __getattr__(name: str):
    if name == "run_federated":
        from fedicd.federated.simulation import run_federated
        return run_federated
    if name in ("make_client_app", "make_server_app"):
        import importlib
        module = "fedicd.federated.client" if name == "make_client_app" else "fedicd.federated.server"
        return getattr(importlib.import_module(module), name)
    raise AttributeError(name)
