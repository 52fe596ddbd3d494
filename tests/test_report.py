"""`fedicd report`: table rendering (exact strings), run collection, and the generated docs kept in step.

The docs tests regenerate docs/results/*.md, the README's headline table and docs/config.md from the committed
files (experiments/results/, the config dataclasses) and compare: no number in those pages is typed by hand.
"""

import json
from pathlib import Path

import pytest

from fedicd.cli import build_parser, main
from fedicd.report.collect import Run, archive_run, collect_runs, find_run_dirs, read_history
from fedicd.report.config_docs import field_docs, render_config_doc, undocumented_fields
from fedicd.report.docs import README_END, README_START, headline_markdown, render_docs, update_readme, write_docs
from fedicd.report.tables import (Table, attack_sweep_table, central_table, fmt, headline_table, partition_table,
                                  rounds_table)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
DOCS = ROOT / "docs" / "results"


# ---------------------------------------------------------------- tables

def test_fmt_renders_none_nan_bools_floats_and_the_rest():
    assert [fmt(None), fmt(float("nan")), fmt(True), fmt(False), fmt(0.123456), fmt(3), fmt("x"), fmt(2.0, 1),
            fmt(1e-5), fmt(0.0)] == ["—", "—", "yes", "no", "0.1235", "3", "x", "2.0", "1e-05", "0.0000"]


def test_table_markdown_right_aligns_numbers_and_escapes_pipes():
    t = Table("T", ["run", "micro-F1", "note"], [["a", 0.5, "x|y"], ["b", None, None]])
    assert t.to_markdown() == ("| run | micro-F1 | note |\n"
                               "|---|---:|---|\n"
                               "| a | 0.5000 | x\\|y |\n"
                               "| b | — | — |")


def test_table_csv_keeps_full_precision_and_empty_cells():
    t = Table("T", ["run", "v"], [["a", 0.123456789], ["b", None]])
    assert t.to_csv() == "run,v\na,0.123456789\nb,\n"


def test_a_row_of_the_wrong_width_is_refused():
    with pytest.raises(ValueError, match="has 1 cells for 2 columns"):
        Table("T", ["a", "b"], [[1]])


def _central(name, micro, macro):
    return Run(Path(name), "central", {
        "name": name, "training_mode": "central", "config": {"train": {"head": "mlp"}},
        "labels": {"n_labels": 12, "train_notes": 60, "val_notes": 20, "test_notes": 20},
        "test": {"micro_f1": micro, "macro_f1": macro, "p_at_5": 0.25, "micro_auc": 0.9}})


def test_central_table_exact():
    assert central_table([_central("demo", 0.61234, 0.4)]).to_markdown() == (
        "| run | head | labels | train/val/test notes | test micro-F1 | test macro-F1 | P@5 | micro-AUC |\n"
        "|---|---|---:|---|---:|---:|---:|---:|\n"
        "| demo | mlp | 12 | 60/20/20 | 0.6123 | 0.4000 | 0.2500 | 0.9000 |")


def test_headline_table_names_strategy_partition_dp_and_secure_method():
    fed = Run(Path("f"), "federated", {
        "name": "f", "training_mode": "federated", "test": {"micro_f1": 0.5, "macro_f1": 0.25},
        "config": {"federated": {"strategy": "fedavg"}, "partition": {"scheme": "dirichlet", "alpha": 0.1}},
        "privacy": {"dp": "sample", "epsilon": 4.99}, "secure_aggregation": {"method": "secagg+"}})
    assert headline_table([_central("c", 0.7, 0.5), fed]).to_markdown().splitlines()[2:] == [
        "| c | central, mlp head | — | 0.7000 | 0.5000 |",
        "| f | federated, fedavg, dirichlet α=0.1, sample-level DP, secagg+ | 4.9900 | 0.5000 | 0.2500 |"]


def test_rounds_table_reads_history_rows():
    run = Run(Path("f"), "federated", {"name": "f"},
              history=[{"round": 1, "clients_sampled": 3, "val_loss": 0.5, "test_micro_f1": 0.1,
                        "test_macro_f1": None}])
    assert rounds_table(run).to_markdown().splitlines()[-1] == "| 1 | 3 | 0.5000 | 0.1000 | — |"


def test_partition_and_attack_tables_exact():
    stats = {"sizes": [10, 30], "mean_jsd": 0.2, "mean_absent_fraction": 0.5}
    part = Run(Path("dir_0.1"), "partition", {"scheme": "dirichlet", "params": {"alpha": 0.1}, "stats": stats})
    assert partition_table([part]).to_markdown().splitlines()[-1] == \
        "| dir_0.1 | dirichlet α=0.1 | 2 | 10 | 30 | 0.2000 | 0.5000 |"
    row = {"defence": "noise", "strength": 0.2, "utility_metric": "icd_micro_f1", "icd_micro_f1": 0.4,
           "metric": "word_f1", "leakage": {"value": 0.3, "ci_low": 0.25, "ci_high": 0.35, "n": 10},
           "baseline": {"value": 0.1}}
    sweep = Run(Path("bow"), "attack", {"attack": "bow", "rows": [{**row, "defence": "none", "strength": 0}, row]})
    assert attack_sweep_table(sweep).to_markdown() == (
        "| defence | utility (test micro-F1) | word_f1 | 95% CI | baseline |\n"
        "|---|---:|---:|---|---:|\n"
        "| none | 0.4000 | 0.3000 | [0.2500, 0.3500] | 0.1000 |\n"
        "| noise:0.2 | 0.4000 | 0.3000 | [0.2500, 0.3500] | 0.1000 |")


# ---------------------------------------------------------------- collecting and archiving

def _fake_federated(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"name": "x", "training_mode": "federated",
                                                     "load_summary": {"big": 1}, "rejections": [],
                                                     "partition": {"scheme": "iid", "clients": [[1, 2]]}}))
    (folder / "history.csv").write_text("round,val_loss,note\n1,0.5,\n2,0.25,ok\n")
    (folder / "model.pt").write_bytes(b"weights")
    return folder


def test_runs_are_found_below_a_folder_and_history_numbers_parsed(tmp_path):
    run_dir = _fake_federated(tmp_path / "area" / "x")
    assert find_run_dirs([tmp_path]) == [run_dir]
    assert read_history(run_dir / "history.csv") == [{"round": 1, "val_loss": 0.5, "note": None},
                                                     {"round": 2, "val_loss": 0.25, "note": "ok"}]
    with pytest.raises(ValueError, match="holds no run"):
        find_run_dirs([tmp_path / "area" / "x" / "history.csv"])


def test_archive_keeps_small_files_without_bulky_fields(tmp_path):
    (run,) = collect_runs([_fake_federated(tmp_path / "x")], progress=False)
    dest = archive_run(run, tmp_path / "archive")
    assert sorted(p.name for p in dest.iterdir()) == ["history.csv", "results.json"]
    kept = json.loads((dest / "results.json").read_text())
    assert "load_summary" not in kept and kept["partition"] == {"scheme": "iid"}


def test_report_command_writes_tables_csv_and_plots(tmp_path, capsys):
    run_dir = _fake_federated(tmp_path / "runs" / "x")
    assert main(["report", str(run_dir), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert (tmp_path / "out" / "tables.md").read_text().startswith("### Headline results")
    assert (tmp_path / "out" / "federated_runs.csv").exists()
    assert main(["report"]) == 2 and "give RUN_DIR" in capsys.readouterr().err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out and "fedicd report" in out


# ---------------------------------------------------------------- generated docs are current

def test_results_pages_are_generated_from_the_committed_results(tmp_path):
    write_docs(RESULTS, tmp_path, readme=None, progress=False)
    pages = {p.name: p.read_text() for p in tmp_path.glob("*.md")}
    assert pages == render_docs(RESULTS)
    committed = {p.name: p.read_text() for p in DOCS.glob("*.md")}
    assert sorted(pages) == sorted(committed), "docs/results holds other pages than `fedicd report --docs` writes"
    for name, text in pages.items():
        assert committed[name] == text, f"docs/results/{name} is stale: run `fedicd report --docs`"


def test_readme_headline_table_is_the_generated_one(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0]
    assert block == "\n" + headline_markdown(RESULTS), "README headline is stale: run `fedicd report --docs`"
    copy = tmp_path / "README.md"
    copy.write_text(f"a\n{README_START}\nold\n{README_END}\nb\n")
    assert update_readme(copy, "| new |\n") and copy.read_text() == f"a\n{README_START}\n| new |\n{README_END}\nb\n"


def test_config_reference_is_current():
    assert (ROOT / "docs" / "config.md").read_text() == render_config_doc(), \
        "docs/config.md is stale: run `fedicd report --docs`"


def test_attribute_docstrings_are_read_from_the_source(tmp_path):
    from fedicd.data.config import DataConfig

    docs = field_docs(DataConfig)
    assert docs["n_notes"][0] == "int" and docs["n_notes"][1]


def test_every_config_field_is_documented():
    assert undocumented_fields() == []


# ---------------------------------------------------------------- provenance

def test_provenance_records_versions_git_state_argv_and_time(tmp_path):
    from fedicd.provenance import LIBRARIES, git_state, provenance

    prov = provenance(["fedicd", "run", "x.toml"])
    assert set(prov["versions"]) == {*LIBRARIES, "python"} and prov["versions"]["fedicd"]
    assert prov["argv"] == ["fedicd", "run", "x.toml"] and prov["timestamp"].endswith("+00:00")
    assert set(prov["git"]) == {"commit", "dirty"}
    assert git_state(tmp_path) == {"commit": None, "dirty": None}  # not a git checkout
    json.dumps(prov)  # JSON-ready
