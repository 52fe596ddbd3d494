"""The server of threshold CKKS: it chains the key generation, adds ciphertexts and fuses partial decryptions.

It holds only public material (the key chain, ciphertexts, partial decryptions). It adds the updates of a round
under the joint key (``EvalAdd``) after checking each envelope (context, joint key, round, sender, layout; a
tag already seen is a replay), asks the key holders for partial decryptions of that one aggregate, and fuses
them with the aggregate's own first element c0: c0 + Σ_i s_i·c1 + flooding = the integer sums (times 2^k).
What the holders need is c1 alone, so the aggregate they receive carries only c1 (half the bytes); the server
keeps c0, switched down to one tower like the partial decryptions (see :mod:`~fedicd.secure.threshold.params`). Without every
holder's part (or, with a threshold, the recovered parts of the missing holders), the fused values are far from
integers and are refused: the server alone, or with fewer than t colluding holders, cannot decrypt.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from fedicd.secure.ckks_errors import CiphertextError, LayoutError
from fedicd.secure.threshold.backend import crypto_context, dropped_prime, load_openfhe, read_ciphertext
from fedicd.secure.threshold.envelope import Envelope, Tag, key_fingerprint
from fedicd.secure.threshold.errors import KeyGenerationError, QuorumError, ThresholdConfigError
from fedicd.secure.threshold.packing import Layout, average, from_complex_chunks, integer_sums
from fedicd.secure.threshold.parallel import map_chunks
from fedicd.secure.threshold.params import ThresholdParams

__all__ = ["ThresholdServer", "check_threshold"]


def check_threshold(threshold: int, n_parties: int) -> int:
    """The number of partial decryptions needed: ``threshold`` (0 = all ``n_parties``); refused above n."""
    if threshold > n_parties:
        raise ThresholdConfigError(f"secure_aggregation.threshold = {threshold} exceeds the {n_parties} key holders "
                                   f"(clients): at most {n_parties} partial decryptions can ever arrive")
    if threshold == 1 and n_parties > 1:
        raise ThresholdConfigError("secure_aggregation.threshold = 1 would let any single client decrypt every "
                                   "update; use 0 (every key holder) or at least 2")
    return threshold or n_parties


class ThresholdServer:
    """The aggregator's cryptographic side for ``layout`` (the model's arrays); ``workers`` processes add and
    fuse the ciphertexts (0 = every core). One (in this process) is the fastest measured: an addition costs less
    than shipping its ciphertexts to another process (``experiments/bench_threshold_ckks.py``)."""

    def __init__(self, params: ThresholdParams, layout: Layout, *, workers: int = 1) -> None:
        self.params, self.layout, self.workers = params, layout, workers
        self.cc = crypto_context(params)
        self.chain: list[tuple[int, bytes]] = []  # (party id, public-key envelope) in key-generation order
        self.joint_envelope = b""
        self.key_fp = ""
        self.seen: set[tuple] = set()
        self.last_parties: list[int] = []  # the parties summed in the last aggregate
        self.last_total = 0.0  # the decrypted total example count of the last fused aggregate
        self.last_residual = 0.0  # its largest distance from an integer sum
        self._c0: OrderedDict[str, tuple[bytes, ...]] = OrderedDict()  # aggregate payload digest -> its c0s

    # -- key generation ---------------------------------------------------------------------
    @property
    def holders(self) -> list[int]:
        """The key holders' party ids, in chain order."""
        return [pid for pid, _ in self.chain]

    def add_link(self, party_id: int, envelope: bytes) -> None:
        """Record party ``party_id``'s public key; the last link is the joint key."""
        env = Envelope.from_bytes(envelope, kind="public-key", context=self.params.fingerprint)
        if env.tag.sender != party_id:
            raise CiphertextError(f"a public key from party {env.tag.sender} arrived as party {party_id}'s")
        if len(self.chain) >= self.params.max_clients:
            raise ThresholdConfigError(f"more than max_clients={self.params.max_clients} key holders")
        self.chain.append((party_id, envelope))
        self.joint_envelope, self.key_fp = envelope, key_fingerprint(env.blobs[0])

    @property
    def last_link(self) -> bytes | None:
        return self.chain[-1][1] if self.chain else None

    def restore(self, chain: list[tuple[int, bytes]]) -> None:
        """Take the key chain of an earlier run (a resumed run keeps its joint key)."""
        self.chain, self.joint_envelope, self.key_fp = [], b"", ""
        for pid, env in chain:
            self.add_link(pid, env)

    # -- aggregation ------------------------------------------------------------------------
    def check_update(self, party_id: int, data: bytes, round: int) -> Envelope:
        """Refuse an update that is corrupted, under another context or key, for another round, from another
        sender, for another model, or seen before (a replay)."""
        env = Envelope.from_bytes(data, kind="update", context=self.params.fingerprint)
        tag = env.tag
        if not self.key_fp:
            raise KeyGenerationError("the server has no joint key: run the key generation first")
        if tag.key != self.key_fp:
            raise CiphertextError(f"update of party {party_id} is encrypted under key {tag.key}, not the joint key "
                                  f"{self.key_fp}")
        if tag.round != round:
            raise CiphertextError(f"update of party {party_id} is tagged for round {tag.round}, not {round} "
                                  "(a replay of an earlier round's update)")
        if tag.sender != party_id:
            raise CiphertextError(f"update tagged as party {tag.sender}'s arrived from party {party_id}")
        if tag.layout != self.layout.digest or len(env.blobs) != self.layout.n_ciphertexts(self.params):
            raise LayoutError(f"update of party {party_id} has another model layout than the server's")
        key = (tag.key, tag.round, tag.sender, tag.kind)
        if key in self.seen:
            raise CiphertextError(f"update of party {party_id} for round {round} was already received (replayed)")
        self.seen.add(key)
        return env

    def add(self, updates: list[tuple[int, bytes]], *, round: int) -> tuple[bytes | None, list[dict]]:
        """The encrypted sum of the acceptable ``updates`` ((party id, envelope) pairs) and the refused ones
        (``{"partition-id", "reason"}``). None when no update is acceptable.

        Each update is checked whole first (tag, digest, and OpenFHE's key tag of its first ciphertext: the digest
        covers the rest), then the ciphertexts are added column by column over ``workers`` processes. The
        returned aggregate (for the key holders) carries each sum's c1; its c0 stays here for :meth:`fuse`.
        """
        accepted, rejected = [], []
        for pid, data in updates:
            try:
                env = self.check_update(pid, data, round)
                self._under_joint_key(env.blobs[0], pid)
                accepted.append(env)
            except (CiphertextError, LayoutError, ValueError) as exc:
                rejected.append({"partition-id": pid, "reason": f"{type(exc).__name__}: {exc}"})
        self.last_parties = [env.tag.sender for env in accepted]
        if not accepted:
            return None, rejected
        columns = [tuple(env.blobs[i] for env in accepted) for i in range(len(accepted[0].blobs))]
        sums = map_chunks(_sum_column, columns, (self.params,), self.workers)
        tag = Tag("aggregate", self.params.fingerprint, self.key_fp, round, -1, self.layout.digest)
        c1s = tuple(c1 for c1, _ in sums)
        self._c0[_digest(c1s)] = tuple(c0 for _, c0 in sums)
        while len(self._c0) > _KEPT_AGGREGATES:
            self._c0.popitem(last=False)
        return Envelope(tag, c1s, {"parties": self.last_parties}).to_bytes(), rejected

    # -- decryption -------------------------------------------------------------------------
    def fuse(self, aggregate: bytes, parts: Mapping[int, bytes], *, round: int, threshold: int = 0
             ) -> dict[str, np.ndarray]:
        """The plain average from the aggregate and the holders' partial decryptions (holder id → envelope).

        Every key holder's part is needed (recovered parts of missing holders included, see
        :meth:`ThresholdParty.recover_partials`); fewer raise :class:`QuorumError`.
        """
        agg = Envelope.from_bytes(aggregate, kind="aggregate", context=self.params.fingerprint)
        missing = sorted(set(self.holders) - set(parts))
        if missing:
            need = check_threshold(threshold, len(self.holders))
            raise QuorumError(f"round {round}: partial decryptions of key holders {missing} are missing "
                              f"({len(parts)} of {len(self.holders)} arrived, {need} needed"
                              + (" and the missing holders' keys were not recovered)" if need < len(self.holders)
                                 else ")") + "; the round ends without an update")
        envelopes = []
        for holder in self.holders:
            env = Envelope.from_bytes(parts[holder], kind="partial", context=self.params.fingerprint)
            if env.tag.key != self.key_fp or env.tag.round != round or env.tag.layout != agg.tag.layout:
                raise CiphertextError(f"partial decryption for holder {holder} is for key {env.tag.key}, round "
                                      f"{env.tag.round}, not this round's aggregate (replayed or misdirected)")
            if env.extra.get("for") != [holder]:
                raise CiphertextError(f"the partial decryption given for holder {holder} was made for "
                                      f"{env.extra.get('for')}")
            envelopes.append(env)
        sums = self.fused_sums(agg, envelopes)
        self.last_total = float(sums[self.layout.size])
        return average(sums, self.layout, self.params)

    def _under_joint_key(self, blob: bytes, pid: int):
        """A ciphertext of party ``pid``'s update, refused unless OpenFHE's key tag is the joint key's."""
        ct = read_ciphertext(blob)
        if ct.GetKeyTag() != self.joint_tag:
            raise CiphertextError(f"update of party {pid} holds a ciphertext under another public key than the "
                                  "joint key")
        return ct

    @property
    def joint_tag(self) -> str:
        if not self.key_fp:
            raise KeyGenerationError("the server has no joint key: run the key generation first")
        if getattr(self, "_tag_of", None) != self.key_fp:
            fhe = load_openfhe()
            blob = Envelope.from_bytes(self.joint_envelope, kind="public-key", context=self.params.fingerprint).blobs[0]
            self._joint_tag, self._tag_of = fhe.DeserializePublicKeyString(blob, fhe.BINARY).GetKeyTag(), self.key_fp
        return self._joint_tag

    def fused_sums(self, agg: Envelope, parts: list[Envelope]) -> np.ndarray:
        """The integer sums from c0 and whatever ``parts`` are given (no quorum check: a test shows here that
        too few parts give values that are refused, not a model)."""
        for env in parts:
            if len(env.blobs) != len(agg.blobs):
                raise LayoutError(f"a partial decryption from party {env.tag.sender} has {len(env.blobs)} "
                                  f"ciphertexts, the aggregate {len(agg.blobs)}")
        c0s = self._c0.get(_digest(agg.blobs))
        if c0s is None:
            raise CiphertextError("this aggregate was not made by this server (its c0 is unknown here): fuse the "
                                  "aggregate that this server's add() returned")
        columns = [(c0, *(env.blobs[i] for env in parts)) for i, c0 in enumerate(c0s)]
        chunks = map_chunks(_fuse_column, columns, (self.params,), self.workers)
        # the switched plaintext decodes to Σu·2^k/q1 (see fedicd.secure.threshold.params)
        factor = dropped_prime(self.params) * 2.0**-self.params.shift_bits
        values = from_complex_chunks(chunks, self.layout.size + 1) * factor
        self.last_residual = float(np.max(np.abs(values - np.rint(values))))  # the measured decryption error
        tolerance = self.params.error_bound(max(1, len(parts)))
        return integer_sums(values, tolerance, self.params.sum_bound + tolerance)


_KEPT_AGGREGATES = 4  # c0s of the last aggregates (a round fuses its own; a few spare for retried stages)


def _digest(blobs: tuple[bytes, ...]) -> str:
    h = hashlib.sha256()
    for blob in blobs:
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()


def _sum_column(blobs: tuple[bytes, ...], params: ThresholdParams) -> tuple[bytes, bytes]:
    """The sum of one ciphertext position over the accepted updates, serialized as (c1 for the key holders,
    c0 switched down to one tower for the fusion), each a one-element ciphertext."""
    fhe = load_openfhe()
    cc = crypto_context(params)
    total = read_ciphertext(blobs[0])
    for blob in blobs[1:]:
        cc.EvalAddInPlace(total, read_ciphertext(blob))
    # the elements the bindings return point into ``total``: copy both out before replacing anything
    c0, c1 = total.Clone(), total.Clone()
    elements = total.GetElements()
    c0.SetElements([elements[0]])
    c1.SetElements([elements[1]])
    cc.ModReduceInPlace(c0)
    return fhe.Serialize(c1, fhe.BINARY), fhe.Serialize(c0, fhe.BINARY)


def _fuse_column(blobs: tuple[bytes, ...], params: ThresholdParams) -> np.ndarray:
    """The decoded complex values of one aggregate's c0 (``blobs[0]``, one tower) fused with its partial
    decryptions: c0 is the server's own term (every holder runs the "main" step)."""
    cc = crypto_context(params)
    try:
        pt = cc.MultipartyDecryptFusion([read_ciphertext(b) for b in blobs])
    except RuntimeError as exc:
        raise CiphertextError(f"fusing the partial decryptions failed: {exc}") from exc
    return _values(pt, params.ring_dimension // 2)


def _values(pt, slots: int) -> np.ndarray:
    """The complex slot values of a fused plaintext (a CiphertextError when OpenFHE's decoder refuses them)."""
    try:
        pt.SetLength(slots)
        return np.asarray(pt.GetCKKSPackedValue(), dtype=np.complex128)
    except RuntimeError as exc:
        raise CiphertextError(f"the fused plaintext does not decode ({exc}): a partial decryption is missing, "
                              "foreign or corrupted") from exc


