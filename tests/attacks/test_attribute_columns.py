"""Attribute inference on any column: binary vs categorical scoring, empty values, unseen and tiny classes."""

import logging

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from attacks import AdversaryView
from attacks.attribute import (attack_attribute, auc_with_ci, clamp_labelled, macro_auc_with_ci, majority_topk,
                               positive_class)

DIM = 16


def _view(aux_labels, victim_labels, *, seed=0, signal=3.0):
    """Embeddings with one direction per class (so the attribute is learnable); missing values get noise only."""
    rng = np.random.default_rng(seed)
    classes = sorted({str(v) for v in [*aux_labels, *victim_labels] if v not in ("", None)})
    centre = {c: signal * rng.standard_normal(DIM) for c in classes}

    def emb(labels):
        return np.stack([rng.standard_normal(DIM) + centre.get(str(v), 0) for v in labels]).astype(np.float32)

    return AdversaryView(target_embeddings=emb(victim_labels), aux_texts=[""] * len(aux_labels),
                         aux_embeddings=emb(aux_labels))


def test_a_categorical_column_gets_top1_top3_macro_auc_and_majority_baselines():
    aux = ["a"] * 40 + ["b"] * 20 + ["c"] * 15 + ["d"] * 10 + ["e"] * 5
    vic = ["a", "b", "c", "d", "e"] * 10
    metrics, base, settings = attack_attribute(_view(aux, vic), aux, vic, name="ward", n_labelled=60, seed=0)
    assert set(metrics) == {"ward_top1_accuracy", "ward_top3_accuracy", "ward_macro_auc"}
    assert set(base) == set(metrics)
    assert base["ward_top1_accuracy"]["value"] == pytest.approx(0.2)  # majority 'a' is 1 victim in 5
    assert base["ward_top3_accuracy"]["value"] == pytest.approx(0.6)  # a, b, c
    assert base["ward_macro_auc"]["value"] == 0.5
    assert metrics["ward_top1_accuracy"]["value"] > 0.8 and metrics["ward_macro_auc"]["ci_low"] > 0.8
    for m in metrics.values():
        assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["n"] == 50
    assert settings["ward_classes"] == 5 and settings["ward_labelled_notes"] == 60


def test_three_classes_are_scored_at_top1_only():
    aux = ["x", "y", "z"] * 10
    metrics, _, _ = attack_attribute(_view(aux, aux), aux, aux, name="sev", seed=0)
    assert set(metrics) == {"sev_top1_accuracy", "sev_macro_auc"}


def test_a_binary_string_column_is_scored_by_auc_for_its_truthy_value():
    aux, vic = ["yes", "no"] * 20, ["no", "yes", "no"] * 8
    metrics, base, settings = attack_attribute(_view(aux, vic), aux, vic, name="smoker", seed=0)
    assert set(metrics) == {"smoker_auc"} and base["smoker_auc"]["value"] == 0.5
    assert settings["smoker_positive_class"] == "yes"
    assert settings["smoker_victim_prevalence"] == pytest.approx(1 / 3)
    assert metrics["smoker_auc"]["value"] > 0.9


def test_empty_values_are_left_out_and_counted():
    aux = ["F", "M", "", "F", None, "M", float("nan")] * 6
    vic = ["F", "M", "  ", "F"] * 5
    metrics, _, settings = attack_attribute(_view(aux, vic), aux, vic, name="sex", n_labelled=10, seed=0)
    assert settings["sex_labelled_without_value"] == 18 and settings["sex_victims_without_value"] == 5
    assert settings["sex_victims_scored"] == 15 and metrics["sex_auc"]["n"] == 15
    assert settings["sex_labelled_notes"] == 10


def test_a_victim_class_the_attacker_never_labelled_is_counted_not_fatal():
    aux = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    vic = ["a", "b", "c", "d", "d"] * 4
    metrics, _, settings = attack_attribute(_view(aux, vic), aux, vic, name="site", seed=0)
    assert settings["site_classes_unseen_by_attacker"] == 1 and settings["site_victims_in_unseen_classes"] == 8
    assert settings["site_classes"] == 4
    assert metrics["site_top1_accuracy"]["value"] <= 12 / 20  # the 'd' victims cannot be guessed


def test_a_class_with_one_labelled_example_runs():
    aux = ["a"] * 12 + ["b"] * 12 + ["rare"]
    vic = ["a", "b", "rare"] * 3
    metrics, _, _ = attack_attribute(_view(aux, vic), aux, vic, name="site", seed=0)
    assert metrics["site_top1_accuracy"]["n"] == 9


@pytest.mark.parametrize("aux, vic, message", [
    (["a"] * 6, ["a"] * 3, r"'col' cannot be inferred: the 6 labelled notes with a value hold 1 distinct value"),
    (["a", "b"] * 3, ["", None, " "], r"'col': none of the 3 victim notes has a value"),
    (["a", "b"] * 3, ["a"] * 3, r"'col': all 3 victims with a value have the value 'a'; an AUC needs both"),
    (["", "b", ""] * 2, ["a", "b"], r"the 2 labelled notes with a value hold 1 distinct value"),
])
def test_an_attribute_that_cannot_be_scored_is_named(aux, vic, message):
    with pytest.raises(ValueError, match=message):
        attack_attribute(_view(aux, vic), aux, vic, name="col", seed=0)


def test_a_labelled_subset_with_one_class_is_named():
    aux = ["a"] * 30 + ["b"]
    with pytest.raises(ValueError, match=r"attribute 'col': the 2 labelled auxiliary notes hold one class only"):
        attack_attribute(_view(aux, ["a", "b"]), aux, ["a", "b"], name="col", n_labelled=2, seed=0)


def test_n_labelled_beyond_the_labelled_notes_is_clamped_with_a_notice(caplog):
    with caplog.at_level(logging.WARNING, logger="attacks.attribute"):
        assert clamp_labelled(200, 27, "site") == 27
    assert "attribute 'site': n_labelled=200 exceeds the 27 labelled notes that have a value; using all 27" \
        in caplog.text
    assert clamp_labelled(10, 27, "site") == 10 and clamp_labelled(None, 27, "site") == 27
    with pytest.raises(ValueError, match="n_labelled must be at least 2"):
        clamp_labelled(1, 27, "site")


def test_auc_and_macro_auc_match_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60).astype(bool)
    score = np.round(rng.random(60) + 0.5 * y, 1)  # ties
    assert auc_with_ci(y, score)["value"] == pytest.approx(roc_auc_score(y, score))
    truth = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 80)]
    probs = rng.dirichlet(np.ones(4), size=80)
    got = macro_auc_with_ci(truth, probs, ["a", "b", "c", "d"])
    ref = roc_auc_score(truth, probs, multi_class="ovr", average="macro", labels=["a", "b", "c", "d"])
    assert got["value"] == pytest.approx(ref) and got["ci_low"] < got["value"] < got["ci_high"]
    # a class the classifier lacks scores a constant 0: AUC 0.5 in the average
    no_d = macro_auc_with_ci(truth, probs[:, :3], ["a", "b", "c"])
    per = [roc_auc_score(truth == c, probs[:, j]) for j, c in enumerate("abc")]
    assert no_d["value"] == pytest.approx((sum(per) + 0.5) / 4)
    assert macro_auc_with_ci(["a", "a"], probs[:2], ["a", "b", "c", "d"]) is None


def test_majority_and_positive_class_by_hand():
    assert majority_topk(["a", "b", "c"], ["b", "b", "a", "c", "a"], 1).tolist() == [1.0, 0.0, 0.0]  # tie: sorted
    assert majority_topk(["a", "b", "c"], ["b", "b", "a"], 2).tolist() == [1.0, 1.0, 0.0]
    assert positive_class(["no", "yes"]) == "yes" and positive_class(["1", "0"]) == "1"
    assert positive_class(["M", "F"]) == "M"
