"""What a run's privacy plan adds to the round loop and the clients, and what its results report.

The assembly (:mod:`fedicd.runner.apps`) asks here, once per run or client, instead of testing the DP mode
itself: the strategy's weighting and wrappers, the round observers, the local trainer, the reply metrics.
"""

from __future__ import annotations

from pathlib import Path

from fedicd.run_plan import PrivacyPlan

__all__ = ["strategy_options", "round_observers", "local_trainer", "reply_metrics", "privacy_results"]


def strategy_options(plan: PrivacyPlan, strategy_name: str) -> dict:
    """Keywords of :func:`fedicd.strategies.build_strategy`: under client-level DP, equal client weights and
    Flower's fixed-clipping wrapper."""
    if not plan.client_level:
        return {}
    from fedicd.privacy.client_dp_rounds import client_dp_wrapper
    from fedicd.privacy.client_level import UNIT_WEIGHT_KEY

    return {"weighted_by_key": UNIT_WEIGHT_KEY, "inner_wrappers": [client_dp_wrapper(plan, strategy_name)]}


def round_observers(plan: PrivacyPlan, strategy, run_dir: str | Path) -> tuple:
    """The round loop's observers: the client-level release log and accountant."""
    if not plan.client_level:
        return ()
    from fedicd.privacy.client_dp_rounds import ClientDPObserver

    return (ClientDPObserver(strategy, run_dir),)


def local_trainer(run_plan, run_dir: Path, pid: int):
    """The client's trainer under sample-level DP (DP-SGD), or None."""
    if not run_plan.privacy.sample_level:
        return None
    from fedicd.privacy.sample_trainer import DPSampleTrainer

    return DPSampleTrainer(run_plan, run_dir, pid)


def reply_metrics(plan: PrivacyPlan) -> dict:
    """Metrics every reply carries: equal weights under client-level DP (what its accountant assumes)."""
    if not plan.client_level:
        return {}
    from fedicd.privacy.client_level import UNIT_WEIGHT_KEY

    return {UNIT_WEIGHT_KEY: 1.0}


_MEANING = {
    "sample": ("sample-level DP: the largest over the clients of the epsilon protecting one note of that client's "
               "training data, at the client's delta (epsilon_per_client gives each)"),
    "client": ("client-level DP: the epsilon protecting everything one client contributes (all of its notes) "
               "across every released global model, at delta"),
    "none": "no differential privacy: no epsilon guarantee"}


def privacy_results(plan: PrivacyPlan, history: list[dict], out: Path) -> dict:
    """What a paper needs to quote: ε (``epsilon``, with ``epsilon_meaning``), δ, σ, C, steps, the accountant."""
    priv = plan.to_dict()
    if plan.sample_level:
        from fedicd.privacy.accounting import epsilon_of, load_history

        # from each client's own accountant file: clients that skipped or failed late rounds are still counted
        histories = [load_history(out / "clients" / str(k), 10**9, count_all=plan.secure_rng)
                     for k in range(len(plan.clients))]
        eps = [epsilon_of(h, c.delta) for h, c in zip(histories, plan.clients)]
        priv["epsilon"] = max(eps) if eps else None
        priv["epsilon_per_client"] = {f"client_{k}": e for k, e in enumerate(eps)}
        priv["epsilon_meaning"] = _MEANING["sample"]
        priv["steps_per_client"] = [sum(s for *_, s in h) for h in histories]
    elif plan.client_level:
        priv["epsilon"] = history[-1].get("client_dp_epsilon") if history else None
        priv["epsilon_meaning"] = _MEANING["client"]
        priv["releases"] = history[-1].get("client_dp_releases") if history else 0
    else:
        priv.update({"epsilon": None, "epsilon_meaning": _MEANING["none"]})
    return priv
