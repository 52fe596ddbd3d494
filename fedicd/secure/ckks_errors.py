"""The named errors of CKKS secure aggregation (:mod:`fedicd.secure.ckks` and its helper modules)."""

from __future__ import annotations

__all__ = [
    "CapacityError",
    "CiphertextError",
    "ClipError",
    "CountError",
    "LayoutError",
    "NonFiniteError",
    "SecretKeyError",
    "SecureAggregationError",
]


class SecureAggregationError(ValueError):
    """Base class of the errors raised by :mod:`fedicd.secure.ckks` and its helper modules."""


class CiphertextError(SecureAggregationError):
    """A ciphertext is malformed, corrupted, or was made under another key or other parameters."""


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
