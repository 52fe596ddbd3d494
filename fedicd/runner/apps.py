"""The ServerApp and the ClientApp of a planned run, each with the defences its plan asks for.

Server: the strategy (Flower's client-level DP wrapper inside fedicd's UpdateValidator when the plan
asks for it), the train rounds' aggregator (plain, CKKS, or Flower's SecAgg+ workflow) and the round
observers (client-level DP's release log and accountant), all run by the generic round loop
(:func:`fedicd.federated.server.run_rounds`). Client: the mods (Flower's SecAgg+ client mod, then
client-side clipping; each passes through runs that do not use it) around the generic handlers, with
the local trainer and the model codec chosen once per process and plan.
"""

from __future__ import annotations

import threading
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedicd.federated.client_handlers import handle_evaluate, handle_train
from fedicd.federated.local import ClientSetup, default_trainer
from fedicd.federated.site_data import client_data_path
from fedicd.federated.rounds import ServerSetup
from fedicd.federated.runtime import RunControl
from fedicd.federated.server import run_rounds
from fedicd.privacy import defences as privacy
from fedicd.run_plan import RunPlan, read_plan
from fedicd.secure import round_defences as secure

__all__ = ["build_run_strategy", "server_setup", "make_server_app", "client_setup", "make_client_app", "run_labels"]


def build_run_strategy(plan: RunPlan):
    """The plan's server strategy with its privacy wrappers (fails now on a bad argument)."""
    from fedicd.strategies import build_strategy

    name = plan.strategy.name
    return build_strategy(name, **plan.strategy.args, **privacy.strategy_options(plan.privacy, name))


def server_setup(plan: RunPlan, run_dir: str | Path) -> ServerSetup:
    strategy = build_run_strategy(plan)
    return ServerSetup(strategy, secure.round_aggregator(plan, run_dir=run_dir),
                       privacy.round_observers(plan.privacy, strategy, run_dir))


def make_server_app(run_dir: str | None = None, control: RunControl | None = None) -> ServerApp:
    """A ServerApp running the rounds of ``run_dir`` (or the run config's ``run-dir``).

    ``control`` (the simulation driver's): the rounds stop when it asks, and it learns when they ended.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            rd = Path(run_dir or str(context.run_config["run-dir"]))
            plan = read_plan(rd)
            run_rounds(grid, rd, plan, server_setup(plan, rd), control)
        finally:
            if control is not None:
                control.finished.set()

    return app


_SETUPS: dict[tuple, ClientSetup] = {}
_LOCK = threading.Lock()


def run_labels(run_dir: Path) -> tuple[str, ...] | None:
    """The label codes of the run's ``labels.json`` (public: the label space), None when the folder has none
    (a folder of :func:`fedicd.federated.data.stage_arrays` without one: the clients' codes are not compared)."""
    from fedicd.data.labels import load_binarizer

    path = run_dir / "labels.json"
    return tuple(str(c) for c in load_binarizer(path).classes_) if path.exists() else None


def client_setup(context: Context, run_dir: str | None = None) -> ClientSetup:
    """This node's client of the run: trainer and codec chosen once per process and run plan; it reads its own
    ``<run_dir>/clients/<pid>/data.npz`` and checks it against the run's label codes (``labels.json``)."""
    rd = Path(run_dir or str(context.run_config["run-dir"]))
    pid, secret = int(context.node_config["partition-id"]), context.node_config.get("ckks-secret-key")
    plan = read_plan(rd)
    key = (str(rd), pid, secret)
    with _LOCK:
        setup = _SETUPS.get(key)
        if setup is None or setup.plan is not plan:
            trainer = privacy.local_trainer(plan, rd, pid) or default_trainer(plan, rd, pid)
            setup = ClientSetup(plan, rd, pid, trainer, secure.client_codec(plan, secret),
                                privacy.reply_metrics(plan.privacy), data_path=client_data_path(rd, pid),
                                labels=run_labels(rd))
            _SETUPS[key] = setup
    return setup


def make_client_app(run_dir: str | None = None) -> ClientApp:
    """A ClientApp reading its data from ``run_dir`` (or the run config's ``run-dir``)."""
    from fedicd.privacy.client_dp_rounds import clip_update_when_asked
    from fedicd.secure.round_threshold import bind_threshold_party, handle_threshold
    from fedicd.secure.secagg_client import secaggplus_client_mod

    app = ClientApp()

    def setup_of(context: Context) -> ClientSetup:
        return client_setup(context, run_dir)

    # SecAgg+ first: it masks what the rest of the chain (clipping, training) produces; other runs pass through
    @app.train(mods=[secaggplus_client_mod, clip_update_when_asked, bind_threshold_party(setup_of)])
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, client_setup(context, run_dir))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, client_setup(context, run_dir))

    @app.query("threshold")  # threshold CKKS's key generation and decryption stages
    def threshold(msg: Message, context: Context) -> Message:
        return handle_threshold(msg, client_setup(context, run_dir))

    return app
