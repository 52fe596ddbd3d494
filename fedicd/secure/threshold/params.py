"""Threshold-CKKS parameters: the fixed-point code, the CKKS settings, and the bound that makes sums exact.

The packing is the shared-key path's (:mod:`fedicd.secure.ckks`): client k sends u_k = round(n_k·x_k·2^f) for
every model value and its count n_k, all encrypted; the server adds ciphertexts; the fused plaintext holds the
integer sums Σ u_k and Σ n_k plus an error, and rounding recovers them exactly when the error stays below 1/2.

What travels is cut to what decryption needs: a fresh ciphertext has two RNS towers (q0 ≈ 2^60, q1 ≈ 2^59)
because the flooding noise (~2^34 per coefficient) must sit far below the message scale Δ = 2^59 while the
largest sum M·Δ must stay below Q/2; but a partial decryption, once flooded, may be switched down to q0 alone
(OpenFHE's ``ModReduce``: round(d·q0/Q), a public function of already flooded data, so no security is lost). For
the integers to survive that division by q1, clients send u·2^k (k = :attr:`ThresholdParams.shift_bits`, the
most that keeps M·2^k ≤ 2^58 < q0/2); the fused, switched plaintext decodes to Σu·2^k/q1 and the server
multiplies by q1/2^k. The update itself cannot shrink to one tower: the flooding would then be added at 60
bits, where its ~2^39 per slot component (12σ, 20 parties, noise_estimate ≥ 10.5) needs a scale of 2^41 and
leaves M ≤ 2^17, while 20 clients of 6,000 examples already sum their counts to 2^17.

The error of a decrypted sum whose largest integer is M, in units of the integers (measured, see
``tests/secure/threshold``):

* decoding: OpenFHE encodes and decodes with a double-precision FFT; measured |error| up to 2^-47.4·M at
  N = 8192 (0.094 at M = 2^44, K = 32 parties); bounded here by 8·log2(N)·2^-53·M (2^-46.3·M);
* switching down to q0: each of the K partial decryptions and c0 is rounded to an integer (|δ| ≤ 1/2 per
  coefficient), i.e. standard deviation √((K+1)/12 · N/2) / 2^k per slot component; bounded by 12 of those;
* flooding: each of the K partial decryptions adds Gaussian noise of standard deviation 2^(15 + log2√12 + e)
  per coefficient (e = :attr:`ThresholdParams.noise_estimate`), i.e. σ = 2^(16.79 + e)·√(N/2·K) / 2^(59 + k)
  per slot component (checked against measurement at k = 0: 2^5.29 predicted, max of 8192 components 4.2σ
  observed at e = 39); bounded here by 12σ (P(|X| > 12σ) < 2^-100 per component);
* the factor q1/2^k in double precision: 2^-52·M; encryption noise and encoding rounding: inside the decoding
  term's slack.

:class:`ThresholdParams` refuses a parameter set whose bound reaches 1/4 (half of the 1/2 that exact rounding
needs), so every decrypted integer sum is exact, and the average is off only by the fixed-point rounding
(:func:`precision_bound`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass

from fedicd.secure.ckks_params import fixed_point_error
from fedicd.secure.threshold.errors import ThresholdConfigError

__all__ = ["ThresholdParams", "precision_bound", "SECURE_RING_DIMENSION", "FLOODING_BASE_BITS"]

SECURE_RING_DIMENSION = 8192  # smallest N with the 119-bit modulus (60 + 59 bits, BV) under HEStd_128_classic
FLOODING_BASE_BITS = 15 + math.log2(math.sqrt(12))  # OpenFHE: statistical security 30 / 2 + log2 √(12 · 1 query)
_LOG_SCALE = 59  # OpenFHE fixes the scaling modulus at 59 bits under NOISE_FLOODING_DECRYPT (64-bit native ints)
_MAX_FLOODING_BITS = 56  # OpenFHE: logstd + noise_estimate must be 56 or less
_TAIL = 12.0
_SWITCHED_BITS = 58  # |Σu|·2^k stays at most 2^58: below q0/2 (q0 > 2^59.99) with room for the noise
# log2 of the noise OpenFHE estimates for a sum of K fresh encryptions (EXEC_NOISE_ESTIMATION, measured at
# N = 8192: 8.68 for K = 3, 10.38 for K = 32, i.e. ≈ 7.9 + ½·log2 K), plus one bit of margin
_FRESH_NOISE_BITS = 8.9


def fresh_noise_bits(n_parties: int) -> float:
    """Upper estimate of log2 of the noise of a sum of ``n_parties`` fresh encryptions (OpenFHE's estimate)."""
    return _FRESH_NOISE_BITS + 0.5 * math.log2(max(1, n_parties))


@dataclass(frozen=True)
class ThresholdParams:
    """Parameters of threshold CKKS (all parties and the server must hold the same ones).

    Parameters
    ----------
    ring_dimension:
        N; a ciphertext carries N values. 8192 (the default) is the smallest N that is 128-bit secure
        (``HEStd_128_classic``) with this modulus; smaller N only with ``insecure_for_tests``.
    frac_bits:
        Fixed-point fraction bits f: n_k·x_k is rounded to a multiple of 2^-f.
    clip_range:
        Model values must satisfy |x| ≤ clip_range.
    max_clients:
        Most parties (key holders, and updates one aggregate may sum).
    max_count:
        Public upper bound on any client's example count n_k.
    noise_estimate:
        log2 of the ciphertext noise that the flooding of partial decryptions must hide (OpenFHE's
        ``SetNoiseEstimate``). At least the noise of a sum of ``max_clients`` fresh encryptions; every bit above
        it doubles the flooding (the default, 17, leaves ≈ 5.6 bits for 32 parties, which keeps the statistical
        distance of ~2^10 decryptions under one key at OpenFHE's 2^-30 target).
    insecure_for_tests:
        Allow ``ring_dimension`` below 8192 (OpenFHE then runs without a security level): tests only.
    """

    ring_dimension: int = SECURE_RING_DIMENSION
    frac_bits: int = 18
    clip_range: float = 16.0
    max_clients: int = 32
    max_count: int = 2**16
    noise_estimate: float = 17.0
    insecure_for_tests: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_range", float(self.clip_range))
        object.__setattr__(self, "noise_estimate", float(self.noise_estimate))
        for name in ("ring_dimension", "frac_bits", "max_clients", "max_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "frac_bits" else 1):
                raise ThresholdConfigError(f"ThresholdParams.{name} must be a positive integer, got {value!r}")
        n = self.ring_dimension
        if n & (n - 1) or not 1024 <= n <= 65536:
            raise ThresholdConfigError(f"ThresholdParams.ring_dimension must be a power of two in 1024..65536, got {n}")
        if n < SECURE_RING_DIMENSION and not self.insecure_for_tests:
            raise ThresholdConfigError(f"ring_dimension={n} is not 128-bit secure with a 119-bit modulus (needs "
                                       f"≥ {SECURE_RING_DIMENSION}); only tests may set insecure_for_tests=True")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ThresholdConfigError(f"ThresholdParams.clip_range must be positive and finite, got {self.clip_range}")
        self._check_noise()

    # -- derived -----------------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        """Whether OpenFHE checks the parameters against 128-bit classical security (HEStd_128_classic)."""
        return self.ring_dimension >= SECURE_RING_DIMENSION

    @property
    def values_per_ciphertext(self) -> int:
        """Values one ciphertext carries: N (real and imaginary parts of N/2 complex slots)."""
        return self.ring_dimension

    @property
    def step(self) -> float:
        return 2.0**-self.frac_bits

    @property
    def value_bound(self) -> int:
        """U: the largest |round(n_k·x_k·2^f)| a client can send."""
        return math.floor(self.max_count * self.clip_range * 2.0**self.frac_bits + 0.5)

    @property
    def sum_bound(self) -> int:
        """M: the largest |integer| a decrypted sum of ``max_clients`` updates can hold (values and counts)."""
        return self.max_clients * max(self.value_bound, self.max_count)

    @property
    def shift_bits(self) -> int:
        """k: clients encrypt u·2^k, so that the sums survive the switch of partial decryptions down to one
        tower (see the module docstring); the most k with M·2^k ≤ 2^58."""
        return max(0, _SWITCHED_BITS - math.ceil(math.log2(self.sum_bound)))

    def flooding_sigma(self, n_parties: int) -> float:
        """Standard deviation of the flooding noise in one decrypted value (``n_parties`` partial decryptions)."""
        log_std = FLOODING_BASE_BITS + self.noise_estimate
        return 2.0 ** (log_std - _LOG_SCALE - self.shift_bits) * math.sqrt(self.ring_dimension / 2 * n_parties)

    def switching_sigma(self, n_parties: int) -> float:
        """Standard deviation of the rounding of c0 and ``n_parties`` partial decryptions to one tower, in one
        decrypted value."""
        return math.sqrt((n_parties + 1) / 12 * self.ring_dimension / 2) * 2.0**-self.shift_bits

    def error_bound(self, n_parties: int | None = None, magnitude: float | None = None) -> float:
        """Bound on |decrypted − exact| of one value of a sum (see the module docstring)."""
        k = self.max_clients if n_parties is None else n_parties
        m = self.sum_bound if magnitude is None else magnitude
        decoding = 8 * math.log2(self.ring_dimension) * 2.0**-53 * m + 2.0**-52 * m
        return decoding + _TAIL * (self.flooding_sigma(k) + self.switching_sigma(k))

    def _check_noise(self) -> None:
        need = fresh_noise_bits(self.max_clients)
        if self.noise_estimate < need:
            raise ThresholdConfigError(
                f"noise_estimate={self.noise_estimate:g} is below the noise of a sum of max_clients={self.max_clients} "
                f"fresh ciphertexts (2^{need:.1f}): the flooding would not hide it; use noise_estimate ≥ {need:.1f}")
        if FLOODING_BASE_BITS + self.noise_estimate > _MAX_FLOODING_BITS:
            raise ThresholdConfigError(f"noise_estimate={self.noise_estimate:g} too large: OpenFHE allows at most "
                                       f"{_MAX_FLOODING_BITS - FLOODING_BASE_BITS:.1f} with 64-bit integers")
        bound = self.error_bound()
        if bound >= 0.25:
            raise ThresholdConfigError(
                f"the decryption error bound {bound:.3g} of a sum of max_clients={self.max_clients} updates reaches "
                f"1/4 (sums up to 2^{math.log2(self.sum_bound):.1f}); lower frac_bits, clip_range, max_count, "
                f"max_clients or noise_estimate")

    # -- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-serialisable fields (inverse: ``ThresholdParams(**d)``)."""
        return dataclasses.asdict(self)

    @property
    def fingerprint(self) -> str:
        """A short hash of the parameters: ciphertexts and keys carry it (another context → refused)."""
        text = json.dumps({"scheme": "ckks-threshold/openfhe/2", **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def precision_bound(params: ThresholdParams, n_clients: int, total_count: int | None = None) -> float:
    """Maximum |decrypted average − exact weighted average| for values in ±clip_range.

    The integer sums are exact (the CKKS error stays below 1/4 < 1/2, :class:`ThresholdParams`); what remains is
    the fixed-point rounding, |Σ_k (u_k 2^-f − n_k x_k)| ≤ K 2^-f / 2, divided by T = Σ n_k ≥ K (without
    ``total_count``, the worst case T = K), plus ≤ 2^-52 (clip_range + 2^-f) for the float64 arithmetic.
    """
    return fixed_point_error(params, n_clients, total_count)
