"""An in-process Flower engine: a :class:`flwr.serverapp.Grid` that runs the ClientApps itself.

Flower 1.42's ``run_simulation`` has one backend, Ray (~20 s of start-up per run). :class:`InProcessGrid` holds N
virtual nodes and runs each message's ClientApp call synchronously in the calling process, in push order;
:func:`run_inprocess` is ``run_simulation`` without Ray (same ``Run``, ``TaskIdentity`` and server ``Context``; the
ServerApp runs in the calling thread, its exceptions propagate unchanged).

Reproduced from the simulation engine (``flwr/server/superlink/fleet/vce/vce_api.py``, the Ray actor, the in-memory
LinkState behind ``InMemoryGrid``): node id ↔ partition id with ``node_config`` ``{"partition-id": i,
"num-partitions": N}`` and one persistent ``Context`` per node, stored only when the ClientApp returns (refused if
it changed ``run_config``); fresh message ids, the LinkState's checks on messages and replies (refused ones are
logged and dropped), a *copy* delivered (as across Ray), each reply pulled once ("message unavailable" error replies
for unknown ids); a raising ClientApp's error reply with Ray's code and reason text (:func:`client_error_reason`);
torch's thread count and the global RNGs (``random``, NumPy's, torch's CPU generator) saved and restored around each
call, each node keeping its own RNG states as a worker process would. Not reproduced: parallelism (so ``timeout``
never cuts a round short), Ray worker crashes, TTL expiry, heartbeats; ``unresponsive`` simulates a silent node.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.app.message.message import make_message
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException, LoadClientAppError
from flwr.common.constant import (MESSAGE_TTL_TOLERANCE, NUM_PARTITIONS_KEY, PARTITION_ID_KEY, RUN_ID_NUM_BYTES,
                                  SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES, ErrorCode)
from flwr.server.utils.validator import validate_message
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.constant import NOOP_FEDERATION_ID
from flwr.supercore.date import now
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

__all__ = ["InProcessGrid", "InProcessResult", "run_inprocess", "client_error_reason"]

log = logging.getLogger("flwr.inprocess")  # with Flower's own logs (fedicd sends those to framework.log)
ServerMain = Callable[[Grid, Context], Any]
RAY_ERROR_CLASS = "<class 'ray.exceptions.RayTaskError(ClientAppException)'>"


def client_error_reason(exc: BaseException, *, style: str = "ray") -> tuple[int, str]:
    """(error code, reason) of the engine's error reply for a ClientApp that raised ``exc``.

    The engine's worker writes ``str(type(ex)) + ":<'" + str(ex) + "'>"`` for what the backend raised: the
    Ray actor's ``ClientAppException(str(exc))``, which reaches it as ``RayTaskError(ClientAppException)``
    whose text is the remote traceback. ``style="ray"`` writes that shape (class name, the client's
    traceback, ``...ClientAppException: \nException ClientAppException occurred. Message: <str(exc)>``),
    so code parsing reasons of Ray runs reads ours alike; ``"plain"``: what a backend without Ray gives.
    """
    if isinstance(exc, LoadClientAppError):
        return ErrorCode.LOAD_CLIENT_APP_EXCEPTION, str(type(exc)) + ":<'" + str(exc) + "'>"
    wrapped = ClientAppException(str(exc))
    if style == "plain":
        return ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(type(wrapped)) + ":<'" + str(wrapped) + "'>"
    if style != "ray":
        raise ValueError(f"unknown error style {style!r}; expected 'ray' or 'plain'")
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
    remote = "ray::ClientAppActor.run() (in-process)"
    text = (f"{remote}\n" + "".join(frames[1:] if frames and frames[0].startswith("Traceback") else frames)
            + "\nThe above exception was the direct cause of the following exception:\n\n"
            + f"{remote}\nflwr.clientapp.client_app.ClientAppException: {wrapped}")
    return ErrorCode.CLIENT_APP_RAISED_EXCEPTION, RAY_ERROR_CLASS + ":<'" + text + "'>"


@dataclass
class _RngState:
    """The global RNG states of one (virtual) process."""

    python: Any
    numpy: Any
    torch: Any

    @classmethod
    def capture(cls) -> _RngState:
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state())

    @classmethod
    def fresh(cls, seed: int) -> _RngState:
        return cls(random.Random(seed).getstate(), np.random.RandomState(seed % 2**32).get_state(),
                   torch.Generator().manual_seed(seed % 2**63).get_state())

    def install(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)


@dataclass
class _Node:
    node_id: int
    partition_id: int
    context: Context
    initial_run_config: dict
    rng: _RngState | None = None


@dataclass
class EngineStats:
    """What the engine did: ClientApp calls, error replies, dropped replies, seconds inside ClientApps."""

    calls: int = 0
    errors: int = 0
    dropped: int = 0
    clientapp_seconds: float = 0.0
    calls_per_node: dict[int, int] = field(default_factory=dict)


class InProcessGrid(Grid):
    """A Flower ``Grid`` whose virtual nodes run ``client_app`` (or the ClientApp it returns) in this process.

    ``num_nodes`` nodes, node ``i`` with partition id ``i``. ``run``: default an empty run with a random id
    (as ``run_simulation`` makes); ``run_config``: every node's ``context.run_config`` (default ``{}``);
    ``node_configs``: extra ``node_config`` entries per partition id; ``node_ids``: in partition order
    (default: distinct random uint64 ids, as Flower draws them, from ``seed``, which also seeds each node's
    initial RNG states: default 0, reproducible; None: fresh entropy, like new processes). ``isolate_rng``:
    per-node global RNG states, the caller's restored after each call. ``copy_messages``: deliver deep
    copies of messages, contexts and replies (Flower's arrays are immutable ``bytes``: cheap).
    ``unresponsive(message) -> bool``: True, and that node never answers that message.
    ``error_style``: ``"ray"`` or ``"plain"`` error reasons (:func:`client_error_reason`).

    Unlike Ray: clients run one at a time, in push order, inside ``push_messages``, so ``timeout`` never
    drops a reply; a ``KeyboardInterrupt``/``SystemExit`` raised in a ClientApp reaches the caller;
    process-global state other than torch's thread count and the global RNGs (environment, caches,
    logging) is shared by the nodes and the server.
    """

    def __init__(self, client_app: ClientApp | Callable[[], ClientApp], num_nodes: int, *, run: Run | None = None,
                 run_config: Mapping[str, Any] | None = None,
                 node_configs: Mapping[int, Mapping[str, Any]] | None = None,
                 node_ids: Iterable[int] | None = None, seed: int | None = 0, isolate_rng: bool = True,
                 copy_messages: bool = True, unresponsive: Callable[[Message], bool] | None = None,
                 error_style: str = "ray", pull_interval: float = 0.1) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
        self._app = client_app if isinstance(client_app, ClientApp) else client_app()
        if not isinstance(self._app, ClientApp):
            raise TypeError(f"client_app must be a ClientApp or return one, got {type(self._app).__name__}")
        self._run: Run | None = None
        self.pull_interval = pull_interval
        self.isolate_rng = isolate_rng
        self.copy_messages = copy_messages
        self.unresponsive = unresponsive
        self.error_style = error_style
        self.stats = EngineStats()
        self._lock = threading.RLock()
        self._seed = seed if seed is not None else secrets.randbits(63)
        ids = list(node_ids) if node_ids is not None else _random_ids(num_nodes, self._seed)
        if len(ids) != num_nodes or len(set(ids)) != num_nodes or any(i in (0, SUPERLINK_NODE_ID) for i in ids):
            raise ValueError(f"node_ids must be {num_nodes} distinct ids other than 0 and {SUPERLINK_NODE_ID}")
        self._run_config = dict(run_config or {})
        self._node_configs = {int(k): dict(v) for k, v in (node_configs or {}).items()}
        self._nodes: dict[int, _Node] = {}
        self._node_order = [int(i) for i in ids]
        self._ins: dict[str, Message] = {}  # pushed, not yet pulled: message id -> server's message
        self._res: dict[str, Message] = {}  # message id of the instruction -> its undelivered reply
        self._order: list[str] = []  # push order of the ids in _ins
        self.set_run(run if run is not None else _empty_run())

    def set_run(self, run: Run) -> None:
        """Set the run; (re)creates every node's ``Context`` for its run id (state starts empty)."""
        if not isinstance(run, Run):
            raise TypeError(f"`run` must be an instance of Run, got {type(run).__name__}")
        with self._lock:
            self._run = run
            n = len(self._node_order)
            self._nodes = {}
            for pid, nid in enumerate(self._node_order):
                node_config = {PARTITION_ID_KEY: pid, NUM_PARTITIONS_KEY: n, **self._node_configs.get(pid, {})}
                ctx = Context(run_id=run.run_id, node_id=nid, node_config=node_config, state=RecordDict(),
                              run_config=dict(self._run_config))
                rng = _RngState.fresh(self._seed * 1_000_003 + pid) if self.isolate_rng else None
                self._nodes[nid] = _Node(nid, pid, ctx, dict(self._run_config), rng)

    @property
    def run(self) -> Run:
        """The run (a copy, as ``InMemoryGrid`` returns)."""
        assert self._run is not None
        return Run(**vars(self._run))

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """``Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)`` (deprecated in Flower)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> list[int]:
        """Every node's id, in partition order (all nodes are always connected)."""
        return list(self._node_order)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Store each valid message under a fresh id and run its ClientApp call now, in order."""
        ids: list[str] = []
        accepted: list[Message] = []
        with self._lock:
            for msg in messages:
                msg.metadata.__dict__["_message_id"] = str(uuid4())
                self._check_message(msg)  # InMemoryGrid raises for these
                if not self._accept(msg):
                    continue
                mid = msg.metadata.message_id
                self._ins[mid] = msg
                self._order.append(mid)
                ids.append(mid)
                accepted.append(msg)
        for msg in accepted:
            self._deliver(msg)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies that arrived for ``message_ids`` (each once), in push order; unknown ids: error replies."""
        wanted = set(message_ids)
        out: list[Message] = []
        with self._lock:
            delivered_at = now().isoformat()
            for mid in [m for m in self._order if m in wanted]:
                reply = self._res.pop(mid, None)
                if reply is not None:
                    reply.metadata.delivered_at = delivered_at
                    out.append(reply)
                    del self._ins[mid]
                    self._order.remove(mid)
            for mid in sorted(wanted - set(self._ins)):
                if not any(r.metadata.reply_to_message_id == mid for r in out):
                    from flwr.server.superlink.linkstate.utils import (  # loads SQLAlchemy: only when needed
                        create_message_error_unavailable_ins_message as unavailable)
                    out.append(unavailable(mid, self.run.run_id))
        return out

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push, run every ClientApp call, return the replies (in push order; ``timeout`` is not needed)."""
        ids = self.push_messages(messages)
        return self.pull_messages(ids) if ids else []

    @staticmethod
    def _check_message(msg: Message) -> None:
        md = msg.metadata
        if not (md.message_id != "" and md.reply_to_message_id == "" and md.ttl > 0 and md.delivered_at == ""):
            raise ValueError(f"Invalid message: {msg}")

    def _accept(self, msg: Message) -> bool:
        """The in-memory LinkState's ``store_message_ins`` checks (an invalid message is logged and dropped)."""
        md = msg.metadata
        problems = validate_message(msg, is_reply_message=False) + [p for bad, p in (
            (md.src_node_id != SUPERLINK_NODE_ID, f"invalid source node ID {md.src_node_id}"),
            (self._run is None or md.run_id != self._run.run_id, f"invalid run ID {md.run_id}"),
            (md.dst_node_id not in self._nodes, f"invalid destination node ID {md.dst_node_id}")) if bad]
        if problems:
            log.error("in-process grid: message refused: %s", problems)
        return not problems

    def _deliver(self, msg: Message) -> None:
        if self.unresponsive is not None and self.unresponsive(msg):
            log.info("in-process grid: node %s does not answer message %s", msg.metadata.dst_node_id,
                     msg.metadata.message_id)
            return
        msg.metadata.delivered_at = now().isoformat()  # the LinkState marks the stored (server's) message
        reply = self._execute(msg)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        if self._valid_reply(reply, msg):
            with self._lock:
                self._res[msg.metadata.message_id] = reply
        else:
            self.stats.dropped += 1

    def _execute(self, msg: Message) -> Message:
        """One ClientApp call on node ``dst_node_id``: the reply, or the engine's error reply."""
        node = self._nodes[msg.metadata.dst_node_id]
        delivered = _copy_message(msg) if self.copy_messages else msg
        context = copy.deepcopy(node.context) if self.copy_messages else node.context
        threads = torch.get_num_threads()
        caller_rng = _RngState.capture() if self.isolate_rng else None
        if node.rng is not None:
            node.rng.install()
        t0 = time.perf_counter()
        try:
            reply = self._app(message=delivered, context=context)
            if not isinstance(reply, Message):
                raise TypeError(f"the ClientApp returned {type(reply).__name__}, not a Message")
        except Exception as exc:  # the worker's error reply
            log.warning("in-process grid: the ClientApp on node %s (partition %s) raised %r", node.node_id,
                        node.partition_id, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            code, reason = client_error_reason(exc, style=self.error_style)
            reply = Message(Error(code=code, reason=reason), reply_to=msg)
            self.stats.errors += 1
        else:
            if context.run_config != node.initial_run_config:  # DeprecatedRunInfoStore.update_context refuses
                reason = ("<class 'ValueError'>:<'The `run_config` field of the `Context` object cannot be "
                          f"modified (run_id: {context.run_id}).'>")
                reply = Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=msg)
                self.stats.errors += 1
            else:
                node.context = context
        finally:
            self.stats.clientapp_seconds += time.perf_counter() - t0
            self.stats.calls += 1
            self.stats.calls_per_node[node.node_id] = self.stats.calls_per_node.get(node.node_id, 0) + 1
            if caller_rng is not None:
                node.rng = _RngState.capture()
                caller_rng.install()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        return _copy_message(reply) if self.copy_messages else reply

    @staticmethod
    def _valid_reply(reply: Message, ins: Message) -> bool:
        """The in-memory LinkState's ``store_message_res`` checks."""
        rmd, imd = reply.metadata, ins.metadata
        problems = validate_message(reply, is_reply_message=True) + [p for bad, p in (
            (rmd.reply_to_message_id != imd.message_id, "replies to another message"),
            (rmd.run_id != imd.run_id, "`metadata.run_id` is invalid"),
            (rmd.src_node_id != imd.dst_node_id, "comes from another node than the message went to"),
            (bool(rmd.ttl) and rmd.ttl - (imd.created_at + imd.ttl - rmd.created_at) > MESSAGE_TTL_TOLERANCE,
             "TTL exceeds the message's expiry")) if bad]
        if problems:
            log.error("in-process grid: reply dropped: %s", problems)
        return not problems

    def node_context(self, node_id: int) -> Context:  # for tests
        return self._nodes[node_id].context

    def partition_of(self, node_id: int) -> int:
        return self._nodes[node_id].partition_id


def _random_ids(n: int, seed: int) -> list[int]:
    rng, ids = random.Random(seed), []
    while len(ids) < n:
        if (i := rng.getrandbits(64)) not in ids and i not in (0, SUPERLINK_NODE_ID):
            ids.append(i)
    return ids


def _copy_message(msg: Message) -> Message:
    """A deep copy with the same metadata (what a Ray round trip gives: no shared mutable objects)."""
    md = copy.copy(msg.metadata)
    if msg.has_error():
        return make_message(metadata=md, error=copy.deepcopy(msg.error))
    return make_message(metadata=md, content=copy.deepcopy(msg.content))


def _empty_run() -> Run:
    """The run ``run_simulation`` makes when none is given (ids drawn as Flower's helper, which loads SQLAlchemy)."""
    run = Run.create_empty(run_id=int.from_bytes(os.urandom(RUN_ID_NUM_BYTES), "little"))
    run.primary_task_id = int.from_bytes(os.urandom(TASK_ID_NUM_BYTES), "little")
    run.federation_id = NOOP_FEDERATION_ID
    return run


@dataclass
class InProcessResult:
    """What :func:`run_inprocess` returns: the server's context, the grid (its nodes and stats), wall seconds."""

    context: Context
    grid: InProcessGrid
    seconds: float


def run_inprocess(server_app: ServerApp | ServerMain, client_app: ClientApp | Callable[[], ClientApp],
                  num_supernodes: int, *, run_config: Mapping[str, Any] | None = None,
                  server_run_config: Mapping[str, Any] | None = None, **grid_kwargs: Any) -> InProcessResult:
    """``flwr.simulation.run_simulation`` without Ray: run ``server_app`` with an :class:`InProcessGrid`.

    ``server_app``: a ``ServerApp`` or a plain ``main(grid, context)`` function. The server context is
    ``Context(run_id, node_id=0, node_config={}, state=RecordDict(), run_config=server_run_config or {})``
    and ``TaskIdentity`` is set as ``run_simulation`` sets it (restored afterwards), so
    ``Message(content, dst_node_id, message_type)`` built by the server carries the run id and the
    SuperLink as source. The server runs in the calling thread; its exceptions propagate unchanged.
    ``run_config`` is the nodes' run config; other keyword arguments go to :class:`InProcessGrid`.
    """
    t0 = time.perf_counter()
    run = grid_kwargs.pop("run", None) or _empty_run()
    grid = InProcessGrid(client_app, num_supernodes, run=run, run_config=run_config, **grid_kwargs)
    context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                      run_config=dict(server_run_config or {}))
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    try:
        if isinstance(server_app, ServerApp):
            server_app(grid=grid, context=context)
        else:
            server_app(grid, context)
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved
    return InProcessResult(context=context, grid=grid, seconds=time.perf_counter() - t0)
