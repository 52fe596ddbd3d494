"""Fault injection for robustness studies: crashing clients and poisoned updates.

Researchers configure it (``[federated] fault_clients``); the server must
report a crashed client and reject a NaN or wrongly shaped update without
averaging it in (see :class:`fedicd.strategies.validation.UpdateValidator`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["should_fail", "inject_fault", "InjectedClientFault"]


class InjectedClientFault(RuntimeError):
    """Raised by a client configured to crash."""


def should_fail(fed, partition_id: int, server_round: int) -> bool:
    """Whether client ``partition_id`` misbehaves in ``server_round`` under ``fed`` (a FedConfig)."""
    rounds = fed.fault_rounds or ()
    return partition_id in (fed.fault_clients or ()) and (not rounds or server_round in rounds)


def inject_fault(kind: str, arrays: dict[str, np.ndarray], partition_id: int) -> dict[str, np.ndarray]:
    """Crash (``raise``) or return poisoned copies of ``arrays`` (``nan``: first array NaN; ``shape``: one row cut)."""
    if kind == "raise":
        raise InjectedClientFault(f"client {partition_id}: injected crash (federated.fault_kind = 'raise')")
    first = next(iter(arrays))
    poisoned = dict(arrays)
    if kind == "nan":
        poisoned[first] = np.full_like(arrays[first], np.nan)
    elif kind == "shape":
        poisoned[first] = arrays[first][:-1]
    else:
        raise ValueError(f"unknown fault kind {kind!r}; allowed 'raise', 'nan', 'shape'")
    return poisoned
