"""Runs made once per test session and copied into the cases that need an earlier result."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from tests.reliability.catalogue import tiny_central


@lru_cache(maxsize=1)
def central_run() -> Path:
    """A finished tiny central run (synthetic notes, MiniLM, 2 epochs); its folder."""
    from fedicd.cli import main

    ws = Path(tempfile.mkdtemp(prefix="fedicd-catalogue-"))
    atexit.register(shutil.rmtree, ws, True)
    code = main(["run", str(tiny_central(ws)), "--out", str(ws / "run")])
    if code != 0:
        raise RuntimeError(f"the shared central run failed with exit {code}")
    return ws / "run"
