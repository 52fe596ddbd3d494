"""The ``--out`` folder of every verb that writes one: checked before any work, never silently reused.

:func:`claim_output_dir` runs before a verb loads or embeds anything. It
refuses a location that cannot hold a folder (a regular file on the way, no
write permission) and a folder that already holds files, unless the user says
``--overwrite`` (which empties a folder that fedicd wrote, and refuses one that
it did not) or ``--resume`` (which continues the run the folder holds). A
claimed folder gets a ``.fedicd`` marker naming the verb, so that a later
``--overwrite`` knows the folder is fedicd's to empty.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fedicd.errors import OutputDirError

__all__ = ["claim_output_dir", "check_writable_location", "release_unused_output_dir", "MARKER"]

MARKER = ".fedicd"
# files written by fedicd before the marker existed: a folder holding one of them is fedicd's
_LEGACY_ARTIFACTS = ("results.json", "run_meta.json", "partition.json", "notes.jsonl.gz", "embeddings.npy",
                     "leakage_utility.json", "checkpoint")


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def _probe_write(directory: Path) -> None:
    """Create and delete a file in ``directory`` (root ignores permission bits, so ask the file system)."""
    fd, name = tempfile.mkstemp(prefix=".fedicd-probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


def check_writable_location(path: str | Path, *, option: str = "--out") -> Path:
    """Make sure ``path`` is, or can become, a folder this process can write to; return it absolute.

    The folders it had to create are remembered (:func:`release_unused_output_dir` removes them again
    when the command fails before writing anything).
    """
    path = Path(path).expanduser().absolute()
    existing = _first_existing(path)
    if existing != path and existing.is_dir():
        _CREATED[path] = path.relative_to(existing).parts[0]
    if not existing.is_dir():
        what = "is a regular file" if existing.is_file() else "is not a folder"
        where = f"{option} {path}" if existing == path else f"{option} {path}: {existing}"
        raise OutputDirError(f"{where} {what}; {option} must name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputDirError(f"cannot write to {option} {path}: {reason}; choose a writable folder") from None
    return path


_CREATED: dict[Path, str] = {}


def release_unused_output_dir(path: str | Path) -> None:
    """After a failed command: remove the marker, and the folders this process created, if nothing else was
    written there (a refused command leaves no trace; a failed run keeps its files for --resume and inspection)."""
    path = Path(path).absolute()
    if not path.is_dir() or any(name != MARKER for name in _entries(path)):
        return
    (path / MARKER).unlink(missing_ok=True)
    top = _CREATED.pop(path, None)
    if top is None:
        return
    root = path
    while root.name != top:
        root = root.parent
    for folder in (path, *path.parents):
        if any(folder.iterdir()):
            break
        folder.rmdir()
        if folder == root:
            break


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".fedicd-probe-"))


def _is_fedicd_folder(path: Path, entries: list[str]) -> bool:
    return MARKER in entries or any(name in entries for name in _LEGACY_ARTIFACTS)


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def claim_output_dir(path: str | Path, *, verb: str, overwrite: bool = False, resume: bool = False) -> Path:
    """Check and claim ``path`` as ``fedicd <verb>``'s output folder before any work starts.

    Parameters
    ----------
    path:
        The ``--out`` folder; created if missing.
    verb:
        The command, recorded in the marker and named in messages.
    overwrite:
        Empty a folder fedicd wrote earlier instead of refusing it.
    resume:
        The folder holds a run to continue: its files are kept as they are.

    Raises
    ------
    OutputDirError
        The location cannot be written, or it already holds files and neither
        ``overwrite`` nor ``resume`` was given (nothing is written or removed).
    """
    path = check_writable_location(path)
    entries = _entries(path)
    if resume:
        if not entries:
            raise OutputDirError(f"--resume: {path} is empty; there is no run to continue")
        return path
    if entries and not overwrite:
        shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
        raise OutputDirError(f"--out {path} already holds files ({shown}); nothing was changed. Pass --overwrite "
                             "to replace an earlier fedicd output, or choose a new --out")
    if entries and not _is_fedicd_folder(path, entries):
        raise OutputDirError(f"--overwrite: {path} holds files that fedicd did not write ({', '.join(entries[:6])}); "
                             "nothing was removed. Choose a new --out")
    if entries:
        _empty(path)
    (path / MARKER).write_text(json.dumps({"verb": verb}) + "\n")
    return path
