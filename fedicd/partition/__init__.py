"""Partitioners of coded notes into federated clients (IID, Dirichlet, quantity, natural).

Empty until the partitioning issue lands; see README "Layout".
"""

__all__: list[str] = []
