"""What a run's secure aggregation adds to the round loop and the clients, and what its results report.

The assembly (:mod:`fedicd.runner`) asks here instead of testing the method itself: the server's
train-round aggregator, the clients' model codec, the key checks before a run, the results block.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fedicd.federated.local import PlainCodec
from fedicd.federated.rounds import PlainAggregator, RoundAggregator
from fedicd.run_plan import RunPlan
from fedicd.secure.config import SecureAggConfig

__all__ = ["round_aggregator", "client_codec", "check_keys", "driver_key", "secure_results"]


def round_aggregator(plan: RunPlan, secret_path: str | None = None, run_dir: str | Path | None = None) -> RoundAggregator:
    """The train rounds' aggregator; under CKKS ``secret_path`` (else the evaluator key) may read the model.

    Under SecAgg+ with ``privacy.distributed`` the clients add the noise (:mod:`fedicd.privacy.distributed_dp`):
    SecAgg+ then runs with unit weights and a ``clipping_range`` sized for the noised updates (the configured
    ``secure_aggregation.max_weight`` and ``clipping_range`` are replaced), and the releases are logged in
    ``run_dir``.
    """
    secure = plan.secure
    if secure.method == "ckks":
        from fedicd.secure.round_ckks import CkksAggregator

        return CkksAggregator(plan, secret_path)
    if secure.method == "ckks-threshold":
        from fedicd.secure.round_threshold import ThresholdAggregator

        return ThresholdAggregator(plan, run_dir)
    if secure.method == "secagg+":
        from fedicd.secure.round_secagg import SecAggAggregator

        settings = secure.secagg(largest_client=max(plan.client_sizes))  # max_weight = 0 → the largest client
        ddp = None
        if plan.privacy.client_level and plan.privacy.distributed:
            from fedicd.privacy.distributed_dp import DistributedDP

            ddp = DistributedDP(plan.privacy, plan.seed, run_dir)
            settings = ddp.secagg_settings(settings)
        return SecAggAggregator(settings, plan.seed, plan.federated.timeout_s, ddp)
    return PlainAggregator(plan.federated.timeout_s)


def client_codec(plan: RunPlan, node_secret: str | None = None) -> PlainCodec:
    """How a client reads the global model and sends its update."""
    if plan.secure.method == "ckks":
        from fedicd.secure.round_ckks import CkksCodec

        return CkksCodec(plan, node_secret)
    if plan.secure.method == "ckks-threshold":
        from fedicd.secure.round_threshold import ThresholdCodec

        return ThresholdCodec(plan)
    return PlainCodec(plan)


def driver_key(secure: SecureAggConfig) -> str | None:
    """Under CKKS, the secret context with which the experiment driver decrypts the final model."""
    if secure.method != "ckks":
        return None
    return secure.evaluator_key or str(Path(secure.key_dir) / "secret.ctx")


def check_keys(secure: SecureAggConfig) -> None:
    """Under CKKS, the key folder's public context and every secret context the run reads hold one key pair."""
    if secure.method != "ckks":
        return
    from fedicd.secure.ckks_round import check_key_pair

    secrets = [Path(secure.key_dir) / "secret.ctx"]  # what the simulation's clients read
    if secure.evaluator_key:
        secrets.append(Path(secure.evaluator_key))
    check_key_pair(secure.key_dir, secrets)


def secure_results(secure: SecureAggConfig) -> dict:
    """How the updates were hidden, and who scored the global model."""
    out = dataclasses.asdict(secure)
    if secure.method == "ckks":
        from fedicd.secure.ckks_round import read_params

        out["params"] = read_params(secure.key_dir).to_dict()
        out["evaluation"] = (
            ("every round by the key-holding evaluator (secure_aggregation.evaluator_key; in this simulation it runs "
             "in the ServerApp's process)" if secure.evaluator_key else
             "no server-side scores during the run (the ServerApp holds only the public context)")
            + "; client evaluation decrypts on the clients; the final model was decrypted after the run by the "
              "experiment driver with the clients' key")
    elif secure.method == "ckks-threshold":
        out["evaluation"] = ("every round on the plain global model: the clients' partial decryptions of the "
                             "encrypted sum give the new average to everyone, no party holds the whole key")
    return out
