"""Pairwise sealing of Shamir key shares: a share travels through the server, which must not read it.

X25519 between the owner of the key share and its holder, HKDF-SHA256 to an AES-256-GCM key, the envelope's tag
as associated data (a share sealed for one holder, owner or context does not open for another).
"""

from __future__ import annotations

import os

__all__ = ["SealKeys", "seal", "open_sealed"]


def _primitives():
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return hashes, serialization, X25519PrivateKey, X25519PublicKey, AESGCM, HKDF


class SealKeys:
    """A party's X25519 key pair for sealing shares (the private key stays in the party's state)."""

    def __init__(self, private: bytes | None = None) -> None:
        _, serialization, priv_cls, _, _, _ = _primitives()
        self._key = priv_cls.from_private_bytes(private) if private else priv_cls.generate()
        raw = serialization.Encoding.Raw
        self.private_bytes = self._key.private_bytes(raw, serialization.PrivateFormat.Raw,
                                                     serialization.NoEncryption())
        self.public_bytes = self._key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)

    def shared_key(self, peer_public: bytes, context: bytes) -> bytes:
        hashes, _, _, pub_cls, _, hkdf = _primitives()
        secret = self._key.exchange(pub_cls.from_public_bytes(peer_public))
        return hkdf(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=b"fedicd threshold-ckks share|" + context).derive(secret)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    aesgcm = _primitives()[4]
    nonce = os.urandom(12)
    return nonce + aesgcm(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext; ``cryptography.exceptions.InvalidTag`` when the key, the bytes or ``aad`` differ."""
    aesgcm = _primitives()[4]
    return aesgcm(key).decrypt(sealed[:12], sealed[12:], aad)
