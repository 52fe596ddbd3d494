"""``fedicd partition`` moved to :mod:`fedicd.partition_run` (kept here for old imports)."""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name == "run_partition":
        return importlib.import_module("fedicd.partition_run").run_partition
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
