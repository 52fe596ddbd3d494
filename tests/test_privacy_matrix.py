"""The privacy matrix: columns' overrides, cells read from battery reports, utility interval, files, docs page."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from attacks import AttackReport
from attacks.scoring import summarize
from fedicd.attack_runs.matrix import (COLUMNS, ROWS, cell_text, column_overrides, matrix_cells, matrix_table,
                                       micro_f1_interval, write_matrix)
from fedicd.report.privacy_matrix import render_privacy_matrix

ROOT = Path(__file__).resolve().parents[1]


def test_the_columns_are_the_issues_defences():
    assert [c.key for c in COLUMNS] == ["none", "dp_eps1", "dp_eps3", "dp_eps8", "client_dp", "secagg_plus", "ckks",
                                        "embedding_noise"]
    by = {c.key: c for c in COLUMNS}
    assert column_overrides(by["dp_eps3"]) == ['privacy.dp="sample"', "privacy.target_epsilon=3.0"]
    assert column_overrides(by["embedding_noise"], embedding_noise=0.25) == ["privacy.embedding_noise=0.25"]
    assert column_overrides(by["ckks"], key_dir="/k") == ['secure_aggregation.method="ckks"',
                                                          'secure_aggregation.key_dir="/k"',
                                                          'secure_aggregation.evaluator_key="/k/secret.ctx"']
    with pytest.raises(ValueError, match="the CKKS column needs a key folder"):
        column_overrides(by["ckks"])


def _save(folder: Path, name: str, kind: str, metrics: dict[str, list[float]], **settings) -> dict:
    AttackReport(kind, summarize(metrics, seed=0), settings=settings).save(folder / "reports" / f"{name}.json")
    return {"attack": name.rsplit("_", 1)[0], "status": "ok", "file": f"reports/{name}.json", "variant": name}


def _battery(folder: Path) -> dict:
    rows = [_save(folder, "embedding_inversion_0", "bow_inversion", {"word_f1": [0.5, 0.7]}),
            _save(folder, "membership_0", "membership_inference", {"tpr_at_1pct_fpr": [0.1, 0.3]}, attack="lira_online",
                  signal="LiRA and RMIA read the same logits"),  # only the attack setting decides the row
            _save(folder, "membership_1", "membership_inference", {"tpr_at_1pct_fpr": [0.4, 0.4]},
                  attack="lira_offline"),
            _save(folder, "membership_2", "membership_inference", {"tpr_at_1pct_fpr": [0.9, 0.9]}, attack="rmia_online"),
            _save(folder, "audit_0", "dp_audit", {"epsilon_ratio": [0.3]}, observed="every step (white-box)"),
            _save(folder, "attribute_0", "attribute_inference", {"hiv_auc": [0.8, 0.6]}),
            {"attack": "update_inversion", "status": "failed", "error": "RuntimeError: no update"}]
    return {"rows": rows}


def test_each_cell_is_the_strongest_matching_report_or_says_why_not(tmp_path):
    cells = matrix_cells(tmp_path, _battery(tmp_path), {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": 9})
    assert cells["bow_word_f1"]["value"] == pytest.approx(0.6) and cells["bow_word_f1"]["n"] == 2
    assert cells["lira_tpr"]["value"] == pytest.approx(0.4) and cells["lira_tpr"]["variant"] == "membership_1"
    assert cells["rmia_tpr"]["value"] == pytest.approx(0.9)
    assert cells["audit_white"]["value"] == pytest.approx(0.3)
    assert cells["audit_black"] == {"missing": "no audit report carries epsilon_ratio with observed ~ 'black-box'"}
    assert cells["attribute_auc"]["metric"] == "hiv_auc" and cells["attribute_auc"]["value"] == pytest.approx(0.7)
    assert cells["update_word_f1"] == {"missing": "failed: RuntimeError: no update"}
    assert cells["utility"]["value"] == 0.6
    assert set(cells) == {r.key for r in ROWS}
    assert matrix_cells(tmp_path, {"rows": []}, None)["lira_tpr"] == {"missing": "membership was not run"}


@settings(deadline=None, max_examples=25)
@given(seed=st.integers(0, 1000), n=st.integers(2, 30))
def test_utility_is_sklearns_micro_f1_inside_its_interval(seed, n):
    rng = np.random.default_rng(seed)
    y, pred = rng.random((n, 5)) < 0.3, rng.random((n, 5)) < 0.4
    cell = micro_f1_interval(pred, y, seed=seed, n_boot=200)
    assert cell["value"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    assert cell["ci_low"] <= cell["value"] + 1e-12 and cell["value"] <= cell["ci_high"] + 1e-12 and cell["n"] == n


def _doc(tmp_path: Path) -> dict:
    cells = {"none": matrix_cells(tmp_path, _battery(tmp_path), {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7,
                                                                 "n": 9}),
             "dp_eps1": {r.key: {"missing": "RuntimeError: boom"} for r in ROWS}}
    columns = [{"key": "none", "label": "none", "seconds": 12.0, "defence": {"dp": "none", "epsilon": None},
                "failed": ["update_inversion"], "skipped": ["audit"]},
               {"key": "dp_eps1", "label": "DP ε=1", "seconds": 3.0, "error": "RuntimeError: boom"}]
    return {"corpus": "toy", "quick": True, "overrides": ["federated.rounds=2"], "refs": 4, "embedding_noise": 0.1,
            "columns": columns, "rows": [{"key": r.key, "label": r.label, "higher_leaks": r.higher_leaks}
                                         for r in ROWS],
            "cells": cells, "seconds": 15.0,
            "provenance": {"argv": ["experiments/privacy_matrix.py", "toy.toml", "--out", "x"]}}


def test_the_matrix_files_hold_every_cell(tmp_path):
    doc = _doc(tmp_path)
    paths = write_matrix(doc, tmp_path / "m")
    assert [p.name for p in paths] == ["privacy_matrix.json", "privacy_matrix.csv", "privacy_matrix.png"]
    assert json.loads(paths[0].read_text()) == doc
    with open(paths[1]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ROWS) * 2
    lira = next(r for r in rows if r["row"] == "lira_tpr" and r["column"] == "none")
    assert float(lira["value"]) == pytest.approx(0.4) and lira["metric"] == "tpr_at_1pct_fpr"
    labels, columns, values, cells = matrix_table(doc)
    assert columns == ["none", "DP ε=1"] and np.isnan(values[:, 1]).all() and values[0, 0] == pytest.approx(0.6)
    assert cell_text(cells[0][0]) == "0.60 [0.50, 0.70]" and cell_text(cells[0][1]) == "–"
    assert paths[2].stat().st_size > 5000


def test_the_docs_page_is_rendered_from_the_archived_json_only(tmp_path):
    write_matrix(_doc(tmp_path), tmp_path / "results" / "privacy_matrix" / "toy")
    page = render_privacy_matrix(tmp_path / "results")
    assert "Command: `python experiments/privacy_matrix.py toy.toml --out x`" in page
    assert "| LiRA TPR at 1 % FPR | 0.40 [0.40, 0.40] | — (1) |" in page
    assert "| update → text (word F1) | — (2) | — (1) |" in page
    assert "(1) RuntimeError: boom (DP ε=1)" in page and "(2) failed: RuntimeError: no update (none)" in page
    assert "Wall time: 0.2 min in all." in page
    assert "| none | none | — | — | — | update_inversion | audit | — | 12 |" in page
    assert "privacy_matrix/toy/privacy_matrix.png" in page
    assert "No privacy matrix is archived yet." in render_privacy_matrix(tmp_path / "nothing")


def test_a_codiesp_matrix_without_the_corpus_is_skipped_with_a_message(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("privacy_matrix", ROOT / "experiments" / "privacy_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = tmp_path / "c.toml"
    cfg.write_text((ROOT / "experiments/configs/privacy_matrix_codiesp.toml").read_text()
                   .replace('path = "../shared/data/codiesp"', f'path = "{tmp_path / "absent"}"'))
    assert module.main([str(cfg), "--out", str(tmp_path / "out")]) == 0
    assert f"skipped: the CodiEsp corpus is not at {tmp_path / 'absent'}" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
