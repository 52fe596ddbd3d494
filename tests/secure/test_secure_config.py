"""The ``[secure_aggregation]`` keys of the threshold and parallel CKKS paths: checks, and which strategies run."""

from __future__ import annotations

import re

import pytest

from fedicd.errors import ConfigError
from fedicd.secure.config import SECURE_METHODS, SecureAggConfig, check_secure_compatible


def test_threshold_ckks_is_a_method_and_needs_no_key_folder():
    assert "ckks-threshold" in SECURE_METHODS
    cfg = SecureAggConfig(method="ckks-threshold", threshold=3, workers=2)
    assert (cfg.enabled, cfg.threshold, cfg.workers, cfg.key_dir) == (True, 3, 2, "")


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_workers_must_be_a_non_negative_integer(value):
    with pytest.raises(ConfigError, match=r"secure_aggregation.workers must be an integer >= 0 \(0 = every core\)"):
        SecureAggConfig(method="ckks", key_dir="keys", workers=value)


@pytest.mark.parametrize("value", [-2, 0.5, False])
def test_threshold_must_be_a_non_negative_integer(value):
    with pytest.raises(ConfigError, match=r"secure_aggregation.threshold must be an integer >= 0"):
        SecureAggConfig(method="ckks-threshold", threshold=value)


@pytest.mark.parametrize("method", ["none", "ckks", "secagg+"])
def test_a_threshold_is_refused_outside_threshold_ckks(method):
    extra = {"key_dir": "keys"} if method == "ckks" else {}
    with pytest.raises(ConfigError, match=rf"threshold = 2 applies to method = 'ckks-threshold' only \(method is "
                                          rf"'{re.escape(method)}'\)"):
        SecureAggConfig(method=method, threshold=2, **extra)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_threshold_ckks_runs_the_mean_and_the_server_optimizers(strategy):
    # the average is decrypted for everyone, so a server optimizer can step from it (shared-key CKKS cannot)
    check_secure_compatible(SecureAggConfig(method="ckks-threshold"), strategy, "none", "federated")
    check_secure_compatible(SecureAggConfig(method="ckks-threshold"), strategy, "sample", "federated")


def test_threshold_ckks_refuses_scaffold_client_dp_and_central_training():
    cfg = SecureAggConfig(method="ckks-threshold")
    with pytest.raises(ConfigError, match="control variates would need their own secure sum"):
        check_secure_compatible(cfg, "scaffold", "none", "federated")
    with pytest.raises(ConfigError, match=r"privacy.dp = 'client' cannot run under secure aggregation \(ckks-threshold\)"):
        check_secure_compatible(cfg, "fedavg", "client", "federated")
    with pytest.raises(ConfigError, match="needs train.mode = 'federated'"):
        check_secure_compatible(cfg, "fedavg", "none", "central")
    with pytest.raises(ConfigError, match="never holds the plain aggregate"):
        check_secure_compatible(SecureAggConfig(method="ckks", key_dir="keys"), "fedadam", "none", "federated")
