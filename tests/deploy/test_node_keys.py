"""SuperNode keys load the way Flower loads them; the free-port check names a port in use."""

from __future__ import annotations

import socket
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedicd.deploy.node_keys import check_port_free, make_node_keys
from fedicd.errors import ConfigError


def test_each_node_gets_an_openssh_ecdsa_pair_that_matches(tmp_path) -> None:
    keys = make_node_keys(tmp_path, ["hospital-a", "hospital-b"])
    assert [k.name for k in keys] == ["hospital-a", "hospital-b"]
    publics = set()
    for key in keys:
        private = serialization.load_ssh_private_key(key.private.read_bytes(), password=None)  # as flower-supernode
        public = serialization.load_ssh_public_key(key.public.read_bytes())  # as `flwr supernode register`
        assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
        assert private.public_key().public_numbers() == public.public_numbers()
        assert key.public.read_text().endswith(f" {key.name}\n")
        assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
        publics.add(key.public.read_text())
    assert len(publics) == 2


def test_keys_are_never_overwritten_and_names_are_checked(tmp_path) -> None:
    make_node_keys(tmp_path, ["a"])
    before = (tmp_path / "a").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds \['a', 'a.pub'\]"):
        make_node_keys(tmp_path, ["a", "b"])
    assert (tmp_path / "a").read_bytes() == before and not (tmp_path / "b").exists()
    for names in ([], ["x", "x"], ["../evil"]):
        with pytest.raises(ConfigError, match="no node names|unique and a plain file name"):
            make_node_keys(tmp_path / "n", names)


def test_a_port_in_use_is_named_and_a_free_one_passes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # closed: free again
    with pytest.raises(ConfigError, match="outside 1–65535"):
        check_port_free("127.0.0.1", 70000)
