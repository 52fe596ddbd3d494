"""Sample-level privacy accounting that spans every round a client has trained.

Two mistakes this module exists to avoid: creating a new accountant every
round (the ε printed then covers one round), and calibrating σ with
``epochs = rounds`` when a round is not an epoch. Here a client's accountant
history (Opacus' RDP history: ``[(σ, q, steps), ...]``) is stored in the
client's own directory after every round and reloaded before the next, so the
ε after round r composes every DP-SGD step the client has taken. The file is
keyed by round: a resumed run reloads the history as of the round before the
one it repeats, so a crashed round is never counted twice.

Steps: a local epoch is ``ceil(n / batch)`` Poisson-sampled steps with rate
``q = batch / n`` (capped at 1), so a client makes as many steps per epoch as
non-private training; σ is calibrated for ``rounds × local_epochs`` such
epochs before training starts, by the accountant ``privacy.accountant`` selects
(:mod:`fedicd.privacy.accountants`: Opacus' RDP or dp-accounting's PLD), which
also enforces the budget; the plan records the whole schedule's ε under both.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

from fedicd.privacy import accountants
from fedicd.privacy.accountants import CALIBRATION_TOLERANCE
from fedicd.run_plan import DPPlan

__all__ = ["DPPlan", "plan_dp", "calibrate_noise", "epsilon_of", "epsilons_of", "load_history", "save_history",
           "PrivacyBudgetExhausted", "HISTORY_FILE", "CALIBRATION_TOLERANCE"]

HISTORY_FILE = "dp_accountant.json"


class PrivacyBudgetExhausted(RuntimeError):
    """Training further would spend more than the client's privacy budget."""


def steps_per_epoch(n: int, batch_size: int) -> tuple[float, int]:
    """(q, steps per epoch) for ``n`` examples and an expected batch of ``batch_size``."""
    if n < 1:
        raise ValueError("a client with no training examples cannot run DP-SGD")
    q = min(1.0, batch_size / n)
    return q, max(1, math.ceil(n / batch_size))


@functools.lru_cache(maxsize=256)
def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    accountant: str = "rdp") -> float:
    """σ such that ``steps`` Poisson-sampled Gaussian steps spend ``target_epsilon`` under ``accountant``, to
    within 0.1 % below (cached: clients with the same rate and steps share one calibration).

    Raises
    ------
    ValueError
        An unknown ``accountant``, a ``target_epsilon`` that is not > 0, or a target no σ can reach.
    """
    if accountant not in accountants.ACCOUNTANTS:
        raise ValueError(f"privacy.accountant must be one of {list(accountants.ACCOUNTANTS)}, got {accountant!r}")
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    accountants.check_events([(1.0, sample_rate, steps)])  # named errors for q outside (0, 1] or bad steps

    def eps(sigma: float) -> float:
        return accountants.epsilon([(sigma, sample_rate, steps)], delta, accountant)

    start = accountants.gaussian_sigma_guess(target_epsilon, delta, sample_rate, steps)
    what = f"δ={delta:g}, q={sample_rate:.4g}, {steps} steps ({accountant})"
    return accountants.calibrate(eps, target_epsilon, what=what, sigma_start=start)


def plan_dp(n: int, batch_size: int, rounds: int, local_epochs: int, *, noise: float, target_epsilon: float,
            delta: float, accountant: str = "rdp") -> DPPlan:
    """The schedule and σ of a client holding ``n`` notes (σ calibrated with ``accountant`` when
    ``target_epsilon`` is set); the plan records the whole schedule's ε under both accountants."""
    if delta >= 1.0 / n:
        raise ValueError(f"δ={delta} is not below 1/n = {1.0 / n:.3g} for a client with {n} notes; "
                         "choose a smaller privacy.delta")
    if accountant not in accountants.ACCOUNTANTS:
        raise ValueError(f"privacy.accountant must be one of {list(accountants.ACCOUNTANTS)}, got {accountant!r}")
    if not (noise > 0 or target_epsilon > 0):
        raise ValueError(f"DP-SGD needs privacy.noise > 0 or privacy.target_epsilon > 0, got noise={noise} and "
                         f"target_epsilon={target_epsilon}")
    q, spe = steps_per_epoch(n, batch_size)
    total = spe * local_epochs * rounds
    sigma = calibrate_noise(float(target_epsilon), delta, q, total, accountant) if target_epsilon > 0 \
        else float(noise)
    planned = epsilons_of([(sigma, q, total)], delta)
    return DPPlan(n=n, sample_rate=q, steps_per_epoch=spe, total_steps=total, noise_multiplier=sigma,
                  delta=delta, target_epsilon=float(target_epsilon), calibrated_with=accountant,
                  planned_epsilon_rdp=planned["rdp"], planned_epsilon_pld=planned["pld"])


def epsilon_of(history: list, delta: float, accountant: str = "rdp") -> float:
    """ε of an Opacus history ``[(σ, q, steps), ...]`` at ``delta`` under ``accountant`` (0 when empty)."""
    return accountants.epsilon(history, delta, accountant)


def epsilons_of(history: list, delta: float) -> dict[str, float]:
    """``{"rdp": ε, "pld": ε}`` of an Opacus history at ``delta`` (what replies and results report)."""
    return accountants.epsilons(history, delta)


def load_history(client_dir: str | Path, before_round: int, *, count_all: bool = False) -> list:
    """The accountant history as of the end of the last round before ``before_round``.

    ``count_all``: the longest history ever recorded instead, crashed rounds after the checkpoint included;
    for runs whose replayed rounds are new releases (unseeded noise), so nothing released is forgotten.
    """
    path = Path(client_dir) / HISTORY_FILE
    if not path.exists():
        return []
    rounds = {int(k): v for k, v in json.loads(path.read_text())["rounds"].items()}
    if count_all:
        return [tuple(h) for h in max(rounds.values(), key=lambda h: sum(s for *_, s in h))] if rounds else []
    earlier = [r for r in rounds if r < before_round]
    return [tuple(h) for h in rounds[max(earlier)]] if earlier else []


def save_history(client_dir: str | Path, server_round: int, history: list, *, count_all: bool = False) -> None:
    """Record the history after ``server_round`` (atomic write; later rounds of a crashed run are dropped
    unless ``count_all``)."""
    path = Path(client_dir) / HISTORY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rounds = json.loads(path.read_text())["rounds"] if path.exists() else {}
    if not count_all:
        rounds = {k: v for k, v in rounds.items() if int(k) < server_round}
    rounds[str(server_round)] = [list(h) for h in history]
    tmp = path.with_name(f"{HISTORY_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"mechanism": "rdp", "rounds": rounds}))
    tmp.replace(path)
