"""The encrypted update: ciphertexts with their public metadata, and its byte format on the wire."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.ckks_params import CkksParams

__all__ = ["EncryptedUpdate", "Layout"]

_MAGIC = b"FEDICD-CKKS\x01"
# the update's arrays, in packing order: (name, shape) each
Layout = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class EncryptedUpdate:
    """Ciphertexts of one client's update (or of a sum of updates) and their public metadata.

    Holds nothing secret: the ciphertexts, their SHA-256 digests, the arrays' names and shapes,
    the :class:`CkksParams`, the fingerprint of the key they were made under, how many client
    updates they sum, and how many values were clipped in them.
    """

    ciphertexts: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    layout: Layout
    params: CkksParams
    key_id: str
    n_clients: int = 1
    n_clipped: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes of ciphertext (what dominates the wire size; see :meth:`to_bytes` for the total)."""
        return sum(len(c) for c in self.ciphertexts)

    @property
    def n_values(self) -> int:
        """Number of scalar values in the update."""
        return sum(math.prod(shape) for _, shape in self.layout)

    def to_bytes(self) -> bytes:
        """Serialise: magic, header length, JSON header, digests, ciphertexts."""
        header = json.dumps({
            "layout": [[name, list(shape)] for name, shape in self.layout], "params": self.params.to_dict(),
            "key_id": self.key_id, "n_clients": self.n_clients, "n_clipped": self.n_clipped,
            "sizes": [len(c) for c in self.ciphertexts],
        }, separators=(",", ":")).encode()
        return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *self.digests, *self.ciphertexts])

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedUpdate:
        """Inverse of :meth:`to_bytes`; malformed input raises :class:`CiphertextError`."""
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("missing magic bytes")
            pos = len(_MAGIC) + 4
            (size,) = struct.unpack_from("<I", data, len(_MAGIC))
            head = json.loads(data[pos:pos + size])
            pos += size
            sizes = head["sizes"]
            digests = tuple(data[pos + 32 * i:pos + 32 * (i + 1)] for i in range(len(sizes)))
            pos += 32 * len(sizes)
            cts = []
            for n in sizes:
                cts.append(data[pos:pos + n])
                pos += n
            if pos != len(data) or any(len(d) != 32 for d in digests):
                raise ValueError(f"length {len(data)} does not match the header")
            layout = tuple((str(name), tuple(int(s) for s in shape)) for name, shape in head["layout"])
            return cls(tuple(cts), digests, layout, CkksParams(**head["params"]), str(head["key_id"]),
                       int(head["n_clients"]), int(head["n_clipped"]))
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise CiphertextError(f"malformed encrypted update: {exc}") from exc
