"""How a federated run ended: updates accepted and refused, the failure summary, and when to advise ``--resume``.

A run that finishes its rounds is still *failed* when no round updated the global model, or when
more than ``federated.max_rejected_share`` of the sampled clients' updates never reached it
(refused by the server: :class:`~fedicd.strategies.validation.UpdateValidator`, the CKKS checks, a
halted SecAgg+ round; or lost to a client error or a missing reply). Its ``results.json`` and
``history.csv`` are written first (they are the evidence); then :class:`RunFailedError` carries a
one-paragraph summary: rounds, updates accepted and refused, the most common reasons.

A run that *crashes* is worth resuming only when a checkpoint exists and the cause can change on a
second try; :func:`crash_message` says which.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path

__all__ = ["RunFailedError", "RunInterruptedError", "KeyMismatchError", "run_outcome", "failure_message",
           "crash_message", "reason_label", "root_cause", "is_deterministic"]

# Flower wraps what goes wrong in the simulation runtime in these two RuntimeErrors (``raise ... from ex``)
_FLOWER_WRAPPERS = ("An error was encountered. Ending simulation.", "Simulation Runtime crashed.")


class RunFailedError(RuntimeError):
    """The rounds ran, but the model they produced cannot be trusted (see :func:`run_outcome`).

    ``outcome`` is the ``outcome`` block of the run's ``results.json``.
    """

    def __init__(self, message: str, outcome: dict) -> None:
        super().__init__(message)
        self.outcome = outcome


class RunInterruptedError(RuntimeError):
    """The driver got SIGTERM or SIGINT during the simulation; Ray was shut down."""

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


class KeyMismatchError(RuntimeError):
    """Encrypted state of the run was made under another CKKS key than the key folder now holds."""


def reason_label(reason: str) -> str:
    """A short, client-independent name for a rejection reason (what the failure summary counts)."""
    rules = (("another key", "ciphertext made under another key"),
             ("SHA-256", "ciphertext corrupted (digest mismatch)"),
             ("not below its data prime", "ciphertext residues out of range (corrupted or forged)"),
             ("ReplayError", "replayed update (seed already added)"),
             ("replay", "replayed update (already received)"),
             ("QuorumError", "too few partial decryptions (round without update)"),
             ("ContextMismatchError", "ciphertext from another crypto context"),
             ("no encrypted update", "reply without an encrypted update"),
             ("SecAggDropoutError", "SecAgg+ round halted (too few clients left)"),
             ("non-finite", "update holds NaN/Inf"), ("NaN", "update holds NaN/Inf"),
             ("LayoutError", "update has other arrays or shapes than the model"),
             ("has shape", "update has other arrays or shapes than the model"),
             ("array names differ", "update has other arrays or shapes than the model"),
             ("no reply", "no reply within federated.timeout_s"))
    if reason.startswith("client error"):
        names = re.findall(r"<class '([\w.]+)'>", reason)
        return f"client error: {names[-1].rsplit('.', 1)[-1]}" if names else "client error"
    for needle, label in rules:
        if needle in reason:
            return label
    return re.sub(r"\d+", "#", reason)[:100]


def run_outcome(history: list[dict], rejections: list[dict], *, max_rejected_share: float) -> dict:
    """The ``outcome`` block of ``results.json``: counts over all rounds and whether the run failed.

    ``history``: the per-round rows (``clients_sampled``, ``client_failures``, ``updates_rejected``,
    ``updated``); ``rejections``: every recorded refusal (train stage only is counted).
    """
    sampled = sum(int(r.get("clients_sampled", 0)) for r in history)
    failed = sum(int(r.get("client_failures", 0)) for r in history)
    refused = sum(int(r.get("updates_rejected", 0)) for r in history)
    updated = sum(bool(r.get("updated")) for r in history)
    share = failed / sampled if sampled else 1.0
    reasons = Counter(reason_label(str(r.get("reason", ""))) for r in rejections if r.get("stage", "train") == "train")
    problems = []
    if updated == 0:
        problems.append(f"no round of {len(history)} updated the global model")
    if share > max_rejected_share:
        problems.append(f"{failed} of {sampled} client updates did not reach the model (share {share:.2f} > "
                        f"federated.max_rejected_share = {max_rejected_share:g})")
    return {"status": "failed" if problems else "ok", "problems": problems, "rounds": len(history),
            "rounds_updated": updated, "updates_sampled": sampled, "updates_accepted": sampled - failed,
            "updates_rejected": refused, "updates_lost": failed - refused, "failed_share": share,
            "max_rejected_share": max_rejected_share, "reasons": dict(reasons.most_common())}


def failure_message(outcome: dict, out: str | Path) -> str:
    """The one-paragraph summary a failed run ends with."""
    reasons = outcome["reasons"]
    total = sum(reasons.values())
    top = "; ".join(f"{label}: {n} of {total}" for label, n in list(reasons.items())[:3]) or "none recorded"
    return (f"the federated run failed: {' and '.join(outcome['problems'])}. {outcome['rounds']} rounds "
            f"({outcome['rounds_updated']} updated the model); of {outcome['updates_sampled']} client updates "
            f"{outcome['updates_accepted']} were accepted, {outcome['updates_rejected']} rejected by the server and "
            f"{outcome['updates_lost']} lost to client errors or missing replies; most common reasons: {top}. "
            f"The evidence is kept in {out} (results.json, history.csv, framework.log)")


def root_cause(exc: BaseException) -> BaseException:
    """``exc`` without Flower's simulation wrappers around it."""
    while isinstance(exc, RuntimeError) and str(exc) in _FLOWER_WRAPPERS and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def is_deterministic(exc: BaseException) -> bool:
    """Whether the same config, data and keys would raise ``exc`` again (then ``--resume`` cannot help)."""
    return isinstance(exc, (ValueError, TypeError, KeyError, AttributeError, NotImplementedError, ImportError,
                            KeyMismatchError))


def crash_message(exc: BaseException, *, done: int, rounds: int, out: str | Path, checkpointed: bool) -> str:
    """What to tell the user when the simulation ended before its last round.

    Advises ``--resume`` only when a checkpoint exists and the cause is not deterministic.
    """
    cause = root_cause(exc)
    if isinstance(cause, RunInterruptedError):
        sig = signal.Signals(cause.signum).name if cause.signum else "a signal"
        head = f"the federated run was interrupted by {sig} after round {done} of {rounds}; Ray was shut down"
    else:
        head = f"the federated run crashed after round {done} of {rounds}: {cause}"
    if is_deterministic(cause):
        return (f"{head}; --resume would fail the same way ({type(cause).__name__} comes from the config, data or "
                f"keys the run was started with): fix the cause and start a new run (a new --out)")
    if not checkpointed:
        return f"{head}; no round was checkpointed, so there is nothing to resume: run the same command again"
    return f"{head}; continue it with --resume (checkpoint of round {done} in {out})"
