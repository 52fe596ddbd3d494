"""CKKS secure aggregation: exact-within-bound FedAvg, key separation, named errors, byte budget."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import stat

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedicd.errors import ConfigError
from fedicd.secure import ckks, ckks_keys, ckks_packing
from fedicd.secure.ckks import aggregate_encrypted, decrypt_average, encrypt_update
from fedicd.secure.ckks_errors import (
    CapacityError,
    CiphertextError,
    ClipError,
    CountError,
    LayoutError,
    NonFiniteError,
    SecretKeyError,
)
from fedicd.secure.ckks_keys import load_context, make_keys, save_keys
from fedicd.secure.ckks_params import CkksParams, precision_bound
from fedicd.secure.ckks_update import EncryptedUpdate

PARAMS = CkksParams()
# One value per real slot component: half the bytes, coarse precision, small counts only.
COMPACT = CkksParams(limbs=1, clip_range=4.0, frac_bits=9, max_clients=16, max_count=4096)


@functools.cache
def keys(tag: str = "a", params: CkksParams = PARAMS) -> tuple[ts.Context, ts.Context]:
    """(secret, public) contexts, made once per tag and parameter set."""
    secret, public = make_keys(params)
    return ts.context_from(secret), ts.context_from(public)


def weighted_average(updates: list[dict[str, np.ndarray]], counts: list[int]) -> dict[str, np.ndarray]:
    total = sum(counts)
    return {name: sum(n * u[name].astype(np.float64) for n, u in zip(counts, updates)) / total for name in updates[0]}


def round_trip(updates, counts, params=PARAMS):
    secret, public = keys(params=params)
    encrypted = [encrypt_update(secret, u, n, params) for u, n in zip(updates, counts)]
    return decrypt_average(secret, aggregate_encrypted(public, encrypted), params)


def with_ciphertexts(update: EncryptedUpdate, cts: tuple[bytes, ...]) -> EncryptedUpdate:
    """The update with other ciphertext bytes (c0) and matching digests (as a forger would send)."""
    return dataclasses.replace(update, body=b"".join(cts), digests=tuple(hashlib.sha256(c).digest() for c in cts))


# -- correctness ---------------------------------------------------------------------------------
def test_hand_case_is_exact():
    a = {"w": np.array([[1.0, -2.0], [0.5, 16.0]], np.float32), "b": np.array([0.0], np.float32)}
    b = {"w": np.array([[3.0, 2.0], [0.25, -16.0]], np.float32), "b": np.array([-1.5], np.float32)}
    avg, total = round_trip([a, b], [1, 3])
    assert total == 4
    np.testing.assert_array_equal(avg["w"], [[2.5, 1.0], [0.3125, -8.0]])
    np.testing.assert_array_equal(avg["b"], [-1.125])
    assert avg["w"].dtype == np.float64 and avg["w"].shape == (2, 2)


shapes = st.lists(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40), min_size=1, max_size=3)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data(), n_clients=st.integers(1, 5), shapes=shapes)
def test_average_matches_float64_fedavg_within_bound(data, n_clients, shapes):
    clip = PARAMS.clip_range
    elements = st.floats(-clip, clip, width=32, allow_nan=False, allow_infinity=False)
    updates = [{f"p{i}": data.draw(hnp.arrays(np.float32, shape, elements=elements)) for i, shape in enumerate(shapes)}
               for _ in range(n_clients)]
    counts = data.draw(st.lists(st.integers(1, PARAMS.max_count), min_size=n_clients, max_size=n_clients))
    avg, total = round_trip(updates, counts)
    assert total == sum(counts)
    reference = weighted_average(updates, counts)
    bound = precision_bound(PARAMS, n_clients, max(counts))
    assert bound <= 2.0**-21 + 1e-14  # the documented default: ≤ 4.8e-7
    assert precision_bound(PARAMS, n_clients, max(counts), total) <= bound
    for name, ref in reference.items():
        # + float64 rounding of the reference itself
        assert np.abs(avg[name] - ref).max() <= precision_bound(PARAMS, n_clients, max(counts), total) + 1e-14


def test_compact_params_within_bound_and_half_the_bytes():
    rng = np.random.default_rng(3)
    updates = [{"w": rng.uniform(-4, 4, 8000).astype(np.float32)} for _ in range(4)]
    counts = [4096, 1, 77, 1000]
    avg, total = round_trip(updates, counts, COMPACT)
    error = np.abs(avg["w"] - weighted_average(updates, counts)["w"]).max()
    assert error <= precision_bound(COMPACT, 4, 4096, total) and total == sum(counts)
    secret, _ = keys(params=COMPACT)
    one = encrypt_update(secret, updates[0], 1, COMPACT)
    two = encrypt_update(secret, updates[0], 1, PARAMS)
    assert one.nbytes < 0.6 * two.nbytes


def test_byte_ratio_at_most_4_on_100k_parameters():
    rng = np.random.default_rng(0)
    update = {"w": (0.1 * rng.standard_normal((250, 300))).astype(np.float32),
              "b": rng.uniform(-1, 1, 25_000).astype(np.float32)}
    fp32_bytes = 4 * 100_000
    encrypted = encrypt_update(keys()[0], update, 123, PARAMS)
    wire = encrypted.to_bytes()
    assert encrypted.nbytes < len(wire) < 1.01 * encrypted.nbytes
    assert len(wire) / fp32_bytes <= 4.0
    assert len(wire) / fp32_bytes < 3.05  # c0 at 6 bytes per coefficient + a seed: ~3.0x
    assert EncryptedUpdate.from_bytes(wire) == encrypted


def test_clipping_is_counted_when_asked():
    secret, public = keys()
    update = {"w": np.array([20.0, -30.0, 1.0], np.float32)}
    with pytest.raises(ClipError, match="'w' has 2 values outside"):
        encrypt_update(secret, update, 1, PARAMS)
    encrypted = [encrypt_update(secret, update, 2, PARAMS, clip=True) for _ in range(2)]
    assert encrypted[0].n_clipped == 2
    aggregate = aggregate_encrypted(public, encrypted)
    assert aggregate.n_clipped == 4 and aggregate.n_clients == 2
    avg, total = decrypt_average(secret, aggregate, PARAMS)
    np.testing.assert_array_equal(avg["w"], [16.0, -16.0, 1.0])
    assert total == 4


# -- keys ----------------------------------------------------------------------------------------
def test_public_context_cannot_decrypt():
    secret, public = keys()
    assert secret.is_private() and not public.is_private()
    vector = ts.ckks_vector(secret, [1.0, 2.0])
    vector.link_context(public)
    with pytest.raises(ValueError):
        vector.decrypt()
    encrypted = encrypt_update(secret, {"w": np.ones(3, np.float32)}, 1, PARAMS)
    aggregate = aggregate_encrypted(public, [encrypted])  # the server needs only the public context
    with pytest.raises(SecretKeyError):
        decrypt_average(public, aggregate, PARAMS)
    with pytest.raises(SecretKeyError):
        encrypt_update(public, {"w": np.ones(3, np.float32)}, 1, PARAMS)


def test_save_and_load_keys(tmp_path):
    secret_path, public_path = save_keys(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(secret_path).st_mode) == 0o600
    secret, public = load_context(secret_path), load_context(public_path)
    assert secret.is_private() and not public.is_private()
    assert ckks_keys.key_id(secret) == ckks_keys.key_id(public)
    encrypted = encrypt_update(secret, {"w": np.array([0.5], np.float32)}, 2, PARAMS)
    avg, total = decrypt_average(secret, aggregate_encrypted(public, [encrypted]), PARAMS)
    assert avg["w"][0] == 0.5 and total == 2
    with pytest.raises(FileExistsError):
        save_keys(tmp_path / "keys")
    (tmp_path / "junk.ctx").write_bytes(b"not a context")
    with pytest.raises(ConfigError, match="not a serialised TenSEAL context"):
        load_context(tmp_path / "junk.ctx")


# -- named errors --------------------------------------------------------------------------------
def test_update_from_another_key_is_rejected():
    secret_a, public_a = keys("a")
    secret_b, _ = keys("b")
    update = {"w": np.arange(10, dtype=np.float32)}
    mine, theirs = encrypt_update(secret_a, update, 1, PARAMS), encrypt_update(secret_b, update, 1, PARAMS)
    with pytest.raises(CiphertextError, match="update 1 was encrypted under another key"):
        aggregate_encrypted(public_a, [mine, theirs])
    # SEAL itself cannot tell: a ciphertext made under another key with the same parameters loads
    # and adds silently. Relabelled, it passes the server; decryption catches it (noise is ~uniform).
    forged = dataclasses.replace(theirs, key_id=mine.key_id)
    aggregate = aggregate_encrypted(public_a, [mine, forged])
    with pytest.raises(CiphertextError, match="from integers"):
        decrypt_average(secret_a, aggregate, PARAMS)


def test_ciphertext_under_other_parameters_is_rejected():
    other = CkksParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(50, 60), global_scale=19)
    secret_a, public_a = keys()
    secret_o, _ = keys(params=other)
    update = {"w": np.zeros(5, np.float32)}
    mine, theirs = encrypt_update(secret_a, update, 1, PARAMS), encrypt_update(secret_o, update, 1, other)
    with pytest.raises(LayoutError, match="update 1 was encrypted with other CkksParams"):
        aggregate_encrypted(public_a, [mine, theirs])
    forged = with_ciphertexts(mine, theirs.ciphertexts)  # N = 8192 at 7 bytes per residue: not this context's c0
    with pytest.raises(CiphertextError, match="update 1 has 1 ciphertexts \\(57344 bytes\\); its layout needs 1"):
        aggregate_encrypted(public_a, [mine, forged])
    relabelled = dataclasses.replace(theirs, params=PARAMS, layout=mine.layout, key_id=mine.key_id)
    with pytest.raises(CiphertextError, match="update 1 was made under other data primes"):
        aggregate_encrypted(public_a, [mine, relabelled])
    with pytest.raises(ConfigError, match="the context has N=4096"):
        encrypt_update(secret_a, update, 1, other)


@pytest.mark.parametrize("position", [0, 10, 40, 200, 5000, -3])
def test_corrupted_bytes_are_rejected(position):
    secret, public = keys()
    good = encrypt_update(secret, {"w": np.linspace(-1, 1, 100, dtype=np.float32)}, 3, PARAMS)
    data = bytearray(good.ciphertexts[0])
    data[position] ^= 0x5A
    bad = dataclasses.replace(good, body=bytes(data), seeds=(b"\1" * 32,))  # another seed: no replay
    with pytest.raises(CiphertextError, match="update 1, ciphertext 0: bytes do not match"):
        aggregate_encrypted(public, [good, bad])
    # with a matching digest (and a fresh seed, else it is a replay), a residue at or above the prime is caught
    # by the server and any other change by decryption
    forged = dataclasses.replace(with_ciphertexts(good, (bytes(data),)), seeds=(bytes(32),))
    with pytest.raises(CiphertextError, match="update 1, ciphertext 0: a residue is not below|from integers"):
        decrypt_average(secret, aggregate_encrypted(public, [good, forged]), PARAMS)


def test_truncated_or_padded_wire_bytes_are_rejected():
    wire = encrypt_update(keys()[0], {"w": np.ones(4, np.float32)}, 1, PARAMS).to_bytes()
    for data in (wire[:-1], wire + b"\0", b"junk" + wire, wire[:20]):
        with pytest.raises(CiphertextError, match="malformed encrypted update"):
            EncryptedUpdate.from_bytes(data)


def test_different_layout_is_rejected():
    secret, public = keys()
    a = encrypt_update(secret, {"w": np.zeros((2, 3), np.float32)}, 1, PARAMS)
    b = encrypt_update(secret, {"w": np.zeros((3, 2), np.float32)}, 1, PARAMS)
    c = encrypt_update(secret, {"v": np.zeros((2, 3), np.float32)}, 1, PARAMS)
    for other in (b, c):
        with pytest.raises(LayoutError, match="update 1 has another layout"):
            aggregate_encrypted(public, [a, other])
    missing = dataclasses.replace(a, body=b"", digests=())
    with pytest.raises(CiphertextError, match="update 1 has 0 ciphertexts"):
        aggregate_encrypted(public, [a, missing])
    with pytest.raises(LayoutError, match="no updates"):
        aggregate_encrypted(public, [])


def test_counts_out_of_range():
    secret, public = keys()
    update = {"w": np.ones(3, np.float32)}
    for n in (0, -1, PARAMS.max_count + 1, 2.5, True):
        with pytest.raises(CountError):
            encrypt_update(secret, update, n, PARAMS)
    # a total of zero cannot come from encrypt_update; forge one from the packed form
    layout = (("w", (3,)),)
    zero = ckks._encrypt_packed(secret, ckks_packing.pack(0, np.zeros(3, np.int64), PARAMS), layout, PARAMS)
    with pytest.raises(CountError, match="total example count of the aggregate is zero"):
        decrypt_average(secret, aggregate_encrypted(public, [zero]), PARAMS)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(bad):
    update = {"ok": np.zeros(2, np.float32), "w": np.array([1.0, bad, 2.0], np.float32)}
    with pytest.raises(NonFiniteError, match="'w' holds 1 NaN/infinite"):
        encrypt_update(keys()[0], update, 1, PARAMS)


def test_integer_arrays_and_empty_updates_are_rejected():
    with pytest.raises(LayoutError, match="dtype int64"):
        encrypt_update(keys()[0], {"steps": np.array([3])}, 1, PARAMS)
    with pytest.raises(LayoutError, match="no arrays"):
        encrypt_update(keys()[0], {}, 1, PARAMS)


def test_too_many_clients():
    small = dataclasses.replace(PARAMS, max_clients=2)
    secret, public = keys()
    updates = [encrypt_update(secret, {"w": np.ones(2, np.float32)}, 1, small) for _ in range(3)]
    aggregate_encrypted(public, updates[:2])
    with pytest.raises(CapacityError, match="3 client updates"):
        aggregate_encrypted(public, updates)
    with pytest.raises(CapacityError):
        precision_bound(small, 3, 1)


# -- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, message", [
    ({"coeff_mod_bit_sizes": (60,)}, "at least two primes"),
    ({"coeff_mod_bit_sizes": (50, 60)}, "above the 109 bits allowed"),
    ({"poly_modulus_degree": 3000}, "must be one of"),
    ({"limbs": 1}, "too many bits for limbs=1"),
    ({"frac_bits": 40}, "below 2\\^53"),
    ({"global_scale": 16}, "global_scale=16 too small"),
    ({"max_count": 2**24}, "count field overflows"),
    ({"clip_range": float("nan")}, "clip_range must be a positive finite"),
    ({"limbs": 5}, "limbs must be 1 to 4"),
])
def test_invalid_params_name_the_problem(changes, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(PARAMS, **changes)


def test_default_params_budget():
    assert PARAMS.limb_bits == 22
    assert PARAMS.noise_bound(PARAMS.max_clients) < PARAMS.scale / 2
    assert precision_bound(PARAMS, 32, 2**20) <= 5e-7
    assert CkksParams(**PARAMS.to_dict()) == PARAMS
