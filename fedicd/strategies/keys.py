"""Record keys of SCAFFOLD's control variates (no Flower import: the spec table names them)."""

from __future__ import annotations

__all__ = ["DELTA_CONTROL_KEY", "SERVER_CONTROL_KEY"]

SERVER_CONTROL_KEY = "scaffold-c"
"""RecordDict key of the server control ``c`` in train messages."""
DELTA_CONTROL_KEY = "scaffold-delta-c"
"""RecordDict key of the client's ``c_i^+ - c_i`` in train replies."""
