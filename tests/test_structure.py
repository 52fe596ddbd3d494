"""The code's shape: imports flow one way along the pipeline, no cycle, no module of 400 lines or more.

The stages and the measurements are those of ``experiments/structure.py`` (which also prints them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _structure():
    spec = importlib.util.spec_from_file_location("structure", ROOT / "experiments" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def structure():
    return _structure()


@pytest.fixture(scope="module")
def graph(structure):
    return structure.import_graph(ROOT)


def test_no_import_cycle(structure, graph):
    assert structure.cycles(graph) == []


def test_no_import_against_the_pipeline(structure, graph):
    assert structure.backward_imports(graph) == []


def test_every_module_is_under_400_lines(structure):
    (lines, path), = structure.largest_modules(ROOT, top=1)
    assert lines < 400, path


def test_the_checker_sees_a_cycle_and_a_backward_import(structure):
    graph = {"fedicd.data.a": {"fedicd.data.b"}, "fedicd.data.b": {"fedicd.data.a", "fedicd.federated.x"},
             "fedicd.federated.x": {"fedicd.privacy.y"}, "fedicd.privacy.y": set()}
    assert structure.cycles(graph) == [["fedicd.data.a", "fedicd.data.b"]]
    assert structure.backward_imports(graph) == [("fedicd.data.b", "fedicd.federated.x", "data → training"),
                                                 ("fedicd.federated.x", "fedicd.privacy.y", "training → defences")]


def test_a_section_config_is_configuration_but_the_experiment_config_is_the_plan(structure):
    assert structure.stage_of("fedicd.privacy.config") == (0, "configuration")
    assert structure.stage_of("fedicd.config") == (4, "plan")
    assert structure.backward_imports({"fedicd.partition.config": {"fedicd.partition.dirichlet"},
                                       "fedicd.config": {"fedicd.train"}}) == [
        ("fedicd.config", "fedicd.train", "plan → training")]
