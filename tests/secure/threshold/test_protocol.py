"""Threshold CKKS protocol (torch-free): the jointly decrypted average is FedAvg's; nobody short of the key
holders can decrypt; bad, foreign and replayed envelopes are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedicd.secure.ckks_errors import CiphertextError, ClipError
from fedicd.secure.threshold.envelope import Envelope
from fedicd.secure.threshold.errors import QuorumError
from fedicd.secure.threshold.params import precision_bound

from .conftest import fedavg64, joint_key, random_update, small_params

PARAMS = small_params()


@pytest.fixture(scope="module")
def three():
    return joint_key(PARAMS, 3)


def _round(parties, server, updates, counts, rnd):
    sent = [(p.party_id, p.encrypt(u, n, round=rnd, layout=server.layout)[0]) for p, u, n in zip(parties, updates,
                                                                                                    counts)]
    agg, rejected = server.add(sent, round=rnd)
    assert rejected == []
    parts = {p.party_id: p.partial_decrypt(agg, round=rnd) for p in parties}
    return agg, parts, server.fuse(agg, parts, round=rnd)


_ROUNDS = iter(range(1, 10_000))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), counts=st.lists(st.integers(1, PARAMS.max_count), min_size=3, max_size=3),
       scale=st.sampled_from([1e-3, 1.0, PARAMS.clip_range]))
def test_aggregate_of_three_clients_is_float64_fedavg_within_the_bound(three, seed, counts, scale):
    parties, server = three
    rng = np.random.default_rng(seed)
    updates = [random_update(server.layout, rng, scale) for _ in parties]
    _, _, avg = _round(parties, server, updates, counts, next(_ROUNDS))
    bound = precision_bound(PARAMS, 3, total_count=sum(counts)) + 2.0**-24 * PARAMS.clip_range  # + float32 output
    exact = fedavg64(updates, counts)
    for k in exact:
        assert np.max(np.abs(avg[k] - exact[k])) <= bound
    assert server.last_total == sum(counts)  # the count sum is exact, not approximately right


def test_the_server_alone_cannot_decrypt(three):
    parties, server = three
    rng = np.random.default_rng(1)
    updates = [random_update(server.layout, rng) for _ in parties]
    agg, parts, _ = _round(parties, server, updates, [3, 4, 5], 900)
    env = Envelope.from_bytes(agg, kind="aggregate", context=PARAMS.fingerprint)
    with pytest.raises(CiphertextError):  # c0 alone: OpenFHE's decoder refuses, or values far from integers
        server.fused_sums(env, [])
    with pytest.raises(QuorumError, match=r"key holders \[0, 1, 2\] are missing"):
        server.fuse(agg, {}, round=900)


def test_server_and_all_but_one_key_holder_cannot_decrypt(three):
    parties, server = three
    rng = np.random.default_rng(2)
    agg, parts, _ = _round(parties, server, [random_update(server.layout, rng) for _ in parties], [1, 2, 3], 901)
    env = Envelope.from_bytes(agg, kind="aggregate", context=PARAMS.fingerprint)
    colluders = [Envelope.from_bytes(parts[i], kind="partial", context=PARAMS.fingerprint) for i in (0, 1)]
    with pytest.raises(CiphertextError):
        server.fused_sums(env, colluders)
    with pytest.raises(QuorumError, match=r"holders \[2\] are missing"):
        server.fuse(agg, {0: parts[0], 1: parts[1]}, round=901)


def test_t_of_n_decrypts_without_a_dropped_holder_but_not_with_t_minus_1_colluders(shamir):
    params = small_params()
    parties, server = joint_key(params, 4, threshold=3)
    rng = np.random.default_rng(3)
    updates, counts = [random_update(server.layout, rng) for _ in parties], [2, 7, 1, 9]
    sent = [(p.party_id, p.encrypt(u, n, round=1)[0]) for p, u, n in zip(parties, updates, counts)]
    agg, _ = server.add(sent, round=1)
    parts = {p.party_id: p.partial_decrypt(agg, round=1) for p in parties[:3]}  # party 3 dropped out
    publics = {p.party_id: p.seal_public() for p in parties}
    resealed = {h: parties[h].reseal_shares([3], 0, publics[0])[3] for h in (1, 2)}
    parts.update(parties[0].recover_partials(agg, {3: resealed}, publics, round=1, n_parties=4, threshold=3))
    avg = server.fuse(agg, parts, round=1)
    exact = fedavg64(updates, counts)
    for k in exact:
        assert np.max(np.abs(avg[k] - exact[k])) <= precision_bound(params, 4, total_count=19) + 2.0**-20
    # t - 1 = 2 colluders (parties 0 and 1) with the server: 2 shares of party 3's key are too few, and their
    # parts with c0 are refused
    from fedicd.secure.threshold.errors import ThresholdError

    with pytest.raises(ThresholdError, match="2 shares of party 3's key, 3 needed"):
        parties[0].recover_partials(agg, {3: {1: resealed[1]}}, publics, round=1, n_parties=4, threshold=3)
    env = Envelope.from_bytes(agg, kind="aggregate", context=params.fingerprint)
    with pytest.raises(CiphertextError):
        server.fused_sums(env, [Envelope.from_bytes(parts[i], kind="partial", context=params.fingerprint)
                                for i in (0, 1)])


def test_corrupted_foreign_key_and_replayed_updates_are_refused_per_client(three):
    parties, server = three
    other_parties, _ = joint_key(PARAMS, 2)  # another federation's joint key, same parameters
    rng = np.random.default_rng(4)
    rnd = 902
    good = [(p.party_id, p.encrypt(random_update(server.layout, rng), 5, round=rnd)[0]) for p in parties]
    corrupted = bytearray(good[1][1])
    corrupted[-100] ^= 0xFF
    foreign = other_parties[0].encrypt(random_update(server.layout, rng), 5, round=rnd)[0]
    old = parties[2].encrypt(random_update(server.layout, rng), 5, round=rnd - 1)[0]
    agg, rejected = server.add([good[0], (1, bytes(corrupted)), (2, foreign), (2, old)], round=rnd)
    reasons = {(r["partition-id"], r["reason"].split(":")[0]) for r in rejected}
    assert reasons == {(1, "CiphertextError"), (2, "CiphertextError")} and len(rejected) == 3
    assert "does not match its SHA-256 digest" in rejected[0]["reason"]
    assert "not the joint key" in rejected[1]["reason"] and "not 902" in rejected[2]["reason"]
    _, rejected = server.add([good[0]], round=rnd)  # the same update again: a replay
    assert "already received (replayed)" in rejected[0]["reason"]
    assert server.last_parties == []  # nothing was added the second time
    # a key holder decrypts one aggregate per round: a replayed decryption request is refused
    parties[0].partial_decrypt(agg, round=rnd)
    with pytest.raises(CiphertextError, match="already decrypted an aggregate of round 902"):
        parties[0].partial_decrypt(agg, round=rnd)
    with pytest.raises(CiphertextError, match="tagged for round 902, not round 903"):
        parties[1].partial_decrypt(agg, round=rnd + 1)


def test_values_outside_the_clip_range_are_refused_or_clipped_and_counted(three):
    parties, server = three
    update = {"w": np.full((6, 5), 100.0, np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(ClipError, match="30 values outside"):
        parties[0].encrypt(update, 1, round=1)
    assert parties[0].encrypt(update, 1, round=1, clip=True)[1] == 30


def test_worker_processes_give_the_same_sums_as_one_process(three):
    """``secure_aggregation.workers``: encryption, addition and fusion spread over processes, same result."""
    from fedicd.secure.threshold.packing import Layout
    from fedicd.secure.threshold.server import ThresholdServer

    parties, server = three
    layout = Layout((("w", (3 * PARAMS.values_per_ciphertext - 1,)),))  # three ciphertexts
    fast = ThresholdServer(PARAMS, layout, workers=2)
    fast.restore(server.chain)
    rng = np.random.default_rng(5)
    updates = [{"w": rng.uniform(-1, 1, layout.size).astype(np.float32)} for _ in parties]
    sent = []
    for p, u in zip(parties, updates):
        p.workers = 2
        try:
            sent.append((p.party_id, p.encrypt(u, 4, round=903)[0]))
        finally:
            p.workers = 1
    agg, rejected = fast.add(sent, round=903)
    assert rejected == []
    avg = fast.fuse(agg, {p.party_id: p.partial_decrypt(agg, round=903) for p in parties}, round=903)
    exact = fedavg64(updates, [4, 4, 4])
    assert np.max(np.abs(avg["w"] - exact["w"])) <= precision_bound(PARAMS, 3, total_count=12) + 2.0**-24
