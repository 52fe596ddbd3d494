"""The coders page (exact cells, verdicts, missing suites) and the driver's bookkeeping (no run is trained here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from fedicd.report.coders import codiesp_goal, fedavg_gap, mean_std, render_coders, summarise

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("coders_script", ROOT / "experiments" / "coders.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def _metrics(micro: float, macro: float, rare: float | None = 0.1) -> dict:
    return {"micro_f1": micro, "macro_f1": macro, "p_at_8": 0.5, "p_at_15": 0.3, "r_precision": 0.45, "map": 0.4,
            "rare_macro_f1": rare, "rare_labels": 7, "threshold": 0.3}


def _rec(row: str, seed: int, micro: float, macro: float, *, variant: str = "default", head: str | None = None,
         group: str = "", val: float | None = None, **kw) -> dict:
    return {"row": row, "variant": variant, "seed": seed, "head": head or row, "group": group,
            "val": _metrics(micro if val is None else val, macro), "test": _metrics(micro, macro, kw.pop("rare", 0.1)),
            "parameters": 1000, "train_seconds": 10.0, "peak_rss_mib": 500.0 + seed, "bytes_per_round": None, **kw}


def _row(name: str, head: str | None = None, group: str = "", init_of: str | None = None) -> dict:
    return {"name": name, "what": f"{name} coder", "kind": "fedicd", "head": head or name, "group": group,
            "init_of": init_of, "overrides": [f'train.head="{head or name}"']}


def _codiesp() -> dict:
    records = [_rec("mlp", 0, 0.40, 0.20), _rec("mlp", 1, 0.42, 0.22),
               _rec("label_attention", 0, 0.44, 0.26, variant="t128", val=0.50),
               _rec("label_attention", 1, 0.46, 0.28, variant="t128", val=0.50),
               _rec("label_attention", 0, 0.99, 0.99, variant="t256", val=0.10),  # not chosen on validation
               _rec("label_attention+descriptions", 0, 0.45, 0.27, variant="t128", head="label_attention", rare=0.3,
                    described=90, missing_descriptions=3),
               _rec("zero_shot_chunks", 0, 0.2, 0.1, variant="t128", head="zero_shot_chunks", space="raw",
                    described=90, missing_descriptions=3),
               _rec("zero_shot_chunks", 1, 0.2, 0.1, variant="t128", head="zero_shot_chunks", space="scaled")]
    return {"suite": "codiesp", "title": "CodiEsp toy", "config": "c.toml", "seeds": [0, 1], "command": "python x",
            "goal": {"micro_f1": 0.40, "macro_f1": 0.25},
            "rows": [_row("zero_shot_chunks"), _row("mlp"), _row("label_attention"),
                     _row("label_attention+descriptions", "label_attention", init_of="label_attention")],
            "selected": {"mlp": "default", "label_attention": "t128", "label_attention+descriptions": "t128",
                         "zero_shot_chunks": "t128"},
            "records": records, "failures": [{"row": "mlp", "variant": "default", "seed": 2, "error": "boom"}],
            "not_run": []}


def _synthetic(fed_mlp: float, fed_lin: float) -> dict:
    recs = [_rec("mlp_central", 0, 0.60, 0.3, head="mlp", group="central", bytes_per_round=None),
            _rec("mlp_fedavg", 0, fed_mlp, 0.3, head="mlp", group="fedavg", val=0.7, bytes_per_round=2 * 2**20),
            _rec("linear_central", 0, 0.55, 0.3, head="linear", group="central"),
            _rec("linear_fedavg", 0, fed_lin, 0.3, head="linear", group="fedavg", val=0.5, bytes_per_round=2**20)]
    return {"suite": "synthetic", "title": "Synthetic toy", "config": "s.toml", "seeds": [0], "command": "python y",
            "goal": {"fedavg_gap_points": 1.0},
            "rows": [_row("mlp_central", "mlp", "central"), _row("mlp_fedavg", "mlp", "fedavg"),
                     _row("linear_central", "linear", "central"), _row("linear_fedavg", "linear", "fedavg")],
            "selected": {}, "records": recs, "failures": [], "not_run": []}


def test_mean_std_cells() -> None:
    assert mean_std([0.40, 0.42]) == "0.4100 ± 0.0141"
    assert mean_std([0.4]) == "0.4000"
    assert mean_std([None, float("nan")]) == "—"


def test_codiesp_table_keeps_the_validation_chosen_chunk_length_and_the_goal_verdict(tmp_path: Path) -> None:
    assert [r["variant"] for r in summarise(_codiesp())["label_attention"]] == ["t128", "t128"]
    goal = codiesp_goal(_codiesp())
    assert goal["met"] == ["label_attention", "label_attention+descriptions"] and goal["best"] == "label_attention"
    (tmp_path / "coders").mkdir()
    (tmp_path / "coders" / "codiesp.json").write_text(json.dumps(_codiesp()))
    page = render_coders(tmp_path)
    assert ("| label_attention | 0.4500 ± 0.0141 | 0.2700 ± 0.0141 | 0.5000 ± 0.0000 | 0.3000 ± 0.0000 | "
            "0.4500 ± 0.0000 | 0.4000 ± 0.0000 | 0.1000 ± 0.0000 | 0.4400 / 0.4600 | 2 | 128 |") in page
    assert "| mlp | 0.4100 ± 0.0141 | 0.2100 ± 0.0141 |" in page
    assert "**met** by label_attention, label_attention+descriptions; best coder label_attention (micro 0.4500" in page
    assert "| label_attention → label_attention+descriptions | 7 | 0.1000 ± 0.0000 | 0.3000 | 0.2000 | 0.2700 ± 0.0141 | 0.2700 | 90 | 3 |" in page
    assert "| label_attention | 256 | 0.1000 | no |" in page and "| label_attention | 128 | 0.5000 ± 0.0000 | yes |" in page
    assert "- mlp@default seed 2: boom" in page
    assert "- zero_shot_chunks: space chosen on validation raw / scaled (per seed); 90 codes described, 3 without" in page
    assert "| zero_shot_chunks | 1000 | 10.0000 | 501 |" in page and "MiB per federated round" not in page
    assert "The `synthetic` suite is not archived yet" in page and "0.99" not in page


def test_codiesp_goal_missed_when_macro_is_short() -> None:
    doc = _codiesp()
    for r in doc["records"]:
        r["test"]["macro_f1"] = 0.24
    assert codiesp_goal(doc)["met"] == []


@pytest.mark.parametrize(("fed_mlp", "fed_lin", "met", "best"), [(0.595, 0.40, True, "mlp"), (0.58, 0.55, False, "mlp")])
def test_fedavg_gap_verdict_uses_the_best_head_on_validation(fed_mlp, fed_lin, met, best) -> None:
    gap = fedavg_gap(_synthetic(fed_mlp, fed_lin))
    assert gap["best"] == best and gap["met"] is met
    assert gap["gaps"]["mlp"] == pytest.approx((0.60 - fed_mlp) * 100)


def test_synthetic_page_gap_and_bytes_relative_to_mlp(tmp_path: Path) -> None:
    (tmp_path / "coders").mkdir()
    (tmp_path / "coders" / "synthetic.json").write_text(json.dumps(_synthetic(0.58, 0.55)))
    (tmp_path / "coders" / "dp_step.json").write_text(json.dumps(
        {"head": "label_attention", "parameters": 5, "batch": 64, "chunks": 8, "median_step_ms": {"non-private": 2.0},
         "ratio_to_non_private": {"non-private": 1.0, "fused": 1.5}}))
    page = render_coders(tmp_path)
    assert "| mlp | 0.6000 | 0.5800 | 2.00 | 0.3000 | 0.3000 | 0.7000 |" in page
    assert "**missed**; best head (FedAvg validation micro-F1) mlp, gap 2.00 points." in page
    assert "| linear_fedavg | 1000 | 10.0000 | 500 | 1.0000 | 0.5000 |" in page
    assert "| label_attention | 5 | 64 | 8 | 2.0000 | 1.5000 |" in page
    assert "The `codiesp` suite is not archived yet" in page


def test_empty_folder_renders_a_page_without_tables(tmp_path: Path) -> None:
    page = render_coders(tmp_path)
    assert "not archived yet" in page and "|" not in page


def test_head_specific_overrides_and_chunk_settings() -> None:
    mod = _script()
    rows = {r.name: r for r in mod.SUITES["codiesp"].rows}
    extra = ["label_attention.train.epochs=40", "train.lr=0.002"]
    att = mod.row_overrides(rows["label_attention+descriptions"], 1, max_tokens=128, chunk_overlap=32, extra=extra)
    assert att == ['train.head="label_attention"', 'warm_start.init="descriptions"', "embedding.max_tokens=128",
                   "embedding.chunk_overlap=32", "seed=1", "train.epochs=40", "train.lr=0.002"]
    mlp = mod.row_overrides(rows["mlp"], 0, max_tokens=128, chunk_overlap=32, extra=extra)
    assert mlp == ['train.head="mlp"', "seed=0", "train.lr=0.002"]
    zs = mod.row_overrides(rows["zero_shot_chunks"], 2, max_tokens=256, chunk_overlap=32, extra=[])
    assert "embedding.max_tokens=256" in zs and mod.variant(rows["zero_shot_chunks"], 256) == "t256"
    assert mod.command(rows["zero_shot_chunks"], "c.toml", Path("o"), zs)[1:4] == ["experiments/coders.py",
                                                                                   "zero-shot", "c.toml"]


def _args(**kw) -> Namespace:
    base = dict(rows=["mlp"], seeds=[0], max_tokens=[128], chunk_overlap=32, extra=[], fresh=False, collect=True,
                timeout=None, argv=["--suite", "codiesp", "--collect"])
    return Namespace(**{**base, **kw})


def test_collect_reads_finished_rows_lists_missing_ones_and_refuses_stale_overrides(tmp_path: Path) -> None:
    mod = _script()
    suite = mod.SUITES["codiesp"]
    folder = tmp_path / "codiesp" / "mlp@default" / "seed0"
    (folder / "run").mkdir(parents=True)
    history = [{"bytes_sent": 100, "bytes_received": 300}, {"bytes_sent": 200, "bytes_received": 400}]
    (folder / "run" / "results.json").write_text(json.dumps(
        {"val": _metrics(0.5, 0.3), "test": _metrics(0.4, 0.2), "model": {"head": "mlp", "parameters": 12},
         "seconds": {"simulation": 7.5}, "history": history, "training_mode": "federated"}))
    (folder / "row.json").write_text(json.dumps({"overrides": ['train.head="mlp"', "seed=0"], "peak_rss_mib": 321.0,
                                                 "command": "python -m fedicd.cli run"}))
    doc = mod.run_suite(suite, tmp_path, _args(seeds=[0, 1]))
    (rec,) = doc["records"]
    assert (rec["parameters"], rec["train_seconds"], rec["peak_rss_mib"], rec["bytes_per_round"]) == (12, 7.5, 321.0,
                                                                                                      500.0)
    assert {"row": "mlp", "variant": "default", "seed": 1} in doc["not_run"]
    assert len(doc["not_run"]) == 2 * len(suite.rows) - 1  # the whole suite is read, every other row not run
    assert json.loads((tmp_path / "codiesp.json").read_text())["command"] == "python experiments/coders.py --suite " \
        "codiesp --collect"
    stale = mod.run_suite(suite, tmp_path, _args(extra=["train.lr=0.1"]))
    assert stale["records"] == [] and "Stale" in stale["failures"][0]["error"]


def test_variant_selection_is_by_mean_validation_micro_f1() -> None:
    mod = _script()
    assert mod.select_variants(_codiesp()["records"])["label_attention"] == "t128"


_MEASURE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("coders_script", sys.argv[1])
mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)
big = mod.run_process([sys.executable, "-c", "b = bytearray(120 * 2**20)"], mod.Path(sys.argv[2]) / "a.txt", None)
small = mod.run_process([sys.executable, "-c", "pass"], mod.Path(sys.argv[2]) / "b.txt", None)
slow = mod.run_process([sys.executable, "-c", "import time; time.sleep(60)"], mod.Path(sys.argv[2]) / "c.txt", 1.0)
print(json.dumps([big, small, slow]))
"""


def test_run_process_measures_each_child_and_stops_it_at_the_timeout(tmp_path: Path) -> None:
    # from a small driver (the script imports only the standard library): a child's peak RSS starts at the RSS
    # of the process that forked it, so the test process (torch loaded) would hide the difference
    import subprocess

    out = subprocess.run([sys.executable, "-c", _MEASURE, str(ROOT / "experiments" / "coders.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT)})
    big, small, slow = json.loads(out.stdout)
    assert big["returncode"] == small["returncode"] == 0
    assert big["peak_rss_mib"] >= 120 > small["peak_rss_mib"] + 60  # each child's own peak, not the earlier one's
    assert slow["returncode"] == -9 and slow["wall_seconds"] < 30


def test_tfidf_baseline_is_importable_and_scores_like_a_fedicd_run(tmp_path: Path) -> None:
    from fedicd.config import config_from_dict
    from tests.corpora import SITE_CORPUS, write_small_site_corpus

    spec = importlib.util.spec_from_file_location("tfidf_script", ROOT / "experiments" / "tfidf_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = config_from_dict({"data": {**SITE_CORPUS, "path": str(write_small_site_corpus(tmp_path)),
                                     "min_train_count": 1}})
    out = mod.tfidf_baseline(cfg, n_jobs=1)
    n_labels = out["labels"]["n_labels"]
    assert out["model"]["head"] == "tfidf_lr" and out["model"]["parameters"] % n_labels == 0
    assert out["val"]["threshold"] == out["test"]["threshold"]
    assert {"r_precision", "map", "rare_macro_f1", "rare_labels"} <= set(out["test"])
    assert out["test"]["rare_labels"] == n_labels  # 40 notes: every code has fewer than 10 training notes
