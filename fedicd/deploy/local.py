"""A whole Flower deployment on one machine, as real processes: for the loopback tests and a quick start.

:class:`LocalFederation` makes (or checks) the TLS certificates (:mod:`fedicd.deploy.certificates`) and one
authentication key per SuperNode (:mod:`fedicd.deploy.node_keys`), refuses ports in use, then starts

* ``flower-superlink`` with TLS, ``--enable-supernode-auth``, ``--disable-runtime-dependency-installation`` and a
  ``--database`` file (registrations and runs survive a restart);
* registers every node's public key (``flwr supernode register``; the ``flwr`` CLI reads the connection from its
  own ``$FLWR_HOME/config.toml``);
* one ``flower-supernode`` per node config (``--node-config`` from a TOML file: ``partition-id``, ``data-path`` …),
  each with its key, the CA certificate and its own port;

and :meth:`LocalFederation.run` submits an app (``flwr run <app> <connection> --run-config <file> --stream``) and
waits for it. Every process logs to ``<workdir>/logs/<name>.log``. :meth:`~LocalFederation.close` stops every
process tree it started (children too, :mod:`fedicd.deploy.processes`), then checks that none is left, that the
ports are free and removes the working folder; it raises :class:`ShutdownError` otherwise.

    with LocalFederation([{"partition-id": i, "data-path": f"run/clients/{i}/data.npz"} for i in range(3)]) as fed:
        result = fed.run(".", "study/run-config.toml")

Privacy
-------
Without TLS the model updates cross the network in clear and any process could join as a node: the federation
refuses to start without certificates unless ``insecure=True`` is passed (then without node authentication, which
Flower allows only over TLS). Each node's private key and data path go to that node's process only.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping, Sequence

from fedicd.deploy.certificates import check_certificate, make_certificates
from fedicd.deploy.node_keys import check_port_free, make_node_keys
from fedicd.deploy.processes import (NodeAttempt, ProcessStartError, RunHandle, RunResult, ShutdownError,
                                     flower_command, free_port, log_tail, start_process, stop_tagged, tagged_pids,
                                     wait_listening)
from fedicd.deploy.commands import (CONNECTION, InsecureStartError, cli_config, node_command, superlink_command,
                                     write_toml)
from fedicd.errors import ConfigError

__all__ = ["LocalFederation", "RunResult", "RunHandle", "NodeAttempt", "ShutdownError", "InsecureStartError", "free_port"]

log = logging.getLogger(__name__)


class LocalFederation:
    """A SuperLink and one SuperNode per entry of ``nodes`` (each a node config) on ``host``; see the module doc.

    ``certificates``: ``"auto"`` makes a local CA and a SuperLink certificate in the working folder; a folder
    must hold ``ca.crt``, ``server.crt`` and ``server.key`` (checked: present, valid now, signed by the CA);
    None asks for no TLS, refused unless ``insecure=True``. ``workdir``: None makes a temporary folder, removed
    by :meth:`close` unless ``keep``; a given folder is kept unless ``keep=False``. ``env``: extra environment
    for every process (e.g. ``FEDICD_OPEN_AUDIT``).

    Raises
    ------
    InsecureStartError
        No certificates and not ``insecure=True``.
    CertificateError
        A given certificate is missing, expired, not yet valid or not signed by the given CA.
    ConfigError
        No nodes, or a port already in use (named).
    ProcessStartError
        A Flower process exited or did not listen (its log's tail is in the message).
    """

    def __init__(self, nodes: Sequence[Mapping[str, object]], *, workdir: str | Path | None = None,
                 keep: bool | None = None, host: str = "127.0.0.1", port: int | None = None,
                 node_ports: Sequence[int] | None = None, certificates: str | Path | None = "auto",
                 insecure: bool = False, env: Mapping[str, str] | None = None, start_timeout_s: float = 90.0):
        self.node_configs = [dict(n) for n in nodes]
        if not self.node_configs:
            raise ConfigError("nodes = []: give one node config per SuperNode (e.g. {'partition-id': 0, "
                              "'data-path': 'run/clients/0/data.npz'})")
        if certificates is None and not insecure:
            raise InsecureStartError("certificates = None: refusing to start a federation without TLS (model "
                                     "updates would cross the network in clear, and nodes could not authenticate); "
                                     "give certificates ('auto' makes a local CA) or pass insecure=True explicitly")
        if insecure and certificates is not None:
            raise ConfigError(f"insecure = True with certificates = {certificates!r}: choose one (certificates=None "
                              "for an insecure federation)")
        self.names = [f"node-{i}" for i in range(len(self.node_configs))]
        self.host, self.insecure, self.start_timeout_s = host, insecure, float(start_timeout_s)
        self.port = int(port) if port is not None else free_port(host)
        self.node_ports = [int(p) for p in node_ports] if node_ports is not None else [
            free_port(host) for _ in self.names]
        if len(self.node_ports) != len(self.names) or len({self.port, *self.node_ports}) != len(self.names) + 1:
            raise ConfigError(f"node_ports = {self.node_ports}: give one distinct port per node, none equal to the "
                              f"SuperLink's port {self.port}")
        self._given_dir = workdir is not None
        self.workdir = Path(workdir) if workdir is not None else None  # a temporary folder: made by start()
        self.keep = self._given_dir if keep is None else keep
        self.tag = uuid.uuid4().hex
        self._certificates, self._env = certificates, dict(env or {})
        self._procs: dict[str, subprocess.Popen] = {}
        self._runs = 0
        self.node_ids: dict[str, str] = {}
        self.closed = False

    # ---------------------------------------------------------------- paths and commands
    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def logs(self, name: str) -> str:
        """The log of process ``name`` (``superlink``, ``node-0`` …, ``run-1`` …, ``register-node-0`` …)."""
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def ca_cert(self) -> Path | None:
        return None if self.insecure else self.workdir / "certs" / "ca.crt" if self._certificates == "auto" else \
            Path(self._certificates) / "ca.crt"

    def _environment(self, home: Path) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1",
                **self._env}

    # ---------------------------------------------------------------- start
    def __enter__(self) -> "LocalFederation":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> "LocalFederation":
        """Certificates, keys, port checks, the SuperLink, the registrations, the SuperNodes."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="fedicd-federation-"))
        atexit.register(self._close_quietly)
        try:
            for p in (self.port, *self.node_ports):
                check_port_free(self.host, p)
            self._prepare_credentials()
            self._start_superlink()
            if not self.insecure:
                self._register(self.names)
            for i in range(len(self.names)):
                self.start_node(i)
        except BaseException:
            self._close_quietly()
            raise
        return self

    def _prepare_credentials(self) -> None:
        certs = self.workdir / "certs"
        if self._certificates == "auto":
            make_certificates(certs, hosts=(self.host, "localhost"))
        elif self._certificates is not None:
            certs = Path(self._certificates)
            check_certificate(certs / "server.crt", ca=certs / "ca.crt")
            if not (certs / "server.key").exists():
                raise ConfigError(f"the SuperLink's private key {certs / 'server.key'} is missing")
        if not self.insecure:
            make_node_keys(self.workdir / "keys", self.names)
        write_toml(self.workdir / "cli" / "config.toml", cli_config(self.address, self.ca_cert))
        self._certs_dir = None if self.insecure else certs

    def _start_superlink(self) -> None:
        argv = superlink_command(flower_command("flower-superlink"), host=self.host, port=self.port,
                                 database=self.workdir / "superlink" / "state.db", certificates=self._certs_dir,
                                 insecure=self.insecure)
        proc = start_process(argv, log_path=self.log_path("superlink"), tag=self.tag, role="superlink",
                             env=self._environment(self.workdir / "superlink" / "home"))
        self._procs["superlink"] = proc
        wait_listening(self.host, self.port, proc, name="flower-superlink", log_path=self.log_path("superlink"),
                       timeout_s=self.start_timeout_s)

    def _register(self, names: Sequence[str], timeout_s: float = 120.0) -> None:
        """``flwr supernode register`` every node's public key (the CLI calls run side by side)."""
        procs = {n: start_process([flower_command("flwr"), "supernode", "register",
                                   str(self.workdir / "keys" / f"{n}.pub"), CONNECTION, "--name", n],
                                  log_path=self.log_path(f"register-{n}"), tag=self.tag, role=f"register-{n}",
                                  env=self._environment(self.workdir / "cli")) for n in names}
        deadline = time.monotonic() + timeout_s
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_tagged(self.tag, [f"register-{name}"], popens=[proc])
            ids = re.findall(r"SuperNode (\d+) registered", self.logs(f"register-{name}"))
            if proc.returncode != 0 or not ids:
                path = self.log_path(f"register-{name}")
                raise ProcessStartError(f"flwr supernode register {name} failed (exit {proc.returncode}); log "
                                        f"{path}:\n{log_tail(path)}")
            self.node_ids[name] = ids[-1]

    def start_node(self, i: int) -> None:
        """Start (or restart, after :meth:`kill_node`) SuperNode ``i``."""
        name = self.names[i]
        old = self._procs.get(name)
        if old is not None and old.poll() is None:
            raise ConfigError(f"{name} is already running (pid {old.pid}); kill_node({i}) first")
        config = self.workdir / "nodes" / name / "node-config.toml"
        write_toml(config, self.node_configs[i])
        key = None if self.insecure else self.workdir / "keys" / name
        argv = node_command(flower_command("flower-supernode"), superlink=self.address, port=self.node_ports[i],
                            host=self.host, node_config=config, root_certificates=self.ca_cert, key=key)
        self._procs[name] = start_process(argv, log_path=self.log_path(name), tag=self.tag, role=name,
                                          env=self._environment(self.workdir / "nodes" / name / "home"))

    # ---------------------------------------------------------------- runs and faults
    def start_run(self, app_dir: str | Path, run_config: str | Path | Mapping[str, object] | None = None) -> "RunHandle":
        """Submit ``flwr run <app_dir> <connection> [--run-config <file>] --stream`` and return at once."""
        self._runs += 1
        name = f"run-{self._runs}"
        args = [flower_command("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        if isinstance(run_config, Mapping):
            run_config = write_toml(self.workdir / f"{name}-config.toml", dict(run_config))
        if run_config is not None:
            args += ["--run-config", str(Path(run_config).resolve())]
        proc = start_process(args, log_path=self.log_path(name), env=self._environment(self.workdir / "cli"),
                             tag=self.tag, role=name, cwd=Path(app_dir).resolve())
        self._procs[name] = proc  # close() stops and reaps it too
        return RunHandle(name, proc, time.perf_counter())

    def wait_run(self, handle: "RunHandle", timeout_s: float = 600.0) -> RunResult:
        """Wait for a submitted run's ``flwr run --stream`` to exit (stopped after ``timeout_s``: TimeoutError)."""
        try:
            handle.proc.wait(timeout=max(0.0, timeout_s - (time.perf_counter() - handle.started)))
        except subprocess.TimeoutExpired:
            stop_tagged(self.tag, [handle.name], popens=[handle.proc])
            raise TimeoutError(f"{handle.name} did not finish within {timeout_s:.0f} s; its log "
                               f"{self.log_path(handle.name)} ends:\n{log_tail(self.log_path(handle.name))}") from None
        out = self.logs(handle.name)
        found = re.search(r"started run (\d+)", out)
        return RunResult(handle.proc.returncode, time.perf_counter() - handle.started,
                         found.group(1) if found else None, out)

    def stop_run(self, handle: "RunHandle") -> None:
        """Stop a submitted run's ``flwr run`` process (the run itself goes on on the SuperLink)."""
        stop_tagged(self.tag, [handle.name], popens=[handle.proc])

    def run(self, app_dir: str | Path, run_config: str | Path | Mapping[str, object] | None = None, *,
            timeout_s: float = 600.0) -> RunResult:
        """:meth:`start_run` then :meth:`wait_run`."""
        return self.wait_run(self.start_run(app_dir, run_config), timeout_s)

    def kill_node(self, i: int, *, hard: bool = True) -> None:
        """Stop SuperNode ``i`` and its children: SIGKILL (a crash) or, with ``hard=False``, SIGTERM first."""
        name = self.names[i]
        proc = self._procs.get(name)
        stop_tagged(self.tag, [name], popens=[proc] if proc else [], hard=hard)

    def restart_superlink(self, *, down_s: float = 0.0) -> None:
        """Stop the SuperLink (with its SuperExec and any ServerApp), wait ``down_s``, start it again on the same
        port and database: registrations and runs persist, the nodes reconnect by themselves."""
        stop_tagged(self.tag, ["superlink"], popens=[self._procs["superlink"]])
        time.sleep(down_s)
        deadline = time.monotonic() + 30.0
        while True:
            try:
                check_port_free(self.host, self.port)
                break
            except ConfigError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._start_superlink()

    def attempt_node(self, name: str, *, registered_as: str | None = None, root_certificates: str | Path | None = None,
                     timeout_s: float = 60.0) -> NodeAttempt:
        """Start an extra SuperNode meant to be refused and wait for it to exit: a fresh, unregistered key (or
        the key of node ``registered_as``) and the federation's CA (or ``root_certificates``: another CA)."""
        if registered_as is None:
            make_node_keys(self.workdir / "keys", [name])
        key = self.workdir / "keys" / (registered_as or name)
        config = self.workdir / "nodes" / name / "node-config.toml"
        write_toml(config, {"partition-id": 0, "data-path": str(self.workdir / "nowhere.npz")})
        argv = node_command(flower_command("flower-supernode"), superlink=self.address, port=free_port(self.host),
                            host=self.host, node_config=config, key=key,
                            root_certificates=Path(root_certificates) if root_certificates else self.ca_cert)
        argv += ["--max-retries", "2", "--max-wait-time", "15"]
        t0 = time.perf_counter()
        proc = start_process(argv, log_path=self.log_path(name), tag=self.tag, role=name,
                             env=self._environment(self.workdir / "nodes" / name / "home"))
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        seconds = time.perf_counter() - t0
        stop_tagged(self.tag, [name], popens=[proc])
        return NodeAttempt(proc.returncode, seconds, self.logs(name))

    def alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    # ---------------------------------------------------------------- shutdown
    def _close_quietly(self) -> None:
        try:
            self.close()
        except Exception as err:  # noqa: BLE001 - at exit or after a failed start: report, do not mask
            log.warning("closing the local federation %s: %s", self.workdir, err)

    def close(self) -> None:
        """Stop the SuperNodes, then the SuperLink, then anything else tagged; check nothing is left and the
        ports are free; remove the working folder (unless kept).

        Raises
        ------
        ShutdownError
            A process of the federation is still alive after SIGKILL, or one of its ports is still bound.
        """
        if self.closed or self.workdir is None:  # closed, or never started
            return
        self.closed = True
        atexit.unregister(self._close_quietly)
        nodes = [self._procs[n] for n in self.names if n in self._procs]
        stop_tagged(self.tag, self.names, popens=nodes)
        stop_tagged(self.tag, ["superlink"], popens=[p for n, p in self._procs.items() if n == "superlink"])
        left = stop_tagged(self.tag, popens=list(self._procs.values()), grace_s=5.0)
        busy = []
        for p in (self.port, *self.node_ports) if self._procs else ():  # nothing started: no port of ours
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    check_port_free(self.host, p)
                    break
                except ConfigError as err:
                    if time.monotonic() > deadline:
                        busy.append(str(err))
                        break
                    time.sleep(0.2)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if left or busy:
            raise ShutdownError(f"local federation {self.workdir}: processes still alive {left}; {busy}")

    def leftovers(self) -> list[int]:
        """Live processes of this federation (after :meth:`close`: must be [])."""
        return tagged_pids(self.tag)
