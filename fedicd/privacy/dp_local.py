"""A client's local training round under sample-level DP-SGD, with its budget check.

The same loop and schedule as non-private local training
(:func:`fedicd.local_training.run_local_epochs`: cosine learning rate of the
global run, AdamW or SGD, FedProx) but each step is a DP-SGD step on a
Poisson-sampled batch (:class:`fedicd.privacy.dp_sgd.DPStepper`), and FedProx's
proximal gradient is added after the noise (it reads no data). SCAFFOLD is
refused: its control variates are full-batch gradients of the private data.

Randomness: by default Poisson sampling and noise come from generators seeded
by (experiment seed, round, client), so a run is reproducible; that is a
*simulation* of DP (whoever knows the seed can subtract the noise). With
``privacy.secure_rng = true`` both generators are seeded from the OS's entropy
(``secrets``) and Opacus' ``secure_mode`` sampling is used against
floating-point attacks: runs are no longer repeatable and the seed is not
public. torch's generator is still a Mersenne Twister, not a cryptographic
generator (Opacus uses torchcsprng for that, which is not installed here).
Because a resumed secure round is a new release, secure runs count every round
ever trained, crashed ones included (:func:`load_history` ``count_all``).
"""

from __future__ import annotations

import functools
import math
import secrets
from dataclasses import dataclass

import torch

from fedicd.local_training import (LocalTrainConfig, local_optimizer, proximal_gradient_, round_seed,
                                   run_local_epochs)
from fedicd.privacy.accounting import DPPlan, PrivacyBudgetExhausted, epsilon_of, epsilons_of, plan_dp
from fedicd.privacy.config import PrivacyConfig
from fedicd.privacy.dp_sgd import DPStepper, poisson_batches
from fedicd.sequences import as_model_input
from fedicd.train_config import TrainConfig

__all__ = ["client_plan", "check_budget", "dp_local_train", "DPRoundResult"]


@functools.lru_cache(maxsize=256)
def _plan(n: int, batch_size: int, rounds: int, local_epochs: int, noise: float, target_epsilon: float,
          delta: float, accountant: str) -> DPPlan:
    return plan_dp(n, batch_size, rounds, local_epochs, noise=noise, target_epsilon=target_epsilon, delta=delta,
                   accountant=accountant)


def client_plan(privacy: PrivacyConfig, n: int, batch_size: int, rounds: int, local_epochs: int) -> DPPlan:
    """The DP-SGD plan of a client with ``n`` notes (σ calibrated once for the whole run by
    ``privacy.accountant``; clients of equal size share one calibration)."""
    return _plan(n, batch_size, rounds, local_epochs, float(privacy.noise), float(privacy.target_epsilon),
                 privacy.resolved_delta, privacy.accountant)


def check_budget(plan: DPPlan, history: list, steps: int, *, partition_id: int, server_round: int) -> float:
    """ε the client would reach after ``steps`` more steps under the plan's accountant (``calibrated_with``);
    raises :class:`PrivacyBudgetExhausted` past a ``target_epsilon`` budget."""
    accountant = plan.calibrated_with
    eps_next = epsilon_of([*history, (plan.noise_multiplier, plan.sample_rate, steps)], plan.delta, accountant)
    if plan.target_epsilon > 0 and eps_next > plan.target_epsilon * (1 + 1e-9):
        raise PrivacyBudgetExhausted(
            f"client {partition_id}: training round {server_round} would raise ε from "
            f"{epsilon_of(history, plan.delta, accountant):.4f} to {eps_next:.4f} at δ={plan.delta:g}, past its "
            f"budget ε={plan.target_epsilon:g} (accountant {accountant}; σ={plan.noise_multiplier:.4f} was "
            f"calibrated for {plan.total_steps} steps); the client refuses to train")
    return eps_next


@dataclass(frozen=True)
class DPRoundResult:
    loss: float
    history: list
    epsilon: float  # under the plan's accountant (calibrated_with)
    steps: int
    empty_batches: int
    clipped_fraction: float
    epsilon_rdp: float = 0.0
    epsilon_pld: float = 0.0


def dp_local_train(model: torch.nn.Module, x_train, y_train, train_cfg: TrainConfig, local: LocalTrainConfig,
                   privacy: PrivacyConfig, plan: DPPlan, history: list, *,
                   scaffold: bool = False, clipping: str | None = None) -> DPRoundResult:
    """Run ``local.local_epochs`` epochs of DP-SGD on the client's rows; returns the new accountant history.

    ``x_train`` is one vector per note (array or tensor) or a :class:`~fedicd.sequences.ChunkSequences`
    (batched by indexing: each Poisson batch is padded to its own longest note). ``clipping`` overrides
    ``privacy.clipping`` (a client passes the run plan's resolved ``PrivacyPlan.clipping``); ``"auto"`` is
    resolved here for the model exactly as :func:`fedicd.privacy.plan.plan_privacy` resolves it.
    """
    if scaffold:
        raise ValueError("SCAFFOLD cannot run under sample-level DP: its control variates are non-private "
                         "full-batch gradients of the client's notes; use fedavg or fedprox")
    x = as_model_input(x_train)
    y = torch.as_tensor(y_train, dtype=torch.float32)
    if len(x) != plan.n:
        raise ValueError(f"the DP plan is for {plan.n} notes but the client holds {len(x)}")
    peak_lr = local.lr or train_cfg.lr
    opt = local_optimizer(model, local.optimizer, peak_lr, train_cfg.weight_decay, momentum=local.momentum)
    before_update = _proximal_gradient_hook(model, local.proximal_mu)
    sampler, noise_gen = _generators(round_seed(local), privacy.secure_rng)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(round_seed(local))
        stepper = DPStepper(model, opt, train_cfg.loss(), plan, clip=privacy.clip, clipping=clipping or privacy.clipping,
                            history=history, noise_generator=noise_gen, secure_rng=privacy.secure_rng)
        try:
            run_local_epochs(model, opt, peak_lr, local, lambda xb, yb: stepper.step(xb, yb, before_update),
                             lambda: poisson_batches(x, y, plan.sample_rate, plan.steps_per_epoch, sampler))
        finally:
            stepper.close()
    return _round_result(stepper, plan)


def _proximal_gradient_hook(model: torch.nn.Module, mu: float):
    """FedProx under DP-SGD: ``mu * (w - w_g)`` added to the noised gradients (None when ``mu = 0``)."""
    if not mu > 0:
        return None
    global_params = [p.detach().clone() for p in model.parameters()]
    return lambda: proximal_gradient_(model, global_params, mu)


def _generators(seed: int, secure_rng: bool) -> tuple[torch.Generator, torch.Generator]:
    """(Poisson sampler, noise) generators: seeded by the round's seed, or from the OS's entropy when secure."""
    if secure_rng:
        return (torch.Generator().manual_seed(secrets.randbits(62)),
                torch.Generator().manual_seed(secrets.randbits(62)))
    return torch.Generator().manual_seed(seed + 11), torch.Generator().manual_seed(seed + 12)


def _round_result(stepper: DPStepper, plan: DPPlan) -> DPRoundResult:
    s = stepper.stats
    both = epsilons_of(stepper.history, plan.delta)
    return DPRoundResult(loss=s.loss_sum / s.loss_batches if s.loss_batches else math.nan, history=stepper.history,
                         epsilon=both[plan.calibrated_with], steps=s.steps, empty_batches=s.empty_batches,
                         clipped_fraction=s.clipped_fraction_sum / s.loss_batches if s.loss_batches else 0.0,
                         epsilon_rdp=both["rdp"], epsilon_pld=both["pld"])
