"""The deployable Flower App: the ServerApp and the ClientApp that ``flwr run`` starts on a SuperLink's federation.

``pyproject.toml``'s ``[tool.flwr.app.components]`` name :data:`server_app` and :data:`client_app`. They run
the same round loop and the same client handlers as a simulation (:mod:`fedicd.runner.apps`); what differs is
where each side finds its files:

- the **server** reads the study folder named by the run config's ``study-dir``
  (:mod:`fedicd.deploy.study`: the plan, the label space, its own evaluation notes if any), runs the rounds
  (resuming from the study's checkpoint when there is one: ``flwr run`` again after a SuperLink restart) and
  writes ``results.json`` there;
- each **client** takes the plan and the label codes from the run config (``plan``, ``labels``) and its data
  from its own node config (``partition-id``, ``data-path``, …, :mod:`fedicd.deploy.node_data`): a client
  ``data.npz``, or notes it embeds itself with the study's encoder (``embedding``) and scaler (``scaler``).

Both first install the file-open audit (:func:`fedicd.deploy.audit.install_open_audit`, a no-op unless
``FEDICD_OPEN_AUDIT`` is set). The client's mods are the simulation's: Flower's SecAgg+ mod, then client-side
clipping (each passes through runs that do not use it).

Privacy
-------
The server never opens a client's data or a partition manifest (it has none), nor, under CKKS, a secret key:
without ``secure_aggregation.evaluator_key`` the final model stays encrypted in the checkpoint and
``results.json`` holds no server scores. A client opens only its own data file, its state directory and (under
CKKS) its node's secret key; raw notes never leave the node.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedicd.deploy.audit import install_open_audit
from fedicd.deploy.node_data import node_data_path, parse_node_config
from fedicd.deploy.study import RunConfigError, run_config_json, run_config_text
from fedicd.federated.client_handlers import handle_evaluate, handle_train
from fedicd.federated.local import ClientSetup, default_trainer
from fedicd.privacy import defences as privacy
from fedicd.run_plan import PLAN_FILE, RunPlan, plan_from_json, read_plan
from fedicd.secure import round_defences as secure

__all__ = ["server_app", "client_app", "run_study", "deployed_client_setup", "audit_mod"]

log = logging.getLogger(__name__)


def _check_same_study(study: Path, run_config: dict) -> None:
    """The run config's plan and label codes (what the nodes train with) must be the study's."""
    plan = run_config_json(run_config, "plan", required=False)
    if plan is not None and plan != json.loads((study / PLAN_FILE).read_text(encoding="utf-8")):
        raise RunConfigError(f"the run config's plan differs from {study / PLAN_FILE}: the nodes would train "
                             "another plan than the server runs; write the run config again (fedicd deploy prepare)")
    labels, path = run_config_json(run_config, "labels", required=False), study / "labels.json"
    if labels is not None and path.exists() and labels != json.loads(path.read_text())["classes"]:
        raise RunConfigError(f"the run config's labels differ from {path}: the nodes would label their notes in "
                             "another order than the server scores them; write the run config again")


def _encrypted_results(study: Path, plan: RunPlan, ckpt: dict, seconds: float) -> dict:
    """``results.json`` of a CKKS run whose server holds no secret key: outcome and history, no final scores."""
    from fedicd.federated.outcome import run_outcome
    from fedicd.provenance import provenance
    from fedicd.runner.results import write_history

    history = ckpt["history"]
    results = {"name": plan.config.get("name", study.name), "training_mode": "federated",
               "outcome": run_outcome(history, ckpt["rejections"],
                                      max_rejected_share=float(plan.federated.max_rejected_share)),
               "evaluation": {"by": "nobody", "note": "CKKS without secure_aggregation.evaluator_key: the server "
                              "cannot read the final model (encrypted in the checkpoint); a secret key holder "
                              "decrypts and scores it"},
               "history": history, "rejections": ckpt["rejections"], "labels": plan.labels,
               "client_sizes": list(plan.client_sizes), "seconds": {"deployment": seconds},
               "secure_aggregation": secure.secure_results(plan.secure), "config": plan.config,
               "provenance": provenance()}
    (study / "results.json").write_text(json.dumps(results, indent=2))
    write_history(study, history)
    return results


def run_study(grid: Grid, study_dir: str | Path, run_config: dict | None = None) -> dict:
    """Run (or resume) the rounds of the study in ``study_dir`` on ``grid``; write and return ``results.json``."""
    from fedicd.federated.checkpoint import load_checkpoint
    from fedicd.federated.server import run_rounds
    from fedicd.runner.apps import server_setup
    from fedicd.runner.results import finalize

    study = Path(study_dir)
    plan = read_plan(study)
    _check_same_study(study, dict(run_config or {}))
    t0 = time.perf_counter()
    setup = server_setup(plan, study)
    run_rounds(grid, study, plan, setup)
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(study)
    if setup.aggregator.readable(ckpt["arrays"]) is None:  # CKKS without an evaluator key: no secret read here
        results = _encrypted_results(study, plan, ckpt, seconds)
    else:
        results = finalize(str(plan.config.get("name", study.name)), study, plan, ckpt, seconds)
    status = results["outcome"]["status"]
    (log.info if status == "ok" else log.error)("study %s finished (%s): results in %s", study, status,
                                                 study / "results.json")
    return results


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    install_open_audit("server")
    run_study(grid, Path(run_config_text(context.run_config, "study-dir")), dict(context.run_config))


_SETUPS: dict[tuple, ClientSetup] = {}
_LOCK = threading.Lock()


def deployed_client_setup(context: Context, *, encoder=None) -> ClientSetup:
    """This SuperNode's client: the run config's plan and label codes, the node config's data (embedded once when
    it is notes), the trainer and codec of the plan; made once per process, plan and node config.

    ``encoder``: an encoder to embed notes with (default: loaded from the study's embedding config when needed).

    Raises
    ------
    RunConfigError, NodeConfigError, LabelSpaceMismatchError
        The run config lacks the study's protocol; the node config or its data file does not fit the study.
    """
    run_config, node_config = context.run_config, context.node_config
    plan_text = run_config_text(run_config, "plan")
    settings = parse_node_config(node_config)
    key = (hashlib.sha256(plan_text.encode()).hexdigest(), str(run_config.get("labels")), repr(settings))
    with _LOCK:
        setup = _SETUPS.get(key)
        if setup is None:
            plan = plan_from_json(plan_text)
            labels = tuple(str(c) for c in run_config_json(run_config, "labels"))
            if len(labels) != plan.n_labels:
                raise RunConfigError(f"the run config's labels hold {len(labels)} codes but its plan has "
                                     f"{plan.n_labels} labels: write the run config again (fedicd deploy prepare)")
            data_path = node_data_path(settings, plan, labels, scaler=run_config_json(run_config, "scaler",
                                                                                      required=False),
                                       embedding=run_config_json(run_config, "embedding", required=False),
                                       encoder=encoder)
            pid, state = settings.partition_id, settings.state_dir
            trainer = privacy.local_trainer(plan, state, pid) or default_trainer(plan, state, pid)
            setup = ClientSetup(plan, state, pid, trainer, secure.client_codec(plan, settings.ckks_secret_key),
                                privacy.reply_metrics(plan.privacy), data_path=data_path, labels=labels)
            _SETUPS[key] = setup
    return setup


def audit_mod(msg: Message, context: Context, call_next) -> Message:
    """A ClientApp mod (the outermost): the file-open audit is installed before anything else runs."""
    install_open_audit("client")
    return call_next(msg, context)


def _client_app() -> ClientApp:
    from fedicd.privacy.client_dp_rounds import clip_update_when_asked
    from fedicd.secure.round_threshold import bind_threshold_party, handle_threshold
    from fedicd.secure.secagg_client import secaggplus_client_mod

    app = ClientApp(mods=[audit_mod])

    # SecAgg+ first: it masks what the rest of the chain (clipping, training) produces; other runs pass through
    @app.train(mods=[secaggplus_client_mod, clip_update_when_asked, bind_threshold_party(deployed_client_setup)])
    def train(msg: Message, context: Context) -> Message:
        return handle_train(msg, deployed_client_setup(context))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, deployed_client_setup(context))

    @app.query("threshold")  # threshold CKKS's key generation and decryption stages
    def threshold(msg: Message, context: Context) -> Message:
        return handle_threshold(msg, deployed_client_setup(context))

    return app


client_app = _client_app()
