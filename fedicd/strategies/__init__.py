"""Federated strategies, one per module, registered by name (FedAvg, FedProx, ..., SCAFFOLD).

Empty until the federated-training issue lands; see README "Layout".
"""

__all__: list[str] = []
