"""The one-run DP audit of a finished fedicd run: canaries through fedicd's own mechanisms, ε̂ beside ε.

Steinke, Nasr & Jagielski 2023 (one training run, m canaries each included with
probability 1/2, :mod:`attacks.audit.one_run`); canary clients after Andrew et
al. 2024. What is audited is the run's *plan*: the σ, q, T, C and δ that staging
fixed and the accountant turned into the ε fedicd prints.

* ``dp = "sample"`` (client ``partition_id``'s :class:`~fedicd.run_plan.DPPlan`):
  - white-box: m Dirac gradient canaries in the first layer's weight, added to
    the clipped sum inside fedicd's :class:`~fedicd.privacy.dp_sgd.DPStepper`
    (:class:`~fedicd.privacy.canaries.GradientCanaries`) over the client's T
    steps on its real rows, under local **SGD** (AdamW's update is not linear
    in the gradients; the audited mechanism, the noised gradient sums, is the
    same). Observed: every noised step (scored by the per-step likelihood
    ratio; the pre-declared white-box headline), or the client's update each
    round (Σ of −Δ/lr; a second, weaker observer, never maxed with the first);
  - black-box: m crafted rows (random vectors, random 3-label sets), each added
    to the client's rows with probability 1/2 (at most ``max_canary_ratio · n``
    of them), trained with the run's own optimizer, scored by their loss on the
    final model, relative to the (auditor-chosen) initial model.
  The client is trained alone from a seeded initial head: the other clients'
  updates are post-processing of what it released, so the mechanism audited is
  the client's whole DP-SGD schedule.
* ``dp = "client"``: m canary clients whose update is a sparse random direction of
  norm exactly C (the clipping bound: Flower's clipping leaves it as it is) take part in
  every round beside the real clients (trained with fedicd's local training), through Flower's fixed-clipping
  arithmetic (:func:`~fedicd.privacy.canaries.client_dp_release`); scored by the
  cosine of the final model delta with each direction (the same ranking as the
  sum of each round's noised aggregate under FedAvg).

``noise_scale`` runs a *broken* mechanism (σ·noise_scale, 0 = noise off) while
the report still states the plan's ε: the audit must then find ε̂ > ε.

Privacy / threat model: ``dp_audit``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from attacks.audit import (CanaryDirections, audit_scores, canary_rows, cosine_scores, epsilon_cap, inclusion_coins,
                           loss_scores, step_likelihood_scores, sum_scores)
from attacks.report import AttackReport
from attacks.scoring import summarize
from fedicd.errors import ConfigError

__all__ = ["AuditOptions", "NoDPError", "CanaryPartitionError", "battery_audit", "audit_sample_white_box",
           "audit_sample_black_box", "audit_client_level", "report_of", "MAX_CANARY_RATIO"]

log = logging.getLogger(__name__)
MAX_CANARY_RATIO = 1.0  # black-box canary rows: at most this many per note the client holds
FIRST_LAYER = "net.0.weight"


class NoDPError(ConfigError):
    """The run has no DP claim to audit."""


class CanaryPartitionError(ConfigError):
    """The client's partition cannot hold the canaries asked for."""


@dataclass(frozen=True)
class AuditOptions:
    """Canary counts and knobs of one audit (``quick`` shrinks the counts)."""

    m_white: int = 20000
    m_black: int = 0  # 0 = as many as allowed: floor(max_canary_ratio · n), at most 400
    m_client: int = 5000
    partition_id: int = 0
    max_canary_ratio: float = MAX_CANARY_RATIO
    noise_scale: float = 1.0
    alpha: float = 0.05
    client_sparsity: int = 16

    def __post_init__(self) -> None:
        if not self.noise_scale >= 0:
            raise ConfigError(f"noise_scale must be >= 0 (1 = the plan's σ, 0 = noise off), got {self.noise_scale}")
        if not 0 < self.max_canary_ratio <= 10:
            raise ConfigError(f"max_canary_ratio must be in (0, 10], got {self.max_canary_ratio}")


def _check_partition(n: int, m: int, ratio: float, what: str) -> None:
    if n < 1:
        raise CanaryPartitionError(f"the audited client holds n={n} notes; canaries need a client with n >= 1")
    if m > ratio * n:
        raise CanaryPartitionError(f"{m} {what} would swamp the client's n={n} notes: at most max_canary_ratio · n "
                                   f"= {int(ratio * n)} (max_canary_ratio={ratio}); ask for fewer canaries")


def _initial_head(train_cfg, input_dim: int, n_labels: int, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return train_cfg.build(input_dim, n_labels)


def _dp_sgd_rounds(model, x, y, train_cfg, plan, *, clip: float, clipping: str, rounds: int, local_epochs: int,
                   optimizer: str, lr: float, seed: int, canaries=None, recorder=None, on_round=None) -> None:
    """fedicd's DP-SGD local rounds (:func:`fedicd.privacy.dp_local.dp_local_train`'s loop) on one client,
    round after round, with the auditor's hooks."""
    from fedicd.local_training import LocalTrainConfig, local_optimizer, round_lr, run_local_epochs
    from fedicd.privacy.dp_sgd import DPStepper, poisson_batches

    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    for r in range(1, rounds + 1):
        local = LocalTrainConfig(server_round=r, total_rounds=rounds, local_epochs=local_epochs, partition_id=0,
                                 seed=seed, optimizer=optimizer, lr=lr)
        opt = local_optimizer(model, local.optimizer, lr, train_cfg.weight_decay, momentum=local.momentum)
        sampler = torch.Generator().manual_seed(seed * 7919 + r * 2 + 1)
        noise = torch.Generator().manual_seed(seed * 7919 + r * 2 + 2)
        before = None if on_round is None else {k: v.detach().clone() for k, v in model.named_parameters()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 7919 + r)
            stepper = DPStepper(model, opt, train_cfg.loss(), plan, clip=clip, clipping=clipping,
                                noise_generator=noise, canary_gradients=canaries)
            try:
                run_local_epochs(model, opt, lr, local, lambda xb, yb: stepper.step(xb, yb, recorder),
                                 lambda: poisson_batches(x, y, plan.sample_rate, plan.steps_per_epoch, sampler))
            finally:
                stepper.close()
        if on_round is not None:
            lrs = [round_lr(lr, (r - 1) * local_epochs + e, rounds * local_epochs) for e in range(local_epochs)]
            on_round(before, dict(model.named_parameters()), lrs)


def audit_sample_white_box(x, y, train_cfg, plan, *, clip: float, clipping: str, rounds: int, local_epochs: int,
                           lr: float, m: int, seed: int = 0, noise_scale: float = 1.0, alpha: float = 0.05) -> dict:
    """ε̂ of white-box gradient canaries for one client's DP-SGD ``plan``; ``{"step": AuditResult, "update": ...}``."""
    from fedicd.privacy.canaries import GradientCanaries, NoisedStepRecorder

    _check_partition(len(x), 0, 1.0, "canaries")
    model = _initial_head(train_cfg, x.shape[1], y.shape[1], seed)
    numel = dict(model.named_parameters())[FIRST_LAYER].numel()
    dirs = CanaryDirections.make(numel, m, sparsity=1, seed=seed + 1)
    included = inclusion_coins(m, seed + 2)
    used = dataclasses.replace(plan, noise_multiplier=plan.noise_multiplier * noise_scale)
    canaries = GradientCanaries(model, FIRST_LAYER, dirs.coords, dirs.signs, included, clip=clip,
                                sample_rate=plan.sample_rate, seed=seed + 3)
    recorder = NoisedStepRecorder(model, FIRST_LAYER, dirs.coords, dirs.signs,
                                  expected_batch_size=max(1, round(plan.sample_rate * plan.n)))
    update_scores = np.zeros(m)

    def on_round(before, after, lrs):  # the update the server receives, undone of the (known) learning rate
        delta = (after[FIRST_LAYER].detach() - before[FIRST_LAYER]).reshape(-1).double().numpy()
        update_scores[:] += -dirs.project(delta) / (sum(lrs) / len(lrs))

    _dp_sgd_rounds(model, x, y, train_cfg, used, clip=clip, clipping=clipping, rounds=rounds,
                   local_epochs=local_epochs, optimizer="sgd", lr=lr, seed=seed, canaries=canaries,
                   recorder=recorder, on_round=on_round)
    # the auditor scores with the *claimed* σ (it does not know a mechanism is broken)
    step = step_likelihood_scores(recorder.projections, signal=clip, noise_std=plan.noise_multiplier * clip,
                                  sample_rate=plan.sample_rate) if plan.noise_multiplier > 0 else \
        sum_scores(recorder.projections)
    return {"step": audit_scores(step, included, delta=plan.delta, alpha=alpha),
            "update": audit_scores(update_scores, included, delta=plan.delta, alpha=alpha),
            "steps": len(recorder.rows), "canary_draws": int(canaries.draws.sum())}


def audit_sample_black_box(x, y, train_cfg, plan, *, clip: float, clipping: str, rounds: int, local_epochs: int,
                           optimizer: str, lr: float, m: int, seed: int = 0, noise_scale: float = 1.0,
                           max_canary_ratio: float = MAX_CANARY_RATIO, alpha: float = 0.05):
    """ε̂ of black-box canary rows for one client's DP-SGD ``plan``: scored by how much their loss fell from the
    initial model (which the auditor chose) to the final one, both queried as black boxes (the per-canary
    baseline loss of random labels would otherwise swamp the effect of training)."""
    _check_partition(len(x), m, max_canary_ratio, "canary rows")
    cx, cy = canary_rows(m, x.shape[1], y.shape[1], labels_per_canary=3, scale=1.0, seed=seed + 4)
    included = inclusion_coins(m, seed + 5)
    xa, ya = np.concatenate([x, cx[included]]), np.concatenate([y, cy[included]])
    used = dataclasses.replace(plan, noise_multiplier=plan.noise_multiplier * noise_scale, n=len(xa))
    model = _initial_head(train_cfg, x.shape[1], y.shape[1], seed)
    before = _canary_fit(model, cx, cy)
    _dp_sgd_rounds(model, xa, ya, train_cfg, used, clip=clip, clipping=clipping, rounds=rounds,
                   local_epochs=local_epochs, optimizer=optimizer, lr=lr, seed=seed)
    return audit_scores(_canary_fit(model, cx, cy) - before, included, delta=plan.delta, alpha=alpha)


def _canary_fit(model, cx, cy) -> np.ndarray:
    """−loss of every canary row under ``model`` (black-box queries, eval mode)."""
    model.eval()
    with torch.no_grad():
        return loss_scores(model(torch.as_tensor(cx)).double().numpy(), cy)


def audit_client_level(run, *, m: int, seed: int = 0, noise_scale: float = 1.0, sparsity: int = 16,
                       alpha: float = 0.05):
    """ε̂ of canary clients through client-level DP (Flower's fixed-clipping arithmetic) over the run's rounds."""
    from fedicd.local_training import LocalTrainConfig, local_train
    from fedicd.privacy.canaries import client_dp_release

    p, fed = run.plan.privacy, run.plan.federated
    model = _initial_head(run.plan.train, run.plan.input_dim, run.plan.n_labels, seed)
    keys = list(model.state_dict())
    current = [v.detach().double().numpy() for v in model.state_dict().values()]
    sizes = [c.size for c in current]
    dirs = CanaryDirections.make(int(sum(sizes)), m, sparsity=sparsity, seed=seed + 1)
    included = inclusion_coins(m, seed + 2)
    canary_sum = np.split(dirs.combine(p.clip * included.astype(float)), np.cumsum(sizes)[:-1])
    canary_sum = [c.reshape(a.shape) for c, a in zip(canary_sum, current)]
    rng = np.random.RandomState(seed + 3)
    start = np.concatenate([c.ravel() for c in current])
    for r in range(1, fed.rounds + 1):
        replies = []
        for pid in range(len(run.clients)):
            xc, yc = run.client_rows(pid)
            m_i = run.build_head({k: v for k, v in zip(keys, current)})
            data = SimpleNamespace(x_train=xc, y_train=yc, x_val=xc[:0], y_val=yc[:0])
            local_train(m_i, data, run.plan.train, LocalTrainConfig(
                server_round=r, total_rounds=fed.rounds, local_epochs=fed.local_epochs, partition_id=pid,
                seed=seed, optimizer=fed.local_optimizer, lr=fed.local_lr, momentum=fed.local_momentum))
            replies.append([v.detach().double().numpy() for v in m_i.state_dict().values()])
        current = client_dp_release(current, replies, clip=p.clip, noise_multiplier=p.noise_multiplier * noise_scale,
                                    rng=rng, extra_sum=canary_sum, extra_count=int(included.sum()))
    delta = np.concatenate([c.ravel() for c in current]) - start
    return audit_scores(cosine_scores(delta, dirs), included, delta=p.delta, alpha=alpha)


def report_of(result, *, accounted_epsilon: float, settings: dict) -> AttackReport:
    """An ``AttackReport`` of kind ``dp_audit``: ε̂ (itself a one-sided 95 % lower confidence bound, so its
    interval is the point), ε̂/ε, and the guesses' accuracy with a bootstrap interval."""
    eps = result.epsilon_lower_bound
    point = lambda v: {"value": float(v), "ci_low": float(v), "ci_high": float(v), "n": result.m}  # noqa: E731
    flags = [1.0] * result.correct + [0.0] * (result.guesses - result.correct)
    metrics = {"epsilon_lower_bound": point(eps),
               "epsilon_ratio": point(eps / accounted_epsilon if accounted_epsilon > 0 else float("nan")),
               **(summarize({"guess_accuracy": flags}) if flags else {})}
    cap = epsilon_cap(result.m, delta=result.delta, alpha=result.alpha, grid_size=result.grid_size)
    return AttackReport("dp_audit", metrics, settings={
        **settings, "accounted_epsilon": accounted_epsilon, "m": result.m, "k_plus": result.k_plus,
        "k_minus": result.k_minus, "guesses": result.guesses, "correct": result.correct, "delta": result.delta,
        "confidence": 1 - result.alpha, "k_selection": f"max over a fixed grid of {result.grid_size} (k+, k-), "
        "each tested at alpha/grid (Bonferroni)", "epsilon_cap_for_m": cap})


def _accounted_sample(plan) -> float:
    from fedicd.privacy.accounting import epsilon_of

    return epsilon_of([(plan.noise_multiplier, plan.sample_rate, plan.total_steps)], plan.delta)


def _accounted_client(p, rounds: int) -> float:
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    from fedicd.privacy.client_level import client_dp_accountant

    acc = client_dp_accountant(p.population, p.delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=p.noise_multiplier, sample_size=p.sampled_clients,
                                     population_size=p.population), count=rounds)
    return float(acc.get_epsilon(p.delta))


def battery_audit(run, *, seed: int = 0, quick: bool = False, **options) -> list[AttackReport]:
    """The one-run audit of ``run``'s DP claim: white-box and black-box for sample-level DP, canary clients for
    client-level DP (:class:`AuditOptions` fields as ``options``). A run without DP raises :class:`NoDPError`."""
    if run.dp not in ("sample", "client"):
        raise NoDPError(f"run {run.run_dir} has privacy.dp = {run.dp!r}: there is no DP claim to audit; audit a run "
                        "with privacy.dp = \"sample\" or \"client\" (and privacy.target_epsilon or privacy.noise)")
    if quick:
        options = {"m_white": 200, "m_client": 200, **options}
    opt = AuditOptions(**options)
    p, fed, train = run.plan.privacy, run.plan.federated, run.plan.train
    base = {"dp": run.dp, "clip": p.clip, "noise_scale": opt.noise_scale, "seed": seed, "quick": quick,
            "claimed_epsilon": p.target_epsilon}
    if run.dp == "client":
        res = audit_client_level(run, m=opt.m_client, seed=seed, noise_scale=opt.noise_scale,
                                 sparsity=opt.client_sparsity, alpha=opt.alpha)
        return [report_of(res, accounted_epsilon=_accounted_client(p, fed.rounds), settings={
            **base, "canaries": f"canary clients, sparse random directions (s={opt.client_sparsity}) of norm C",
            "observed": f"every round's noised aggregate of {len(run.clients)} clients + canary clients "
                        "(white-box; scored: cosine of the final model delta)", "noise_multiplier": p.noise_multiplier,
            "rounds": fed.rounds, "primary": True})]
    if not 0 <= opt.partition_id < len(run.clients):
        raise ConfigError(f"partition_id {opt.partition_id} is outside the run's {len(run.clients)} clients")
    plan = p.clients[opt.partition_id]
    x, y = run.client_rows(opt.partition_id)
    lr = fed.local_lr or train.lr
    common = dict(clip=p.clip, clipping=p.clipping, rounds=fed.rounds, local_epochs=fed.local_epochs, seed=seed,
                  noise_scale=opt.noise_scale, alpha=opt.alpha)
    eps = _accounted_sample(plan)
    sched = {**base, "partition_id": opt.partition_id, "n": plan.n, "sample_rate": plan.sample_rate,
             "total_steps": plan.total_steps, "noise_multiplier": plan.noise_multiplier}
    white = audit_sample_white_box(x, y, train, plan, lr=lr, m=opt.m_white, **common)
    opt_note = f"sgd (audit; the run used {fed.local_optimizer})"
    # the white-box headline is the every-step observer, declared here before any run (it sees every release the
    # accountant covers); the update observer is reported beside it, as its own 95 % bound for the server's view,
    # and never maxed with it (a maximum of the two would need a correction)
    reports = [report_of(white["step"], accounted_epsilon=eps, settings={
                   **sched, "canaries": "Dirac gradient canaries in net.0.weight", "observed": "every noised step "
                   "(white-box; scored: per-step likelihood ratio at the claimed sigma)", "optimizer": opt_note,
                   "primary": True}),
               report_of(white["update"], accounted_epsilon=eps, settings={
                   **sched, "canaries": "Dirac gradient canaries in net.0.weight",
                   "observed": "single client update each round (server's view, secondary to the every-step "
                   "observer; scored: sum of -update/lr)", "optimizer": opt_note, "primary": False})]
    m_black = opt.m_black or min(400, int(opt.max_canary_ratio * plan.n))
    if quick and not opt.m_black:
        m_black = min(m_black, 60)
    black = audit_sample_black_box(x, y, train, plan, optimizer=fed.local_optimizer, lr=lr, m=m_black,
                                   max_canary_ratio=opt.max_canary_ratio, **common)
    reports.append(report_of(black, accounted_epsilon=eps, settings={
        **sched, "canaries": "crafted rows (random vectors, random 3-label sets)",
        "observed": "final model (black-box; scored: canary loss decrease from the initial model)",
        "optimizer": fed.local_optimizer, "primary": True}))
    return reports
