"""Differential privacy (Opacus DP-SGD, client-level DP) and secure aggregation (CKKS, SecAgg+).

Empty until the privacy issues land; see README "Layout".
"""

__all__: list[str] = []
