"""``privacy.embedding_noise``: the defender's noise equals the adversary's copy, and staging applies it before the
scaler (every note, seed = the experiment seed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import StandardScaler

import fedicd.prepare as prepare
from attacks.defences import gaussian_noise
from fedicd.cli import DEMO_CONFIG
from fedicd.config import load_config
from fedicd.errors import ConfigError
from fedicd.privacy.config import PrivacyConfig, noise_embeddings


@settings(deadline=None, max_examples=30)
@given(n=st.integers(1, 12), dim=st.integers(1, 16), sigma=st.floats(0, 3), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(1e-3, 1e3))
def test_the_defender_and_the_adversary_noise_alike(n, dim, sigma, seed, scale):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32) * scale
    np.testing.assert_array_equal(noise_embeddings(x, sigma, seed=seed), gaussian_noise(x, sigma, seed=seed))


def test_noise_is_unit_vector_plus_sigma_gaussian():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = noise_embeddings(x, 0.5, seed=7)
    z = np.random.default_rng(7).standard_normal((2, 2))
    np.testing.assert_allclose(out, np.array([[0.6, 0.8], [0.0, 0.0]]) + 0.5 * z, rtol=1e-6)
    assert out.dtype == np.float32


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.1"])
def test_a_bad_sigma_is_refused_by_name(bad):
    with pytest.raises(ConfigError, match=r"privacy.embedding_noise must be"):
        PrivacyConfig(embedding_noise=bad)
    with pytest.raises(ConfigError, match="embedding noise sigma must be a finite number >= 0"):
        noise_embeddings(np.ones((2, 2)), bad, seed=0)


def test_noise_needs_a_matrix():
    with pytest.raises(ConfigError, match=r"needs a 2-D array \[notes, dim\], got shape \(3,\)"):
        noise_embeddings(np.ones(3), 0.1, seed=0)


def test_embedding_noise_is_independent_of_dp_and_off_by_default():
    assert PrivacyConfig().embedding_noise == 0.0
    cfg = PrivacyConfig(embedding_noise=0.2)
    assert cfg.dp == "none" and not cfg.enabled  # no DP claim: a heuristic defence without epsilon


def _fake_embed(vectors):
    def embed_texts(texts, config, cache_dir=None):
        assert len(texts) == len(vectors)
        return SimpleNamespace(vectors=vectors, model_id="fake", dim=vectors.shape[1], n_chunked=0, n_chunks=len(texts),
                               n_cached=0, n_reembedded=0, n_corrupt=0, cache_problems=[], language_check={})
    return embed_texts


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_staging_noises_every_note_before_the_scaler(monkeypatch, sigma):
    cfg = load_config(DEMO_CONFIG, ["seed=5", f"privacy.embedding_noise={sigma}"])
    parts = {"train": np.arange(0, 12), "val": np.arange(12, 16), "test": np.arange(16, 20)}
    data = SimpleNamespace(notes=SimpleNamespace(texts=[f"note {i}" for i in range(20)],
                                                 summary=SimpleNamespace(info={})), parts=parts)
    raw = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    monkeypatch.setattr(prepare, "embed_texts", _fake_embed(raw))
    feats, info, scaler = prepare.embed_parts(data, cfg)
    seen = noise_embeddings(raw, sigma, seed=5) if sigma else raw  # σ = 0: not even unit-normalised
    expected = StandardScaler().fit(seen[data.parts["train"]])
    np.testing.assert_allclose(scaler.mean_, expected.mean_, rtol=1e-6)
    for part, idx in data.parts.items():
        np.testing.assert_allclose(feats[part], expected.transform(seen[idx]).astype(np.float32), rtol=1e-5,
                                   atol=1e-6)
    assert info.get("embedding_noise") == (sigma or None)
