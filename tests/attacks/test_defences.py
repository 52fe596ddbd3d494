import numpy as np
import pytest

from attacks.defences import DimensionReducer, fit_range, gaussian_noise, quantize


def test_gaussian_noise_normalises_then_adds_sigma():
    x = np.random.default_rng(0).standard_normal((2000, 50)).astype(np.float32) * 7
    clean = gaussian_noise(x, 0.0)
    np.testing.assert_allclose(np.linalg.norm(clean, axis=1), 1.0, rtol=1e-5)
    noisy = gaussian_noise(x, 0.2, seed=1)
    assert abs(float((noisy - clean).std()) / 0.2 - 1) < 0.01
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        gaussian_noise(x, -1)


def test_quantize_uses_exactly_2_to_the_bits_levels_and_bounded_error():
    x = np.random.default_rng(0).uniform(-1, 1, (500, 4)).astype(np.float32)
    rng_ = fit_range(x)
    q = quantize(x, 2, rng_)
    assert all(len(np.unique(q[:, j])) <= 4 for j in range(4))
    span = rng_[1] - rng_[0]
    assert (np.abs(q - x) <= span / 3 / 2 + 1e-6).all()  # half a step of (2**2 - 1) steps
    np.testing.assert_allclose(quantize(np.array([[5.0, -5.0, 0.0, 0.0]], np.float32), 1, rng_)[0, :2],
                               [rng_[1][0], rng_[0][1]], rtol=1e-6)  # clipped to the range


def test_dimension_reducer_keeps_k_components():
    x = np.random.default_rng(0).standard_normal((100, 10)).astype(np.float32)
    red = DimensionReducer(3).fit(x)
    assert red(x).shape == (100, 3)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        DimensionReducer(11).fit(x)
