"""A tiny federated run staged for simulation, shared by the tests that compare two ways of running it.

Three IID clients of 20 rows, 16-d Gaussian vectors, 5 labels that depend on them; validation split among the
clients, a server test split; engine "inprocess". Callers add the keys that differ (rounds, evaluation, CKKS …).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedicd.config import load_config

N_CLIENTS, DIM, N_LABELS = 3, 16, 5


def stage_tiny_run(run: Path, overrides: list[str]):
    """Stage the tiny run under ``run`` with ``overrides`` on top of the base keys; returns its plan."""
    from fedicd.federated.data import stage_arrays
    from fedicd.partition import iid_partition
    from fedicd.run_plan import write_plan
    from fedicd.runner.staging import build_plan

    cfg = load_config(None, ['train.mode="federated"', f"partition.n_clients={N_CLIENTS}",
                             'federated.engine="inprocess"', *overrides])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((108, DIM), dtype=np.float32)
    y = (x[:, :N_LABELS] > 0.3).astype(np.float32)
    cut = {"train": (0, 60), "val": (60, 84), "test": (84, 108)}
    partition = iid_partition([()] * 60, N_CLIENTS, seed=0)
    stage_arrays(run, {p: x[a:b] for p, (a, b) in cut.items()}, {p: y[a:b] for p, (a, b) in cut.items()},
                 partition, iid_partition([()] * 24, N_CLIENTS, seed=1))
    plan = build_plan(cfg, input_dim=DIM, n_labels=N_LABELS, client_sizes=partition.sizes)
    write_plan(run, plan)
    return plan
