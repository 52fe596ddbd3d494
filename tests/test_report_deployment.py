"""docs/results/deployment.md rendered from small deployment and fault records: exact lines, missing files named."""

from __future__ import annotations

import json
from pathlib import Path

from fedicd.report.deployment import render_deployment

OPENED_PLAIN = {"files": {"experiment folder: study": ["study/run_plan.json"],
                          "server evaluation notes": ["study/server/eval.npz"]},
                "counts": {"experiment folder: study": 1, "server evaluation notes": 1,
                           "outside the experiment (Python, libraries, /proc, /tmp)": 40}}
OPENED_CKKS = {"files": {"CKKS public context": ["server-keys/public.ctx"]},
               "counts": {"CKKS public context": 1, "outside the experiment (Python, libraries, /proc, /tmp)": 12}}
RECORD = {"rounds": 4, "clients": 3, "cpus": 2, "load_avg_at_end": [3.5, 3.0, 2.0], "command": "python x.py",
          "plain": {"returncode": 0, "deploy_seconds": 80.5, "simulation_seconds": 3.25,
                    "final_model_max_abs_diff_vs_simulation": 0.0, "client_failures": [0, 0, 0, 0],
                    "server_opened": OPENED_PLAIN},
          "ckks": {"returncode": 0, "deploy_seconds": 30.0, "server_opened": OPENED_CKKS,
                   "server_opened_a_secret_key": False, "server_opened_client_data": False},
          "clients_opened": {"files": {"CKKS secret context": ["node-secret/secret.ctx"]},
                             "counts": {"CKKS secret context": 1}}}
ROW = {"round": 1, "clients_sampled": 3, "client_failures": 0, "updates_rejected": 0, "seconds": 20.0}
FAULTS = {"node_crash": {"killed": {"node": "node-2", "signal": "SIGKILL", "during_round": 2, "at_s": 112.6},
                         "failure_recorded_after_kill_s": 43.7, "rejoined_in_round": 3, "status": "ok",
                         "history": [ROW, {**ROW, "round": 2, "client_failures": 1, "seconds": 56.2}]},
          "superlink_restart": {"restarted": {"after_checkpoint_round": 2, "during_round": 3},
                                "resumed_from_round": 3, "rounds_in_history": [1, 2, 3],
                                "final_vs_uninterrupted_simulation_max_abs_diff": 0.0, "status": "ok",
                                "history": [ROW]}}


def _write(root: Path, name: str, doc: dict) -> None:
    (root / "deploy").mkdir(parents=True, exist_ok=True)
    (root / "deploy" / name).write_text(json.dumps(doc))


def test_the_page_shows_the_records_numbers(tmp_path: Path) -> None:
    _write(tmp_path, "deployment.json", RECORD)
    _write(tmp_path, "faults.json", FAULTS)
    page = render_deployment(tmp_path)
    assert "| final model, max abs difference to the simulation | 0.0000 |" in page
    assert "### CKKS (secret key opened: **no**, client data opened: **no**)" in page
    assert "| CKKS public context | 1 | `server-keys/public.ctx` |" in page
    assert "| outside the experiment (Python, libraries, /proc, /tmp) | 40 |  |" in page
    assert ("node-2 (SIGKILL) during round 2, 112.6000 s into the run; the round completed with the others "
            "43.7000 s after the kill") in page
    assert "resumed at round 3 (rounds in the history: [1, 2, 3])" in page
    assert "| node killed | 2 | 3 | 1 | 56.2000 |" in page


def test_missing_records_are_named(tmp_path: Path) -> None:
    page = render_deployment(tmp_path)
    assert "No deployment record yet: run `python experiments/deploy_audit.py`." in page
    assert "No fault record yet: run `python experiments/deploy_faults.py`." in page
