"""The tiny federated config of the federated tests (their embedding cache, ``fed_cache``, is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

from fedicd.config import ExperimentConfig, load_config

# 150 synthetic notes, 3 clients: a round takes well under a second once Ray is up
TINY = ["data.n_notes=150", "data.n_codes=30", "data.min_train_count=3", "embedding.max_tokens=128",
        'train.mode="federated"', "federated.rounds=3", "partition.n_clients=3", "partition.min_partition_size=5",
        "federated.fraction_evaluate=1.0", 'federated.engine="inprocess"']


def tiny_overrides(cache: Path, *extra: str) -> list[str]:
    """The ``--set`` overrides of the tiny federated run (``extra`` last, so they win)."""
    return [*TINY, f'cache_dir="{cache}"', *extra]


def tiny_config(cache: Path, *extra: str) -> ExperimentConfig:
    from fedicd.cli import DEMO_CONFIG

    return load_config(DEMO_CONFIG, tiny_overrides(cache, *extra))
