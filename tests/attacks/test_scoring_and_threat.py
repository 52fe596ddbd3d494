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
    assert bleu("The Patient HAS a fever", "the patient has a fever") == pytest.approx(100.0)  # uncased encoder
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


def test_the_attacks_package_never_imports_fedicd():
    """attacks/ sees only what an adversary holds: no import of the defender's library."""
    import ast
    from pathlib import Path

    import attacks

    for path in Path(attacks.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "fedicd" or n.startswith("fedicd.") for n in names), (path.name, names)


def test_reconstruction_scores_on_hand_made_cases():
    import numpy as np

    from attacks.scoring import identifier_recovery, reconstruction_scores

    class Who:
        first_name, last_name, mrn = "Ada", "Lovelace", "123 45"

    per = reconstruction_scores(["ada lovelace 123 45", ""], ["Ada Lovelace 123 45", "x"],
                                guess_vectors=np.array([[1.0, 0.0], [0.0, 0.0]]),
                                target_vectors=np.array([[2.0, 0.0], [0.0, 1.0]]), identifiers=[Who(), Who()])
    assert per["exact_match"] == [1.0, 0.0] and per["token_f1"] == [1.0, 0.0]
    assert per["cosine"] == [1.0, 0.0]  # an empty guess (zero vector) scores 0, not NaN
    assert per["full_name_recovered"] == [1.0, 0.0] and per["mrn_recovered"] == [1.0, 0.0]
    assert identifier_recovery([{"lovelace"}], [Who()]) == {"first_name_recovered": [0.0],
                                                            "last_name_recovered": [1.0],
                                                            "full_name_recovered": [0.0], "mrn_recovered": [0.0]}
    with pytest.raises(ValueError, match="2 guesses for 1 true texts"):
        reconstruction_scores(["a", "b"], ["a"])
