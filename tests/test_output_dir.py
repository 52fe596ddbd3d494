"""--out folders: refused when they hold files, --overwrite sets earlier files aside and loses nothing."""

from __future__ import annotations

import logging

import pytest

from fedicd.errors import OutputDirError
from fedicd.output_dir import MARKER, PREVIOUS, claim_output_dir


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_folder_holding_files_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    before = _tree(tmp_path)
    with pytest.raises(OutputDirError, match=r"already holds files \(results.json\); nothing was changed"):
        claim_output_dir(tmp_path, verb="run")
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_folder_with_files_fedicd_did_not_write(tmp_path):
    """A stray results.json does not make a folder fedicd's: the thesis beside it must survive."""
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "thesis.tex").write_text("\\section{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(b"\x00")
    before = _tree(tmp_path)
    with pytest.raises(OutputDirError, match=r"fedicd did not write \(sub, thesis.tex\); nothing was changed"):
        claim_output_dir(tmp_path, verb="run", overwrite=True)
    assert _tree(tmp_path) == before


def test_overwrite_of_an_earlier_run_commits_by_deleting_only_fedicd_files(tmp_path, caplog):
    first = claim_output_dir(tmp_path, verb="run")
    (tmp_path / "results.json").write_text("old")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text("old")
    first.commit()
    (tmp_path / "my_notes.txt").write_text("keep me")  # added by the user after the run
    claim = claim_output_dir(tmp_path, verb="run", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER, PREVIOUS]
    (tmp_path / "results.json").write_text("new")
    with caplog.at_level(logging.WARNING):
        claim.commit()
    assert (tmp_path / "results.json").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / PREVIOUS).iterdir()) == ["my_notes.txt"]
    assert "kept 1 earlier file(s) fedicd did not write" in caplog.text


def test_overwrite_then_failure_puts_the_earlier_files_back(tmp_path):
    claim_output_dir(tmp_path, verb="run").commit()
    (tmp_path / "results.json").write_text("old")
    (tmp_path / "model.pt").write_bytes(b"weights")
    before = _tree(tmp_path)
    claim = claim_output_dir(tmp_path, verb="run", overwrite=True)
    assert not (tmp_path / "results.json").exists()
    claim.abandon()  # the new command failed before writing anything
    assert _tree(tmp_path) == before


def test_overwrite_of_a_legacy_folder_of_fedicd_files_only(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "bow_none.json").write_text("{}")
    claim = claim_output_dir(tmp_path, verb="attack", overwrite=True)
    claim.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MARKER]


def test_a_failed_command_removes_every_folder_it_created(tmp_path):
    out = tmp_path / "x" / "y" / "x"  # a repeated name must not stop the clean-up early
    claim = claim_output_dir(out, verb="prepare")
    assert (out / MARKER).exists()
    claim.abandon()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_only_the_marker_counts_as_empty(tmp_path):
    (tmp_path / MARKER).write_text("{}")  # a command killed right after claiming the folder
    claim = claim_output_dir(tmp_path, verb="run")
    assert claim.previous is None and (tmp_path / MARKER).exists()


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(OutputDirError, match="give one of them"):
        claim_output_dir(tmp_path, verb="run", overwrite=True, resume=True)


def test_resume_of_a_new_folder_is_refused_without_creating_it(tmp_path):
    with pytest.raises(OutputDirError, match="there is no run to continue"):
        claim_output_dir(tmp_path / "new", verb="run", resume=True)
    assert list(tmp_path.iterdir()) == []


def test_a_regular_file_on_the_way_is_named(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputDirError, match=r"afile/sub: .*afile is a regular file"):
        claim_output_dir(tmp_path / "afile" / "sub", verb="run")
