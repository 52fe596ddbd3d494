"""Give hand-built Messages a task identity, as Flower's ServerApp runtime does."""

from __future__ import annotations

import pytest
from flwr.supercore.task_identity import TaskIdentity

SERVER_NODE_ID = 0


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set the run/task/node ids ``Message(...)`` reads; restored after each test."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", SERVER_NODE_ID)
