"""Before a private run starts: make the head DP-compatible and fix every noise level for the whole run.

:func:`plan_privacy` is called once when a federated run is staged; its result
is the run plan's :class:`~fedicd.run_plan.PrivacyPlan`, so that the server, every client and
the final ``results.json`` read the same σ, C, δ, steps and accountant.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from fedicd.federated.config import FedConfig
from fedicd.privacy.config import PrivacyConfig
from fedicd.run_plan import PrivacyPlan
from fedicd.train_config import TrainConfig

__all__ = ["plan_privacy", "dp_compatible_train"]

log = logging.getLogger(__name__)


def dp_compatible_train(train: TrainConfig, input_dim: int, n_labels: int) -> tuple[TrainConfig, list[str]]:
    """The train config to use under sample-level DP, and the notices of what was replaced.

    Opacus' ``ModuleValidator`` decides: a head with BatchNorm is fixed
    (BatchNorm → GroupNorm) and fedicd's ``norm = "group"`` head, which must
    build the same layers and shapes, is used from then on.
    """
    from fedicd.privacy.dp_sgd import make_private_head

    with torch.random.fork_rng(devices=[]):
        fixed, notices = make_private_head(train.build(input_dim, n_labels))
        if not notices:
            return train, []
        replaced = dataclasses.replace(train, norm="group")
        ours = replaced.build(input_dim, n_labels)
    want = {k: tuple(v.shape) for k, v in fixed.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    kinds = [type(m).__name__ for m in fixed.modules()] == [type(m).__name__ for m in ours.modules()]
    if want != got or not kinds:
        raise ValueError(f"head {train.head!r} with norm='group' does not match Opacus' fixed head; "
                         "set train.norm to 'layer' or 'group' yourself")
    notices = [f"{n} → train.norm = 'group' for this run" for n in notices]
    for n in notices:
        log.warning("DP: %s", n)
    return replaced, notices


def plan_privacy(privacy: PrivacyConfig, fed: FedConfig, train: TrainConfig, client_sizes: list[int],
                 input_dim: int, n_labels: int) -> tuple[TrainConfig, PrivacyPlan]:
    """(the train config the run uses, its privacy plan); ``train`` unchanged when DP is off."""
    p = privacy
    if not p.enabled:
        return train, PrivacyPlan()
    base = {"dp": p.dp, "clip": p.clip, "delta": p.resolved_delta, "target_epsilon": p.target_epsilon,
            "secure_rng": p.secure_rng}
    if p.dp == "sample":
        from fedicd.privacy.dp_local import client_plan
        from fedicd.strategies.config import check_compatible

        check_compatible(fed.strategy, dp="sample")  # the strategy's spec says whether it can
        train, notices = dp_compatible_train(train, input_dim, n_labels)
        plans = [client_plan(p, n, train.batch_size, fed.rounds, fed.local_epochs).to_dict() for n in client_sizes]
        return train, PrivacyPlan.from_dict({**base, "accountant": "opacus RDP (per client, sample-level)",
                                             "clipping": p.clipping, "head_notices": notices, "clients": plans})
    from fedicd.privacy.client_level import calibrate_client_noise

    # Flower's wrapper adds noise to every array, BatchNorm's running variance included (negative → NaN)
    train, notices = dp_compatible_train(train, input_dim, n_labels)
    population = len(client_sizes)
    sampled = max(int(population * fed.fraction_train), fed.node_minimums(population)[1])
    noise = (calibrate_client_noise(p.target_epsilon, p.resolved_delta, fed.rounds, sampled, population)
             if p.target_epsilon > 0 else p.noise)
    return train, PrivacyPlan.from_dict({**base, "accountant": "flwr RdpAccountant (client-level, no amplification)",
                                         "head_notices": notices, "noise_multiplier": noise,
                                         "sampled_clients": sampled, "population": population,
                                         "client_side_clipping": p.client_side_clipping,
                                         "noise_std": noise * p.clip / sampled})
