"""The vector cache never serves a vector it cannot verify.

Regression tests for the fault catalogue: overwritten rows (finding 1: "1500 served
from cache" after 300 rows were garbled), a truncated shard (finding 2: numpy's
"mmap length is greater than file size" without a file name), garbled indexes,
caches written by an older fedicd, and a cache that cannot be created or written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from fedicd.embedding import EmbedConfig, EmbeddingCache, embed_texts, text_key
from fedicd.embedding import pipeline
from fedicd.errors import ConfigError
from tests.embedding.fakes import ENGLISH, FakeEncoder


def _shard(cache: Path) -> tuple[Path, Path]:
    (keys_file,) = cache.glob("*/shard-*.keys.json")
    return keys_file.with_name(keys_file.name.replace(".keys.json", ".npy")), keys_file


def _embed(config: EmbedConfig, cache: Path, texts: list[str] = ENGLISH):
    encoder = FakeEncoder(config)
    return embed_texts(texts, config, cache_dir=cache, progress=False, encoder=encoder), encoder


def _cache_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "cache" in r.getMessage()]


@pytest.fixture
def filled(fake_config: EmbedConfig, tmp_path: Path):
    """A cache holding ENGLISH, and the result that filled it."""
    cache = tmp_path / "cache"
    first, _ = _embed(fake_config, cache)
    return cache, first


def test_clean_cache_is_served_whole_and_bit_identical(fake_config, filled, caplog) -> None:
    cache, first = filled

    second, encoder = _embed(fake_config, cache)

    assert (second.n_cached, second.n_reembedded, second.n_corrupt, encoder.chunks_seen) == (30, 0, 0, 0)
    assert second.vectors.tobytes() == first.vectors.tobytes()
    assert second.cache_problems == () and not _cache_warnings(caplog)


def test_overwritten_rows_fail_their_checksum_and_are_reembedded(fake_config, filled, caplog) -> None:
    cache, first = filled
    npy, _ = _shard(cache)
    size = npy.stat().st_size
    rows = np.load(npy, mmap_mode="r+")
    rows[[3, 7, 11]] = np.random.default_rng(0).standard_normal((3, rows.shape[1]))  # finite garbage
    rows.flush()
    del rows
    assert npy.stat().st_size == size

    second, encoder = _embed(fake_config, cache)

    assert (second.n_cached, second.n_reembedded, second.n_corrupt) == (27, 3, 3)
    alone = embed_texts([ENGLISH[i] for i in (3, 7, 11)], fake_config, progress=False, encoder=FakeEncoder(fake_config))
    assert encoder.chunks_seen == second.n_chunks == alone.n_chunks
    np.testing.assert_array_equal(second.vectors, first.vectors)  # the garbage was not served
    (warning,) = _cache_warnings(caplog)
    assert str(npy) in warning and "3 of 30 stored vectors fail their checksum" in warning
    assert second.summary()["n_reembedded"] == 3 and second.summary()["cache_problems"] == [warning]


def test_repaired_cache_is_clean_on_the_next_run(fake_config, filled, caplog) -> None:
    cache, first = filled
    npy, _ = _shard(cache)
    rows = np.load(npy, mmap_mode="r+")
    rows[0] += 1.0
    rows.flush()
    del rows
    _embed(fake_config, cache)
    caplog.clear()

    third, encoder = _embed(fake_config, cache)

    assert (third.n_cached, third.n_reembedded, encoder.chunks_seen) == (30, 0, 0)
    assert not _cache_warnings(caplog)
    np.testing.assert_array_equal(third.vectors, first.vectors)


def test_keys_swapped_between_rows_are_caught(fake_config, filled) -> None:
    cache, first = filled
    _, keys_file = _shard(cache)
    record = json.loads(keys_file.read_text())
    record["keys"][0], record["keys"][1] = record["keys"][1], record["keys"][0]
    keys_file.write_text(json.dumps(record))

    second, _ = _embed(fake_config, cache)

    assert (second.n_cached, second.n_corrupt) == (28, 2)
    np.testing.assert_array_equal(second.vectors, first.vectors)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(lambda p: os.truncate(p, p.stat().st_size // 2), "vectors are unreadable"),
     (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "vectors are unreadable"),
     (lambda p: p.write_bytes(b""), "vectors are unreadable"),
     (lambda p: np.save(p, np.zeros((30, 8), np.float64)), "the index expects float32 (30, 8)"),
     (lambda p: p.unlink(), "vectors are unreadable")],
    ids=["truncated", "garbled-header", "empty", "float64", "missing"],
)
def test_unreadable_vectors_file_is_named_and_its_notes_reembedded(fake_config, filled, caplog, damage, reason) -> None:
    cache, first = filled
    npy, keys_file = _shard(cache)
    damage(npy)

    second, _ = _embed(fake_config, cache)

    assert (second.n_cached, second.n_reembedded, second.n_corrupt) == (0, 30, 30)
    np.testing.assert_array_equal(second.vectors, first.vectors)
    (warning,) = _cache_warnings(caplog)
    assert f"embedding cache file {npy}: " in warning and reason in warning and "re-embedding 30 vectors" in warning
    third, _ = _embed(fake_config, cache)
    assert third.n_cached == 30  # the damaged shard was replaced


@pytest.mark.parametrize("payload", ["{not json", '{"keys": "abc"}', '{"keys": ["a"], "n_chunks": [1, 2]}',
                                     '{"keys": ["a"], "n_chunks": [1], "row_digests": ["x"], "dim": 0}'])
def test_garbled_index_is_named_and_its_notes_reembedded(fake_config, filled, caplog, payload: str) -> None:
    cache, first = filled
    npy, keys_file = _shard(cache)
    keys_file.write_text(payload)

    second, _ = _embed(fake_config, cache)

    assert second.n_cached == 0
    np.testing.assert_array_equal(second.vectors, first.vectors)
    (warning,) = _cache_warnings(caplog)
    assert f"embedding cache file {keys_file}: index" in warning
    assert _embed(fake_config, cache)[0].n_cached == 30  # a fresh shard took the garbled one's place


def test_cache_without_checksums_is_unverifiable_and_reembedded_once(fake_config, filled, caplog) -> None:
    cache, first = filled
    npy, keys_file = _shard(cache)
    record = json.loads(keys_file.read_text())
    keys_file.write_text(json.dumps({"keys": record["keys"], "n_chunks": record["n_chunks"]}))  # the old format

    second, _ = _embed(fake_config, cache)

    assert (second.n_cached, second.n_reembedded, second.n_corrupt) == (0, 30, 0)
    np.testing.assert_array_equal(second.vectors, first.vectors)
    (warning,) = _cache_warnings(caplog)
    assert "1 shard(s) holding 30 vectors were written without checksums" in warning and str(npy.parent) in warning
    caplog.clear()
    third, _ = _embed(fake_config, cache)
    assert third.n_cached == 30 and not _cache_warnings(caplog)


def test_discarded_vectors_that_cannot_be_reembedded_raise_naming_the_cache(fake_config, filled, monkeypatch) -> None:
    cache, _ = filled
    npy, _ = _shard(cache)
    os.truncate(npy, 100)

    def no_model(config: EmbedConfig):
        raise FileNotFoundError(f"model={config.model!r} is not on disk")

    monkeypatch.setattr(pipeline, "load_encoder", no_model)
    with pytest.raises(RuntimeError, match=rf"30 cached vectors in {npy.parent} were discarded .* cannot be loaded"):
        embed_texts(ENGLISH, fake_config, cache_dir=cache, progress=False)


def test_cache_dir_that_is_a_file_is_a_config_error(fake_config, tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("not a directory")

    with pytest.raises(ConfigError, match=rf"cache_dir='{blocker}': cannot create .*set cache_dir to a writable"):
        _embed(fake_config, blocker)


def test_failed_cache_write_warns_once_and_returns_correct_vectors(fake_config, tmp_path, monkeypatch, caplog) -> None:
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fedicd.embedding.cache.write_shard", disk_full)
    result, _ = _embed(fake_config, tmp_path / "cache", ENGLISH[:10])
    monkeypatch.undo()
    reference, _ = _embed(fake_config, tmp_path / "other", ENGLISH[:10])

    np.testing.assert_array_equal(result.vectors, reference.vectors)
    (warning,) = _cache_warnings(caplog)
    assert "cannot write to embedding cache" in warning and "No space left on device" in warning
    assert not list((tmp_path / "cache").glob("*/shard-*"))


def test_lookup_only_returns_verified_keys(fake_config, filled) -> None:
    cache, _ = filled
    store = EmbeddingCache(cache, pipeline.cache_settings(fake_config))

    hits = store.lookup(["not-a-key", text_key(ENGLISH[0]), text_key(ENGLISH[1])])

    assert len(hits) == 2 and all(v.dtype == np.float32 for v, _ in hits.values())
