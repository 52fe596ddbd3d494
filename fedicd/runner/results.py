"""The results of a finished federated run: final scores, history, privacy and secure-aggregation blocks.

``results.json`` records the run's outcome, the final global model's val/test metrics on the server's own
evaluation notes (threshold chosen on validation; with ``federated.server_eval = false`` the clients' last
federated evaluation instead, and no val/test block), the round history and rejections, what staging
recorded (labels, embedding, client sizes, load summary, partition), ε and how updates were hidden, the public
warm start with its zero-shot scores (``warm_start``), the resolved config and the provenance.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from fedicd.federated.model import load_global_model, model_record, server_scores
from fedicd.federated.outcome import run_outcome
from fedicd.federated.staged import load_server_data
from fedicd.provenance import provenance
from fedicd.privacy.defences import privacy_results
from fedicd.run_plan import RunPlan
from fedicd.secure.round_defences import driver_key, round_aggregator, secure_results
from fedicd.warm_start.stage import warm_start_results

__all__ = ["finalize", "write_history"]


def write_history(out: Path, history: list[dict]) -> None:
    keys = sorted({k for row in history for k in row}, key=lambda k: (k != "round", k))
    with (out / "history.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _final_metrics(plan: RunPlan, out: Path, arrays, history: list[dict]) -> dict:
    """The final global model's scores and its ``"model"`` record (head, parameters, bytes).

    With server evaluation: val/test metrics on the server's own notes (threshold chosen on validation).
    Without (``federated.server_eval = false``): no ``val``/``test`` block (the server holds no notes; none is
    invented), an ``evaluation`` block saying so and ``client_evaluation``, the clients' weighted evaluation of
    the last round that had one.
    """
    # the experiment driver holds the clients' key: under CKKS it decrypts the final model here
    readable = round_aggregator(plan, secret_path=driver_key(plan.secure)).readable(arrays)
    model = load_global_model(plan.train, plan.input_dim, plan.n_labels, readable)
    record = model_record(model, plan.train.head)
    if plan.federated.server_eval:
        return {**server_scores(model, load_server_data(out)), "evaluation": {"by": "server"}, "model": record}
    last = next((row for row in reversed(history) if any(k.startswith("client_") and k != "client_failures"
                                                         for k in row)), None)
    scores = {} if last is None else {k[len("client_"):]: v for k, v in last.items()
                                      if k.startswith("client_") and k != "client_failures"}
    return {"evaluation": {"by": "clients", "round": None if last is None else last["round"],
                           "note": "federated.server_eval = false: the server holds no evaluation notes, so there "
                                   "are no server val/test scores; client_evaluation is the clients' federated "
                                   "evaluation (threshold 0.5 on their own validation notes, weighted by notes) "
                                   "of that round's global model"},
            "client_evaluation": scores, "model": record}


def finalize(name: str, out: Path, plan: RunPlan, ckpt: dict, seconds: float) -> dict:
    """Write ``results.json``, ``history.csv`` and ``learning_curves.png``; returns the results."""
    from fedicd.plots import plot_learning_curves

    history = ckpt["history"]
    outcome = run_outcome(history, ckpt["rejections"], max_rejected_share=float(plan.federated.max_rejected_share))
    results = {"name": name, "training_mode": "federated", "outcome": outcome,
               **_final_metrics(plan, out, ckpt["arrays"], history),
               "history": history, "rejections": ckpt["rejections"], "labels": plan.labels,
               "embedding": plan.embedding, "client_sizes": list(plan.client_sizes),
               "load_summary": plan.load_summary, "partition": plan.partition,
               "seconds": {"simulation": seconds, "rounds": sum(r["seconds"] for r in history)},
               "privacy": privacy_results(plan.privacy, history, out), "secure_aggregation": secure_results(plan.secure),
               "warm_start": warm_start_results(out),
               "config": plan.config, "provenance": provenance()}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_history(out, history)
    plot_learning_curves(history, out / "learning_curves.png", title=name)
    return results
