"""Properties every partitioner must have (hypothesis), plus scheme-specific behaviour."""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedicd.partition import (PartitionError, dirichlet_partition, get_partitioner, iid_partition,
                              natural_partition, quantity_partition)
from tests.partition.strategies import label_sets

SETTINGS = settings(deadline=None, max_examples=40)


def _run(name, labels, k, seed, **opts):
    if name == "natural":
        sites = [f"s{i % k}" for i in range(len(labels))]
        return natural_partition(labels, sites=sites, seed=seed, **opts)
    if name == "dirichlet":
        opts.setdefault("alpha", 0.3)
        opts.setdefault("min_partition_size", 0)
    if name == "quantity":
        opts.setdefault("min_partition_size", 0)
    return get_partitioner(name)(labels, k, seed=seed, **opts)


def _assert_exact_cover(partition, n):
    everything = np.concatenate([*partition.clients, partition.dropped])
    assert sorted(everything.tolist()) == list(range(n))
    assert sum(partition.sizes) + len(partition.dropped) == n


@SETTINGS
@given(labels=label_sets(), k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1),
       name=st.sampled_from(["iid", "dirichlet", "quantity", "natural"]))
def test_every_note_in_exactly_one_client_and_deterministic(labels, k, seed, name):
    assume(k <= len(labels))
    np.random.seed(1)
    torch.manual_seed(1)
    first = _run(name, labels, k, seed)
    np.random.seed(999)  # global RNG state must not matter
    torch.manual_seed(999)
    np.random.random(7)
    second = _run(name, labels, k, seed)
    _assert_exact_cover(first, len(labels))
    assert len(first.dropped) == 0
    assert all(np.array_equal(a, b) for a, b in zip(first.clients, second.clients))


@SETTINGS
@given(labels=label_sets(min_notes=10), k=st.integers(1, 8), seed=st.integers(0, 10_000),
       alpha=st.floats(0.01, 1e4), m=st.integers(0, 3), scheme=st.sampled_from(["product", "mixture", "primary"]))
def test_dirichlet_min_partition_size_holds_or_raises(labels, k, seed, alpha, m, scheme):
    assume(k <= len(labels))
    try:
        p = dirichlet_partition(labels, k, alpha=alpha, seed=seed, scheme=scheme, min_partition_size=m,
                                max_retries=5)
    except PartitionError as exc:
        assert "min_partition_size" in str(exc)
        return
    assert min(p.sizes) >= m
    _assert_exact_cover(p, len(labels))


@SETTINGS
@given(labels=label_sets(min_notes=20), k=st.integers(2, 8), seed=st.integers(0, 10_000),
       alpha=st.floats(0.01, 100), balance=st.floats(1.0, 2.0))
def test_balance_caps_client_sizes(labels, k, seed, alpha, balance):
    assume(k <= len(labels))
    p = dirichlet_partition(labels, k, alpha=alpha, seed=seed, balance=balance, min_partition_size=0)
    assert max(p.sizes) <= int(np.ceil(balance * len(labels) / k))


@SETTINGS
@given(labels=label_sets(min_notes=5), k=st.integers(1, 10), seed=st.integers(0, 10_000),
       beta=st.floats(0.01, 100), m=st.integers(0, 5), dist=st.sampled_from(["dirichlet", "lognormal"]))
def test_quantity_sizes_respect_minimum_and_sum(labels, k, seed, beta, m, dist):
    assume(k <= len(labels) and k * m <= len(labels))  # more clients than notes is refused (test below)
    p = quantity_partition(labels, k, seed=seed, beta=beta, distribution=dist, min_partition_size=m)
    assert min(p.sizes) >= m and sum(p.sizes) == len(labels)


@pytest.mark.parametrize(("partitioner", "kwargs"), [(iid_partition, {}), (quantity_partition, {}),
                                                     (dirichlet_partition, {"alpha": 0.5})])
def test_more_clients_than_notes_is_refused(partitioner, kwargs):
    with pytest.raises(PartitionError, match="n_clients=6 is more than the 5 notes to share out"):
        partitioner([("C00",)] * 5, 6, seed=0, **kwargs)


@SETTINGS
@given(labels=label_sets(min_notes=2), seed=st.integers(0, 100), n_sites=st.integers(1, 6))
def test_natural_never_mixes_sites(labels, seed, n_sites):
    rng = np.random.default_rng(seed)
    sites = [f"site-{rng.integers(n_sites)}" for _ in labels]
    p = natural_partition(labels, sites=sites)
    for name, idx in zip(p.names, p.clients):
        assert {sites[i] for i in idx} == {name}
    assert p.names == sorted(set(sites))


def test_iid_sizes_differ_by_at_most_one_and_given_sizes_are_used():
    labels = [("A",)] * 103
    assert sorted(iid_partition(labels, 10, seed=0).sizes) == [10] * 7 + [11] * 3
    assert iid_partition(labels, 3, seed=0, sizes=[3, 50, 50]).sizes == [3, 50, 50]
    with pytest.raises(PartitionError, match="summing to 103"):
        iid_partition(labels, 3, sizes=[1, 2, 3])


def test_lognormal_with_zero_sigma_is_equal_sizes():
    assert sorted(quantity_partition([("A",)] * 40, 4, distribution="lognormal", sigma=0.0).sizes) == [10] * 4


@pytest.mark.parametrize("call, message", [
    (lambda: dirichlet_partition([("A",)] * 5, 2, alpha=0.0), "alpha must be a finite number > 0"),
    (lambda: dirichlet_partition([("A",)] * 5, 2, alpha=float("nan")), "alpha must be a finite number > 0"),
    (lambda: dirichlet_partition([("A",)] * 5, 2, alpha=-1), "alpha must be a finite number > 0"),
    (lambda: iid_partition([("A",)] * 5, 6), "n_clients=6 is more than the 5 notes"),
    (lambda: iid_partition([], 1), "empty set of notes"),
    (lambda: iid_partition([("A",)] * 5, 0), "n_clients must be an integer >= 1"),
    (lambda: dirichlet_partition([("A",), ()], 2, alpha=1.0), "1 notes have no label .*unlabelled='uniform'"),
    (lambda: dirichlet_partition([("A",)] * 10, 5, alpha=1.0, min_partition_size=3), "infeasible"),
    (lambda: quantity_partition([("A",)] * 10, 5, min_partition_size=3), "infeasible"),
    (lambda: dirichlet_partition([("A",)] * 10, 2, alpha=1.0, balance=0.5), "balance must be >= 1.0"),
    (lambda: dirichlet_partition([("A",)] * 10, 2, alpha=1.0, scheme="shards"), "scheme must be one of"),
    (lambda: natural_partition([("A",)] * 3, sites=None), "needs a site per note"),
    (lambda: natural_partition([("A",)] * 3, 2, sites=["a", "b", "c"]), "3 distinct sites"),
    (lambda: natural_partition([("A",)] * 3, sites=["a", "b", "b"], min_partition_size=2), r"\('a', 1\)"),
    (lambda: get_partitioner("shards"), "unknown partitioner 'shards'; choose one of"),
])
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_impossible_minimum_fails_after_bounded_retries_not_forever():
    # one code, tiny alpha: almost every draw puts all notes on one client
    with pytest.raises(PartitionError, match=r"no draw in 3 attempts .*min_partition_size=5"):
        dirichlet_partition([("A",)] * 20, 4, alpha=1e-3, scheme="primary", min_partition_size=5, max_retries=3)


def test_unlabelled_uniform_spreads_and_records_notes():
    labels = [("A",)] * 30 + [()] * 10
    p = dirichlet_partition(labels, 3, alpha=0.5, seed=0, unlabelled="uniform")
    assert p.params["n_unlabelled"] == 10 and sum(p.sizes) == 40
