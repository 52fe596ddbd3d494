"""Shared fixtures: tiny notes, random embeddings, sparse labels, and the CodiEsp location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# CI runs the property tests on a fixed sequence of examples (a red build must be reproducible);
# locally, hypothesis explores new examples on every run.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

from fedicd.data.notes import CodedNotes, LoadSummary

MARKERS = {
    "ray": "starts a Flower/Ray simulation (20-40 s of start-up each)",
    "model": "loads the real MiniLM encoder",
}


# Modules that load the real MiniLM (they importorskip its package); tests that start Ray are marked where they are
# (the tests of Ray's own processes, SecAgg+ over Flower's simulation, the in-process/Ray comparison)
MODEL_MODULES = ("tests/test_embed.py", "tests/test_experiment_cli.py", "tests/test_attack_cli.py",
                 "tests/reliability/test_catalogue.py", "tests/federated/test_processes.py",
                 "tests/federated/test_inprocess.py", "tests/federated/test_run_outcome.py",
                 "tests/federated/test_simulation.py", "tests/secure/test_secure_runs.py",
                 "tests/privacy/test_private_runs.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of a MiniLM-loading module ``model``."""
    root = Path(__file__).resolve().parents[1]
    for item in items:
        if str(Path(item.fspath).resolve().relative_to(root)) in MODEL_MODULES:
            item.add_marker(pytest.mark.model)


def pytest_configure(config: pytest.Config) -> None:
    """The lanes: ``pytest -m "not ray and not model"`` is the fast one; CI runs everything (also in pyproject)."""
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, meaning in MARKERS.items():
        if name not in known:  # pyproject.toml registers them too
            config.addinivalue_line("markers", f"{name}: {meaning}")


CODIESP_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp"


@pytest.fixture
def codiesp_root() -> Path:
    if not (CODIESP_ROOT / "train").is_dir():
        pytest.skip(f"CodiEsp not found at {CODIESP_ROOT} (expected ../shared/data/codiesp beside the repo)")
    return CODIESP_ROOT


@pytest.fixture
def tiny_notes() -> CodedNotes:
    codes = [("I10", "E11.9"), ("I10",), ("J18.9", "I10"), ("E11.9",), ("J18.9",), ("I10", "N18.3")]
    return CodedNotes(ids=[f"n{i}" for i in range(len(codes))], texts=[f"note {i} text" for i in range(len(codes))],
                      codes=codes, icd_version=[10] * len(codes), summary=LoadSummary(source="tiny"))


@pytest.fixture
def separable_task() -> tuple[np.ndarray, np.ndarray]:
    """64-dim embeddings whose 8 labels are linear threshold functions of them (learnable)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 64)).astype(np.float32)
    w = rng.normal(size=(64, 8))
    y = (x @ w > 2.0).astype(np.float32)
    return x, y
