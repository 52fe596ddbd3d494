"""The seeded-c0 CKKS path: bit-exact sums, the c0 bytes and seed expansion, replays, SEAL's memory, workers."""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.errors import ConfigError
from fedicd.federated.outcome import KeyMismatchError
from fedicd.secure import ckks_seal, ckks_workers
from fedicd.secure.ckks import aggregate_encrypted, decrypt_average, encrypt_update
from fedicd.secure.ckks_errors import CiphertextError, ReplayError, SealLayoutError
from fedicd.secure.ckks_keys import make_keys
from fedicd.secure.ckks_packing import clip_values, flatten, from_limbs, pack, to_fixed_point, unpack
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_poly import expand_seed, pack_rows, residue_widths, row_bytes, unpack_rows
from fedicd.secure.ckks_update import EncryptedUpdate

PARAMS = CkksParams()
Q = 281474976694273  # SEAL's 48-bit data prime for N = 4096 (the defaults)


@functools.cache
def keys(tag: str = "a") -> tuple[ts.Context, ts.Context]:
    secret, public = make_keys(PARAMS)
    return ts.context_from(secret), ts.context_from(public)


def random_updates(n_clients: int, n_values: int, seed: int = 0) -> tuple[list[dict[str, np.ndarray]], list[int]]:
    rng = np.random.default_rng(seed)
    updates = [{"w": rng.uniform(-16, 16, n_values).astype(np.float32),
                "b": (0.05 * rng.standard_normal(7)).astype(np.float32)} for _ in range(n_clients)]
    return updates, [int(c) for c in rng.integers(1, PARAMS.max_count + 1, n_clients)]


def exact_average(updates, counts) -> dict[str, np.ndarray]:
    """The fixed-point sum computed in integers (what the CKKS path must reproduce bit for bit)."""
    digits = sum(pack(n, to_fixed_point(clip_values(*flatten(u), PARAMS, False)[0], n, PARAMS), PARAMS).astype(np.int64)
                 for u, n in zip(updates, counts))
    return unpack(digits.ravel(), flatten(updates[0])[0], len(updates), PARAMS)[0]


# -- exactness ------------------------------------------------------------------------------------
def test_aggregate_decrypts_to_the_exact_fixed_point_sum():
    secret, public = keys()
    updates, counts = random_updates(6, 9000)
    encrypted = [encrypt_update(secret, u, n, PARAMS) for u, n in zip(updates, counts)]
    avg, total = decrypt_average(secret, aggregate_encrypted(public, encrypted), PARAMS)
    assert total == sum(counts)
    for name, value in exact_average(updates, counts).items():
        np.testing.assert_array_equal(avg[name], value)  # bit-exact, not merely within the bound


def test_limbs_of_the_sum_are_the_sum_of_the_limbs():
    rng = np.random.default_rng(1)
    u = [rng.integers(-PARAMS.value_bound, PARAMS.value_bound + 1, 500) for _ in range(3)]
    rows = sum(pack(5, x, PARAMS) for x in u)
    assert np.array_equal(from_limbs(rows.ravel()[1:1001].reshape(2, 500).astype(np.int64), PARAMS), sum(u))


def test_workers_do_not_change_the_result():
    secret, public = keys()
    updates, counts = random_updates(3, 600_000, seed=2)  # 293 ciphertexts: several chunks per worker
    serial = [encrypt_update(secret, u, n, PARAMS) for u, n in zip(updates, counts)]
    parallel = [encrypt_update(secret, updates[0], counts[0], PARAMS, workers=2), *serial[1:]]
    one, two = aggregate_encrypted(public, serial), aggregate_encrypted(public, serial, workers=2)
    assert two == one  # the server's sum is deterministic
    expected = exact_average(updates, counts)
    for aggregate, workers in ((one, 2), (aggregate_encrypted(public, parallel, workers=2), 1)):
        avg, _ = decrypt_average(secret, aggregate, PARAMS, workers=workers)
        for name, value in expected.items():
            np.testing.assert_array_equal(avg[name], value)
    assert not ckks_workers._NO_POOLS  # the worker processes did the work (no fallback to this process)


def test_workers_setting():
    assert ckks_workers.resolve_workers(0) == len(os.sched_getaffinity(0))
    assert ckks_workers.resolve_workers(3) == 3
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="workers must be an integer >= 0"):
            ckks_workers.resolve_workers(bad)
    spans = ckks_workers.chunks(532, 2)
    assert sum(n for _, n in spans) == 532 and len(spans) >= 4 and spans[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))


# -- bytes ----------------------------------------------------------------------------------------
def test_download_is_about_one_upload():
    secret, public = keys()
    updates, counts = random_updates(4, 100_000)
    encrypted = [encrypt_update(secret, u, n, PARAMS) for u, n in zip(updates, counts)]
    aggregate = aggregate_encrypted(public, encrypted)
    up, down = len(encrypted[0].to_bytes()), len(aggregate.to_bytes())
    assert aggregate.seeds == tuple(s for e in encrypted for s in e.seeds)
    assert down - up == 32 * 3  # the other clients' seeds: the header's counts have as many digits
    assert up / (4 * 100_007) < 3.05 and len(aggregate.body) == aggregate.n_ciphertexts * 4096 * 6


moduli_lists = st.lists(st.integers(2**20, 2**60 - 1), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(moduli=moduli_lists, n=st.sampled_from([1, 2, 8, 64]), rows=st.integers(1, 5), data=st.data())
def test_c0_bytes_round_trip(moduli, n, rows, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    values = np.concatenate([rng.integers(0, q, (rows, n), dtype=np.uint64) for q in moduli], axis=1)
    values[0, :1] = [moduli[0] - 1]  # the largest residue too
    body = pack_rows(values, moduli, n)
    assert len(body) == rows * row_bytes(moduli, n) == rows * n * sum(residue_widths(moduli))
    assert np.array_equal(unpack_rows(body, 0, rows, moduli, n), values)
    first = data.draw(st.integers(0, rows - 1))
    count = data.draw(st.integers(1, rows - first))
    assert np.array_equal(unpack_rows(body, first, count, moduli, n), values[first:first + count])


@settings(max_examples=15, deadline=None, derandomize=True)
@given(first=st.integers(0, 40), count=st.integers(1, 6), q=st.sampled_from([Q, 2**20 - 3, 786433, 2**59 + 21]))
def test_seed_expansion_is_a_pure_function_of_seed_and_index(first, count, q):
    seed = bytes(range(32))
    whole = expand_seed(seed, 0, first + count, [q], 256)
    assert whole.dtype == np.uint64 and int(whole.max()) < q
    assert np.array_equal(expand_seed(seed, first, count, [q], 256), whole[first:])
    assert not np.array_equal(expand_seed(bytes(32), first, count, [q], 256), whole[first:])


def test_seed_expansion_is_uniform_where_words_are_rejected():
    q = 2**19 + 1  # 20-bit words: almost half are rejected, so every row takes the second stream
    a = expand_seed(bytes(32), 0, 16, [q], 1024).ravel()
    assert int(a.max()) < q
    counts = np.bincount((a * 8 // q).astype(np.int64), minlength=8)
    assert np.all(np.abs(counts - a.size / 8) < 5 * np.sqrt(a.size / 8))


# -- named errors ---------------------------------------------------------------------------------
def test_replayed_updates_are_refused():
    secret, public = keys()
    one = encrypt_update(secret, {"w": np.ones(5, np.float32)}, 1, PARAMS)
    with pytest.raises(ReplayError, match="update 1 carries the seed of update 0"):
        aggregate_encrypted(public, [one, one])


def test_a_changed_seed_or_an_old_format_is_named():
    secret, public = keys()
    encrypted = [encrypt_update(secret, {"w": np.full(5, 0.5, np.float32)}, 2, PARAMS) for _ in range(2)]
    aggregate = aggregate_encrypted(public, encrypted)
    wire = bytearray(aggregate.to_bytes())
    seed_at = wire.index(aggregate.seeds[1])
    wire[seed_at] ^= 1
    with pytest.raises(CiphertextError, match="header or the seeds do not match"):
        EncryptedUpdate.from_bytes(bytes(wire))
    forged = dataclasses.replace(aggregate, seeds=(aggregate.seeds[0], bytes(32)))  # digest recomputed on the way
    with pytest.raises(CiphertextError, match="from integers"):
        decrypt_average(secret, EncryptedUpdate.from_bytes(forged.to_bytes()), PARAMS)
    with pytest.raises(CiphertextError, match="wire format version 1"):
        EncryptedUpdate.from_bytes(b"FEDICD-CKKS\x01" + bytes(100))


def test_an_old_checkpoint_cannot_be_resumed():
    from types import SimpleNamespace

    from fedicd.secure.ckks_round import STATE_KEY
    from fedicd.secure.round_ckks import check_resumed_key

    state = {STATE_KEY: np.frombuffer(b"FEDICD-CKKS\x01" + bytes(64), dtype=np.uint8)}
    with pytest.raises(KeyMismatchError, match="wire format version 1.*start a new run"):
        check_resumed_key(SimpleNamespace(key="k"), state)


def test_the_server_refuses_a_replay_in_a_later_round(tmp_path):
    from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer, write_key_dir

    write_key_dir(tmp_path, PARAMS)
    server, holder = CkksServer(tmp_path, (("w", (3,)),), workers=1), CkksKeyHolder(tmp_path / "secret.ctx", tmp_path)
    first, second = (holder.encrypt({"w": np.ones(3, np.float32)}, 1)[0] for _ in range(2))
    aggregate, rejected = server.aggregate([(0, first), (1, second), (2, second)])
    assert aggregate.n_clients == 2
    assert rejected == [{"partition-id": 2, "reason": "ReplayError: it carries the seed of client 1's update of this "
                                                      "round (a replayed or duplicated update)"}]
    again, rejected = server.aggregate([(0, first)])
    assert again is None and "already added in an earlier round" in rejected[0]["reason"]


def test_the_server_adds_without_temporary_files(tmp_path, monkeypatch):
    from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer, write_key_dir

    write_key_dir(tmp_path, PARAMS)
    server, holder = CkksServer(tmp_path, (("w", (9000,)),), workers=2), CkksKeyHolder(tmp_path / "secret.ctx", tmp_path)
    records = [(i, holder.encrypt({"w": np.full(9000, i, np.float32)}, 1)[0]) for i in range(3)]

    def refuse(*args, **kwargs):
        raise AssertionError("the server touched the file system")

    for name in ("mkstemp", "mkdtemp", "TemporaryDirectory", "NamedTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)
    monkeypatch.setattr("builtins.open", refuse)
    aggregate, rejected = server.aggregate(records)
    assert rejected == [] and aggregate.n_clients == 3


# -- SEAL's memory --------------------------------------------------------------------------------
def test_coefficient_views_read_and_write_seals_own_memory():
    secret, _ = keys()
    seal = ckks_seal.Seal(secret, PARAMS)
    ct = seal._encrypt_plain(np.arange(4096.0))
    view, dyn = ckks_seal.coefficients(ct), ct.dyn_array()
    assert view.size == dyn.size() == 2 * 4096
    assert all(int(view[i]) == dyn[i] for i in (0, 1, 4095, 4096, 8191))
    view[7] = 12345
    assert dyn[7] == 12345 and ct.data(0) == int(view[0])
    plain = sa.Plaintext()
    with pytest.raises(SealLayoutError, match="no coefficients"):
        ckks_seal.coefficients(plain)


def test_another_memory_layout_is_refused_not_read(monkeypatch):
    secret, _ = keys()
    ct = ckks_seal.Seal(secret, PARAMS)._encrypt_plain(np.zeros(4096))
    monkeypatch.setattr(ckks_seal, "_DYNARRAY_SIZE", 8)
    with pytest.raises(SealLayoutError, match="laid out differently"):
        ckks_seal.coefficients(ct)


def test_worker_processes_return_results_in_order_and_raise_named_errors():
    from fedicd.secure.ckks_procs import WorkerPool

    secret, _ = keys()
    blob = secret.serialize(save_public_key=False, save_secret_key=True, save_galois_keys=False,
                            save_relin_keys=False)
    pool = WorkerPool(2, init=("init", (blob, PARAMS.to_dict())))
    try:
        reals = np.zeros((2, 4096))
        reals[:, 0] = [3.0, 4.0]
        parts = pool.map("encrypt", [(reals[:1], bytes(32), 0), (reals[1:], bytes(32), 1)])
        body = b"".join(p[0] for p in parts)
        ints, deviation = ckks_workers.decrypt_chunk(ckks_seal.Seal(secret, PARAMS), body, 0, [bytes(32)])
        assert ints[:, 0].tolist() == [3, 4] and not ints[:, 1:].any() and deviation < 0.5
        with pytest.raises(CiphertextError, match="aggregate ciphertext 5: a residue is not below"):
            pool.map("decrypt", [(body[:4096 * 6], 0, [bytes(32)]), (b"\xff" * 4096 * 6, 5, [bytes(32)])])
    finally:
        pool.close()
