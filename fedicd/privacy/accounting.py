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
epochs before training starts.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedicd.run_plan import DPPlan

__all__ = ["DPPlan", "plan_dp", "calibrate_noise", "epsilon_of", "load_history", "save_history",
           "PrivacyBudgetExhausted", "HISTORY_FILE"]

HISTORY_FILE = "dp_accountant.json"
CALIBRATION_TOLERANCE = 1e-3  # relative: the calibrated ε is within 0.1 % below the target


class PrivacyBudgetExhausted(RuntimeError):
    """Training further would spend more than the client's privacy budget."""


def steps_per_epoch(n: int, batch_size: int) -> tuple[float, int]:
    """(q, steps per epoch) for ``n`` examples and an expected batch of ``batch_size``."""
    if n < 1:
        raise ValueError("a client with no training examples cannot run DP-SGD")
    q = min(1.0, batch_size / n)
    return q, max(1, math.ceil(n / batch_size))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """σ such that ``steps`` Poisson-sampled Gaussian steps spend at most ``target_epsilon`` (RDP)."""
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    try:
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=steps, accountant="rdp",
                                          epsilon_tolerance=CALIBRATION_TOLERANCE * target_epsilon))
    except ValueError as exc:
        raise ValueError(f"cannot reach ε={target_epsilon} at δ={delta} with q={sample_rate:.4g} over {steps} "
                         f"steps: {exc}") from exc


def plan_dp(n: int, batch_size: int, rounds: int, local_epochs: int, *, noise: float, target_epsilon: float,
            delta: float) -> DPPlan:
    """The schedule and σ of a client holding ``n`` notes (σ calibrated when ``target_epsilon`` is set)."""
    if delta >= 1.0 / n:
        raise ValueError(f"δ={delta} is not below 1/n = {1.0 / n:.3g} for a client with {n} notes; "
                         "choose a smaller privacy.delta")
    q, spe = steps_per_epoch(n, batch_size)
    total = spe * local_epochs * rounds
    sigma = calibrate_noise(target_epsilon, delta, q, total) if target_epsilon > 0 else float(noise)
    return DPPlan(n=n, sample_rate=q, steps_per_epoch=spe, total_steps=total, noise_multiplier=sigma,
                  delta=delta, target_epsilon=float(target_epsilon))


def epsilon_of(history: list, delta: float) -> float:
    """ε of an Opacus RDP history ``[(σ, q, steps), ...]`` at ``delta`` (0 for an empty history)."""
    if not history:
        return 0.0
    acc = RDPAccountant()
    acc.history = [tuple(h) for h in history]
    return float(acc.get_epsilon(delta))


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
