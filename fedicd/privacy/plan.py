"""Before a private run starts: make the head DP-compatible and fix every noise level for the whole run.

:func:`plan_privacy` is called once when a federated run is staged; its result
is the run plan's :class:`~fedicd.run_plan.PrivacyPlan`, so that the server, every client and
the final ``results.json`` read the same σ, C, δ, steps and accountant.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.privacy.config import PrivacyConfig
from fedicd.run_plan import PrivacyPlan
from fedicd.train_config import TrainConfig

__all__ = ["plan_privacy", "planned_clipping", "dp_compatible_train", "client_cohort"]

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


def planned_clipping(requested: str, train: TrainConfig, input_dim: int, n_labels: int) -> tuple[str, str | None]:
    """The per-sample clipping method the run uses, and a head notice when ``"auto"`` fell back to ``"ghost"``.

    ``"auto"`` is ``"fused"`` when every trainable layer of the (DP-compatible) head has a fused norm
    (:func:`fedicd.privacy.fused_clipping.unsupported_layers`), else ``"ghost"``. ``"fused"`` on a head with an
    unsupported layer is a :class:`ConfigError` naming the layers; ``"ghost"`` and ``"hooks"`` are kept.
    """
    from fedicd.privacy.fused_clipping import UnsupportedLayerError, resolve_clipping

    if requested not in ("auto", "fused"):
        return requested, None
    with torch.random.fork_rng(devices=[]):
        head = train.build(input_dim, n_labels)
    try:
        clipping, why = resolve_clipping(requested, head)
    except UnsupportedLayerError as exc:
        raise ConfigError(f"head {train.head!r}: {exc}") from None
    if why:
        log.warning("DP: %s", why)
    return clipping, why


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
        clipping, why = planned_clipping(p.clipping, train, input_dim, n_labels)
        notices = [*notices, why] if why else notices
        plans = [client_plan(p, n, train.batch_size, fed.rounds, fed.local_epochs).to_dict() for n in client_sizes]
        selected = "opacus RDP" if p.accountant == "rdp" else "dp-accounting PLD"
        return train, PrivacyPlan.from_dict({**base, "accountant": f"{selected} (per client, sample-level)",
                                             "clipping": clipping, "head_notices": notices, "clients": plans})
    return _plan_client(p, fed, train, client_sizes, input_dim, n_labels, base)


def client_cohort(privacy: PrivacyConfig, fed: FedConfig, population: int) -> int:
    """The (expected) cohort per round of client-level DP; a named error when the settings contradict it.

    Poisson: ``privacy.clients_per_round`` or ``int(federated.fraction_train · N)``. Fixed: Flower's sampler
    draws ``max(int(fraction_train · N), min_train)`` clients; ``clients_per_round``, when given, must match it.
    """
    p = privacy
    if p.clients_per_round > population:
        raise ConfigError(f"privacy.clients_per_round = {p.clients_per_round} is larger than the federation "
                          f"({population} clients, partition.n_clients): lower it")
    if p.client_sampling == "poisson":
        if fed.min_train:
            raise ConfigError(f"privacy.client_sampling = 'poisson' draws a random cohort, but federated.min_train = "
                              f"{fed.min_train} fixes its size (Flower's fixed-size sampler, no amplification): set "
                              "federated.min_train = 0 or privacy.client_sampling = 'fixed'")
        cohort = p.clients_per_round or int(population * fed.fraction_train)
        if cohort < 1:
            raise ConfigError(f"client-level Poisson sampling: federated.fraction_train = {fed.fraction_train} × "
                              f"{population} clients rounds to an empty cohort; raise federated.fraction_train or "
                              "set privacy.clients_per_round")
        return cohort
    sampled = min(population, max(int(population * fed.fraction_train), fed.node_minimums(population)[1]))
    if p.clients_per_round and p.clients_per_round != sampled:
        raise ConfigError(f"privacy.clients_per_round = {p.clients_per_round} under client_sampling = 'fixed', but "
                          f"Flower's sampler draws {sampled} clients (federated.fraction_train, federated.min_train): "
                          "make them agree or set privacy.client_sampling = 'poisson'")
    return sampled


def _plan_client(p: PrivacyConfig, fed: FedConfig, train: TrainConfig, client_sizes: list[int], input_dim: int,
                 n_labels: int, base: dict) -> tuple[TrainConfig, PrivacyPlan]:
    from fedicd.privacy.client_level import calibrate_client_noise, client_epsilon
    from fedicd.privacy.poisson_clients import update_noise

    if p.distributed and (p.client_sampling == "poisson" or p.adaptive_clipping):
        raise ConfigError("privacy.distributed = true runs on SecAgg+'s fixed cohort with a fixed clipping norm: set "
                          "privacy.client_sampling = 'fixed' and privacy.adaptive_clipping = false")
    if p.adaptive_clipping and p.client_sampling != "poisson":
        raise ConfigError("privacy.adaptive_clipping needs privacy.client_sampling = 'poisson': with a fixed cohort "
                          "Flower's count of clipped updates is not centred, so one client moves it by 1 while its "
                          "noise split assumes 1/2, and the accounted ε would be too small")
    if p.distributed and not p.secure_rng:
        log.warning("DP: distributed noise shares are seeded from the experiment seed (a simulation): whoever knows "
                    "it can subtract them; set privacy.secure_rng = true for shares the server cannot regenerate")
    # the DP wrappers add noise to every array, BatchNorm's running variance included (negative → NaN)
    train, notices = dp_compatible_train(train, input_dim, n_labels)
    population = len(client_sizes)
    cohort = client_cohort(p, fed, population)
    poisson = p.client_sampling == "poisson"
    q = cohort / population if poisson else 1.0
    noise = (calibrate_client_noise(p.target_epsilon, p.resolved_delta, fed.rounds, cohort, population,
                                    accountant=p.accountant, poisson=poisson) if p.target_epsilon > 0 else p.noise)
    count_std = (p.clip_count_stddev or cohort / 20) if p.adaptive_clipping else 0.0
    try:
        update_sigma = update_noise(noise, count_std) if p.adaptive_clipping else noise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    planned = {name: client_epsilon(noise, fed.rounds, p.resolved_delta, sample_rate=q, accountant=name)
               for name in ("rdp", "pld")}
    how = "Poisson client sampling, amplification credited" if poisson else "no amplification"
    return train, PrivacyPlan.from_dict({
        **base, "accountant": f"fedicd client ledger: {p.accountant.upper()} (dp-accounting, client-level, {how})",
        "head_notices": notices, "noise_multiplier": noise, "sampled_clients": cohort, "population": population,
        "client_side_clipping": p.client_side_clipping, "noise_std": update_sigma * p.clip / cohort,
        "calibrated_with": p.accountant, "client_sampling": p.client_sampling, "sample_rate": q,
        "adaptive_clipping": p.adaptive_clipping, "target_quantile": p.target_quantile if p.adaptive_clipping else 0.0,
        "clip_count_stddev": count_std, "distributed": p.distributed,
        "planned_epsilon_rdp": planned["rdp"], "planned_epsilon_pld": planned["pld"]})
