"""The encrypted update: the c0 of its ciphertexts, their seeds and public metadata, and its bytes on the wire.

Wire format (version 2): the magic ``FEDICD-CKKS\\x02``; the header's length (uint32, little-endian);
the header (JSON: layout, parameters, key id, data primes, client and clipped-value counts, ciphertext
and seed counts); SHA-256 of the header and the seeds; the seeds (32 bytes each); one SHA-256 digest
per ciphertext; the ciphertexts' c0, ciphertext after ciphertext (see :mod:`fedicd.secure.ckks_poly`).
Version 1 (whole SEAL ciphertexts, before seeds were split off) is refused with a named error.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_poly import SEED_BYTES, row_bytes

__all__ = ["EncryptedUpdate", "Layout"]

_MAGIC = b"FEDICD-CKKS\x02"
_OLD_MAGICS = {b"FEDICD-CKKS\x01": 1}
_DIGEST = 32
# the update's arrays, in packing order: (name, shape) each
Layout = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class EncryptedUpdate:
    """Seeded ciphertexts of one client's update (or of a sum of updates) and their public metadata.

    Holds nothing secret: ``body``, the c0 of every ciphertext (bytes, or a read-only view into the
    received message; c1 = a is recomputed from ``seeds``:
    one per client update the ciphertexts sum), their SHA-256 ``digests``, the arrays' names and
    shapes, the :class:`CkksParams`, the fingerprint of the key they were made under, the data
    primes, how many client updates they sum and how many values were clipped in them.
    """

    body: bytes | memoryview
    digests: tuple[bytes, ...]
    seeds: tuple[bytes, ...]
    layout: Layout
    params: CkksParams
    key_id: str
    moduli: tuple[int, ...]
    n_clients: int = 1
    n_clipped: int = 0

    @property
    def n_ciphertexts(self) -> int:
        return len(self.digests)

    @property
    def ciphertext_bytes(self) -> int:
        """Wire bytes of one ciphertext's c0."""
        return row_bytes(self.moduli, self.params.poly_modulus_degree)

    @property
    def ciphertexts(self) -> tuple[bytes, ...]:
        """Each ciphertext's c0 bytes (copies; the body holds them back to back)."""
        size = self.ciphertext_bytes
        return tuple(bytes(self.body[i:i + size]) for i in range(0, len(self.body), size))

    @property
    def nbytes(self) -> int:
        """Bytes of ciphertext: c0s and seeds (what dominates the wire size; see :meth:`to_bytes` for the total)."""
        return len(self.body) + SEED_BYTES * len(self.seeds)

    @property
    def n_values(self) -> int:
        """Number of scalar values in the update."""
        return sum(math.prod(shape) for _, shape in self.layout)

    def _header(self) -> bytes:
        return json.dumps({
            "layout": [[name, list(shape)] for name, shape in self.layout], "params": self.params.to_dict(),
            "key_id": self.key_id, "moduli": list(self.moduli), "n_clients": self.n_clients,
            "n_clipped": self.n_clipped, "n_ciphertexts": self.n_ciphertexts, "n_seeds": len(self.seeds),
        }, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        """Serialise (see the module docstring for the format)."""
        header, seeds = self._header(), b"".join(self.seeds)
        return b"".join([_MAGIC, struct.pack("<I", len(header)), header, hashlib.sha256(header + seeds).digest(),
                         seeds, *self.digests, self.body])

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> EncryptedUpdate:
        """Inverse of :meth:`to_bytes`; malformed, corrupted-header or old-format input raises :class:`CiphertextError`."""
        data = memoryview(data).cast("B")
        for magic, version in _OLD_MAGICS.items():
            if bytes(data[:len(magic)]) == magic:
                raise CiphertextError(f"an encrypted update in fedicd's CKKS wire format version {version} (whole "
                                      "SEAL ciphertexts); this fedicd reads version 2 (seeded c0 only): encrypt it "
                                      "again with this version (an encrypted model checkpointed before cannot be "
                                      "resumed: start a new run)")
        try:
            return cls._parse(data)
        except (ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
            raise CiphertextError(f"malformed encrypted update: {exc}") from exc

    @classmethod
    def _parse(cls, data: memoryview) -> EncryptedUpdate:
        if bytes(data[:len(_MAGIC)]) != _MAGIC:
            raise ValueError("missing magic bytes (not a fedicd CKKS update)")
        (size,) = struct.unpack_from("<I", data, len(_MAGIC))
        pos = len(_MAGIC) + 4
        header = bytes(data[pos:pos + size])
        head = json.loads(header)
        pos += size
        digest, pos = bytes(data[pos:pos + _DIGEST]), pos + _DIGEST
        n_seeds, n_cts = int(head["n_seeds"]), int(head["n_ciphertexts"])
        if n_seeds < 1 or n_cts < 1:
            raise ValueError(f"{n_seeds} seeds and {n_cts} ciphertexts (at least one each)")
        seeds = bytes(data[pos:pos + SEED_BYTES * n_seeds])
        pos += SEED_BYTES * n_seeds
        if hashlib.sha256(header + seeds).digest() != digest:
            raise ValueError("the header or the seeds do not match their SHA-256 digest (corrupted)")
        table = bytes(data[pos:pos + _DIGEST * n_cts])
        pos += _DIGEST * n_cts
        params, moduli = CkksParams(**head["params"]), tuple(int(q) for q in head["moduli"])
        if len(table) != _DIGEST * n_cts or len(data) - pos != n_cts * row_bytes(moduli, params.poly_modulus_degree):
            raise ValueError(f"length {len(data)} does not match the header ({n_cts} ciphertexts)")
        layout = tuple((str(name), tuple(int(s) for s in shape)) for name, shape in head["layout"])
        body = data[pos:] if data.readonly else bytes(data[pos:])  # a view into immutable input: no 13 MB copy
        return cls(body, tuple(table[i:i + _DIGEST] for i in range(0, len(table), _DIGEST)),
                   tuple(seeds[i:i + SEED_BYTES] for i in range(0, len(seeds), SEED_BYTES)), layout,
                   params, str(head["key_id"]), moduli, int(head["n_clients"]), int(head["n_clipped"]))
