"""Statistics match a brute-force recount; non-IID degree behaves with alpha; feasibility rule."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedicd.partition import (check_feasibility, dirichlet_partition, drop_infeasible_codes, iid_partition,
                              natural_partition, partition_stats)
from fedicd.plots import plot_heatmap
from tests.partition.strategies import label_sets


@settings(deadline=None, max_examples=40)
@given(labels=label_sets(min_notes=4), k=st.integers(1, 6), seed=st.integers(0, 1000))
def test_label_counts_match_brute_force(labels, k, seed):
    assume(k <= len(labels))
    p = dirichlet_partition(labels, k, alpha=0.5, seed=seed, min_partition_size=0)
    stats = partition_stats(labels, p)
    for client, idx in enumerate(p.clients):
        recount = Counter(c for i in idx for c in labels[i])
        for j, code in enumerate(stats.codes):
            assert stats.label_counts[client, j] == recount.get(code, 0)
    assert stats.label_counts.sum() == sum(len(cs) for cs in labels)  # no label split or lost
    present = set(stats.codes)
    for client, idx in enumerate(p.clients):
        seen = {c for i in idx for c in labels[i]}
        assert stats.absent_fraction[client] == pytest.approx(len(present - seen) / len(present))


def _clustered_labels(n=3000, n_codes=40, seed=0):
    """Notes with 1-5 codes, long-tailed and correlated (codes come in groups of 4)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_codes // 4 + 1)
    out = []
    for _ in range(n):
        group = rng.choice(len(weights), p=weights / weights.sum())
        k = rng.integers(1, 5)
        out.append(tuple(f"G{group}-{j}" for j in rng.choice(4, size=min(k, 4), replace=False)))
    return out


@pytest.mark.parametrize("scheme", ["product", "mixture", "primary"])
def test_non_iid_degree_decreases_with_alpha_and_large_alpha_is_iid(scheme):
    labels = _clustered_labels()
    seeds = range(5)

    def degree(alpha):
        return np.mean([partition_stats(labels, dirichlet_partition(labels, 10, alpha=alpha, seed=s, scheme=scheme,
                                                                    min_partition_size=0)).mean_jsd for s in seeds])

    curve = [degree(a) for a in (0.05, 0.5, 10.0, 1e4)]
    iid = np.mean([partition_stats(labels, iid_partition(labels, 10, seed=s)).mean_jsd for s in seeds])
    assert curve[0] > curve[1] > curve[2] >= curve[3] - 1e-3
    assert curve[0] > 3 * iid  # small alpha: strongly skewed
    # alpha = 1e4: no more skewed than a random IID split (the primary scheme's exact per-code
    # proportional cut is even a little more even than random sampling)
    assert curve[3] < 1.25 * iid + 1e-3 and curve[3] < 0.05 * curve[0]


def test_natural_partition_of_skewed_sites_is_non_iid():
    labels = [("A",)] * 50 + [("B",)] * 50
    sites = ["x"] * 50 + ["y"] * 50
    stats = partition_stats(labels, natural_partition(labels, sites=sites))
    # JSD((1, 0), (1/2, 1/2)) = H(3/4, 1/4) - (H(1, 0) + H(1/2, 1/2)) / 2, in bits
    h = -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))
    assert stats.jsd == pytest.approx([h - 0.5, h - 0.5]) and stats.absent_fraction == [0.5, 0.5]


def test_feasibility_report_and_drop():
    labels = [("A", "B")] * 20 + [("A",)] * 20 + [("C",)] * 3
    sites = ["s1"] * 20 + ["s2"] * 23
    p = natural_partition(labels, sites=sites)
    report = check_feasibility(labels, p, min_per_client=10)
    assert report.feasible_codes == ["A"]
    assert report.violations == {"B": {"s2": 0}, "C": {"s1": 0, "s2": 3}}
    assert report.clients_in_violation() == {"s1": 1, "s2": 2}
    kept, emptied = drop_infeasible_codes(labels, report)
    assert kept[0] == ("A",) and kept[-1] == () and emptied == 3
    assert not report.ok and check_feasibility([("A",)] * 20, iid_partition([("A",)] * 20, 2), min_per_client=10).ok


def test_heatmap_png_is_written(tmp_path):
    labels = _clustered_labels(n=300)
    stats = partition_stats(labels, dirichlet_partition(labels, 5, alpha=0.1, seed=0, min_partition_size=0))
    path = plot_heatmap(stats, tmp_path / "h.png", top=10)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
