"""The command lines of Flower 1.42's deployment processes, and the ``flwr`` CLI's connection file.

One HTTPS port serves the SuperLink's Fleet, Control and Runtime APIs (``--host``/``--port``). A SuperLink is
started with TLS (``--ssl-ca-certfile``, ``--ssl-certfile``, ``--ssl-keyfile``), SuperNode authentication
(``--enable-supernode-auth``: only nodes whose public key was registered with ``flwr supernode register`` may
join) and ``--disable-runtime-dependency-installation`` (a submitted app cannot make the SuperLink install
packages). :func:`superlink_command` refuses to build an insecure command unless told ``insecure=True``; Flower
itself refuses a SuperLink without certificates unless ``--insecure`` ("Certificates are required unless running in
insecure mode"), and refuses node authentication without TLS.

Privacy
-------
Without TLS every model update crosses the network in clear and node authentication is impossible.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from fedicd.errors import ConfigError

__all__ = ["CONNECTION", "InsecureStartError", "superlink_command", "node_command", "cli_config", "write_toml"]

CONNECTION = "fedicd-local"  # the name of the SuperLink connection in the flwr CLI's config.toml


class InsecureStartError(ConfigError):
    """Asked to start a deployment without TLS certificates, and not told explicitly that it may."""


def superlink_command(executable: str, *, host: str, port: int, database: str | Path,
                      certificates: str | Path | None, insecure: bool = False) -> list[str]:
    """``flower-superlink`` with TLS from ``certificates`` (a folder with ``ca.crt``, ``server.crt``, ``server.key``)
    and node authentication; with ``certificates=None`` only when ``insecure=True`` (then without authentication).

    Raises
    ------
    InsecureStartError
        ``certificates`` is None and ``insecure`` is not True.
    """
    argv = [executable, "--host", host, "--port", str(int(port)), "--database", str(database),
            "--disable-runtime-dependency-installation"]
    if certificates is None:
        if insecure is not True:
            raise InsecureStartError("no TLS certificates for the SuperLink: refusing to start it insecure (updates "
                                     "in clear, no node authentication); give a certificate folder "
                                     "(python -m fedicd.deploy.certificates) or pass insecure=True explicitly")
        return [*argv, "--insecure"]
    c = Path(certificates)
    return [*argv, "--ssl-ca-certfile", str(c / "ca.crt"), "--ssl-certfile", str(c / "server.crt"),
            "--ssl-keyfile", str(c / "server.key"), "--enable-supernode-auth"]


def node_command(executable: str, *, superlink: str, port: int, host: str, node_config: str | Path,
                 root_certificates: str | Path | None, key: str | Path | None) -> list[str]:
    """``flower-supernode`` dialling ``superlink`` over TLS (trusting ``root_certificates``) with its private
    ``key``, its node config from a TOML file and its own runtime ``port``; insecure when both are None."""
    argv = [executable, "--superlink", superlink, "--host", host, "--port", str(int(port)),
            "--node-config", str(node_config)]
    if root_certificates is None and key is None:
        return [*argv, "--insecure"]
    if root_certificates is not None:
        argv += ["--root-certificates", str(root_certificates)]
    if key is not None:
        argv += ["--auth-supernode-private-key", str(key)]
    return argv


def cli_config(address: str, root_certificates: str | Path | None) -> dict:
    """The flwr CLI's ``config.toml`` naming one connection, :data:`CONNECTION` (insecure without a CA)."""
    conn: dict[str, object] = {"address": address}
    if root_certificates is None:
        conn["insecure"] = True
    else:
        conn["root-certificates"] = str(Path(root_certificates).resolve())
    return {"superlink": {"default": CONNECTION, CONNECTION: conn}}


def write_toml(path: str | Path, data: Mapping[str, object]) -> Path:
    """Write ``data`` as TOML (a node config, a run config, the CLI's config) to ``path``, creating its folder."""
    import tomli_w

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        tomli_w.dump(dict(data), fh)
    if not path.name.endswith(".toml"):
        raise ConfigError(f"{path}: a Flower config file must end with .toml")
    os.chmod(path, 0o644)
    return path
