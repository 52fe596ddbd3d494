"""CKKS parameters of secure aggregation: validation, derived bounds, and the precision they give.

:class:`CkksParams` checks a parameter set against 128-bit security, a worst-case CKKS noise bound
and the integer headroom of the fixed-point code (see :mod:`fedicd.secure.ckks` for the design);
:func:`precision_bound` is the resulting accuracy of a decrypted average.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from fedicd.errors import ConfigError
from fedicd.secure.ckks_errors import CapacityError, CountError

__all__ = ["CkksParams", "MAX_COEFF_BITS_128", "fixed_point_error", "precision_bound"]

# Largest total coeff-modulus bits for 128-bit classical security with a ternary secret
# (HE standard, homomorphicencryption.org 2018; SEAL's CoeffModulus::MaxBitCount(N, tc128)).
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# SEAL's encryption error e: centred binomial on 42 bits (|e_i| ≤ 21, variance 10.5); its
# optional clipped Gaussian (σ = 3.2, clipped at 19.2) satisfies the same two bounds.
_E_MAX = 21
_E_VARIANCE_PROXY = 10.5
# Tail multiplier for the random part of the noise: P(|X| > 10σ) ≤ 2·exp(-50) < 2^-71 per slot component.
_TAIL = 10.0


@dataclass(frozen=True)
class CkksParams:
    """CKKS parameters and the fixed-point code of :mod:`fedicd.secure.ckks`.

    Parameters
    ----------
    poly_modulus_degree:
        N; a ciphertext carries N real values (N/2 complex slots).
    coeff_mod_bit_sizes:
        Bit sizes of the coefficient-modulus primes: the data primes, then TenSEAL's special
        prime (at least two primes; their total must respect 128-bit security for N).
    global_scale:
        log2 of the CKKS scale Δ; each integer digit is encoded as Δ·digit.
    clip_range:
        Values must satisfy |x| ≤ clip_range (see ``clip`` of :func:`encrypt_update`).
    frac_bits:
        Fixed-point fraction bits f: n_k·x_k is rounded to a multiple of 2^-f.
    limbs:
        Real slot components per value (1 to 4): 2 complex slots hold 2/limbs values each.
    max_clients:
        Most updates one aggregate may sum (bounds the noise and the integer headroom).
    max_count:
        Public upper bound on any client's example count n_k.
    """

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (48, 60)
    global_scale: int = 18
    clip_range: float = 16.0
    frac_bits: int = 20
    limbs: int = 2
    max_clients: int = 32
    max_count: int = 2**20

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(int(b) for b in self.coeff_mod_bit_sizes))
        object.__setattr__(self, "clip_range", float(self.clip_range))
        self._check_fields()
        self._check_security()
        self._check_noise()
        self._check_capacity()

    # -- derived quantities ------------------------------------------------------------------
    @property
    def step(self) -> float:
        """Fixed-point step 2^-frac_bits."""
        return 2.0**-self.frac_bits

    @property
    def scale(self) -> float:
        """CKKS scale Δ = 2^global_scale."""
        return 2.0**self.global_scale

    @property
    def value_bound(self) -> int:
        """U: the largest |round(n_k · x_k · 2^f)| a client can send."""
        return math.floor(self.max_count * self.clip_range * 2.0**self.frac_bits + 0.5)

    @property
    def coefficient_limit(self) -> int:
        """Largest plaintext coefficient magnitude allowed: below q/2 (no wrap-around) and 2^52 (exact doubles)."""
        bits = self.coeff_mod_bit_sizes[:-1]
        return 2 ** min(sum(bits) - len(bits) - 1, 52)

    @property
    def component_bound(self) -> int:
        """R: largest |integer| one real slot component may hold in a sum of ``max_clients`` updates.

        The decrypted coefficients are Δ·σ⁻¹(Z) + Σ_k r_k + e with |σ⁻¹(Z)_i| ≤ max_j |Z_j| ≤ √2·R,
        |r_k,i| ≤ 1 (rounding) and |e_i| ≤ 21·K, and must stay within :attr:`coefficient_limit`.
        """
        k = self.max_clients
        return math.floor((self.coefficient_limit - (_E_MAX + 1) * k) / (self.scale * math.sqrt(2.0)))

    @property
    def limb_bits(self) -> int:
        """B: bits of each balanced low digit (0 when ``limbs == 1``: the value is one digit)."""
        bits = self._limb_bits()
        if bits is None:  # pragma: no cover - rejected by __post_init__
            raise ConfigError("parameters have no feasible limb size")
        return bits

    def noise_bound(self, n_clients: int) -> float:
        """Bound on |decoded − exact| of one slot component of a sum of ``n_clients`` updates.

        In coefficient units (divide by Δ for digit units); the sum of three terms:

        * encoding rounding: each client's N coefficients are rounded (|r_i| ≤ 1/2, plus slack for
          SEAL's double-precision FFT), and a slot component is Σ_i r_i·cos(θ_i), so
          |·| ≤ Σ_i |cos θ_i| ≤ √(N · N/2) = N/√2 per client;
        * encryption error: Σ_i e_i·cos(θ_i) with independent e_i of variance proxy 10.5 is
          sub-Gaussian with variance proxy 10.5·N/2 per client; 10 standard deviations are
          exceeded with probability < 2^-71;
        * decoding: SEAL's FFT in doubles, ≤ 4·N·log2(N)·2^-53 · :attr:`coefficient_limit`.
        """
        n = self.poly_modulus_degree
        rounding = n_clients * n / math.sqrt(2.0)
        encryption = _TAIL * math.sqrt(_E_VARIANCE_PROXY * n / 2 * n_clients)
        decoding = 4 * n * math.log2(n) * 2.0**-53 * self.coefficient_limit
        return rounding + encryption + decoding

    # -- validation --------------------------------------------------------------------------
    def _check_fields(self) -> None:
        for name in ("poly_modulus_degree", "global_scale", "frac_bits", "limbs", "max_clients", "max_count"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"CkksParams.{name} must be an integer, got {value!r}")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ConfigError(f"CkksParams.clip_range must be a positive finite number, got {self.clip_range}")
        if not 1 <= self.limbs <= 4:
            raise ConfigError(f"CkksParams.limbs must be 1 to 4, got {self.limbs}")
        if self.frac_bits < 0 or self.global_scale < 1:
            raise ConfigError(f"CkksParams.frac_bits must be ≥ 0 and global_scale ≥ 1, got "
                              f"{self.frac_bits} and {self.global_scale}")
        if self.max_clients < 1 or self.max_count < 1:
            raise ConfigError(f"CkksParams.max_clients and max_count must be ≥ 1, got "
                              f"{self.max_clients} and {self.max_count}")

    def _check_security(self) -> None:
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in MAX_COEFF_BITS_128:
            raise ConfigError(f"poly_modulus_degree={n}: must be one of {sorted(MAX_COEFF_BITS_128)}")
        if len(bits) < 2:
            raise ConfigError(f"coeff_mod_bit_sizes={list(bits)}: TenSEAL needs at least two primes (data primes "
                              "and a special prime); with one it fails with 'keyswitching is not supported'")
        if any(not 20 <= b <= 60 for b in bits):
            raise ConfigError(f"coeff_mod_bit_sizes={list(bits)}: each prime must have 20 to 60 bits")
        if sum(bits) > MAX_COEFF_BITS_128[n]:
            raise ConfigError(f"coeff_mod_bit_sizes={list(bits)} total {sum(bits)} bits: above the "
                              f"{MAX_COEFF_BITS_128[n]} bits allowed for 128-bit security at N={n}")

    def _check_noise(self) -> None:
        bound = self.noise_bound(self.max_clients)
        if bound >= self.scale / 2:
            raise ConfigError(f"global_scale={self.global_scale} too small: the worst-case CKKS error of a sum of "
                              f"max_clients={self.max_clients} updates is {bound:.4g} ≥ Δ/2 = {self.scale / 2:.4g}; "
                              f"use global_scale ≥ {math.ceil(math.log2(2 * bound))} or fewer clients")
        if self.component_bound < 1:
            raise ConfigError(f"global_scale={self.global_scale} leaves no room for values below the "
                              f"{self.coefficient_limit:.4g} coefficient limit of the data primes")

    def _check_capacity(self) -> None:
        k, r, u = self.max_clients, self.component_bound, self.value_bound
        hint = "lower frac_bits, clip_range, max_count or max_clients, or raise limbs"
        if k * self.max_count > r:
            raise ConfigError(f"the count field overflows: max_clients·max_count = {k * self.max_count} > "
                              f"{r}, the integer range of one slot component")
        if k * u >= 2**53:
            raise ConfigError(f"max_clients·max_count·clip_range·2^frac_bits = 2^{math.log2(k * u):.1f} must stay "
                              f"below 2^53 (exact float64 sums); {hint}")
        if self._limb_bits() is None:
            need = math.log2(k * (2 * u + 1))
            raise ConfigError(
                f"too many bits for limbs={self.limbs}: a value needs {math.log2(2 * u + 1):.1f} bits "
                f"(clip_range={self.clip_range:g}, max_count={self.max_count}, frac_bits={self.frac_bits}) plus "
                f"{math.log2(k):.1f} bits of headroom for max_clients={k} ({need:.1f} in all), but one slot "
                f"component holds {math.log2(2 * r + 1):.1f} bits (N={self.poly_modulus_degree}, data primes "
                f"{list(self.coeff_mod_bit_sizes[:-1])}, Δ=2^{self.global_scale}); {hint}")

    def _limb_bits(self) -> int | None:
        """Smallest digit size B whose digit sums fit one slot component, or None if none does."""
        k, r, u, limbs = self.max_clients, self.component_bound, self.value_bound, self.limbs
        if limbs == 1:
            return 0 if k * u <= r else None
        for bits in range(1, 54):
            top = (u >> (bits * (limbs - 1))) + 1  # |top digit| ≤ U / 2^(B(L-1)) + 1
            if k * top <= r:
                return bits if k * (1 << (bits - 1)) <= r else None
        return None

    def to_dict(self) -> dict:
        """JSON-serialisable fields (inverse: ``CkksParams(**d)``)."""
        return {**dataclasses.asdict(self), "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes)}


def precision_bound(params: CkksParams, n_clients: int, max_count: int, total_count: int | None = None) -> float:
    """Maximum |decrypted average − exact weighted average| for values in ±clip_range.

    Derivation. Client k sends u_k = round(n_k x_k 2^f), so |u_k 2^-f − n_k x_k| ≤ 2^-f/2. The
    digit sums are integers of at most ``component_bound`` and the CKKS error (encoding rounding +
    encryption noise + FFT, :meth:`CkksParams.noise_bound`) is below Δ/2, so rounding recovers
    them exactly: the CKKS term is 0 (with probability > 1 − 2^-71 per slot component; the
    rounding and FFT parts are worst-case bounds). With T = Σ n_k ≥ K the average is
    S 2^-f / T, off by ≤ K 2^-f / (2T) ≤ 2^-f / 2; the float64 conversion and division add
    ≤ 2^-52 (clip_range + 2^-f) (half of it for float64 inputs, whose n_k·x_k is rounded once).
    Without ``total_count`` the worst case T = K is used.

    Raises :class:`CapacityError`/:class:`CountError` when ``n_clients``/``max_count`` exceed
    what ``params`` were validated for (the bound does not hold there).
    """
    if not 1 <= max_count <= params.max_count:
        raise CountError(f"max_count={max_count} outside 1..CkksParams.max_count={params.max_count}")
    return fixed_point_error(params, n_clients, total_count)


def fixed_point_error(params, n_clients: int, total_count: int | None = None) -> float:
    """The error left once the integer sums are exact (both CKKS paths): the fixed-point rounding,
    K·2^-f/2 over T = Σ n_k ≥ K (without ``total_count`` the worst case T = K), plus float64's
    2^-52 (clip_range + 2^-f). ``params`` needs ``max_clients``, ``step`` and ``clip_range``."""
    if not 1 <= n_clients <= params.max_clients:
        raise CapacityError(f"n_clients={n_clients} outside 1..max_clients={params.max_clients}")
    total = n_clients if total_count is None else total_count
    if total < n_clients:
        raise CountError(f"total_count={total} < n_clients={n_clients}: every client has ≥ 1 example")
    return n_clients * params.step / (2 * total) + 2.0**-52 * (params.clip_range + params.step)
