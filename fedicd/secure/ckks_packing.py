"""Fixed-point packing of an update into CKKS slot components, and its inverse.

A client's arrays are flattened (:func:`flatten`), clipped to ±clip_range (:func:`clip_values`)
and weighted into integers u = round(n·x·2^f) (:func:`to_fixed_point`); :func:`pack` splits each
u into ``limbs`` balanced base-2^B digits and lays them out as rows of N reals, one row per
ciphertext: [count, digits of limb 0, limb 1, ..., zero padding]. :func:`unpack` turns the
decrypted, rounded digit sums back into the weighted average (see :mod:`fedicd.secure.ckks`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from fedicd.secure.ckks_errors import CiphertextError, ClipError, CountError, LayoutError, NonFiniteError
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_update import Layout

__all__ = ["clip_values", "flatten", "from_limbs", "n_ciphertexts", "pack", "to_fixed_point", "to_limbs", "unpack"]


def flatten(arrays: Mapping[str, np.ndarray]) -> tuple[Layout, list[np.ndarray]]:
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


def clip_values(layout: Layout, flats: list[np.ndarray], params: CkksParams, clip: bool) -> tuple[np.ndarray, int]:
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


def to_fixed_point(values: np.ndarray, n_examples: int, params: CkksParams) -> np.ndarray:
    """u = round(n · x · 2^f), the client's weighted values as integers."""
    # n·x·2^f is exact in float64 for float32 x and n ≤ 2^29, so u is the correctly rounded integer
    return np.rint(values * int(n_examples) * 2.0**params.frac_bits).astype(np.int64)


def to_limbs(u: np.ndarray, params: CkksParams) -> np.ndarray:
    """Split integers into ``limbs`` balanced base-2^B digits (low digits in [-2^(B-1), 2^(B-1)))."""
    digits, bits = [], params.limb_bits
    for _ in range(params.limbs - 1):
        half, mask = 1 << (bits - 1), (1 << bits) - 1
        low = ((u + half) & mask) - half
        digits.append(low)
        u = (u - low) >> bits
    digits.append(u)
    return np.stack(digits)


def from_limbs(digits: np.ndarray, params: CkksParams) -> np.ndarray:
    """Inverse of :func:`to_limbs` (also for sums of digits: the map is linear)."""
    return sum(digits[level] * (1 << (params.limb_bits * level)) for level in range(params.limbs))


def n_ciphertexts(n_values: int, params: CkksParams) -> int:
    """Ciphertexts an update of ``n_values`` values needs (its count, then ``limbs`` digits per value)."""
    return -(-(1 + params.limbs * n_values) // params.poly_modulus_degree)


def pack(count: int, u: np.ndarray, params: CkksParams) -> np.ndarray:
    """Reals to encrypt, one row per ciphertext: [count, digits of limb 0, limb 1, ..., zero padding]."""
    reals = np.zeros(n_ciphertexts(u.size, params) * params.poly_modulus_degree)
    reals[0] = count
    reals[1:1 + params.limbs * u.size] = to_limbs(u, params).ravel()
    return reals.reshape(-1, params.poly_modulus_degree)


def unpack(ints: np.ndarray, layout: Layout, n_clients: int, params: CkksParams) -> tuple[dict[str, np.ndarray], int]:
    """Decrypted, rounded rows (see :func:`pack`) of a sum of ``n_clients`` updates → (average arrays, Σ n_k)."""
    total, n, limbs = int(ints[0]), sum(math.prod(shape) for _, shape in layout), params.limbs
    if total == 0:
        raise CountError("the total example count of the aggregate is zero; there is no average")
    if not 0 < total <= n_clients * params.max_count or np.any(ints[1 + limbs * n:]):
        raise CiphertextError(f"the aggregate decrypts to an impossible count ({total}) or non-zero padding")
    s = from_limbs(ints[1:1 + limbs * n].reshape(limbs, n), params)
    flat = s.astype(np.float64) * params.step / total
    out, pos = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = flat[pos:pos + size].reshape(shape)
        pos += size
    return out, total
