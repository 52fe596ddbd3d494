"""Where a CKKS client finds the public parameters: beside its own secret context (a site's copy of the key
folder, in a deployment), else in the plan's key folder (a simulation, whose clients share it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from fedicd.secure.round_ckks import CkksCodec


def _plan(key_dir: Path):
    return SimpleNamespace(secure=SimpleNamespace(key_dir=str(key_dir), clip_values=False))


def test_a_sites_own_parameters_are_read_beside_its_secret(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "secret.ctx").write_bytes(b"")
    (site / "params.json").write_text("{}")
    codec = CkksCodec(_plan(tmp_path / "coordinator-keys"), str(site / "secret.ctx"))
    assert (codec.secret_path, codec.key_dir) == (str(site / "secret.ctx"), str(site))


def test_without_them_the_plans_key_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    codec = CkksCodec(_plan(tmp_path / "keys"), str(tmp_path / "site" / "secret.ctx"))
    assert codec.key_dir == str(tmp_path / "keys")
    simulated = CkksCodec(_plan(tmp_path / "keys"))  # a simulation's client: the shared key folder
    assert (simulated.secret_path, simulated.key_dir) == (str(tmp_path / "keys" / "secret.ctx"), str(tmp_path / "keys"))
