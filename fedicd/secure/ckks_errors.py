"""The named errors of CKKS secure aggregation (:mod:`fedicd.secure.ckks` and its helper modules)."""

from __future__ import annotations

__all__ = [
    "CapacityError",
    "CiphertextError",
    "ClipError",
    "CountError",
    "LayoutError",
    "NonFiniteError",
    "ReplayError",
    "SealLayoutError",
    "SecretKeyError",
    "SecureAggregationError",
]


class SecureAggregationError(ValueError):
    """Base class of the errors raised by :mod:`fedicd.secure.ckks` and its helper modules."""


class CiphertextError(SecureAggregationError):
    """A ciphertext is malformed, corrupted, or was made under another key or other parameters.

    ``update``: the index of the offending update in the list that was checked or added, when known.
    """

    def __init__(self, message: str, *, update: int | None = None):
        super().__init__(message)
        self.update = update


class ReplayError(SecureAggregationError):
    """An update's seed was already added (a replayed or duplicated update)."""


class LayoutError(SecureAggregationError):
    """Updates disagree on their arrays' names/shapes or on their :class:`~fedicd.secure.ckks_params.CkksParams`."""


class CountError(SecureAggregationError):
    """An example count is out of range (n_k < 1, n_k > max_count, or a total of zero)."""


class NonFiniteError(SecureAggregationError):
    """An update holds NaN or infinite values."""


class ClipError(SecureAggregationError):
    """An update holds values outside ``[-clip_range, clip_range]`` and clipping was not asked for."""


class CapacityError(SecureAggregationError):
    """More updates are being added than :attr:`~fedicd.secure.ckks_params.CkksParams.max_clients` allows."""


class SecretKeyError(SecureAggregationError):
    """A secret-key operation (encrypt, decrypt) was given a context without the secret key."""


class SealLayoutError(RuntimeError):
    """This TenSEAL build lays out SEAL's coefficient arrays otherwise than fedicd reads them in memory."""
