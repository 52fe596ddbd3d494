"""The ``--out`` folder of every verb that writes one: checked before any work, never silently reused.

:func:`claim_output_dir` runs before a verb loads or embeds anything. It
refuses a location that cannot hold a folder (a regular file on the way, no
write permission) and a folder that already holds files, unless the user says
``--resume`` (continue the run the folder holds) or ``--overwrite``.

``--overwrite`` loses nothing by accident:

* it accepts only a folder fedicd wrote: one with the ``.fedicd`` marker that
  every claimed folder gets, or (older runs) one holding nothing but files
  fedicd writes; a folder with other files is refused;
* the earlier contents are moved to ``.fedicd-previous/`` inside the folder,
  not deleted. When the command succeeds (:meth:`OutputClaim.commit`) the
  files fedicd writes are deleted from there and anything else is kept, with a
  warning; when it fails (:meth:`OutputClaim.abandon`) they are moved back.

A command that fails before writing anything leaves no trace: the marker and
the folders it created are removed again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedicd.errors import OutputDirError

__all__ = ["OutputClaim", "claim_output_dir", "check_writable_location", "MARKER", "PREVIOUS"]

log = logging.getLogger(__name__)

MARKER = ".fedicd"
PREVIOUS = ".fedicd-previous"
_PROBE = ".fedicd-probe-"
# what fedicd's verbs write at the top of an output folder (run, prepare, embed, partition, attack, keys)
_ARTIFACTS = frozenset({
    "results.json", "model.pt", "scaler.npz", "labels.json", "config.json", "history.csv", "learning_curves.png",
    "run_plan.json", "run_meta.json", "client_dp_releases.jsonl", "checkpoint", "clients", "data", "partition.json", "partition_val.json", "heatmap.png",
    "notes.jsonl.gz", "notes.jsonl.gz.summary.json", "identifiers.jsonl", "mentions.jsonl", "embeddings.npy",
    "ids.json", "leakage_utility.json", "leakage_utility.png", "framework.log", MARKER})
_ARTIFACT_PATTERN = re.compile(r"^(bow|generative|retrieval|attribute)\w*\.json$")


def _is_artifact(name: str) -> bool:
    return name in _ARTIFACTS or bool(_ARTIFACT_PATTERN.match(name))


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path("/")


def _probe_write(directory: Path) -> None:
    """Create and delete a file in ``directory`` (root ignores permission bits, so ask the file system)."""
    fd, name = tempfile.mkstemp(prefix=_PROBE, dir=directory)
    os.close(fd)
    os.unlink(name)


def _check_location(path: Path, option: str) -> Path | None:
    """Raise unless ``path`` can become a writable folder; return the topmost folder it will create."""
    existing = _first_existing(path)
    if not existing.is_dir():
        what = "is a regular file" if existing.is_file() else "is not a folder"
        where = f"{option} {path}" if existing == path else f"{option} {path}: {existing}"
        raise OutputDirError(f"{where} {what}; {option} must name a folder")
    created = None if existing == path else existing / path.relative_to(existing).parts[0]
    try:
        path.mkdir(parents=True, exist_ok=True)
        _probe_write(path)
    except OSError as exc:
        _remove_created(path, created)
        reason = exc.strerror or type(exc).__name__
        raise OutputDirError(f"cannot write to {option} {path}: {reason}; choose a writable folder") from None
    return created


def check_writable_location(path: str | Path, *, option: str = "--out") -> Path:
    """Make sure ``path`` is, or can become, a folder this process can write to; return it absolute."""
    path = Path(path).expanduser().absolute()
    _check_location(path, option)
    return path


def _remove_created(path: Path, created: Path | None) -> None:
    """Remove the empty folders from ``path`` up to ``created`` (the topmost one this process made)."""
    if created is None:
        return
    for folder in (path, *path.parents):
        if not folder.is_dir() or any(folder.iterdir()):
            return
        folder.rmdir()
        if folder == created:
            return


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(_PROBE) and p.name != MARKER)


@dataclass
class OutputClaim:
    """A claimed ``--out`` folder: what this command created, and where earlier contents were set aside."""

    path: Path
    created: Path | None = None
    previous: Path | None = None

    def commit(self) -> None:
        """The command succeeded: drop the earlier fedicd files set aside by ``--overwrite``; keep the rest."""
        if self.previous is None or not self.previous.exists():
            return
        for child in self.previous.iterdir():
            if _is_artifact(child.name):
                _delete(child)
        left = sorted(p.name for p in self.previous.iterdir())
        if left:
            log.warning("--overwrite kept %d earlier file(s) fedicd did not write in %s: %s", len(left),
                        self.previous, ", ".join(left[:6]))
        else:
            self.previous.rmdir()

    def abandon(self) -> None:
        """The command failed: put earlier contents back; remove what this command made if it wrote nothing."""
        wrote = _entries(self.path) if self.path.is_dir() else []
        wrote = [name for name in wrote if name != PREVIOUS]
        if not wrote:
            (self.path / MARKER).unlink(missing_ok=True)
        if self.previous is not None and self.previous.exists():
            if wrote:
                log.warning("the earlier contents of %s are kept in %s", self.path, self.previous)
            else:
                for child in self.previous.iterdir():
                    child.rename(self.path / child.name)
                self.previous.rmdir()
        if not wrote:
            _remove_created(self.path, self.created)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _set_aside(path: Path, entries: list[str], had_marker: bool) -> Path:
    """Move an earlier fedicd output into ``path/.fedicd-previous`` (refusing anything else)."""
    if PREVIOUS in entries:
        raise OutputDirError(f"--overwrite: {path / PREVIOUS} holds the files an earlier --overwrite set aside; "
                             "nothing was changed. Move them away first, or choose a new --out")
    foreign = [name for name in entries if not _is_artifact(name)]
    if foreign and not had_marker:
        raise OutputDirError(f"--overwrite: {path} holds files that fedicd did not write ({', '.join(foreign[:6])}); "
                             "nothing was changed. Choose a new --out")
    previous = path / PREVIOUS
    previous.mkdir()
    for name in entries + ([MARKER] if had_marker else []):
        (path / name).rename(previous / name)
    return previous


def claim_output_dir(path: str | Path, *, verb: str, overwrite: bool = False, resume: bool = False) -> OutputClaim:
    """Check and claim ``path`` as ``fedicd <verb>``'s output folder before any work starts.

    Parameters
    ----------
    path:
        The ``--out`` folder; created if missing.
    verb:
        The command, recorded in the marker and named in messages.
    overwrite:
        Replace an earlier fedicd output (set aside, see the module docstring).
    resume:
        The folder holds a run to continue: its files are kept as they are.

    Raises
    ------
    OutputDirError
        The location cannot be written, or it already holds files and neither
        ``overwrite`` nor ``resume`` was given (nothing is written or removed).
    """
    if resume and overwrite:
        raise OutputDirError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    path = Path(path).expanduser().absolute()
    created = _check_location(path, "--out")
    entries, had_marker = _entries(path), (path / MARKER).exists()
    claim = OutputClaim(path, created=created)
    if resume:
        if not entries:
            _remove_created(path, created)
            raise OutputDirError(f"--resume: {path} is empty; there is no run to continue")
        return claim
    if entries and not overwrite:
        shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
        raise OutputDirError(f"--out {path} already holds files ({shown}); nothing was changed. Pass --overwrite "
                             "to replace an earlier fedicd output, or choose a new --out")
    if entries:
        claim.previous = _set_aside(path, entries, had_marker)
    (path / MARKER).write_text(json.dumps({"verb": verb}) + "\n")
    return claim
