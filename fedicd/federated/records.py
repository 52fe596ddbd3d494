"""Named numpy arrays ↔ Flower ArrayRecords, and message sizes."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message

__all__ = ["to_record", "from_record", "message_bytes"]


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord keeping the array names (e.g. a model's state_dict keys)."""
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def message_bytes(messages: Iterable[Message]) -> int:
    """Bytes of array payload carried by ``messages`` (errors carry none)."""
    total = 0
    for msg in messages:
        if msg.has_content():
            total += sum(r.count_bytes() for r in msg.content.array_records.values())
    return total
