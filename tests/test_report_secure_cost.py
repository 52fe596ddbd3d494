"""docs/results/secure-aggregation-cost.md from a small hand-made record, and the benchmark's arithmetic.

The page: exact cells, the verdicts as written by the benchmark, skipped and absent mechanisms, a named error for
a broken record. The benchmark (experiments/bench_secure_cost.py and its secure_cost_round.py): critical path from
timed stages, paper-scale overhead, and the goal's verdicts at and past their bounds.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedicd.report.secure_cost import SecureCostRecordError, render_secure_cost

ROOT = Path(__file__).resolve().parents[1]


def _row(mechanism: str, up: float, down: float, *, source: str = "round", overhead: float, wall: float | None,
         run_cp: float | None) -> dict:
    return {"mechanism": mechanism, "bytes": {"up_per_client": up, "down_per_client": down, "up_vs_fp32": up / 4e6,
                                              "down_vs_fp32": down / 4e6, "source": source},
            "critical_path": {"source": source, "round_critical_path_s": run_cp},
            "paper_scale": {"critical_path_s": 2.0 * (1 + overhead), "overhead": overhead,
                            "overhead_with_transfer": overhead + 0.01},
            "wall_s": wall}


RECORD = {
    "command": "python experiments/bench_secure_cost.py", "commit": "abc123", "complete": True,
    "machine": {"cpus": 2, "threads_per_party": 2, "load_average_before": [0.5], "load_average_after": [1.25],
                "python": "3.10.14", "packages": {"tenseal": "0.3.18", "openfhe": "1.6.1", "flwr": "1.42.0"}},
    "settings": {"clients": 20, "rows_per_client": 6000, "rounds": 2, "paper_rows": 6000, "paper_clients": 20,
                 "stage_latency_s": 0.05, "link_mbit_s": 100.0, "quick": False},
    "goal": {"mechanisms": ["ckks", "ckks-threshold"], "max_overhead": 0.2, "max_upload_vs_fp32": 4.0},
    "paper_local_training": {"local_train_s": 1.5, "params": 1000000},
    "mechanisms": [
        _row("ckks", 13.8e6, 27.6e6, overhead=0.15, wall=40.0, run_cp=2.3),
        _row("none", 4e6, 4e6, overhead=0.0, wall=30.0, run_cp=2.0),
        _row("secagg+", 8e6, 4e6, overhead=0.5, wall=35.0, run_cp=3.0),
        {**_row("ckks-threshold", 20e6, 12e6, source="pieces", overhead=0.25, wall=None, run_cp=None),
         "round_error": "RuntimeError: no round code"}],
    "verdicts": {"ckks": {"verdict": "met", "met": True, "text": "adds 15.0 % (goal ≤ 20 %), uploads 3.45×"},
                 "ckks-threshold": {"verdict": "not met", "met": False, "text": "adds 25.0 % (goal ≤ 20 %)"}},
}


PIECES = {"parties": 20, "setup_s": 0.25, "encrypt_s": [0.5, 0.75], "add_s": 1.5, "decrypt_share_s": [1.0, 1.25],
          "fuse_s": 2.0, "upload_bytes": 16e6, "aggregate_bytes": 12e6, "max_abs_error": 3.2e-9}
RECORD["mechanisms"][0]["pieces"] = {**PIECES, "fuse_s": 0.0, "parties": 20}
RECORD["mechanisms"][3]["pieces"] = PIECES


def _page(tmp_path: Path, record: dict) -> str:
    (tmp_path / "secure").mkdir(exist_ok=True)
    (tmp_path / "secure" / "secure_cost.json").write_text(json.dumps(record), encoding="utf-8")
    return render_secure_cost(tmp_path)


def test_rows_in_order_with_exact_cells_and_verdicts(tmp_path: Path) -> None:
    page = _page(tmp_path, RECORD)
    table = page.split("| mechanism | up / client (MB)")[1].split("\n\n")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows == [
        "| plain FedAvg | 4.00 | 1.00× | 4.00 | 1.00× | 2.00 | 2.00 | 30.00 | 0.0 % | 1.0 % | — |",
        "| SecAgg+ (Flower) | 8.00 | 2.00× | 4.00 | 1.00× | 3.00 | 3.00 | 35.00 | 50.0 % | 51.0 % | — |",
        "| CKKS, one shared key (TenSEAL) | 13.80 | 3.45× | 27.60 | 6.90× | 2.30 | 2.30 | 40.00 | 15.0 % | 16.0 % "
        "| met |",
        "| threshold CKKS, joint key (OpenFHE) (pieces) | 20.00 | 5.00× | 12.00 | 3.00× | 2.50 | — | — | 25.0 % "
        "| 26.0 % | not met |"]
    assert "overhead with transfer at 100 Mbit/s" in page
    assert "- **CKKS, one shared key (TenSEAL): met** (adds 15.0 % (goal ≤ 20 %), uploads 3.45×)" in page
    assert "- **threshold CKKS, joint key (OpenFHE): not met** (adds 25.0 % (goal ≤ 20 %))" in page
    assert ("Goal: CKKS (one shared key) and threshold CKKS add at most 20 % to a paper-scale round, with an upload "
            "of at most 4× fp32.") in page
    assert "A row marked *(pieces)*" in page and "Not measured:" not in page and "did not finish" not in page
    assert "- threshold CKKS, joint key (OpenFHE): round failed (RuntimeError: no round code)" in page
    pieces = page.split("## The cryptographic pieces")[1]
    assert ("| CKKS, one shared key (TenSEAL) | 20 | 0.25 | 0.75 | 1.50 | 1.25 | 0.00 | 16.00 | 12.00 | 3.2e-09 |"
            in pieces)
    assert ("| threshold CKKS, joint key (OpenFHE) | 20 | 0.25 | 0.75 | 1.50 | 1.25 | 2.00 | 16.00 | 12.00 | 3.2e-09 |"
            in pieces)
    assert "What the parties see, per mechanism: **plain FedAvg**: the server sees every client" in page
    assert "load average 0.5 before and 1.2 after; Python 3.10.14; tenseal 0.3.18, openfhe 1.6.1" in page
    assert "`python experiments/bench_secure_cost.py` at `abc123`: the round loop with 20 clients × 6000 notes" in page


def test_skipped_and_absent_mechanisms_are_named(tmp_path: Path) -> None:
    record = {**copy.deepcopy(RECORD), "complete": False}
    record["mechanisms"] = [r for r in record["mechanisms"] if r["mechanism"] in ("none", "ckks")]
    record["mechanisms"].append({"mechanism": "ckks-threshold", "skipped": "openfhe not importable: no module"})
    record["verdicts"]["ckks-threshold"] = {"verdict": "not measured", "met": None,
                                            "text": "openfhe not importable: no module"}
    page = _page(tmp_path, record)
    assert "- threshold CKKS, joint key (OpenFHE): skipped: openfhe not importable: no module" in page
    assert "- SecAgg+ (Flower): not in this run" in page
    assert "- **threshold CKKS, joint key (OpenFHE): not measured** (openfhe not importable: no module)" in page
    assert "threshold CKKS, joint key (OpenFHE) |" not in page and "(pieces)" not in page
    assert "**The run did not finish**: the rows below are what it had measured when it stopped." in page


def test_no_record_names_the_command(tmp_path: Path) -> None:
    assert "No benchmark record yet: run `python experiments/bench_secure_cost.py`." in render_secure_cost(tmp_path)


@pytest.mark.parametrize("text, expected", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "holds a list, not a benchmark record"),
    (json.dumps({k: v for k, v in RECORD.items() if k != "verdicts"}), "lacks ['verdicts']"),
    (json.dumps({**RECORD, "mechanisms": [{"mechanism": "ckks", "bytes": {}}]}),
     "mechanism row 'ckks' lacks ['critical_path', 'paper_scale']"),
])
def test_broken_record_is_a_named_error(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "secure").mkdir()
    (tmp_path / "secure" / "secure_cost.json").write_text(text, encoding="utf-8")
    with pytest.raises(SecureCostRecordError, match="rerun `python experiments/bench_secure_cost.py`") as info:
        render_secure_cost(tmp_path)
    assert expected in str(info.value)


# ---- the benchmark's arithmetic ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench():
    """The script as a module (with its sibling ``secure_cost_round`` as ``.round_module``); sys.path restored."""
    path = ROOT / "experiments" / "bench_secure_cost.py"
    spec = importlib.util.spec_from_file_location("bench_secure_cost_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts experiments/ on sys.path for its siblings
        module.round_module = importlib.import_module("secure_cost_round")
        module.pieces_module = importlib.import_module("secure_cost_pieces")
    finally:
        sys.path[:] = saved
    return module


def test_round_summary_takes_the_slowest_client_per_stage(bench) -> None:
    rec = bench.round_module.RoundRecorder()
    rec.walls = [9.0, 10.0]  # round 1 is left out
    rec.rounds = [[], [{"wall": 3.0, "calls": [(1.0, 0.0), (2.0, 0.0)]},
                       {"wall": 5.0, "calls": [(2.5, 2.0), (1.5, 1.4)]}]]
    out = rec.summary(1, latency_s=0.1)
    assert out["stages"] == 2 and out["rounds_timed"] == 1
    assert out["server_s"] == pytest.approx(2.0)  # 10 - (3 + 5)
    assert out["client_call_max_s"] == pytest.approx(4.5)  # 2.0 + 2.5
    assert out["client_train_max_s"] == pytest.approx(2.0)
    assert out["client_other_max_s"] == pytest.approx(2.5)  # max(1, 2) + max(0.5, 0.1)
    assert out["critical_path_s"] == pytest.approx(4.5 + 2.0 + 0.2)


def _args(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"paper_clients": 20, "stage_latency_s": 0.1, "link_mbit_s": 80.0, **kw})


def _round(clients: int, other: float, server: float, stages: int, up: float, down: float) -> dict:
    return {"clients": clients, "client_other_max_s": other, "server_s": server, "stages": stages,
            "up_bytes": up, "down_bytes": down, "critical_path_s": 9.0, "exchange_wall_s": 30.0}


def test_overhead_is_added_non_training_time_over_the_plain_round(bench) -> None:
    paper = {"params": 1_000_000, "local_train_s": 2.0}
    plain = _round(10, other=0.1, server=0.05, stages=1, up=4e6, down=4e6)
    rows = [bench.cost_row("none", plain, None, plain, paper, _args()),
            bench.cost_row("ckks", _round(10, 0.5, 0.2, 1, 14e6, 28e6), None, plain, paper, _args()),
            bench.cost_row("ckks-threshold", None, {"upload_bytes": 16e6, "aggregate_bytes": 12e6, "exchanges": 2,
                                                    "client_s": 0.3, "server_s": 0.4}, plain, paper, _args())]
    bench.add_paper_overheads(rows, paper)
    base = 0.1 + 0.05 * 2 + 0.1  # server work of 10 clients scaled to 20, one stage
    assert rows[0]["paper_scale"]["plain_critical_path_s"] == pytest.approx(2.0 + base)
    ckks = rows[1]["paper_scale"]
    assert ckks["added_s"] == pytest.approx(0.5 + 0.4 + 0.1 - base)
    assert ckks["overhead"] == pytest.approx(ckks["added_s"] / (2.0 + base))
    thr = rows[2]
    assert thr["bytes"] == {"up_per_client": 16e6, "down_per_client": 12e6 + 4e6, "up_vs_fp32": 4.0,
                            "down_vs_fp32": 4.0, "source": "pieces"}
    assert thr["paper_scale"]["added_s"] == pytest.approx(0.3 + 0.4 + 0.1)  # pieces + one more stage
    transfer = [(r["bytes"]["up_per_client"] + r["bytes"]["down_per_client"]) * 8 / 80e6 for r in rows]
    assert thr["paper_scale"]["overhead_with_transfer"] == pytest.approx(
        (0.8 + transfer[2] - transfer[0]) / (2.0 + base + transfer[0]))


def test_verdicts_at_and_past_the_bounds(bench) -> None:
    def row(name: str, overhead: float, upload: float) -> dict:
        return {"mechanism": name, "bytes": {"up_vs_fp32": upload}, "paper_scale": {"overhead": overhead}}

    out = bench.verdicts([row("ckks", 0.20, 4.0), row("ckks-threshold", 0.21, 1.0)])
    assert out["ckks"]["verdict"] == "met" and out["ckks"]["met"] is True
    assert out["ckks"]["text"] == ("adds 20.0 % to a paper-scale round (goal ≤ 20 %), uploads 4.00× fp32 "
                                   "(goal ≤ 4×)")
    assert out["ckks-threshold"]["verdict"] == "not met"
    out = bench.verdicts([row("ckks", 0.1, 4.01), {"mechanism": "ckks-threshold", "skipped": "openfhe not importable"}])
    assert out["ckks"]["verdict"] == "not met"
    assert out["ckks-threshold"] == {"verdict": "not measured", "met": None, "text": "openfhe not importable"}
    assert bench.verdicts([])["ckks"]["text"] == "not in --mechanisms"


class _PlainPieces:
    """A stand-in mechanism: uploads are n·x in the clear, a "partial decryption" is the sum divided by the parties."""

    exchanges = 2

    def __init__(self, arrays, args, work) -> None:
        self.n = args.paper_clients

    def encrypt(self, party, arrays, n):
        return {k: n * v.astype(np.float64) for k, v in arrays.items()} | {"count": np.array([n], np.float64)}

    def aggregate(self, uploads):
        return {k: sum(u[k] for u in uploads) for k in uploads[0]}

    def decrypt_share(self, party, aggregate):
        return {k: v / self.n for k, v in aggregate.items()}

    def fuse(self, aggregate, shares):
        total = {k: sum(s[k] for s in shares) for k in shares[0]}
        return {k: v / total["count"][0] for k, v in total.items() if k != "count"}

    @staticmethod
    def size(obj) -> int:
        return sum(v.nbytes for v in obj.values())


def test_pieces_time_every_party_and_check_the_average(bench, monkeypatch) -> None:
    pieces = bench.pieces_module
    monkeypatch.setitem(pieces.PIECES, "plain-test", _PlainPieces)
    arrays = {"w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "b": np.zeros(2, np.float32)}
    out = pieces.time_pieces("plain-test", arrays, SimpleNamespace(paper_clients=5, paper_rows=100), Path("."))
    assert out["parties"] == 5 and len(out["encrypt_s"]) == 5 and len(out["decrypt_share_s"]) == 5
    assert out["client_s"] == pytest.approx(max(out["encrypt_s"]) + max(out["decrypt_share_s"]))
    assert out["server_s"] == pytest.approx(out["add_s"] + out["fuse_s"])
    assert out["upload_bytes"] == 2 * (14 + 1) * 8  # the upload and, with two exchanges, the partial decryption
    assert out["aggregate_bytes"] == (14 + 1) * 8
    assert out["max_abs_error"] < 1e-12  # the fused average is the weighted mean of the parties' updates


# -- the part benchmarks (shared-key CKKS's server path, threshold CKKS's pieces) --------------------------------

def _fast_row(workers, add, down):
    return {"workers": workers, "clients": 10, "params": 1000, "encrypt_seconds_per_client": 0.5,
            "aggregate_seconds": add, "decrypt_seconds": 0.25, "upload_vs_fp32": 3.0, "download_vs_fp32": down,
            "max_abs_error": 2e-10}


def test_fast_path_section_lists_before_and_after_with_the_measured_ratios(tmp_path):
    from fedicd.report.secure_parts import FAST_PATH, fast_path_section

    assert fast_path_section(tmp_path) == []  # no file, no section
    doc = {"before": {"rows": [_fast_row(1, 2.0, 6.0)]}, "after": {"rows": [_fast_row(2, 0.125, 3.0)]},
           "ratios_before_over_after": [{"workers": 2, "aggregate_seconds": 16.0, "download_bytes_per_client": 2.0}],
           "command": "python bench --server-only"}
    (tmp_path / FAST_PATH).write_text(json.dumps(doc))
    text = "\n".join(fast_path_section(tmp_path))
    assert "| before | 1 | 10 | 1000 | 0.5000 | 2.0000 | 0.2500 | 3.0000 | 6.0000 | 2e-10 |" in text
    assert "| after | 2 | 10 | 1000 | 0.5000 | 0.1250 | 0.2500 | 3.0000 | 3.0000 | 2e-10 |" in text
    assert "2 worker(s): server addition 16.0× faster, download 2.00× smaller." in text
    assert "`python bench --server-only`" in text


def test_threshold_section_reads_the_named_run_and_names_a_missing_entry(tmp_path):
    from fedicd.report.secure_cost import SecureCostRecordError
    from fedicd.report.secure_parts import THRESHOLD, threshold_section

    row = {"size": 950000, "clients": 20, "encrypt_s": 0.7, "partial_decrypt_s": 0.8, "add_s": {"1": 1.5},
           "fuse_s": {"1": 0.4}, "x_fp32": {"up_update": 8.0, "up_partial": 2.0, "down_aggregate": 4.0},
           "max_error": 0.006, "error_bound": 0.048}
    (tmp_path / THRESHOLD).write_text(json.dumps({"runs": {"after": {"rows": [row], "openfhe": "1.6.1"}}}))
    text = "\n".join(threshold_section(tmp_path))
    assert "| 950000 | 20 | 0.7000 | 0.8000 | 1.5000 | 0.4000 | 8.0000 | 2.0000 | 4.0000 | 0.0060 | 0.0480 |" in text
    assert "OpenFHE 1.6.1" in text
    with pytest.raises(SecureCostRecordError, match=r"threshold_ckks.json lacks runs.before"):
        threshold_section(tmp_path, run="before")
    (tmp_path / THRESHOLD).write_text("{not json")
    with pytest.raises(SecureCostRecordError, match="is not JSON"):
        threshold_section(tmp_path)
