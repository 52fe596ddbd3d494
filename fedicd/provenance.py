"""Where a result came from: library versions, the fedicd source's git commit, the command line, the time.

:func:`provenance` returns a JSON-ready dict that every ``results.json`` (central
and federated) records under ``"provenance"``::

    {"versions": {"fedicd": "0.1.0", "torch": ..., "flwr": ..., "opacus": ...,
                  "tenseal": ..., "transformers": ..., "scikit-learn": ...,
                  "numpy": ..., "python": ...},
     "git": {"commit": "<sha>" | None, "dirty": true | false | None},
     "argv": [...], "timestamp": "2026-01-01T12:00:00+00:00"}

A library that is not installed reads ``None``; ``git.commit`` is ``None``
when the fedicd source is not a git checkout (an installed wheel) or git is
absent.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["provenance", "library_versions", "git_state", "LIBRARIES"]

# label in results.json → distribution name
LIBRARIES = {"fedicd": "fedicd", "torch": "torch", "flwr": "flwr", "opacus": "opacus", "tenseal": "tenseal",
             "transformers": "transformers", "scikit-learn": "scikit-learn", "numpy": "numpy"}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a result depends on (``None`` for one not installed), and Python's."""
    out: dict[str, str | None] = {}
    for label, dist in LIBRARIES.items():
        try:
            out[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[label] = None
    if out["fedicd"] is None:  # running from a source tree that was never installed
        from fedicd import __version__

        out["fedicd"] = __version__
    out["python"] = platform.python_version()
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (default: the fedicd package); ``None`` s if none.

    ``dirty`` is true when tracked files differ from the commit (untracked files do not count).
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    commit = _git(["rev-parse", "HEAD"], where)
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """Versions, git state of the fedicd source, command line (``sys.argv`` unless given) and UTC timestamp."""
    return {"versions": library_versions(), "git": git_state(),
            "argv": list(sys.argv if argv is None else argv),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
