import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from fedicd.errors import ShapeError
from fedicd.metrics import choose_threshold, compute_metrics, precision_at_k, top_k_labels


def test_hand_example():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.2, 0.4], [0.6, 0.7, 0.1]])
    m = compute_metrics(y, s, threshold=0.5)
    # predictions: [[1,0,0],[1,1,0]] → TP 2, FP 1, FN 1
    assert m["micro_precision"] == pytest.approx(2 / 3)
    assert m["micro_recall"] == pytest.approx(2 / 3)
    # per-label F1: label0 P=1/2 R=1 → 2/3; label1 1; label2 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["p_at_5"] == pytest.approx(((2 / 3) + (1 / 3)) / 2)  # k capped at 3 labels


def test_precision_at_k_by_hand():
    y = np.array([[1, 1, 0, 0], [0, 0, 0, 1]])
    s = np.array([[0.9, 0.1, 0.8, 0.0], [0.1, 0.2, 0.3, 0.4]])
    assert precision_at_k(y, s, 2) == pytest.approx((0.5 + 0.5) / 2)


@settings(deadline=None, max_examples=30)
@given(st.integers(0, 10_000))
def test_micro_and_macro_f1_agree_with_sklearn_per_label(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((30, 6)) > 0.6).astype(int)
    s = rng.random((30, 6))
    m = compute_metrics(y, s, threshold=0.4)
    pred = (s >= 0.4).astype(int)
    assert m["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro", zero_division=0))
    per_label = [f1_score(y[:, j], pred[:, j], zero_division=0) if y[:, j].any() or pred[:, j].any() else 0.0
                 for j in range(y.shape[1])]
    assert m["macro_f1"] == pytest.approx(np.mean(per_label))


def test_top_k_uses_training_frequency():
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert top_k_labels(train, 2).tolist() == [0, 1]
    y_test = np.array([[0, 0, 1], [0, 0, 1]])
    s = np.array([[0.1, 0.1, 0.9], [0.1, 0.1, 0.9]])
    # top-10 covers all three labels here, but with frequent=[0] only label 0 (never predicted) counts
    assert compute_metrics(y_test, s, frequent=np.array([0, 1, 2]))["top10_f1"] == pytest.approx(1.0)
    assert compute_metrics(y_test, s, frequent=np.array([0]))["top10_f1"] == 0.0


def test_threshold_choice_maximises_micro_f1():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 5)) > 0.8).astype(int)
    s = np.clip(0.3 * y + rng.random((200, 5)) * 0.5, 0, 1)  # positives shifted up by 0.3
    t = choose_threshold(y, s)
    best = max(np.arange(0.05, 0.951, 0.025), key=lambda g: f1_score(y, (s >= g).astype(int), average="micro"))
    assert t == pytest.approx(round(best, 3))


def test_bad_inputs_raise():
    with pytest.raises(ShapeError, match="NaN/Inf"):
        compute_metrics(np.zeros((2, 2)), np.array([[np.nan, 0.1], [0.2, 0.3]]))
    with pytest.raises(ShapeError, match="equal 2-D shapes"):
        compute_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="binary"):
        compute_metrics(np.full((2, 2), 2), np.zeros((2, 2)))


def test_monitoring_subset_agrees_with_full_metrics():
    from fedicd.metrics import f1_scores

    rng = np.random.default_rng(3)
    y = (rng.random((80, 12)) > 0.7).astype(int)
    s = rng.random((80, 12))
    full = compute_metrics(y, s, threshold=0.35)
    assert f1_scores(y, s, threshold=0.35) == pytest.approx((full["micro_f1"], full["macro_f1"]))
    light = compute_metrics(y, s, threshold=0.35, with_auc=False)
    assert "micro_auc" not in light and light["macro_f1"] == full["macro_f1"]
