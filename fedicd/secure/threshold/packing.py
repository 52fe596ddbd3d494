"""Fixed-point packing of a model update into CKKS values, and back from decrypted integer sums.

A client's update is the vector (u_1 … u_P, n) with u_i = round(n·x_i·2^f), the count last; it is cut into
chunks of N values, each chunk N/2 complex numbers (real and imaginary parts), one ciphertext each. After
decryption the values are rounded to integers (exact: :class:`~fedicd.secure.threshold.params.ThresholdParams`
keeps the error below 1/4) and the average is Σu·2^-f / Σn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedicd.secure.ckks_errors import CiphertextError, ClipError, CountError, LayoutError, NonFiniteError
from fedicd.secure.threshold.params import ThresholdParams

__all__ = ["Layout", "encode_update", "to_complex_chunks", "from_complex_chunks", "integer_sums", "average"]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the model's arrays, in order (public; every update must match it)."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        return cls(tuple((k, tuple(int(s) for s in np.shape(v))) for k, v in arrays.items()))

    @property
    def size(self) -> int:
        """Model values (the count adds one more value to each update)."""
        return sum(math.prod(shape) for _, shape in self.entries)

    def n_ciphertexts(self, params: ThresholdParams) -> int:
        return -(-(self.size + 1) // params.values_per_ciphertext)

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self.entries).encode()).hexdigest()[:16]

    def check(self, arrays: Mapping[str, np.ndarray]) -> None:
        got = Layout.of(arrays)
        if got != self:
            raise LayoutError(f"the update's arrays {list(got.entries)} differ from the model's {list(self.entries)}")


def encode_update(arrays: Mapping[str, np.ndarray], n_examples: int, params: ThresholdParams, layout: Layout, *,
                  clip: bool = False) -> tuple[np.ndarray, int]:
    """The integer vector (u_1 … u_P, n) as float64, and how many values were clipped (``clip``; else refused)."""
    layout.check(arrays)
    if isinstance(n_examples, bool) or not 1 <= int(n_examples) <= params.max_count:
        raise CountError(f"example count {n_examples} outside 1..max_count={params.max_count}")
    flat = np.concatenate([np.asarray(arrays[k], dtype=np.float64).ravel() for k, _ in layout.entries]
                          + [np.zeros(0)])
    if not np.all(np.isfinite(flat)):
        raise NonFiniteError(f"the update holds {int(np.sum(~np.isfinite(flat)))} NaN or infinite values")
    outside = int(np.sum(np.abs(flat) > params.clip_range))
    if outside and not clip:
        raise ClipError(f"{outside} values outside ±clip_range={params.clip_range:g} (largest "
                        f"{float(np.max(np.abs(flat))):.4g}); set secure_aggregation.clip_values = true to clip them")
    flat = np.clip(flat, -params.clip_range, params.clip_range)
    u = np.rint(flat * float(n_examples) * 2.0**params.frac_bits)
    return np.concatenate([u, [float(n_examples)]]), outside


def to_complex_chunks(values: np.ndarray, params: ThresholdParams) -> list[np.ndarray]:
    """``values`` (float64) as complex128 chunks of N/2 (zero-padded): one per ciphertext."""
    per = params.values_per_ciphertext
    padded = np.zeros(-(-len(values) // per) * per)
    padded[: len(values)] = values
    pairs = padded.reshape(-1, per // 2, 2)
    return [np.ascontiguousarray(p[:, 0] + 1j * p[:, 1]) for p in pairs]


def from_complex_chunks(chunks: list[np.ndarray], length: int) -> np.ndarray:
    """The float64 values of decrypted complex chunks (inverse of :func:`to_complex_chunks`), first ``length``."""
    flat = np.stack([np.stack([np.real(c), np.imag(c)], axis=1).ravel() for c in chunks]).ravel()
    return flat[:length]


def integer_sums(values: np.ndarray, tolerance: float, magnitude: float) -> np.ndarray:
    """Round decrypted sums to integers; refuse values farther than ``tolerance`` from an integer or larger than
    ``magnitude`` (a sum of valid updates is neither: a missing or foreign partial decryption leaves a share of
    the key's mask, spread over the whole modulus: far above the largest sum, with uniform fractional parts)."""
    ints = np.rint(values)
    off = float(np.max(np.abs(values - ints))) if len(values) else 0.0
    top = float(np.max(np.abs(values))) if len(values) else 0.0
    if not (off <= tolerance and top <= magnitude):
        raise CiphertextError(f"the fused plaintext is not a sum of updates (values up to {top:.3g}, allowed "
                              f"{magnitude:.3g}; {off:.3g} away from integers, allowed {tolerance:.3g}): a partial "
                              "decryption is missing, foreign or corrupted")
    return ints


def average(sums: np.ndarray, layout: Layout, params: ThresholdParams) -> dict[str, np.ndarray]:
    """The weighted average Σu·2^-f / Σn per array (float32), from the integer sums (count last)."""
    total = float(sums[layout.size])
    if total < 1:
        raise CountError(f"the decrypted total count is {total:g}: no examples were aggregated")
    flat = sums[: layout.size] * 2.0**-params.frac_bits / total
    out, offset = {}, 0
    for name, shape in layout.entries:
        size = math.prod(shape)
        out[name] = flat[offset: offset + size].reshape(shape).astype(np.float32)
        offset += size
    return out
