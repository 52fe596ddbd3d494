"""Threshold CKKS tests: skipped as a folder, with the named error's message, when OpenFHE cannot be imported.

OpenFHE's PyPI wheels carry one CPython extension each (``pytest.importorskip`` would also skip a broken
install silently): :func:`fedicd.secure.threshold.backend.openfhe_available` says which case it is. Tests named
``*openfhe_missing*`` run without OpenFHE (they simulate its absence).

Parameters: the protocol tests use N = 1024 (``insecure_for_tests``: what they test is the protocol, not
security); the bound and the end-to-end tests use the run's default, N = 8192 under ``HEStd_128_classic``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

from fedicd.secure.threshold.backend import openfhe_available

# as tests/conftest.py does (which CI's Python 3.10 run of this folder does not load): a red build must be reproducible
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

OPENFHE, WHY_NOT = openfhe_available()


def pytest_collection_modifyitems(config, items):
    if OPENFHE:
        return
    for item in items:
        if "secure/threshold" in str(item.path).replace("\\", "/") and "openfhe_missing" not in item.name:
            item.add_marker(pytest.mark.skip(reason=WHY_NOT))


@pytest.fixture
def shamir():
    """Skip (with the named error's message) where this OpenFHE cannot share keys (openfhe-python < 1.6)."""
    from fedicd.secure.threshold.backend import require_shamir
    from fedicd.secure.threshold.errors import OpenFHEUnavailableError

    try:
        require_shamir()
    except OpenFHEUnavailableError as exc:
        pytest.skip(str(exc))


def small_params(**kw):
    from fedicd.secure.threshold.params import ThresholdParams

    return ThresholdParams(ring_dimension=1024, insecure_for_tests=True, max_clients=8, **kw)


def joint_key(params, n: int, *, threshold: int = 0, layout=None, state_dirs=None):
    """``n`` parties and a server holding a joint key (and, for 1 < threshold < n, the sealed Shamir shares)."""
    from fedicd.secure.threshold.packing import Layout
    from fedicd.secure.threshold.party import ThresholdParty
    from fedicd.secure.threshold.server import ThresholdServer

    layout = layout or Layout((("w", (6, 5)), ("b", (3,))))
    parties = [ThresholdParty(params, i, state_dir=None if state_dirs is None else state_dirs[i]) for i in range(n)]
    server = ThresholdServer(params, layout)
    link = None
    for party in parties:
        link = party.keygen(link)
        server.add_link(party.party_id, link)
    for party in parties:
        party.accept_joint_key(server.joint_envelope, server.key_fp)
    if 1 < threshold < n:
        publics = {p.party_id: p.seal_public() for p in parties}
        sealed = {p.party_id: p.share_key(threshold, n, publics) for p in parties}
        for p in parties:
            p.hold_shares({o: s[p.party_id] for o, s in sealed.items() if o != p.party_id}, publics)
    return parties, server


def random_update(layout, rng, scale=1.0):
    return {k: rng.uniform(-scale, scale, shape).astype(np.float32) for k, shape in layout.entries}


def fedavg64(updates, counts):
    """float64 FedAvg of the updates, the reference the decrypted average is compared with."""
    total = float(sum(counts))
    return {k: sum(float(n) * u[k].astype(np.float64) for u, n in zip(updates, counts)) / total for k in updates[0]}
