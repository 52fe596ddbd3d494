"""`run_attack_sweep(..., "attribute")` on small user corpora: any column, site on a tabular source, free labels.

The public encoder is replaced by a hashed bag of words (fast, deterministic); the
real encoder runs once in tests/test_attack_cli.py.
"""

import json
import logging
import zlib

import numpy as np
import pytest

import fedicd.attack_runs.data as attack_data
from fedicd.attack_runs.data import load_attack_data, resolve_attribute
from fedicd.attack_runs.sweep import run_attack_sweep
from fedicd.cli import DEMO_CONFIG
from fedicd.config import load_config
from fedicd.errors import ConfigError
from tests.corpora import FREE_CORPUS, SITE_CORPUS, write_free_label_corpus, write_small_site_corpus


def _bag_of_words(texts, cfg, *, cache=True):
    out = np.zeros((len(texts), 64), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 64] += 1.0
    return out


@pytest.fixture
def embed_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(attack_data, "embed", lambda texts, cfg, cache=True: calls.append(len(texts))
                        or _bag_of_words(texts, cfg))
    return calls


def _cfg(tmp_path, corpus):
    path = (write_small_site_corpus if corpus is SITE_CORPUS else write_free_label_corpus)(tmp_path / "c.csv")
    sets = [f"data.{k}={json.dumps(v)}" for k, v in corpus.items()]
    sets += [f"data.path={json.dumps(str(path))}", "data.min_train_count=1", "train.epochs=2",
             f"cache_dir={json.dumps(str(tmp_path / 'cache'))}"]
    return load_config(DEMO_CONFIG, sets)


def test_site_of_a_tabular_corpus_with_13_small_sites(tmp_path, embed_calls, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="attacks.attribute"):
        rows = run_attack_sweep(_cfg(tmp_path, SITE_CORPUS), "attribute", out, attribute="site",
                                defences=["none", "noise:0.5"])
    assert "attribute 'site': n_labelled=200 exceeds the" in caplog.text
    assert caplog.text.count("n_labelled=200 exceeds") == 1  # once per sweep, not per defence
    assert [r["metric"] for r in rows] == ["site_top1_accuracy"] * 2
    rep = json.loads((out / "attribute_inference_none.json").read_text())
    assert set(rep["metrics"]) == {"site_top1_accuracy", "site_top3_accuracy", "site_macro_auc"}
    assert set(rep["baselines"]) == set(rep["metrics"])
    s = rep["settings"]
    assert s["n_labelled_requested"] == 200 and s["n_labelled"] == s["site_labelled_notes"] < 40
    assert s["utility_metric"] == "icd_micro_f1" and 0 <= s["icd_micro_f1"] <= 1
    assert {"site_classes_unseen_by_attacker", "site_victims_in_unseen_classes"} <= set(s)
    doc = json.loads((out / "leakage_utility.json").read_text())
    assert doc["complete"] is True and len(doc["rows"]) == 2
    assert {"versions", "git", "argv"} <= set(doc["provenance"]) and "torch" in doc["provenance"]["versions"]


def test_a_binary_column_with_empty_values_counts_them(tmp_path, embed_calls):
    cfg = _cfg(tmp_path, SITE_CORPUS)
    d = load_attack_data(cfg, attribute="Patient sex")
    empty = {p: sum(not v for v in d.columns["Patient sex"][p]) for p in ("train", "test")}
    assert empty["train"] + empty["test"] > 0
    rows = run_attack_sweep(cfg, "attribute", tmp_path / "out", attribute="Patient sex", defences=["none"])
    rep = json.loads((tmp_path / "out" / "attribute_inference_none.json").read_text())
    assert rows[0]["metric"] == "Patient sex_auc" and set(rep["metrics"]) == {"Patient sex_auc"}
    assert rep["settings"]["Patient sex_labelled_without_value"] == empty["train"]
    assert rep["settings"]["Patient sex_victims_without_value"] == empty["test"]
    assert rep["metrics"]["Patient sex_auc"]["n"] == len(d.texts["test"]) - empty["test"]


def test_free_labels_get_a_label_micro_f1_utility(tmp_path, embed_calls):
    out = tmp_path / "out"
    rows = run_attack_sweep(_cfg(tmp_path, FREE_CORPUS), "attribute", out, attribute="Ward",
                            defences=["none", "pca:4"], n_labelled=50)
    assert [r["utility_metric"] for r in rows] == ["label_micro_f1"] * 2
    assert all("icd_micro_f1" not in r and 0 <= r["label_micro_f1"] <= 1 for r in rows)
    assert rows[0]["metric"] == "Ward_top1_accuracy"  # 4 wards: categorical
    rep = json.loads((out / "attribute_inference_pca_4.json").read_text())
    assert rep["settings"]["Ward_labelled_notes"] == 50 and "Ward_top3_accuracy" in rep["metrics"]
    assert (out / "leakage_utility.png").stat().st_size > 1000


@pytest.mark.parametrize("corpus, attribute, message", [
    (FREE_CORPUS, "mental_health", r"attribute 'mental_health' is read from ICD-10 codes, but these labels are "
                                   r"'free'; use female, site or a column \(\['Ward'\]\)"),
    (FREE_CORPUS, "site", r"attribute 'site' needs a site column \(data.site_column for a tabular source"),
    (SITE_CORPUS, "age", r"unknown attribute 'age'; built-in: mental_health, hiv, pregnancy, female, site; "
                         r"columns of this corpus: \['Age group', 'Hospital site', 'Patient sex'\]"),
    (SITE_CORPUS, "column:Ward", r"unknown attribute column 'Ward'"),
    (SITE_CORPUS, "hiv", r"attribute 'hiv' cannot be inferred: the \d+ labelled notes with a value hold 1 distinct"),
])
def test_a_bad_attribute_is_refused_before_embedding_and_writing(tmp_path, embed_calls, corpus, attribute, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run_attack_sweep(_cfg(tmp_path, corpus), "attribute", out, attribute=attribute, defences=["none"])
    assert embed_calls == [] and not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_labelled": 1}, "--n-labelled must be at least 2"),
    ({"attribute": " "}, "--attribute is empty"),
])
def test_bad_attack_arguments_are_refused_before_loading(tmp_path, kwargs, message):
    cfg = load_config(DEMO_CONFIG, ["data.source=\"tabular\"", f"data.path=\"{tmp_path / 'missing.csv'}\""])
    with pytest.raises(ConfigError, match=message):  # the missing file is never opened
        run_attack_sweep(cfg, "attribute", tmp_path / "out", defences=["none"], **kwargs)


def test_attribute_names_resolve_to_built_ins_or_columns():
    cols = {"female", "Ward", "site"}
    assert resolve_attribute("Ward", columns=cols, has_sites=False) == ("column", "Ward")
    assert resolve_attribute("site", columns=cols, has_sites=True) == ("builtin", "site")
    assert resolve_attribute("column:site", columns=cols, has_sites=True) == ("column", "site")
    assert resolve_attribute("builtin:female", columns=cols, has_sites=False) == ("builtin", "female")
    assert resolve_attribute("hiv", columns=cols, has_sites=False) == ("builtin", "hiv")
    with pytest.raises(ValueError, match="'female' is both a built-in and a column of this corpus; "
                                         "use builtin:female or column:female"):
        resolve_attribute("female", columns=cols, has_sites=False)
    with pytest.raises(ValueError, match=r"'hiv' is read from ICD-10 codes, but these labels are 'icd9'"):
        resolve_attribute("hiv", columns=(), has_sites=False, icd10_codes=False, label_kind="icd9")
