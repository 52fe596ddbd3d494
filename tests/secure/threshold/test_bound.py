"""The default (128-bit, N = 8192) parameters: the measured decryption error of the largest sums stays below the
stated bound, which stays below 1/4, so integer sums decrypt exactly; the flooding covers the ciphertext noise."""

from __future__ import annotations

import numpy as np

from fedicd.secure.threshold.params import ThresholdParams, fresh_noise_bits

from .conftest import joint_key


def test_decryption_error_of_the_largest_sums_stays_under_the_stated_bound():
    from fedicd.secure.threshold.packing import Layout

    params = ThresholdParams(max_clients=16)
    assert params.secure and params.ring_dimension == 8192  # OpenFHE checked it under HEStd_128_classic
    layout = Layout((("w", (params.values_per_ciphertext - 1,)),))  # one full ciphertext with the count
    parties, server = joint_key(params, 16, layout=layout)
    rng = np.random.default_rng(0)
    signs = np.where(rng.random(layout.size) < 0.5, -1.0, 1.0)  # the same sign for every party: |sum| = K·U
    updates = [(p.party_id, p.encrypt({"w": (signs * params.clip_range).astype(np.float32)}, params.max_count,
                                      round=1)[0]) for p in parties]
    agg, _ = server.add(updates, round=1)
    avg = server.fuse(agg, {p.party_id: p.partial_decrypt(agg, round=1) for p in parties}, round=1)
    assert np.array_equal(avg["w"], (signs * params.clip_range).astype(np.float32))  # exact
    assert server.last_total == 16 * params.max_count
    bound = params.error_bound(16, 16 * params.value_bound)
    assert server.last_residual <= bound < 0.25, (server.last_residual, bound)
    # measured: 2^-47.4 of the largest sum (0.047 here); the bound allows 8·log2(N)·2^-53 = 2^-46.3 of it
    assert server.last_residual <= 2.0**-46 * 16 * params.value_bound


def test_noise_estimate_covers_the_noise_of_a_sum_of_max_clients_fresh_encryptions():
    from fedicd.secure.threshold.backend import crypto_context

    params = ThresholdParams()
    cc = crypto_context(params, estimation=True)
    pair = cc.KeyGen()
    zeros = cc.MakeCKKSPackedPlaintext(np.zeros(params.ring_dimension // 2))
    total = cc.Encrypt(pair.publicKey, zeros)
    for _ in range(params.max_clients - 1):
        total = cc.EvalAdd(total, cc.Encrypt(pair.publicKey, zeros))
    measured = cc.Decrypt(pair.secretKey, total).GetLogError()
    assert measured <= fresh_noise_bits(params.max_clients) <= params.noise_estimate, measured
