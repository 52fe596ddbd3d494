"""experiments/coder_limits.py's pure parts (buckets, nested subsets, kNN scores) and its section of the coders page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.report.coders import LIMITS_HEADING, limits_section, render_coders

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("coder_limits_script", ROOT / "experiments" / "coder_limits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


limits = _script()


def test_bucket_assignment_at_the_edges():
    counts = np.array([3, 5, 9, 10, 19, 20, 49, 50, 400])
    assert limits.assign_buckets(counts).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert limits.bucket_labels() == ["< 5", "5–9", "10–19", "20–49", "≥ 50"]


def test_bucket_f1_exact_on_hand_made_data():
    # codes: 0 and 1 in bucket 5–9 (6 and 8 training notes), 2 in ≥ 50 (60); code 1 has no test note
    y_true = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0]])
    y_pred = np.array([[1, 1, 1], [0, 0, 1], [0, 0, 0], [1, 0, 0]])
    rows = limits.bucket_f1(y_true, y_pred, np.array([6, 8, 60]))
    assert [r["bucket"] for r in rows] == ["5–9", "≥ 50"]  # empty buckets left out
    low, high = rows
    # code 0: tp 1, fp 1, fn 1 -> F1 0.5; code 1: tp 0, fp 1 -> F1 0 (counts in the mean)
    assert (low["codes"], low["codes_in_test"]) == (2, 1)
    assert low["macro_f1"] == pytest.approx(0.25)
    assert low["micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # tp 1, fp 2, fn 1
    assert low["test_share"] == pytest.approx(2 / 5)
    # code 2: tp 2, fp 0, fn 1 -> 0.8
    assert high["macro_f1"] == pytest.approx(0.8) and high["micro_f1"] == pytest.approx(0.8)
    assert high["test_share"] == pytest.approx(3 / 5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 500), seed=st.integers(0, 2**31 - 1))
def test_subsets_are_nested_and_sized(n, seed):
    subsets = limits.nested_subsets(n, limits.FRACTIONS, seed)
    sizes = [len(subsets[f]) for f in limits.FRACTIONS]
    assert sizes[-1] == n and sizes == sorted(sizes)
    for small, big in zip(limits.FRACTIONS, limits.FRACTIONS[1:]):
        assert set(subsets[small].tolist()) <= set(subsets[big].tolist())
    assert len(np.unique(subsets[0.25])) == len(subsets[0.25]) == max(1, round(0.25 * n))


def test_subsets_differ_by_seed_and_refuse_bad_fractions():
    assert limits.nested_subsets(100, (0.5,), 0)[0.5].tolist() != limits.nested_subsets(100, (0.5,), 1)[0.5].tolist()
    with pytest.raises(ValueError, match="fractions"):
        limits.nested_subsets(10, (0.0, 1.0), 0)


def test_epochs_keep_the_full_runs_steps():
    assert [limits.epochs_for(f, 20, "steps") for f in limits.FRACTIONS] == [80, 40, 27, 20]
    assert limits.epochs_for(0.25, 20, "epochs") == 20
    with pytest.raises(ValueError, match="--schedule"):
        limits.epochs_for(0.5, 20, "rounds")


def test_knn_scores_exact_on_a_toy():
    y_train = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    sims = np.array([[0.9, 0.6, 0.1, -0.5],    # k=2: notes 0 (0.9), 1 (0.6)
                     [-0.2, -0.1, -0.3, -0.4],  # every weight clipped to 0: scores 0
                     [0.2, 0.5, 0.8, 0.7]])    # k=2: notes 2 (0.8), 3 (0.7)
    scores = limits.knn_scores(sims, y_train, 2)
    np.testing.assert_allclose(scores, [[1.0, 0.6 / 1.5], [0.0, 0.0], [0.0, 0.8 / 1.5]])
    # k larger than the training notes: all of them; negative similarity weighs 0
    np.testing.assert_allclose(limits.knn_scores(sims[:1], y_train, 10), [[1.5 / 1.6, 0.7 / 1.6]])


def test_cosine_rows_unit_and_zero():
    out = limits.cosine_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


def _ms(*values):
    return limits.mean_std(list(values))


def _doc(last_micro=0.35, tfidf_micro=0.38, train_micro=(0.98, 1.0)):
    curve = [{"fraction": f, "notes": n, "epochs": e, "micro_f1": _ms(m, m), "macro_f1": _ms(0.1, 0.1),
              "p_at_8": _ms(0.3, 0.3), "map": _ms(0.4, 0.4)}
             for f, n, e, m in ((0.25, 161, 80, 0.2), (0.5, 322, 40, 0.25), (0.75, 483, 27, 0.3),
                                (1.0, 644, 20, last_micro))]
    buckets = [{"bucket": b, "codes": c, "codes_in_test": c, "test_share": s, "macro_f1": _ms(f, f),
                "micro_f1": _ms(f, f)} for b, c, s, f in (("5–9", 180, 0.2, 0.05), ("10–19", 90, 0.3, 0.1),
                                                          ("20–49", 40, 0.25, 0.3), ("≥ 50", 10, 0.25, 0.5))]
    fit = {"train_micro_f1": _ms(*train_micro), "val_micro_f1": _ms(0.3, 0.3), "test_micro_f1": _ms(0.35, 0.35),
           "train_macro_f1": _ms(0.9, 0.9), "threshold": _ms(0.2, 0.2)}
    knn = {key: {"k": k, "threshold": 0.2, "test": {"micro_f1": m, "macro_f1": 0.1, "p_at_8": p, "map": 0.3}}
           for key, k, m, p in (("embedding", 20, 0.30, 0.25), ("tfidf", 10, tfidf_micro, 0.28))}
    return {"head": "mlp", "seeds": [0, 1], "command": "python experiments/coder_limits.py cfg --head mlp",
            "data": {"train_notes": 644, "codes": 320, "median_train_notes_per_code": 8.0, "test_notes": 250},
            "learning_curve": curve, "buckets": buckets, "fit": fit, "knn": knn}


def test_section_cells_and_sentences(tmp_path):
    path = tmp_path / "limits_mlp.json"
    path.write_text(json.dumps(_doc()))
    text = "\n".join(limits_section([path]))
    assert text.startswith(LIMITS_HEADING)
    assert "| 25 % | 161 | 80 | 0.2000 ± 0.0000 | 0.1000 ± 0.0000 |" in text
    assert "test micro-F1 changes by +5.0 points and macro-F1 by +0.0: the curve is still rising" in text
    assert "| 5–9 | 180 | 180 | 20.0 | 0.0500 ± 0.0000 | 0.0500 ± 0.0000 |" in text
    assert "the 270 codes with fewer than 20 training notes (84 % of the codes) carry 50.0 %" in text
    assert "| 0.9900 ± 0.0141 | 0.3000 ± 0.0000 | 0.3500 ± 0.0000 |" in text
    assert "Training micro-F1 0.9900 vs test 0.3500: it fits its training notes almost perfectly" in text
    assert "| TF-IDF (cosine) | 10 | 0.200 | 0.3800 | 0.1000 | 0.2800 | 0.3000 |" in text
    assert "the lexical space finds better neighbours, so the frozen encoder is a limit." in text
    assert "`python experiments/coder_limits.py cfg --head mlp`" in text


def test_section_sentences_follow_the_numbers(tmp_path):
    path = tmp_path / "limits_mlp.json"
    path.write_text(json.dumps(_doc(last_micro=0.305, tfidf_micro=0.29, train_micro=(0.7, 0.7))))
    text = "\n".join(limits_section([path]))
    assert ("Training micro-F1 0.7000 vs test 0.3500: the loss from training to test (35.0 points) exceeds what it "
            "leaves unfitted on its training notes (30.0 points)") in text
    path.write_text(json.dumps(_doc(train_micro=(0.4, 0.4))))
    assert "it leaves more unfitted on its training notes (60.0 points) than it loses from training to test (5.0" \
        in "\n".join(limits_section([path]))
    path.write_text(json.dumps(_doc(last_micro=0.305, tfidf_micro=0.29)))
    text = "\n".join(limits_section([path]))
    assert "changes by +0.5 points" in text and "the curve is flat (1 point or less)" in text
    assert "so the encoder is not the first limit." in text


def test_page_renders_limits_and_says_when_missing(tmp_path):
    folder = tmp_path / "coders"
    folder.mkdir()
    assert "Not archived yet (`python experiments/coder_limits.py" in render_coders(tmp_path)
    (folder / "limits_mlp.json").write_text(json.dumps(_doc()))
    page = render_coders(tmp_path)
    assert LIMITS_HEADING in page and "### Learning curve (nested random subsets of the training notes) — mlp" in page
    assert "The `codiesp` suite is not archived yet" in page  # limits_*.json is not read as a suite
