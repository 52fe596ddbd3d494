"""Stage a federated run: the data (:func:`fedicd.federated.data.stage_data`), its public warm start
(:func:`fedicd.warm_start.stage.stage_warm_start`, when ``[warm_start]`` asks for one), then its run plan.

Every refusal that needs the staged clients or the model (privacy planning, the strategy's arguments,
secure aggregation's limits) comes before the plan is written, so nothing runs on a plan that fails.
"""

from __future__ import annotations

from pathlib import Path

from fedicd.config import ExperimentConfig
from fedicd.federated.data import stage_data
from fedicd.federated.model import initial_arrays
from fedicd.run_plan import RunPlan, StrategyPlan, resolved_config, write_plan

__all__ = ["build_plan", "stage_plan"]


def build_plan(cfg: ExperimentConfig, *, input_dim: int, n_labels: int, client_sizes: list[int],
               partition: dict | None = None, labels: dict | None = None, embedding: dict | None = None,
               load_summary: dict | None = None) -> RunPlan:
    """The run plan of ``cfg`` for staged clients of ``client_sizes`` (privacy planned: σ per client or round)."""
    from fedicd.privacy.plan import plan_privacy
    from fedicd.strategies import strategy_args

    train, privacy = plan_privacy(cfg.privacy, cfg.federated, cfg.train, client_sizes, input_dim, n_labels)
    return RunPlan(seed=cfg.seed, train=train, federated=cfg.federated, privacy=privacy,
                   secure=cfg.secure_aggregation,
                   strategy=StrategyPlan(cfg.federated.strategy, strategy_args(cfg.federated, len(client_sizes))),
                   input_dim=input_dim, n_labels=n_labels, client_sizes=tuple(client_sizes),
                   config=resolved_config(cfg), partition=partition or {}, labels=labels, embedding=embedding,
                   load_summary=load_summary)


def _check_secure(plan: RunPlan) -> None:
    """Secure-aggregation checks that need the staged clients and the model, before the first round."""
    if not plan.secure.enabled:
        return
    from fedicd.secure.config import check_secure_staging

    n = plan.n_clients
    sampled = max(int(n * plan.federated.fraction_train), plan.federated.node_minimums(n)[1])
    check_secure_staging(plan.secure, client_sizes=list(plan.client_sizes), sampled=min(n, sampled),
                         arrays=initial_arrays(plan.train, plan.input_dim, plan.n_labels))


def stage_plan(cfg: ExperimentConfig, out: Path) -> RunPlan:
    """Stage ``cfg``'s data under ``out`` and write its run plan."""
    from fedicd.runner.apps import build_run_strategy
    from fedicd.warm_start.stage import check_warm_start, stage_warm_start

    check_warm_start(cfg)  # before any note is embedded
    staged = stage_data(cfg, out)
    plan = build_plan(cfg, input_dim=staged.input_dim, n_labels=staged.n_labels,
                      client_sizes=staged.partition.sizes, labels=staged.data.label_info,
                      embedding=staged.embed_info, load_summary=staged.data.notes.summary.to_dict(),
                      partition=staged.partition_info)
    build_run_strategy(plan)  # fail now, not inside the first round
    _check_secure(plan)
    stage_warm_start(cfg, out, input_dim=staged.input_dim, run_texts=staged.data.notes.texts, train=plan.train)
    write_plan(out, plan)
    return plan
