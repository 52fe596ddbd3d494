"""The bytes that travel: serialized OpenFHE objects with a tag, checked before anything is deserialized.

Every envelope names its kind ("public-key", "update", "aggregate", "partial", "share"), the parameters'
fingerprint (its crypto context), the joint key's fingerprint, the round, the sender (partition id) and the model
layout, and carries a SHA-256 digest of its payload: corrupted bytes are refused as
:class:`~fedicd.secure.ckks_errors.CiphertextError` before OpenFHE parses them (OpenFHE's binary deserializer is
not hardened against corrupted input), another context as :class:`ContextMismatchError`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.threshold.errors import ContextMismatchError

__all__ = ["Envelope", "Tag", "KINDS"]

_MAGIC = b"FEDICD-THE1"
KINDS = ("public-key", "update", "aggregate", "partial", "share")


@dataclass(frozen=True)
class Tag:
    """What an envelope is for: replayed or misdirected envelopes differ here."""

    kind: str
    context: str  # ThresholdParams.fingerprint
    key: str = ""  # the joint public key's fingerprint ("" before it exists)
    round: int = 0
    sender: int = -1  # partition id (-1: the server)
    layout: str = ""  # Layout.digest ("" for keys)


@dataclass(frozen=True)
class Envelope:
    tag: Tag
    blobs: tuple[bytes, ...]
    extra: dict = field(default_factory=dict)  # small public fields (e.g. the number of parties in an aggregate)

    def to_bytes(self) -> bytes:
        digest = hashlib.sha256()
        for blob in self.blobs:
            digest.update(blob)
        header = json.dumps({"tag": self.tag.__dict__, "lengths": [len(b) for b in self.blobs], "extra": self.extra,
                             "sha256": digest.hexdigest()}, sort_keys=True).encode()
        return b"".join([_MAGIC, struct.pack(">I", len(header)), header, *self.blobs])

    @classmethod
    def from_bytes(cls, data: bytes, *, kind: str, context: str) -> Envelope:
        """Parse and check an envelope of ``kind`` made under the context ``context``."""
        data = memoryview(data).cast("B")  # no copies of the (tens of MB) payload but the blobs'
        if bytes(data[: len(_MAGIC)]) != _MAGIC or len(data) < len(_MAGIC) + 4:
            raise CiphertextError(f"not a threshold-CKKS {kind} (wrong or corrupted header)")
        start = len(_MAGIC) + 4
        (n,) = struct.unpack(">I", data[len(_MAGIC): start])
        try:
            header = json.loads(bytes(data[start: start + n]))
            tag = Tag(**header["tag"])
            lengths = [int(x) for x in header["lengths"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise CiphertextError(f"corrupted threshold-CKKS {kind} header: {exc}") from exc
        payload = data[start + n:]
        if sum(lengths) != len(payload) or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise CiphertextError(f"corrupted threshold-CKKS {kind} from sender {tag.sender}: its payload does "
                                  "not match its SHA-256 digest")
        if tag.kind != kind:
            raise CiphertextError(f"expected a threshold-CKKS {kind}, got a {tag.kind}")
        if tag.context != context:
            raise ContextMismatchError(f"{kind} from sender {tag.sender} was made under crypto context {tag.context}, "
                                       f"this party's is {context}: the parties hold different threshold "
                                       "parameters (use the same secure_aggregation settings everywhere)")
        blobs, offset = [], 0
        for length in lengths:
            blobs.append(bytes(payload[offset: offset + length]))
            offset += length
        return cls(tag, tuple(blobs), dict(header.get("extra", {})))


def key_fingerprint(public_key_bytes: bytes) -> str:
    """The fingerprint of a (joint) public key: a hash of its serialized bytes."""
    return hashlib.sha256(public_key_bytes).hexdigest()[:16]
