"""The installed set is consistent, and the base install already satisfies the dev extra's caps."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _base_requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def _upper(spec) -> tuple[Version, bool] | None:
    """The tightest upper bound as (version, inclusive)."""
    bounds = [(Version(s.version), s.operator == "<=") for s in spec if s.operator in ("<", "<=")]
    return min(bounds) if bounds else None


def _within(ours: tuple[Version, bool], theirs: tuple[Version, bool]) -> bool:
    return ours[0] < theirs[0] or (ours[0] == theirs[0] and (theirs[1] or not ours[1]))


def test_pip_reports_no_broken_requirement():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("package", ["fsspec", "huggingface-hub"])
def test_base_caps_what_the_dev_extra_would_downgrade(package):
    """Installing ``.[dev]`` after the base must not downgrade these (``datasets`` caps them)."""
    try:
        caps = [Requirement(r) for r in requires("datasets") or [] if "extra ==" not in r]
    except PackageNotFoundError:
        pytest.skip("the dev extra (flwr-datasets → datasets) is not installed")
    theirs = next(r for r in caps if r.name.lower() == package)
    ours = _base_requirements()[package]
    assert _upper(ours.specifier) is not None, f"pyproject.toml must cap {package}"
    assert _within(_upper(ours.specifier), _upper(theirs.specifier)), (
        f"pyproject.toml allows {package}{ours.specifier}; datasets needs {theirs.specifier}")
