"""docs/results/simulation-speed.md rendered from a small benchmark record: exact rows, the goal column."""

from __future__ import annotations

import json
from pathlib import Path

from fedicd.report.speed import render_speed

RUN = {"engine": "inprocess", "federated_s": 76.0, "ratio_to_faster_central": 1.55, "ratio_to_slower_central": 1.38,
       "cpu_ratio_to_central": 1.2, "per_round_overhead_s": 0.8,
       "phases": {"server_global_eval": {"wall_s": 9.7}, "client_eval_exchange": {"wall_s": 3.1}}}
REPORT = {"command": "python experiments/bench_federated_speed.py --rounds 20", "commit": "abc", "clients": 20,
          "rounds": 20, "train_rows": 14000, "cpus": 2, "central_train_s": [49.0, 54.9],
          "load_average_before": [0.6], "load_average_after": [2.0],
          "engines": [RUN, {**RUN, "eval_every": 20, "federated_s": 60.0, "ratio_to_faster_central": 1.22,
                            "phases": {}}]}


def test_rows_and_goal_verdicts(tmp_path: Path) -> None:
    (tmp_path / "speed").mkdir()
    (tmp_path / "speed" / "federated_speed.json").write_text(json.dumps(REPORT))
    (tmp_path / "speed" / "old_loaded.json").write_text(json.dumps(REPORT))
    page = render_speed(tmp_path)
    assert "| inprocess | 1 | 76.0000 | 1.5500 | 1.3800 | 1.2000 | 0.8000 | 12.8000 | no |" in page
    assert "| inprocess | 20 | 60.0000 | 1.2200 | 1.3800 | 1.2000 | 0.8000 | 0.0000 | yes |" in page
    assert "central training 49.0, 54.9 s; load average 0.6 before, 2.0 after." in page
    assert "### old_loaded" in page


def test_no_record_is_named(tmp_path: Path) -> None:
    assert "No benchmark record yet: run `python experiments/bench_federated_speed.py`." in render_speed(tmp_path)
