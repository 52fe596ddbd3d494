"""The named errors of threshold CKKS (:mod:`fedicd.secure.threshold`).

Corrupted, wrong-key and replayed ciphertexts reuse :class:`~fedicd.secure.ckks_errors.CiphertextError`, as the
shared-key CKKS path does; everything else specific to the multiparty protocol is named here.
"""

from __future__ import annotations

from fedicd.errors import ConfigError
from fedicd.secure.ckks_errors import CiphertextError, SecureAggregationError

__all__ = ["ThresholdError", "OpenFHEUnavailableError", "KeyGenerationError", "ContextMismatchError", "QuorumError",
           "ThresholdConfigError", "CiphertextError", "INSTALL_HINT"]

INSTALL_HINT = ("install it with `pip install 'fedicd[threshold]'` where a wheel fits this interpreter (openfhe "
                "1.6's PyPI wheels carry one CPython extension each: 3.10 in the '*.22.4' releases, 3.12 in "
                "'*.24.4', which needs glibc 2.38 and GLIBCXX_3.4.32), or build OpenFHE and openfhe-python (1.6 or "
                "later for t-of-n thresholds) from source for this interpreter; fedicd's Flower needs CPython 3.11 "
                "or later")


class ThresholdError(SecureAggregationError):
    """Base class of the errors of threshold (multiparty) CKKS."""


class OpenFHEUnavailableError(ThresholdError, ImportError):
    """The optional ``openfhe`` package is missing, or was built for another Python than this one."""


class KeyGenerationError(ThresholdError):
    """A party holds no key share: it never ran the joint key generation (or lost its state folder)."""


class ContextMismatchError(ThresholdError):
    """A ciphertext, key or partial decryption was made under other parameters (another crypto context)."""


class QuorumError(ThresholdError):
    """Too few partial decryptions arrived to decrypt the aggregate: the round ends, the model unchanged."""


class ThresholdConfigError(ConfigError):
    """Threshold-CKKS settings that cannot work with this federation (e.g. a threshold above the clients)."""
