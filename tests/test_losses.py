import math

import numpy as np
import pytest
import torch

from fedicd.losses import HybridLoss, focal_loss_elements


def _reference(logits: np.ndarray, targets: np.ndarray, alpha=0.35, gamma=2.0) -> np.ndarray:
    """Element-wise HybridLoss written directly from the formula in probabilities."""
    p = 1.0 / (1.0 + np.exp(-logits))
    p_t = np.where(targets == 1, p, 1 - p)
    bce = -np.log(p_t)
    alpha_t = np.where(targets == 1, alpha, 1 - alpha)
    focal = -alpha_t * (1 - p_t) ** gamma * np.log(p_t)
    return 0.5 * bce + 0.5 * focal


def test_matches_formula_elementwise():
    logits = np.array([[2.0, -1.0, 0.3], [-3.0, 0.0, 4.0]])
    targets = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    got = HybridLoss(reduction="none")(torch.tensor(logits), torch.tensor(targets)).numpy()
    np.testing.assert_allclose(got, _reference(logits, targets), rtol=1e-10)


def test_hand_value_single_element():
    # logit 0 → p = 0.5; positive: BCE = ln 2, focal = 0.35 · 0.25 · ln 2
    got = HybridLoss()(torch.zeros(1, 1), torch.ones(1, 1)).item()
    assert got == pytest.approx(0.5 * math.log(2) + 0.5 * 0.35 * 0.25 * math.log(2))


def test_per_sample_reduction_has_batch_shape_and_same_mean():
    torch.manual_seed(0)
    logits, targets = torch.randn(7, 5), (torch.rand(7, 5) > 0.7).float()
    per_sample = HybridLoss(reduction="per_sample")(logits, targets)
    assert per_sample.shape == (7,)
    assert per_sample.mean().item() == pytest.approx(HybridLoss()(logits, targets).item(), rel=1e-6)
    assert HybridLoss(reduction="sum")(logits, targets).item() == pytest.approx(per_sample.sum().item() * 5, rel=1e-6)


def test_focal_with_gamma_zero_is_weighted_bce():
    logits, targets = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()
    focal = focal_loss_elements(logits, targets, alpha=0.5, gamma=0.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(focal, 0.5 * bce)


def test_extreme_logits_are_finite_with_finite_gradients():
    logits = torch.tensor([[200.0, -200.0, 50.0]], requires_grad=True)
    loss = HybridLoss()(logits, torch.tensor([[0.0, 1.0, 1.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_shape_mismatch_and_bad_parameters_raise():
    with pytest.raises(ValueError, match="same shape"):
        HybridLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction must be one of"):
        HybridLoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha must be in"):
        HybridLoss(alpha=1.5)
