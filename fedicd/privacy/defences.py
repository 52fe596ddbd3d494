"""What a run's privacy plan adds to the round loop and the clients, and what its results report.

The assembly (:mod:`fedicd.runner.apps`) asks here, once per run or client, instead of testing the DP mode
itself: the strategy's weighting and wrappers, the round observers, the local trainer, the reply metrics.
"""

from __future__ import annotations

from pathlib import Path

from fedicd.run_plan import PrivacyPlan

__all__ = ["strategy_options", "round_observers", "local_trainer", "reply_metrics", "privacy_results"]


def strategy_options(plan: PrivacyPlan, strategy_name: str) -> dict:
    """Keywords of :func:`fedicd.strategies.build_strategy`: under client-level DP, equal client weights and the
    plan's DP wrapper (Flower's fixed or adaptive clipping, or fedicd's Poisson sampling); under distributed DP
    equal weights only (the clients clip and noise; the server adds nothing)."""
    if not plan.client_level:
        return {}
    from fedicd.privacy.client_level import UNIT_WEIGHT_KEY

    if plan.distributed:
        return {"weighted_by_key": UNIT_WEIGHT_KEY}
    from fedicd.privacy.client_dp_rounds import client_dp_wrapper

    return {"weighted_by_key": UNIT_WEIGHT_KEY, "inner_wrappers": [client_dp_wrapper(plan, strategy_name)]}


def round_observers(plan: PrivacyPlan, strategy, run_dir: str | Path) -> tuple:
    """The round loop's observers: the client-level release log and ledger (none under distributed DP)."""
    if not plan.client_level or plan.distributed:
        return ()
    from fedicd.privacy.client_dp_rounds import ClientDPObserver
    from fedicd.run_plan import read_plan

    try:
        seed = read_plan(run_dir).seed  # the Poisson cohort and noise follow the experiment seed
    except FileNotFoundError:
        seed = None
    return (ClientDPObserver(strategy, run_dir, seed),)


def local_trainer(run_plan, run_dir: Path, pid: int):
    """The client's trainer under sample-level DP (DP-SGD), or None."""
    if not run_plan.privacy.sample_level:
        return None
    from fedicd.privacy.sample_trainer import DPSampleTrainer

    return DPSampleTrainer(run_plan, run_dir, pid)


def reply_metrics(plan: PrivacyPlan) -> dict:
    """Metrics every reply carries: equal weights under client-level DP, central or distributed (what its
    accountant assumes)."""
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
    """What a paper needs to quote: ε (``epsilon``, with ``epsilon_meaning``), δ, σ, C, steps, the accountant.

    ``epsilon`` is the selected accountant's (``accountant``: ``"rdp"`` or ``"pld"``; the plan's description
    of it moves to ``accountant_description``); ``epsilon_rdp`` and ``epsilon_pld`` give both, ``None`` where a
    run did not record one.
    """
    priv = plan.to_dict()
    if not (plan.sample_level or plan.client_level):
        priv.update({"epsilon": None, "epsilon_meaning": _MEANING["none"]})
        return priv
    if "accountant" in priv:
        priv["accountant_description"] = priv.pop("accountant")
    if plan.sample_level:
        from fedicd.privacy.accounting import epsilons_of, load_history

        # from each client's own accountant file: clients that skipped or failed late rounds are still counted
        histories = [load_history(out / "clients" / str(k), 10**9, count_all=plan.secure_rng)
                     for k in range(len(plan.clients))]
        known: dict[tuple, dict[str, float]] = {}  # equal-sized clients share a history: account it once
        for h, c in zip(histories, plan.clients):
            key = (tuple(map(tuple, h)), c.delta)
            known[key] = known.get(key) or epsilons_of(h, c.delta)
        both = [known[(tuple(map(tuple, h)), c.delta)] for h, c in zip(histories, plan.clients)]
        selected = plan.clients[0].calibrated_with if plan.clients else "rdp"
        worst = {name: max((b[name] for b in both), default=None) for name in ("rdp", "pld")}
        priv.update({"accountant": selected, "epsilon": worst[selected], "epsilon_rdp": worst["rdp"],
                     "epsilon_pld": worst["pld"],
                     "epsilon_per_client": {f"client_{k}": b[selected] for k, b in enumerate(both)},
                     "epsilon_meaning": _MEANING["sample"],
                     "steps_per_client": [sum(s for *_, s in h) for h in histories]})
    else:
        last = history[-1] if history else {}
        selected = plan.calibrated_with or "rdp"
        fallback = last.get("client_dp_epsilon")  # older ledgers: one ε, the accountant that calibrated σ
        eps = {name: last.get(f"client_dp_epsilon_{name}", last.get(f"epsilon_{name}",
                                                                      fallback if name == selected else None))
               for name in ("rdp", "pld")}
        priv.update({"accountant": selected, "epsilon": eps[selected] if eps[selected] is not None else fallback,
                     "epsilon_rdp": eps["rdp"], "epsilon_pld": eps["pld"], "epsilon_meaning": _MEANING["client"],
                     "releases": last.get("client_dp_releases", 0)})
    return priv
