"""SuperNode authentication keys in the form Flower 1.42 reads them, and a free-port check for a SuperLink or SuperNode.

Flower's SuperNode authentication identifies a node by an ECDSA key on a NIST curve: the node holds the private
key (OpenSSH format, ``flower-supernode --auth-supernode-private-key``), the SuperLink's operator registers its
public key (OpenSSH ``.pub``, ``flwr supernode register``), and a SuperLink started with
``--enable-supernode-auth`` refuses every node it has not registered. :func:`make_node_keys` writes one pair per
node (private key mode 0600, public key 0644) and never overwrites a key.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path
from typing import Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedicd.errors import ConfigError

__all__ = ["NodeKey", "make_node_keys", "check_port_free"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class NodeKey:
    """Paths of one node's key pair."""

    def __init__(self, name: str, private: Path, public: Path):
        self.name, self.private, self.public = name, private, public

    def __repr__(self) -> str:
        return f"NodeKey({self.name!r}, private={str(self.private)!r}, public={str(self.public)!r})"


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def make_node_keys(out_dir: str | Path, names: Sequence[str]) -> list[NodeKey]:
    """Write ``<name>`` (OpenSSH ECDSA P-384 private key) and ``<name>.pub`` under ``out_dir`` for every node.

    Raises
    ------
    ConfigError
        No names, a repeated name, a name that is not a plain file name, or a key file that already exists.
    """
    names = [str(n) for n in names]
    if not names:
        raise ConfigError("no node names given: name one key per SuperNode (e.g. hospital-a hospital-b)")
    bad = [n for n in names if not _NAME.fullmatch(n)]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"node names {names}: each must be unique and a plain file name (letters, digits, . _ -)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    present = [p.name for n in names for p in (out / n, out / f"{n}.pub") if p.exists()]
    if present:
        raise ConfigError(f"{out} already holds {present}: refusing to overwrite node keys (a registered node would "
                          "be locked out); delete them or choose other names")
    made = []
    for name in names:
        key = ec.generate_private_key(ec.SECP384R1())
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(out / name, private, 0o600)
        _write(out / f"{name}.pub", public + f" {name}\n".encode(), 0o644)
        made.append(NodeKey(name, out / name, out / f"{name}.pub"))
    return made


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, naming it (``SO_REUSEADDR``: a port in TIME_WAIT counts as free).

    Raises
    ------
    ConfigError
        ``port`` outside 1–65535, or already in use on ``host``.
    """
    if not 0 < int(port) < 65536:
        raise ConfigError(f"port {port} is outside 1–65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use by another process: stop it or choose "
                                  "another port") from err
            raise ConfigError(f"cannot bind {host}:{port} ({err.strerror or err})") from err
