"""Fixtures: a fake encoder over a fake model directory, so cache tests run in milliseconds."""

from __future__ import annotations


import pytest

from fedicd.embedding import EmbedConfig
from tests.embedding.fakes import FakeEncoder




@pytest.fixture
def fake_encoder(fake_config: EmbedConfig) -> FakeEncoder:
    return FakeEncoder(fake_config)
