"""The named errors of threshold CKKS: a party without a key share, another crypto context, a threshold above the
clients, OpenFHE missing or built for another Python."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from fedicd.errors import ConfigError
from fedicd.secure.ckks_errors import CiphertextError, SecureAggregationError
from fedicd.secure.threshold import backend
from fedicd.secure.threshold.errors import (ContextMismatchError, KeyGenerationError, OpenFHEUnavailableError,
                                            ThresholdConfigError)
from fedicd.secure.threshold.params import ThresholdParams
from fedicd.secure.threshold.server import check_threshold

from .conftest import joint_key, random_update, small_params


def test_a_party_that_never_ran_key_generation_is_named(tmp_path):
    from fedicd.secure.threshold.party import ThresholdParty

    party = ThresholdParty(small_params(), 4, state_dir=tmp_path / "p4")
    with pytest.raises(KeyGenerationError, match="party 4 holds no key share: it never ran the joint key generation"):
        party.encrypt({"w": np.zeros(3, np.float32)}, 1, round=1)
    with pytest.raises(KeyGenerationError):
        party.partial_decrypt(b"", round=1)


def test_key_share_survives_a_restart_in_the_state_folder(tmp_path):
    from fedicd.secure.threshold.party import ThresholdParty

    params = small_params()
    parties, server = joint_key(params, 2, state_dirs=[tmp_path / "a", tmp_path / "b"])
    again = ThresholdParty(params, 1, state_dir=tmp_path / "b")
    assert again.has_key and again.key_fp == server.key_fp
    with pytest.raises(ContextMismatchError, match="made under other threshold parameters"):
        ThresholdParty(small_params(frac_bits=12), 1, state_dir=tmp_path / "b")


def test_a_second_process_of_the_same_client_sees_the_key_share_the_first_wrote(tmp_path):
    # under Ray one worker process may answer the key generation and another the next message of that client
    from fedicd.secure.threshold.party import ThresholdParty

    params = small_params()
    stale = ThresholdParty(params, 1, state_dir=tmp_path / "b")  # made before the key existed
    assert not stale.has_key
    parties, server = joint_key(params, 2, state_dirs=[tmp_path / "a", tmp_path / "b"])
    stale.refresh()
    assert stale.has_key and stale.key_fp == server.key_fp
    update = parties[0].encrypt(random_update(server.layout, np.random.default_rng(0)), 2, round=1)[0]
    aggregate, _ = server.add([(0, update)], round=1)
    parties[1].partial_decrypt(aggregate, round=1)
    stale.refresh()  # the other process's decryption of round 1 is part of the state too
    with pytest.raises(CiphertextError, match="party 1 already decrypted an aggregate of round 1"):
        stale.partial_decrypt(aggregate, round=1)


def test_a_ciphertext_from_another_crypto_context_is_named():
    parties, server = joint_key(small_params(), 2)
    others, _ = joint_key(small_params(frac_bits=12), 2)
    rng = np.random.default_rng(0)
    foreign = others[0].encrypt(random_update(server.layout, rng), 3, round=1)[0]
    with pytest.raises(ContextMismatchError, match="made under crypto context"):
        server.check_update(0, foreign, 1)
    _, rejected = server.add([(0, foreign)], round=1)
    assert rejected[0]["reason"].startswith("ContextMismatchError")


def test_a_threshold_above_the_clients_is_a_config_error():
    with pytest.raises(ThresholdConfigError, match="threshold = 4 exceeds the 3 key holders"):
        check_threshold(4, 3)
    with pytest.raises(ThresholdConfigError, match="threshold = 1 would let any single client decrypt"):
        check_threshold(1, 3)
    assert check_threshold(0, 3) == 3 and check_threshold(2, 3) == 2
    assert issubclass(ThresholdConfigError, ConfigError)


def test_parameters_whose_error_could_reach_one_half_are_refused():
    with pytest.raises(ThresholdConfigError, match="reaches 1/4"):
        ThresholdParams(frac_bits=24)
    with pytest.raises(ThresholdConfigError, match="not 128-bit secure"):
        ThresholdParams(ring_dimension=4096)
    with pytest.raises(ThresholdConfigError, match="below the noise of a sum"):
        ThresholdParams(noise_estimate=9.0)


def test_openfhe_missing_is_named_with_the_install_hint(monkeypatch):
    backend.load_openfhe.cache_clear()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openfhe" else real(name, *a))
    try:
        with pytest.raises(OpenFHEUnavailableError, match=r"needs the openfhe package.*pip install 'fedicd\[threshold\]'"):
            backend.load_openfhe()
    finally:
        backend.load_openfhe.cache_clear()
    assert issubclass(OpenFHEUnavailableError, SecureAggregationError) and issubclass(OpenFHEUnavailableError,
                                                                                       ImportError)


def test_openfhe_missing_extension_built_for_another_python_is_named(monkeypatch, tmp_path):
    pkg = tmp_path / "openfhe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from openfhe.openfhe import *\n")
    (pkg / "openfhe.cpython-312-x86_64-linux-gnu.so").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "openfhe" or m.startswith("openfhe.")]:
        monkeypatch.delitem(sys.modules, name)
    backend.load_openfhe.cache_clear()
    this = f"cpython-{sys.version_info.major}{sys.version_info.minor}"
    try:
        with pytest.raises(OpenFHEUnavailableError) as info:
            backend.load_openfhe()
    finally:
        backend.load_openfhe.cache_clear()
    text = str(info.value)
    assert f"is installed in {Path(pkg)}" in text and "built for cpython-312" in text and f"this interpreter is {this}" in text
    importlib.invalidate_caches()


def test_staging_refuses_a_threshold_above_the_clients_and_integer_buffers():
    pytest.importorskip("flwr")  # the staging check derives the run's parameters where the stage messages are built
    from fedicd.secure.config import SecureAggConfig, check_secure_staging

    secure = SecureAggConfig(method="ckks-threshold", threshold=4)
    with pytest.raises(ThresholdConfigError, match="threshold = 4 exceeds the 3 key holders"):
        check_secure_staging(secure, client_sizes=[5, 6, 7], sampled=3, arrays={"w": np.zeros(2, np.float32)})
    with pytest.raises(ConfigError, match="integer buffers"):
        check_secure_staging(SecureAggConfig(method="ckks-threshold"), client_sizes=[5, 6, 7], sampled=3,
                             arrays={"w": np.zeros(2, np.float32), "bn.num_batches_tracked": np.zeros(1, np.int64)})
    t_of_n = SecureAggConfig(method="ckks-threshold", threshold=2)
    try:
        backend.require_shamir()
    except OpenFHEUnavailableError:  # openfhe-python 1.5: n of n only, refused by name before the first round
        with pytest.raises(OpenFHEUnavailableError, match="needs OpenFHE's ShareKeys and RecoverSharedKey"):
            check_secure_staging(t_of_n, client_sizes=[5, 6, 7], sampled=3, arrays={"w": np.zeros(2, np.float32)})
    else:
        check_secure_staging(t_of_n, client_sizes=[5, 6, 7], sampled=3, arrays={"w": np.zeros(2, np.float32)})


def test_openfhe_missing_share_keys_is_named():
    class Old:  # openfhe-python 1.5's CryptoContext has no ShareKeys/RecoverSharedKey
        class CryptoContext:
            pass

    with pytest.raises(OpenFHEUnavailableError, match=r"openfhe-python >= 1.6.*use threshold = 0"):
        backend.require_shamir(Old)


def test_an_unknown_stage_is_named(tmp_path):
    pytest.importorskip("flwr")  # the stage messages are Flower records
    from fedicd.secure.threshold.errors import ThresholdError
    from fedicd.secure.threshold.messages import answer, request
    from fedicd.secure.threshold.party import ThresholdParty

    party = ThresholdParty(small_params(), 0, state_dir=tmp_path / "p0")
    with pytest.raises(ThresholdError, match="unknown threshold-CKKS stage 'rotate'"):
        answer(party, request("rotate", {"round": 1}))
