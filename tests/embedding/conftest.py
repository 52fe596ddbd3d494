"""Fixtures: a fake encoder over a fake model directory, so cache tests run in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedicd.embedding import EmbedConfig
from tests.embedding.fakes import FakeEncoder


@pytest.fixture
def fake_config(tmp_path: Path) -> EmbedConfig:
    """A config whose model is a local directory (fingerprinted for the cache key, never loaded)."""
    model_dir = tmp_path / "fake-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "fake"}')
    return EmbedConfig(model=str(model_dir), device="cpu", chunk_overlap=4, model_language="en")


@pytest.fixture
def fake_encoder(fake_config: EmbedConfig) -> FakeEncoder:
    return FakeEncoder(fake_config)
