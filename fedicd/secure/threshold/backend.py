"""The one place that imports OpenFHE, lazily, and builds the CKKS crypto context of a parameter set.

``openfhe`` is optional (``pip install 'fedicd[threshold]'``) and its PyPI wheels carry a single CPython
extension each, so "installed but compiled for another Python" is the common failure: :func:`load_openfhe` tells
the two cases apart and names which interpreter the extension was built for.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from fedicd.secure.threshold.errors import INSTALL_HINT, OpenFHEUnavailableError

__all__ = ["load_openfhe", "openfhe_available", "crypto_context", "require_shamir", "dropped_prime"]


def _built_for(package_dir: Path) -> str:
    """The CPython tags of the extension modules in ``package_dir`` (e.g. "cpython-312"), or "unknown"."""
    tags = sorted({m.group(1) for f in package_dir.glob("openfhe*.so")
                   if (m := re.search(r"\.(cpython-\d+)", f.name))})
    return ", ".join(tags) or "unknown"


@functools.lru_cache(maxsize=1)
def load_openfhe():
    """The ``openfhe`` module; :class:`OpenFHEUnavailableError` (with the install hint) when it cannot be used."""
    this = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    spec = importlib.util.find_spec("openfhe")
    if spec is None:
        raise OpenFHEUnavailableError(f"secure_aggregation.method = 'ckks-threshold' needs the openfhe package, "
                                      f"which is not installed for this Python ({this}); {INSTALL_HINT}")
    try:
        module = importlib.import_module("openfhe")
        module.CCParamsCKKSRNS  # noqa: B018 - the extension, not just the package folder
    except (ImportError, AttributeError, OSError) as exc:
        folder = Path(spec.origin or "").parent
        raise OpenFHEUnavailableError(
            f"openfhe is installed in {folder} but its extension cannot be loaded here ({exc}): it was built for "
            f"{_built_for(folder)}, this interpreter is {this}; {INSTALL_HINT}") from exc
    return module


def openfhe_available() -> tuple[bool, str]:
    """(True, "") when OpenFHE can be used, else (False, the :class:`OpenFHEUnavailableError`'s message)."""
    try:
        load_openfhe()
    except OpenFHEUnavailableError as exc:
        return False, str(exc)
    return True, ""


def require_shamir(fhe=None) -> None:
    """Refuse t-of-n (``secure_aggregation.threshold`` between 2 and n−1) when this OpenFHE cannot share keys.

    Shamir sharing of key shares (``ShareKeys``/``RecoverSharedKey``) entered openfhe-python in 1.6; with 1.5
    only n of n works.
    """
    fhe = fhe or load_openfhe()
    if not hasattr(fhe.CryptoContext, "ShareKeys") or not hasattr(fhe.CryptoContext, "RecoverSharedKey"):
        version = getattr(fhe, "__version__", "older than 1.6")
        raise OpenFHEUnavailableError(
            f"secure_aggregation.threshold between 2 and the number of clients needs OpenFHE's ShareKeys and "
            f"RecoverSharedKey (openfhe-python >= 1.6), which this openfhe ({version}) lacks; use threshold = 0 "
            f"(every key holder decrypts) or upgrade: {INSTALL_HINT}")


@functools.lru_cache(maxsize=8)
def crypto_context(params, *, estimation: bool = False):
    """The CKKS crypto context of ``params`` (a :class:`~fedicd.secure.threshold.params.ThresholdParams`).

    Settings, and why:

    * ``HEStd_128_classic`` unless ``params.ring_dimension`` is below what it allows (tests only: OpenFHE then
      runs with ``HEStd_NotSet``; :attr:`ThresholdParams.secure` says which);
    * multiplicative depth 1, ``FIXEDMANUAL``: two towers (60 + 59 bits) for encryption and flooding; the one
      ``ModReduce`` that depth allows switches flooded partial decryptions down to the first tower (see
      :mod:`~fedicd.secure.threshold.params`); BV key switching (no special primes, so N = 8192 stays 128-bit);
    * ``NOISE_FLOODING_DECRYPT`` in ``EXEC_EVALUATION`` with ``params.noise_estimate``: every partial decryption
      adds Gaussian flooding noise of standard deviation 2^(15 + log2√12 + noise_estimate), which hides the key
      share's error (IND-CPA^D, Li-Micciancio); OpenFHE's CKKS has no ``SetMultipartyMode`` (BGV/BFV only);
    * ``COMPLEX`` data: each ciphertext carries N values (real and imaginary parts of N/2 slots).

    ``estimation``: the same context in ``EXEC_NOISE_ESTIMATION`` (real data), whose decryption measures the noise
    that ``noise_estimate`` must cover (see ``tests/secure/threshold/test_bound.py``).
    """
    fhe = load_openfhe()
    p = fhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(1)
    p.SetScalingModSize(59)
    p.SetFirstModSize(60)
    p.SetScalingTechnique(fhe.FIXEDMANUAL)
    p.SetSecretKeyDist(fhe.UNIFORM_TERNARY)
    p.SetKeySwitchTechnique(fhe.BV)
    # the noise-estimation twin (``estimation``, for checking ``noise_estimate``) must have the same ring
    p.SetSecurityLevel(fhe.HEStd_128_classic if params.secure and not estimation else fhe.HEStd_NotSet)
    p.SetRingDim(params.ring_dimension)
    p.SetBatchSize(params.ring_dimension // 2)
    p.SetDecryptionNoiseMode(fhe.NOISE_FLOODING_DECRYPT)
    if estimation:  # OpenFHE's first pass: decryption returns log2 of the noise (real data only)
        p.SetExecutionMode(fhe.EXEC_NOISE_ESTIMATION)
    else:
        p.SetCKKSDataType(fhe.COMPLEX)
        p.SetExecutionMode(fhe.EXEC_EVALUATION)
        p.SetNoiseEstimate(float(params.noise_estimate))
    cc = fhe.GenCryptoContext(p)
    for feature in (fhe.PKE, fhe.KEYSWITCH, fhe.LEVELEDSHE, fhe.MULTIPARTY):
        cc.Enable(feature)
    return cc


@functools.lru_cache(maxsize=8)
def dropped_prime(params) -> int:
    """q1, the RNS prime that a partial decryption's switch to one tower (``ModReduce``) divides by.

    The bindings give the first prime q0 exactly (``GetModulusCKKS``) and Q = q0·q1 only as a double; q1 is the
    one integer ≡ 1 (mod 2N) (an NTT prime) near Q/q0, whose error (≤ 2^-52 relative, ~2^7) is far below 2N.
    Checked: q0·q1 rounds to OpenFHE's Q, and q1 passes a Fermat test.
    """
    cc = crypto_context(params)
    q0, total, two_n = int(cc.GetModulusCKKS()), float(cc.GetModulus()), 2 * params.ring_dimension
    q1 = round((total / q0 - 1) / two_n) * two_n + 1
    if float(q0 * q1) != total or pow(3, q1 - 1, q1) != 1:
        from fedicd.secure.threshold.errors import ThresholdConfigError

        raise ThresholdConfigError(f"cannot identify OpenFHE's second RNS prime (q0 = {q0}, Q ≈ {total:.6g}): this "
                                   "openfhe builds the CKKS modulus differently than threshold CKKS expects")
    return q1


def read_ciphertext(blob: bytes):
    """An OpenFHE ciphertext from its BINARY bytes; bytes OpenFHE cannot read raise :class:`CiphertextError`."""
    from fedicd.secure.ckks_errors import CiphertextError

    fhe = load_openfhe()
    try:
        return fhe.DeserializeCiphertextString(blob, fhe.BINARY)
    except RuntimeError as exc:
        raise CiphertextError(f"a ciphertext OpenFHE cannot read: {exc}") from exc
