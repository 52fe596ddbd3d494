"""What travels in threshold CKKS: the update keeps two RNS towers, the key holders receive c1 alone, a partial
decryption is switched down to one tower, and the server's half (c0) never leaves it; the shift k that lets the
integer sums survive the switch is the largest that fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.threshold.envelope import Envelope, Tag
from fedicd.secure.threshold.errors import ThresholdConfigError
from fedicd.secure.threshold.params import ThresholdParams

from .conftest import fedavg64, joint_key, random_update, small_params

PARAMS = small_params()
_SERIALIZATION_OVERHEAD = 2048  # OpenFHE's BINARY header per ciphertext (measured: 0.9 to 1.3 KB)


@pytest.fixture(scope="module")
def round_of_three():
    parties, server = joint_key(PARAMS, 3)
    rng = np.random.default_rng(7)
    updates = [random_update(server.layout, rng) for _ in parties]
    sent = [(p.party_id, p.encrypt(u, 5, round=1)[0]) for p, u in zip(parties, updates)]
    agg, rejected = server.add(sent, round=1)
    assert rejected == []
    parts = {p.party_id: p.partial_decrypt(agg, round=1) for p in parties}
    server.fuse(agg, parts, round=1)
    return parties, server, updates, sent, agg, parts


def _blob_sizes(data: bytes, kind: str) -> list[int]:
    return [len(b) for b in Envelope.from_bytes(data, kind=kind, context=PARAMS.fingerprint).blobs]


@pytest.mark.parametrize("what, kind, polys", [("update", "update", 4), ("aggregate", "aggregate", 2),
                                               ("partial", "partial", 1)])
def test_each_message_carries_only_the_towers_decryption_needs(round_of_three, what, kind, polys):
    """8 bytes per coefficient × N × (elements × towers): update c0, c1 at 2 towers; aggregate c1 at 2;
    partial decryption 1 element at 1 tower."""
    _, _, _, sent, agg, parts = round_of_three
    data = {"update": sent[0][1], "aggregate": agg, "partial": parts[0]}[what]
    for size in _blob_sizes(data, kind):
        assert 8 * PARAMS.ring_dimension * polys <= size <= 8 * PARAMS.ring_dimension * polys + _SERIALIZATION_OVERHEAD


def test_the_switched_sums_are_exact(round_of_three):
    _, server, _, _, _, _ = round_of_three
    assert server.last_total == 15
    assert server.last_residual <= PARAMS.error_bound(3)


def test_fuse_refuses_an_aggregate_this_server_did_not_make(round_of_three):
    from fedicd.secure.threshold.server import ThresholdServer

    _, server, _, _, agg, parts = round_of_three
    other = ThresholdServer(PARAMS, server.layout)
    other.restore(server.chain)
    with pytest.raises(CiphertextError, match="not made by this server"):
        other.fuse(agg, parts, round=1)


def test_a_key_holder_refuses_an_aggregate_that_carries_c0(round_of_three):
    parties, server, _, sent, _, _ = round_of_three
    update = Envelope.from_bytes(sent[0][1], kind="update", context=PARAMS.fingerprint)
    forged = Envelope(Tag("aggregate", PARAMS.fingerprint, server.key_fp, 2, -1, server.layout.digest), update.blobs)
    with pytest.raises(CiphertextError, match="c1 alone, it has 2 elements"):
        parties[1].partial_decrypt(forged.to_bytes(), round=2)


def test_the_dropped_prime_is_the_second_ntt_prime_of_the_context():
    from fedicd.secure.threshold.backend import crypto_context, dropped_prime

    q1 = dropped_prime(PARAMS)
    cc = crypto_context(PARAMS)
    assert q1 % (2 * PARAMS.ring_dimension) == 1 and 58 <= math.log2(q1) <= 60
    assert float(int(cc.GetModulusCKKS()) * q1) == float(cc.GetModulus())


@settings(max_examples=60, deadline=None)
@given(clients=st.integers(2, 64), count_bits=st.integers(0, 17), frac_bits=st.integers(0, 22),
       clip=st.sampled_from([0.5, 1.0, 3.0, 16.0]))
def test_the_shift_is_the_largest_that_keeps_the_sums_below_2_to_the_58(clients, count_bits, frac_bits, clip):
    try:
        params = ThresholdParams(max_clients=clients, max_count=2**count_bits, frac_bits=frac_bits, clip_range=clip)
    except ThresholdConfigError:
        return
    k = params.shift_bits
    assert params.sum_bound * 2**k <= 2**58 < params.sum_bound * 2 ** (k + 1)
    assert params.error_bound() < 0.25


def test_the_average_after_the_switch_is_fedavg(round_of_three):
    from fedicd.secure.threshold.params import precision_bound

    parties, server, updates, _, agg, parts = round_of_three
    avg = server.fuse(agg, parts, round=1)
    exact = fedavg64(updates, [5, 5, 5])
    for k in exact:
        assert np.max(np.abs(avg[k] - exact[k])) <= precision_bound(PARAMS, 3, total_count=15) + 2.0**-24 * 16
