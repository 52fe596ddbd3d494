"""A key holder of threshold CKKS (a client): its key share, its updates, its partial decryptions.

Joint key generation is a chain over the parties (OpenFHE's ``KeyGen`` for the first, ``MultipartyKeyGen`` on the
previous public key for the others): party i's secret s_i never leaves it, and the last public key is the joint
key of s = Σ s_i. Updates are encrypted under the joint key; an aggregate is decrypted only from every key
holder's partial decryption (``MultipartyDecryptMain``: s_i·c1 plus flooding noise), or, with a threshold t,
from t holders plus the shares of the missing ones' keys (OpenFHE's Shamir ``ShareKeys``/``RecoverSharedKey``),
which a surviving holder recovers.

Privacy: a party decrypts at most one aggregate per round (a second request, e.g. a replay to average out the
flooding noise, is refused). It cannot tell an aggregate from a single client's update: the server is trusted to
follow the protocol (honest but curious), as in every single-server threshold-FHE aggregation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedicd.secure.ckks_errors import CiphertextError
from fedicd.secure.threshold.backend import crypto_context, load_openfhe, read_ciphertext, require_shamir
from fedicd.secure.threshold.envelope import Envelope, Tag, key_fingerprint
from fedicd.secure.threshold.errors import ContextMismatchError, KeyGenerationError, ThresholdError
from fedicd.secure.threshold.packing import Layout, encode_update, to_complex_chunks
from fedicd.secure.threshold.params import ThresholdParams
from fedicd.secure.threshold.parallel import map_chunks
from fedicd.secure.threshold.sealing import SealKeys, open_sealed, seal

__all__ = ["ThresholdParty"]

class ThresholdParty:
    """Key holder ``party_id`` (the client's partition id). ``state_dir``: where its key share is kept (written
    on every change, read back by a restarted client); None keeps it in memory only."""

    def __init__(self, params: ThresholdParams, party_id: int, *, state_dir: str | Path | None = None,
                 workers: int = 1) -> None:
        self.params, self.party_id, self.workers = params, int(party_id), workers
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.cc = crypto_context(params)
        self._secret = None
        self._joint = None
        self.joint_bytes = b""
        self.key_fp = ""
        self.seal_keys: SealKeys | None = None
        self.held_shares: dict[int, bytes] = {}  # owner party id -> serialized share of the owner's key for me
        self.decrypted_rounds: set[int] = set()
        self._state_seen: tuple | None = None  # which version of the state folder this object holds
        if self.state_dir is not None and (self.state_dir / "party.json").exists():
            self._load()

    def refresh(self) -> None:
        """Re-read the state folder when another process of this client changed it since: under Ray one worker
        process may answer the key generation and another the next message, so the folder, not a process's
        memory, is the client's state."""
        if self.state_dir is not None and _version(self.state_dir) not in (None, self._state_seen):
            self._load()

    # -- key generation ---------------------------------------------------------------------
    @property
    def has_key(self) -> bool:
        return self._secret is not None and self._joint is not None

    def keygen(self, previous: bytes | None) -> bytes:
        """This party's link of the key chain: a fresh key pair (first party: ``previous`` None) or one joined to
        the previous public key. Returns the new public key (an envelope); the secret stays here."""
        fhe = load_openfhe()
        if previous is None:
            pair = self.cc.KeyGen()
        else:
            env = Envelope.from_bytes(previous, kind="public-key", context=self.params.fingerprint)
            pair = self.cc.MultipartyKeyGen(self._public_key(env.blobs[0]))
        self._secret, self._joint, self.joint_bytes, self.key_fp = pair.secretKey, None, b"", ""
        self.decrypted_rounds, self.held_shares = set(), {}
        self.seal_keys = SealKeys()
        blob = fhe.Serialize(pair.publicKey, fhe.BINARY)
        self._save()
        return Envelope(Tag("public-key", self.params.fingerprint, sender=self.party_id), (blob,)).to_bytes()

    def accept_joint_key(self, joint: bytes, fingerprint: str) -> None:
        """Store the joint public key (the chain's last link) after checking the server's ``fingerprint``."""
        self._require_secret()
        env = Envelope.from_bytes(joint, kind="public-key", context=self.params.fingerprint)
        if key_fingerprint(env.blobs[0]) != fingerprint:
            raise CiphertextError(f"the joint public key does not match its fingerprint {fingerprint}")
        self._joint, self.joint_bytes, self.key_fp = self._public_key(env.blobs[0]), env.blobs[0], fingerprint
        self._save()

    def _public_key(self, blob: bytes):
        fhe = load_openfhe()
        try:
            return fhe.DeserializePublicKeyString(blob, fhe.BINARY)
        except RuntimeError as exc:
            raise ContextMismatchError(f"a public key OpenFHE cannot read under these parameters: {exc}") from exc

    def _require_secret(self) -> None:
        if self._secret is None:
            raise KeyGenerationError(f"party {self.party_id} holds no key share: it never ran the joint key "
                                     "generation (or its state folder was lost); generate the joint key again")

    def _require_key(self) -> None:
        self._require_secret()
        if self._joint is None:
            raise KeyGenerationError(f"party {self.party_id} has a key share but no joint public key: the key "
                                     "generation did not finish")

    # -- Shamir shares (t of n) -------------------------------------------------------------
    def share_key(self, threshold: int, n_parties: int, recipients: Mapping[int, bytes]) -> dict[int, bytes]:
        """Shamir shares of this party's secret (t = ``threshold`` of ``n_parties``), each sealed for its
        holder (``recipients``: party id → X25519 public key; ids are 0..n_parties-1)."""
        self._require_key()
        require_shamir()
        shares = self.cc.ShareKeys(self._secret, n_parties, threshold, self.party_id + 1, "shamir")
        out = {}
        for holder, poly in shares.items():
            pid = int(holder) - 1
            out[pid] = self._seal_for(pid, recipients[pid], self._poly_bytes(poly), owner=self.party_id)
        return out

    def seal_public(self) -> bytes:
        self._require_secret()
        return self.seal_keys.public_bytes

    def hold_shares(self, sealed: Mapping[int, bytes], senders: Mapping[int, bytes]) -> None:
        """Open and keep the shares other parties sealed for this one (owner id → sealed bytes)."""
        for owner, data in sealed.items():
            self.held_shares[int(owner)] = self._open_from(int(owner), senders[int(owner)], data, owner=int(owner))
        self._save()

    def reseal_shares(self, missing: list[int], recipient: int, recipient_public: bytes) -> dict[int, bytes]:
        """This party's shares of the ``missing`` parties' keys, sealed for the ``recipient`` who recovers them."""
        out = {}
        for owner in missing:
            if owner not in self.held_shares:
                raise KeyGenerationError(f"party {self.party_id} holds no share of party {owner}'s key")
            out[owner] = self._seal_for(recipient, recipient_public, self.held_shares[owner], owner=owner)
        return out

    def _seal_for(self, holder: int, public: bytes, data: bytes, *, owner: int) -> bytes:
        aad = self._share_aad(owner, self.party_id, holder)
        return seal(self.seal_keys.shared_key(public, self._ctx_bytes()), data, aad)

    def _open_from(self, sender: int, public: bytes, sealed: bytes, *, owner: int) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return open_sealed(self.seal_keys.shared_key(public, self._ctx_bytes()), sealed,
                               self._share_aad(owner, sender, self.party_id))
        except InvalidTag as exc:
            raise CiphertextError(f"a key share from party {sender} does not open for party {self.party_id} "
                                  "(corrupted, or sealed for another party or key)") from exc

    def _share_aad(self, owner: int, sender: int, holder: int) -> bytes:
        return json.dumps([self.key_fp, owner, sender, holder]).encode()

    def _ctx_bytes(self) -> bytes:
        return (self.params.fingerprint + self.key_fp).encode()

    def _poly_bytes(self, poly) -> bytes:
        """A DCRTPoly as bytes: the bindings serialize ciphertexts, not polynomials, so it travels as a one-element
        ciphertext."""
        fhe = load_openfhe()
        holder = self.cc.Encrypt(self._joint, self.cc.MakeCKKSPackedPlaintext(np.zeros(1, dtype=np.complex128)))
        holder.SetElements([poly])
        return fhe.Serialize(holder, fhe.BINARY)

    # -- rounds ------------------------------------------------------------------------------
    def encrypt(self, arrays: Mapping[str, np.ndarray], n_examples: int, *, round: int, layout: Layout | None = None,
                clip: bool = False) -> tuple[bytes, int]:
        """This party's update (n·x and n, fixed point) under the joint key, tagged for ``round``; returns the
        envelope's bytes and how many values were clipped."""
        self._require_key()
        layout = layout or Layout.of(arrays)
        values, clipped = encode_update(arrays, n_examples, self.params, layout, clip=clip)
        chunks = to_complex_chunks(values * 2.0**self.params.shift_bits, self.params)  # exact: a power of two
        blobs = map_chunks(_encrypt_chunk, chunks, (self.params, self.joint_bytes), self.workers)
        tag = Tag("update", self.params.fingerprint, self.key_fp, int(round), self.party_id, layout.digest)
        return Envelope(tag, tuple(blobs)).to_bytes(), clipped

    def partial_decrypt(self, aggregate: bytes, *, round: int) -> bytes:
        """This party's partial decryption of the round's aggregate (once per round): s_i·c1 plus flooding noise,
        switched down to one RNS tower (half the bytes; see :mod:`~fedicd.secure.threshold.params`)."""
        self._require_key()
        env = self._aggregate(aggregate, round)
        blobs = map_chunks(_partial_chunk, list(env.blobs), (self.params, self._secret_bytes()), self.workers)
        self.decrypted_rounds.add(int(round))
        self._save()
        tag = Tag("partial", self.params.fingerprint, self.key_fp, int(round), self.party_id, env.tag.layout)
        return Envelope(tag, tuple(blobs), {"for": [self.party_id]}).to_bytes()

    def recover_partials(self, aggregate: bytes, shares: Mapping[int, Mapping[int, bytes]],
                         senders: Mapping[int, bytes], *, round: int, n_parties: int, threshold: int) -> dict[int, bytes]:
        """Partial decryptions on behalf of missing parties: ``shares`` maps each missing owner to the sealed
        shares of its key (holder id → bytes) that t−1 other holders sent for this party (plus its own)."""
        self._require_key()
        require_shamir()
        fhe = load_openfhe()
        env = self._aggregate(aggregate, round, once=False)
        out = {}
        for owner, sealed in shares.items():
            polys = {holder + 1: self._share_poly(self._open_from(holder, senders[holder], data, owner=owner))
                     for holder, data in sealed.items()}
            if owner in self.held_shares:
                polys[self.party_id + 1] = self._share_poly(self.held_shares[owner])
            if len(polys) < threshold:
                raise ThresholdError(f"{len(polys)} shares of party {owner}'s key, {threshold} needed")
            key = self.cc.KeyGen().secretKey
            self.cc.RecoverSharedKey(key, polys, n_parties, threshold, "shamir")
            blobs = map_chunks(_partial_chunk, list(env.blobs), (self.params, fhe.Serialize(key, fhe.BINARY)),
                               self.workers)
            tag = Tag("partial", self.params.fingerprint, self.key_fp, int(round), self.party_id, env.tag.layout)
            out[owner] = Envelope(tag, tuple(blobs), {"for": [owner]}).to_bytes()
        return out

    def _aggregate(self, data: bytes, round: int, once: bool = True) -> Envelope:
        env = Envelope.from_bytes(data, kind="aggregate", context=self.params.fingerprint)
        if env.tag.key != self.key_fp:
            raise CiphertextError(f"the aggregate was made under key {env.tag.key}, party {self.party_id} holds a "
                                  f"share of key {self.key_fp}")
        if env.tag.round != int(round):
            raise CiphertextError(f"the aggregate is tagged for round {env.tag.round}, not round {round} (replayed)")
        if once and int(round) in self.decrypted_rounds:
            raise CiphertextError(f"party {self.party_id} already decrypted an aggregate of round {round}: a second "
                                  "partial decryption (a replay) would weaken the flooding noise; refused")
        return env

    def _share_poly(self, data: bytes):
        fhe = load_openfhe()
        return fhe.DeserializeCiphertextString(data, fhe.BINARY).GetElements()[0]

    def _secret_bytes(self) -> bytes:
        fhe = load_openfhe()
        return fhe.Serialize(self._secret, fhe.BINARY)

    # -- state -------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.state_dir is None or self._secret is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        files = {"secret.bin": self._secret_bytes(), "joint.bin": self.joint_bytes,
                 "seal.bin": self.seal_keys.private_bytes if self.seal_keys else b""}
        for name, data in files.items():
            _write_private(self.state_dir / name, data)
        meta = {"params": self.params.to_dict(), "party_id": self.party_id, "key": self.key_fp,
                "decrypted_rounds": sorted(self.decrypted_rounds),
                "held_shares": {str(k): v.hex() for k, v in self.held_shares.items()}}
        _write_private(self.state_dir / "party.json", json.dumps(meta).encode())
        self._state_seen = _version(self.state_dir)

    def _load(self) -> None:
        fhe = load_openfhe()
        meta = json.loads((self.state_dir / "party.json").read_text())
        if meta["params"] != self.params.to_dict():
            raise ContextMismatchError(f"the key share in {self.state_dir} was made under other threshold "
                                       f"parameters ({meta['params']}); generate the joint key again")
        self._secret = fhe.DeserializePrivateKeyString((self.state_dir / "secret.bin").read_bytes(), fhe.BINARY)
        joint = (self.state_dir / "joint.bin").read_bytes()
        if joint:
            self._joint, self.joint_bytes, self.key_fp = self._public_key(joint), joint, meta["key"]
        seal_private = (self.state_dir / "seal.bin").read_bytes()
        self.seal_keys = SealKeys(seal_private) if seal_private else None
        self.decrypted_rounds = set(meta["decrypted_rounds"])
        self.held_shares = {int(k): bytes.fromhex(v) for k, v in meta["held_shares"].items()}
        self._state_seen = _version(self.state_dir)


def _version(state_dir: Path) -> tuple | None:
    """Which write of the state folder is on disk (``party.json`` is replaced last on every save)."""
    try:
        st = (state_dir / "party.json").stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_bytes(data)
    tmp.replace(path)


def _encrypt_chunk(chunk: np.ndarray, params: ThresholdParams, joint_bytes: bytes) -> bytes:
    fhe = load_openfhe()
    cc = crypto_context(params)
    key = _cached_public(joint_bytes)
    return fhe.Serialize(cc.Encrypt(key, cc.MakeCKKSPackedPlaintext(chunk)), fhe.BINARY)


def _partial_chunk(blob: bytes, params: ThresholdParams, secret_bytes: bytes) -> bytes:
    """The flooded s_i·c1 of one aggregate ciphertext, switched down to one tower. The aggregate carries only c1
    (the server keeps c0); OpenFHE's ``MultipartyDecryptMain`` reads only the second element, so c1 fills both."""
    fhe = load_openfhe()
    cc = crypto_context(params)
    aggregate = read_ciphertext(blob)
    elements = aggregate.GetElements()
    if len(elements) != 1:
        raise CiphertextError(f"an aggregate ciphertext should carry c1 alone, it has {len(elements)} elements")
    ct = aggregate.Clone()  # (the elements point into ``aggregate``)
    ct.SetElements([elements[0], elements[0]])
    part = cc.MultipartyDecryptMain([ct], _cached_secret(secret_bytes))[0]
    cc.ModReduceInPlace(part)
    return fhe.Serialize(part, fhe.BINARY)



@functools.lru_cache(maxsize=4)
def _cached_public(data: bytes):
    fhe = load_openfhe()
    return fhe.DeserializePublicKeyString(data, fhe.BINARY)


@functools.lru_cache(maxsize=4)
def _cached_secret(data: bytes):
    fhe = load_openfhe()
    return fhe.DeserializePrivateKeyString(data, fhe.BINARY)
