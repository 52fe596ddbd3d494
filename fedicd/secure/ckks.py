"""Addition-only CKKS secure aggregation of federated updates (TenSEAL / Microsoft SEAL).

Protocol
--------
All clients share the secret context (``secret.ctx``); the server holds only the public one
(``public.ctx``: the parameters and the public key, no secret key). In a round, client k with
update x_k (a dict of float arrays, e.g. a state_dict) and n_k training examples calls
:func:`encrypt_update`; the server adds the ciphertexts with :func:`aggregate_encrypted`
without being able to decrypt them (it sees neither x_k nor n_k); every client decrypts the sum
with :func:`decrypt_average`, which returns Σ n_k·x_k / Σ n_k and Σ n_k.

Encoding (why the ciphertexts are small)
----------------------------------------
* **Fixed point, weighted on the client.** u_k = round(n_k · x_k · 2^f) is an integer with
  |u_k| ≤ U = max_count · clip_range · 2^f. The server adds S = Σ_k u_k; clients return
  S · 2^-f / Σ_k n_k. The count n_k rides in the first slot component of the same ciphertexts.
* **Limbs.** Each u_k is written as ``limbs`` balanced base-2^B digits (B = :attr:`CkksParams.limb_bits`),
  one per *real* slot component; a CKKS slot is complex, so one ciphertext carries
  N = poly_modulus_degree reals (TenSEAL's vectors use only the real half). Digits are small
  integers encoded at scale Δ = 2^global_scale, so after decryption they are rounded back to
  integers; the digit sums are then *exact* as long as the accumulated CKKS error stays below
  Δ/2, which :class:`CkksParams` checks against a worst-case bound (:meth:`CkksParams.noise_bound`).
  Decryption also checks that every decoded value lies within that bound of an integer, which
  catches ciphertexts made under another secret key.
* **Seeded symmetric encryption.** Clients hold the secret key, so they encrypt with it
  (c0 = -a·s + e + m, c1 = a); SEAL then serialises the uniformly random c1 = a as a 64-byte PRNG
  seed, halving the bytes. TenSEAL's tensors never do this (``CKKSVector.serialize`` has the same
  size under a ``SYMMETRIC`` context), so this module drives SEAL through ``tenseal.sealapi``, on
  the SEAL objects of the TenSEAL context itself.
* **One small data prime, no key-switching keys.** TenSEAL refuses a single-prime modulus (it
  always builds relinearisation keys), so the modulus is (data prime, special prime); ciphertexts
  live at the data level and only carry the 48-bit data prime, compressed by SEAL's zstd to
  ~6.9 bytes per coefficient.

With the defaults (N = 4096, primes of 48 and 60 bits: 108 ≤ 109 bits, 128-bit secure per the
HE standard) a ciphertext is ~28.2 kB for 4096 reals, i.e. ~13.8 bytes per value with 2 limbs:
3.45x the fp32 bytes (measured on 500k values), for a maximum absolute error of 2^-21 ≈ 4.8e-7
on |x| ≤ 16 with up to 32 clients and 2^20 examples each (:func:`precision_bound`; smaller when
Σ n_k ≫ K). ``limbs=1`` halves the bytes (1.73x) but then a value and its headroom must fit one
component's ~27.5 bits, so 1e-5 precision is only reachable when
max_clients · max_count · clip_range ≲ 2^10 (e.g. 16 clients, 4096 examples, |x| ≤ 4 gives 2^-10).

What did not help: a single coefficient prime (TenSEAL refuses it), TenSEAL's ``SYMMETRIC``
contexts (same ciphertext size: no seed is serialised), and packing several values into one
slot component (CKKS decoding goes through double-precision FFTs, so a component holds < 53
bits, of which ~20 go to the noise margin Δ; a weighted value needs more than half of the rest).

The aggregate is the sum of seeded ciphertexts, which has no seed: it is twice the size of one
upload (~6.9x fp32 with the defaults) on its way back to the clients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tenseal as ts
import tenseal.sealapi as sa

from fedicd.errors import ConfigError

__all__ = [
    "CapacityError",
    "CiphertextError",
    "CkksParams",
    "ClipError",
    "CountError",
    "EncryptedUpdate",
    "LayoutError",
    "NonFiniteError",
    "SecretKeyError",
    "SecureAggregationError",
    "aggregate_encrypted",
    "decrypt_average",
    "encrypt_update",
    "load_context",
    "make_keys",
    "precision_bound",
    "save_keys",
    "key_id",
    "validate_update",
]

# Largest total coeff-modulus bits for 128-bit classical security with a ternary secret
# (HE standard, homomorphicencryption.org 2018; SEAL's CoeffModulus::MaxBitCount(N, tc128)).
MAX_COEFF_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# SEAL's encryption error e: centred binomial on 42 bits (|e_i| ≤ 21, variance 10.5); its
# optional clipped Gaussian (σ = 3.2, clipped at 19.2) satisfies the same two bounds.
_E_MAX = 21
_E_VARIANCE_PROXY = 10.5
# Tail multiplier for the random part of the noise: P(|X| > 10σ) ≤ 2·exp(-50) < 2^-71 per slot component.
_TAIL = 10.0
_MAGIC = b"FEDICD-CKKS\x01"
# SEAL's Python bindings only load/save files: keep those round trips in memory where Linux offers it
_MEMORY_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class SecureAggregationError(ValueError):
    """Base class of the errors raised by :mod:`fedicd.secure.ckks`."""


class CiphertextError(SecureAggregationError):
    """A ciphertext is malformed, corrupted, or was made under another key or other parameters."""


class LayoutError(SecureAggregationError):
    """Updates disagree on their arrays' names/shapes or on their :class:`CkksParams`."""


class CountError(SecureAggregationError):
    """An example count is out of range (n_k < 1, n_k > max_count, or a total of zero)."""


class NonFiniteError(SecureAggregationError):
    """An update holds NaN or infinite values."""


class ClipError(SecureAggregationError):
    """An update holds values outside ``[-clip_range, clip_range]`` and clipping was not asked for."""


class CapacityError(SecureAggregationError):
    """More updates are being added than :attr:`CkksParams.max_clients` allows."""


class SecretKeyError(SecureAggregationError):
    """A secret-key operation (encrypt, decrypt) was given a context without the secret key."""


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


# -- keys ----------------------------------------------------------------------------------------
def make_keys(params: CkksParams | None = None) -> tuple[bytes, bytes]:
    """Make a fresh TenSEAL CKKS context; return (secret context bytes, public context bytes).

    Both carry the public key (the server uses it only to fingerprint the key, see
    :attr:`EncryptedUpdate.key_id`); neither carries relinearisation or Galois keys (addition
    only). The public one is serialised with ``save_secret_key=False``: ``is_private()`` is False
    and nothing can be decrypted with it.
    """
    params = params or CkksParams()
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                     coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                     encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC)
    ctx.global_scale = params.scale
    common = {"save_public_key": True, "save_galois_keys": False, "save_relin_keys": False}
    return ctx.serialize(save_secret_key=True, **common), ctx.serialize(save_secret_key=False, **common)


def save_keys(directory: str | Path, params: CkksParams | None = None, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a fresh key pair as ``secret.ctx`` (mode 0600) and ``public.ctx`` in ``directory``.

    Returns the two paths. Refuses to replace existing key files unless ``overwrite``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    secret_path, public_path = directory / "secret.ctx", directory / "public.ctx"
    for path in (secret_path, public_path):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (fedicd keys --overwrite) to replace the keys")
    secret, public = make_keys(params)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    os.chmod(secret_path, 0o600)
    public_path.write_bytes(public)
    return secret_path, public_path


def load_context(path: str | Path) -> ts.Context:
    """Read a context written by :func:`save_keys` (either file)."""
    data = Path(path).read_bytes()
    try:
        return ts.context_from(data)
    except Exception as exc:  # TenSEAL raises ValueError/RuntimeError on bad protobufs
        raise ConfigError(f"file {path}: not a serialised TenSEAL context ({exc})") from exc


def _as_context(context: ts.Context | bytes) -> ts.Context:
    if isinstance(context, ts.Context):
        return context
    if isinstance(context, (bytes, bytearray)):
        return ts.context_from(bytes(context))
    raise TypeError(f"expected a tenseal.Context or its bytes, got {type(context).__name__}")


# -- encrypted updates ---------------------------------------------------------------------------
Layout = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class EncryptedUpdate:
    """Ciphertexts of one client's update (or of a sum of updates) and their public metadata.

    Holds nothing secret: the ciphertexts, their SHA-256 digests, the arrays' names and shapes,
    the :class:`CkksParams`, the fingerprint of the key they were made under, how many client
    updates they sum, and how many values were clipped in them.
    """

    ciphertexts: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    layout: Layout
    params: CkksParams
    key_id: str
    n_clients: int = 1
    n_clipped: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes of ciphertext (what dominates the wire size; see :meth:`to_bytes` for the total)."""
        return sum(len(c) for c in self.ciphertexts)

    @property
    def n_values(self) -> int:
        """Number of scalar values in the update."""
        return sum(math.prod(shape) for _, shape in self.layout)

    def to_bytes(self) -> bytes:
        """Serialise: magic, header length, JSON header, digests, ciphertexts."""
        header = json.dumps({
            "layout": [[name, list(shape)] for name, shape in self.layout], "params": self.params.to_dict(),
            "key_id": self.key_id, "n_clients": self.n_clients, "n_clipped": self.n_clipped,
            "sizes": [len(c) for c in self.ciphertexts],
        }, separators=(",", ":")).encode()
        return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *self.digests, *self.ciphertexts])

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedUpdate:
        """Inverse of :meth:`to_bytes`; malformed input raises :class:`CiphertextError`."""
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("missing magic bytes")
            pos = len(_MAGIC) + 4
            (size,) = struct.unpack_from("<I", data, len(_MAGIC))
            head = json.loads(data[pos:pos + size])
            pos += size
            sizes = head["sizes"]
            digests = tuple(data[pos + 32 * i:pos + 32 * (i + 1)] for i in range(len(sizes)))
            pos += 32 * len(sizes)
            cts = []
            for n in sizes:
                cts.append(data[pos:pos + n])
                pos += n
            if pos != len(data) or any(len(d) != 32 for d in digests):
                raise ValueError(f"length {len(data)} does not match the header")
            layout = tuple((str(name), tuple(int(s) for s in shape)) for name, shape in head["layout"])
            return cls(tuple(cts), digests, layout, CkksParams(**head["params"]), str(head["key_id"]),
                       int(head["n_clients"]), int(head["n_clipped"]))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise CiphertextError(f"malformed encrypted update: {exc}") from exc


class _Seal:
    """SEAL objects for one TenSEAL context, and ciphertext ↔ bytes through a private temp dir.

    ``tenseal.sealapi`` is given the TenSEAL context's own SEALContext and secret key (pybind11
    passes them between TenSEAL's two extension modules); its objects only save/load files.
    """

    def __init__(self, context: ts.Context, params: CkksParams, tmpdir: str):
        self.params = params
        self.context = context.seal_context().data
        self.parms_id = self.context.first_parms_id()
        self.encoder = sa.CKKSEncoder(self.context)
        self.evaluator = sa.Evaluator(self.context)
        secret = context.secret_key().data if context.is_private() else None
        self._encryptor = sa.Encryptor(self.context, secret) if secret is not None else None
        self._decryptor = sa.Decryptor(self.context, secret) if secret is not None else None
        self._path = os.path.join(tmpdir, "ciphertext.bin")

    def encrypt(self, reals: np.ndarray) -> bytes:
        """Encrypt N reals (pairs → complex slots) with the secret key; seeded serialisation."""
        plain = sa.Plaintext()
        self.encoder.encode((reals[0::2] + 1j * reals[1::2]).tolist(), self.parms_id, self.params.scale, plain)
        self._encryptor.encrypt_symmetric(plain).save(self._path)
        return Path(self._path).read_bytes()

    def load(self, data: bytes, where: str) -> sa.Ciphertext:
        """Deserialise and check one ciphertext; failures raise :class:`CiphertextError` naming ``where``."""
        Path(self._path).write_bytes(data)
        ct = sa.Ciphertext()
        try:
            ct.load(self.context, self._path)
        except Exception as exc:  # SEAL: RuntimeError/ValueError ("ciphertext data is invalid", "I/O error")
            raise CiphertextError(f"{where}: SEAL cannot load it ({exc}); corrupted, or made under other "
                                  "parameters") from exc
        if ct.size() != 2 or not ct.is_ntt_form() or ct.parms_id() != self.parms_id:
            raise CiphertextError(f"{where}: not a fresh 2-component ciphertext at the data level of this context")
        if ct.scale != self.params.scale:
            raise CiphertextError(f"{where}: scale {ct.scale:g} ≠ Δ = {self.params.scale:g}")
        return ct

    def save(self, ct: sa.Ciphertext) -> bytes:
        ct.save(self._path)
        return Path(self._path).read_bytes()

    def decrypt(self, ct: sa.Ciphertext) -> np.ndarray:
        """Decrypt and decode one ciphertext into its N reals (unrounded)."""
        plain = sa.Plaintext()
        self._decryptor.decrypt(ct, plain)
        slots = np.asarray(self.encoder.decode_complex(plain), dtype=np.complex128)
        reals = np.empty(2 * slots.size)
        reals[0::2], reals[1::2] = slots.real, slots.imag
        return reals


@contextlib.contextmanager
def _seal(context: ts.Context, params: CkksParams) -> Iterator[_Seal]:
    _check_context(context, params)
    with tempfile.TemporaryDirectory(prefix="fedicd-ckks-", dir=_MEMORY_TMP) as tmp:
        yield _Seal(context, params, tmp)


def _check_context(context: ts.Context, params: CkksParams) -> None:
    parms = context.seal_context().data.key_context_data().parms()
    n = parms.poly_modulus_degree()
    bits = tuple(m.bit_count() for m in parms.coeff_modulus())
    if (n, bits) != (params.poly_modulus_degree, params.coeff_mod_bit_sizes):
        raise ConfigError(f"the context has N={n} and primes of {list(bits)} bits but the CkksParams say "
                          f"N={params.poly_modulus_degree} and {list(params.coeff_mod_bit_sizes)}")


def _key_id(context: ts.Context) -> str:
    """Fingerprint of the context's key: SHA-256 of its serialised public key (first 16 bytes, hex)."""
    if not context.has_public_key():
        raise ConfigError("the context has no public key to fingerprint; make contexts with make_keys()")
    with tempfile.TemporaryDirectory(prefix="fedicd-ckks-") as tmp:
        path = os.path.join(tmp, "public_key.bin")
        context.public_key().data.save(path)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]


# -- packing -------------------------------------------------------------------------------------
def _flatten(arrays: Mapping[str, np.ndarray]) -> tuple[Layout, list[np.ndarray]]:
    """Names/shapes and float64 views of the arrays; NaN/Inf and non-float dtypes are refused."""
    if not arrays:
        raise LayoutError("the update has no arrays")
    layout, flats = [], []
    for name, value in arrays.items():
        arr = np.asarray(value)
        if not np.issubdtype(arr.dtype, np.floating):
            raise LayoutError(f"array {name!r} has dtype {arr.dtype}; only floating arrays can be averaged")
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise NonFiniteError(f"array {name!r} holds {bad} NaN/infinite values")
        layout.append((str(name), tuple(int(s) for s in arr.shape)))
        flats.append(arr.astype(np.float64).ravel())
    return tuple(layout), flats


def _clip(layout: Layout, flats: list[np.ndarray], params: CkksParams, clip: bool) -> tuple[np.ndarray, int]:
    """Concatenate the values; out-of-range values raise :class:`ClipError` or are clipped and counted."""
    c, clipped = params.clip_range, 0
    for (name, _), flat in zip(layout, flats):
        over = int(np.count_nonzero(np.abs(flat) > c))
        if over and not clip:
            raise ClipError(f"array {name!r} has {over} values outside ±{c:g} (max |x| = {np.abs(flat).max():.6g}); "
                            "raise CkksParams.clip_range or pass clip=True")
        clipped += over
    values = np.concatenate(flats) if flats else np.zeros(0)
    return np.clip(values, -c, c), clipped


def _to_limbs(u: np.ndarray, params: CkksParams) -> np.ndarray:
    """Split integers into ``limbs`` balanced base-2^B digits (low digits in [-2^(B-1), 2^(B-1)))."""
    digits, bits = [], params.limb_bits
    for _ in range(params.limbs - 1):
        half, mask = 1 << (bits - 1), (1 << bits) - 1
        low = ((u + half) & mask) - half
        digits.append(low)
        u = (u - low) >> bits
    digits.append(u)
    return np.stack(digits)


def _from_limbs(digits: np.ndarray, params: CkksParams) -> np.ndarray:
    """Inverse of :func:`_to_limbs` (also for sums of digits: the map is linear)."""
    return sum(digits[level] * (1 << (params.limb_bits * level)) for level in range(params.limbs))


def _n_ciphertexts(n_values: int, params: CkksParams) -> int:
    return -(-(1 + params.limbs * n_values) // params.poly_modulus_degree)


def _pack(count: int, u: np.ndarray, params: CkksParams) -> np.ndarray:
    """Reals to encrypt, one row per ciphertext: [count, digits of limb 0, limb 1, ..., zero padding]."""
    reals = np.zeros(_n_ciphertexts(u.size, params) * params.poly_modulus_degree)
    reals[0] = count
    reals[1:1 + params.limbs * u.size] = _to_limbs(u, params).ravel()
    return reals.reshape(-1, params.poly_modulus_degree)


def _encrypt_packed(context: ts.Context, reals: np.ndarray, layout: Layout, params: CkksParams,
                    n_clipped: int = 0) -> EncryptedUpdate:
    """Encrypt packed rows (see :func:`_pack`) into an :class:`EncryptedUpdate`."""
    with _seal(context, params) as seal:
        cts = tuple(seal.encrypt(row) for row in reals)
    return EncryptedUpdate(cts, tuple(hashlib.sha256(c).digest() for c in cts), layout, params,
                           _key_id(context), 1, n_clipped)


# -- public API ----------------------------------------------------------------------------------
def encrypt_update(context: ts.Context | bytes, arrays: Mapping[str, np.ndarray], n_examples: int,
                   params: CkksParams | None = None, *, clip: bool = False) -> EncryptedUpdate:
    """Encrypt one client's update weighted by its example count (client side, secret key).

    Parameters
    ----------
    context:
        The secret context (or its bytes).
    arrays:
        Name → floating array; NaN/Inf raise :class:`NonFiniteError`.
    n_examples:
        The client's example count, 1 ≤ n_examples ≤ ``params.max_count`` (else :class:`CountError`).
    params:
        Must match the context's N and primes.
    clip:
        Values outside ±clip_range raise :class:`ClipError` (default) or, with ``clip=True``, are
        clipped; their number is reported in :attr:`EncryptedUpdate.n_clipped` (summed by the server).
    """
    params = params or CkksParams()
    context = _as_context(context)
    if not context.is_private():
        raise SecretKeyError("encrypt_update needs the secret context (clients encrypt with the secret key)")
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)):
        raise CountError(f"n_examples must be an integer, got {n_examples!r}")
    if not 1 <= n_examples <= params.max_count:
        raise CountError(f"n_examples={n_examples} must be between 1 and max_count={params.max_count}")
    layout, flats = _flatten(arrays)
    values, n_clipped = _clip(layout, flats, params, clip)
    # n·x·2^f is exact in float64 for float32 x and n ≤ 2^29, so u is the correctly rounded integer
    u = np.rint(values * int(n_examples) * 2.0**params.frac_bits).astype(np.int64)
    return _encrypt_packed(context, _pack(int(n_examples), u, params), layout, params, n_clipped)


def _check_updates(updates: Sequence[EncryptedUpdate], key_id: str) -> None:
    """Same params and layout, right key, right ciphertext count and intact bytes, or a named error."""
    if not updates:
        raise LayoutError("no updates given")
    first = updates[0]
    for i, up in enumerate(updates):
        if up.params != first.params:
            raise LayoutError(f"update {i} was encrypted with other CkksParams than update 0: {up.params} "
                              f"vs {first.params}")
        if up.layout != first.layout:
            diff = next(((a, b) for a, b in zip(up.layout, first.layout) if a != b),
                        (f"{len(up.layout)} arrays", f"{len(first.layout)}"))
            raise LayoutError(f"update {i} has another layout than update 0 (first difference: {diff[0]} vs "
                              f"{diff[1]})")
        if up.key_id != key_id:
            raise CiphertextError(f"update {i} was encrypted under another key (key id {up.key_id} ≠ {key_id} "
                                  "of this context)")
        expected = _n_ciphertexts(up.n_values, up.params)
        if len(up.ciphertexts) != expected or len(up.digests) != expected:
            raise CiphertextError(f"update {i} has {len(up.ciphertexts)} ciphertexts and {len(up.digests)} digests; "
                                  f"its layout needs {expected}")
        for j, (ct, digest) in enumerate(zip(up.ciphertexts, up.digests)):
            if hashlib.sha256(ct).digest() != digest:
                raise CiphertextError(f"update {i}, ciphertext {j}: bytes do not match their SHA-256 digest "
                                      "(corrupted)")


def key_id(context: ts.Context | bytes) -> str:
    """The fingerprint updates made under ``context``'s key carry (:attr:`EncryptedUpdate.key_id`)."""
    return _key_id(_as_context(context))


def validate_update(update: EncryptedUpdate, *, key: str, params: CkksParams, layout: Layout) -> None:
    """Server-side checks of one update before it is added (no decryption): the expected key,
    parameters and array layout, the right number of ciphertexts, intact bytes; a named error
    (:class:`CiphertextError` or :class:`LayoutError`) otherwise."""
    if update.params != params:
        raise LayoutError(f"the update was encrypted with other CkksParams: {update.params} vs {params}")
    if update.layout != tuple(layout):
        raise LayoutError(f"the update's arrays {[(n, s) for n, s in update.layout][:4]}... do not match the "
                          f"model's {[(n, s) for n, s in layout][:4]}...")
    if update.n_clients != 1:
        raise CiphertextError(f"a client update claims to sum {update.n_clients} client updates")
    _check_updates([update], key)


def aggregate_encrypted(context: ts.Context | bytes, updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
    """Add encrypted updates (server side; the public context suffices and nothing is decrypted).

    Raises :class:`LayoutError` when updates differ in layout or params, :class:`CiphertextError`
    (naming the update and ciphertext) for another key, wrong ciphertext count, corrupted bytes or
    bytes SEAL cannot load under this context, and :class:`CapacityError` when the sum would cover
    more than ``max_clients`` client updates.
    """
    context = _as_context(context)
    _check_updates(updates, _key_id(context))
    params = updates[0].params
    n_clients = sum(up.n_clients for up in updates)
    if n_clients > params.max_clients:
        raise CapacityError(f"the sum would cover {n_clients} client updates; CkksParams.max_clients="
                            f"{params.max_clients} bounds the noise and the integer headroom")
    sums = []
    with _seal(context, params) as seal:
        for j in range(len(updates[0].ciphertexts)):
            acc = seal.load(updates[0].ciphertexts[j], f"update 0, ciphertext {j}")
            for i, up in enumerate(updates[1:], start=1):
                seal.evaluator.add_inplace(acc, seal.load(up.ciphertexts[j], f"update {i}, ciphertext {j}"))
            sums.append(seal.save(acc))
    return EncryptedUpdate(tuple(sums), tuple(hashlib.sha256(c).digest() for c in sums), updates[0].layout, params,
                           updates[0].key_id, n_clients, sum(up.n_clipped for up in updates))


def decrypt_average(context: ts.Context | bytes, aggregate: EncryptedUpdate,
                    params: CkksParams | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Decrypt an aggregate into the weighted average Σ n_k x_k / Σ n_k (float64 arrays) and Σ n_k.

    Every decoded slot component must lie within ``noise_bound(n_clients)/Δ`` of an integer
    (else :class:`CiphertextError`: wrong secret key, corrupted or forged ciphertext); a total
    count of zero raises :class:`CountError`. See :func:`precision_bound` for the accuracy.
    """
    params = params or CkksParams()
    context = _as_context(context)
    if not context.is_private():
        raise SecretKeyError("decrypt_average needs the secret context; this one has no secret key")
    if aggregate.params != params:
        raise LayoutError(f"the aggregate was made with other CkksParams: {aggregate.params} vs {params}")
    _check_updates([aggregate], _key_id(context))
    with _seal(context, params) as seal:
        reals = np.concatenate([seal.decrypt(seal.load(ct, f"aggregate ciphertext {j}"))
                                for j, ct in enumerate(aggregate.ciphertexts)])
    ints = np.rint(reals)
    deviation, tolerance = float(np.abs(reals - ints).max()), params.noise_bound(aggregate.n_clients) / params.scale
    if deviation > tolerance:
        raise CiphertextError(f"decrypted values lie up to {deviation:.3g} from integers (bound {tolerance:.3g}): "
                              "wrong secret key, corrupted/forged ciphertext, or too many clients")
    ints = ints.astype(np.int64)
    total, n, limbs = int(ints[0]), aggregate.n_values, params.limbs
    if total == 0:
        raise CountError("the total example count of the aggregate is zero; there is no average")
    if not 0 < total <= aggregate.n_clients * params.max_count or np.any(ints[1 + limbs * n:]):
        raise CiphertextError(f"the aggregate decrypts to an impossible count ({total}) or non-zero padding")
    s = _from_limbs(ints[1:1 + limbs * n].reshape(limbs, n), params)
    flat = s.astype(np.float64) * params.step / total
    out, pos = {}, 0
    for name, shape in aggregate.layout:
        size = math.prod(shape)
        out[name] = flat[pos:pos + size].reshape(shape)
        pos += size
    return out, total


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
    if not 1 <= n_clients <= params.max_clients:
        raise CapacityError(f"n_clients={n_clients} outside 1..max_clients={params.max_clients}")
    if not 1 <= max_count <= params.max_count:
        raise CountError(f"max_count={max_count} outside 1..CkksParams.max_count={params.max_count}")
    total = n_clients if total_count is None else total_count
    if total < n_clients:
        raise CountError(f"total_count={total} < n_clients={n_clients}: every client has ≥ 1 example")
    return n_clients * params.step / (2 * total) + 2.0**-52 * (params.clip_range + params.step)
