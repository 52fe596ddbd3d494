"""Metric functions on hand-made cases, the threat-model boundary, the report format."""

import inspect

import numpy as np
import pytest

from attacks import AdversaryView, AttackReport, ThreatModelError
from attacks.bow import invert_bag_of_words
from attacks.retrieval import rank_candidates
from attacks.scoring import bleu, bootstrap_ci, exact_match, rouge_l, set_prf, summarize, token_f1, words


def test_set_metrics_by_hand():
    assert set_prf({"a", "b", "c"}, {"b", "c", "d", "e"}) == pytest.approx((2 / 3, 2 / 4, 4 / 7))
    assert set_prf(set(), {"a"}) == (0.0, 0.0, 0.0) and set_prf({"a"}, set()) == (0.0, 0.0, 0.0)
    assert words("Pt's BP-high, 140/90; O'Neil.") == ["pt's", "bp-high", "140", "90", "o'neil"]


def test_text_metrics_by_hand():
    assert token_f1("the patient has fever", "patient has a high fever") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert token_f1("x", "y") == 0.0
    assert exact_match("Chest pain.", "chest  pain") == 1.0 and exact_match("chest", "chest pain") == 0.0
    assert bleu("the patient has a fever", "the patient has a fever") == pytest.approx(100.0)
    assert bleu("zzz qqq", "the patient has a fever") < 10
    assert rouge_l("the patient has fever", "the patient has a fever") == pytest.approx(2 * 1.0 * 0.8 / 1.8)


def test_bootstrap_interval_brackets_the_mean_and_collapses_on_constants():
    mean, lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    assert lo < mean == 0.5 < hi and hi - lo < 0.25
    assert bootstrap_ci([0.3] * 10) == pytest.approx((0.3, 0.3, 0.3))
    with pytest.raises(ValueError, match="NaN/Inf"):
        bootstrap_ci([0.1, float("nan")])
    assert summarize({"f1": [1.0, 0.0]})["f1"]["n"] == 2


def test_the_adversary_view_refuses_victim_text():
    with pytest.raises(ThreatModelError, match="never sees victim text"):
        AdversaryView(target_embeddings=["patient John Smith has fever"], aux_texts=["a"],
                      aux_embeddings=np.zeros((1, 3)))
    with pytest.raises(ThreatModelError, match="2-D numeric array"):
        AdversaryView(target_embeddings=np.array(["a", "b"]), aux_texts=["a"], aux_embeddings=np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"aux_embeddings must have shape \(1, 3\)"):
        AdversaryView(target_embeddings=np.zeros((2, 3)), aux_texts=["a"], aux_embeddings=np.zeros((1, 4)))
    # the attack entry points take the view (and settings), nothing that could carry victim text
    for fn in (invert_bag_of_words, rank_candidates):
        first = next(iter(inspect.signature(fn).parameters.values()))
        assert first.name == "view"


def test_report_round_trip_and_table(tmp_path):
    rep = AttackReport("retrieval_inversion", summarize({"hit@1": [1.0, 0.0, 1.0]}), settings={"k": 1},
                       examples=[{"victim": 0, "rank": 1}], baselines=summarize({"hit@1": [0.0, 0.0, 1.0]}))
    rep.save(tmp_path / "r.json")
    back = AttackReport.load(tmp_path / "r.json")
    assert back == rep and "candidate pool" in back.to_dict()["threat_model"]
    assert "hit@1" in rep.table() and "baseline: hit@1" in rep.table()
    with pytest.raises(ValueError, match="unknown attack"):
        AttackReport("magic", {})
