"""The threshold-CKKS stages as Flower messages: what the server sends and how a client answers.

Every stage is one ``query.threshold`` message (the ClientApps register ``@app.query("threshold")``) with a
``"threshold"`` ConfigRecord naming the stage and an ArrayRecord of byte blobs (``"blobs"``):

========  ===========================================  ==============================================
stage      the server sends                              the client replies
========  ===========================================  ==============================================
status     —                                             its partition id and joint-key fingerprint
keygen     the previous public key (none for the first)  its public key (chain link), its sealing key
joint      the joint key, threshold, sealing keys        (t of n) its key's shares, sealed per holder
hold       the shares sealed for this client             —
decrypt    the round's aggregate                         its partial decryption
reseal     missing holders, the recovering holder        its shares of their keys, sealed for it
recover    the aggregate, the resealed shares            partial decryptions for the missing holders
========  ===========================================  ==============================================

Flower-only (no torch): the client's model codec lives in :mod:`fedicd.secure.round_threshold`.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedicd.secure.threshold.errors import ThresholdConfigError, ThresholdError
from fedicd.secure.threshold.params import ThresholdParams
from fedicd.secure.threshold.party import ThresholdParty

__all__ = ["MESSAGE_TYPE", "UPDATE_RECORD", "threshold_params", "request", "blobs_of", "answer"]

MESSAGE_TYPE = "query.threshold"
UPDATE_RECORD = "threshold-update"


def threshold_params(n_clients: int, largest_client: int) -> ThresholdParams:
    """The parameters of a run with ``n_clients`` key holders whose largest client holds ``largest_client``
    examples: 128-bit N = 8192, max_count the next power of two (≥ 2^10), and the most fraction bits (≤ 20)
    that keep the integer sums exact. Derived from the plan, so every party computes the same ones."""
    max_count = max(2**10, 2 ** math.ceil(math.log2(max(1, largest_client))))
    clients = max(2, n_clients)
    last = None
    for bits in range(20, 7, -1):
        try:
            return ThresholdParams(max_clients=clients, max_count=max_count, frac_bits=bits)
        except ThresholdConfigError as exc:
            last = exc
    raise ThresholdConfigError(f"no threshold-CKKS parameters for {n_clients} clients of up to {largest_client} "
                               f"examples keep 8 fraction bits exact: {last}")


def request(stage: str, config: dict | None = None, blobs: dict[str, bytes] | None = None) -> RecordDict:
    """The content of a stage message."""
    content = RecordDict({"threshold": ConfigRecord({"stage": stage, **(config or {})})})
    if blobs:
        content["blobs"] = ArrayRecord(array_dict={k: Array(np.frombuffer(v, dtype=np.uint8).copy())
                                                   for k, v in blobs.items()})
    return content


def blobs_of(content: RecordDict) -> dict[str, bytes]:
    """The byte blobs of a stage message or reply."""
    if "blobs" not in content.array_records:
        return {}
    return {k: v.numpy().tobytes() for k, v in content["blobs"].items()}


def _publics(config) -> dict[int, bytes]:
    return {int(k.split("-", 1)[1]): bytes(v) for k, v in config.items() if k.startswith("seal-")}


def answer(party: ThresholdParty, content: RecordDict) -> RecordDict:
    """A client's reply to a stage message (see the module's table)."""
    config = content["threshold"]
    stage, blobs, pid = str(config["stage"]), blobs_of(content), party.party_id
    if stage == "status":
        return request("status", {"partition-id": pid, "key": party.key_fp if party.has_key else ""})
    if stage == "keygen":
        link = party.keygen(blobs.get("previous"))
        return request("keygen", {"partition-id": pid, "seal-public": party.seal_public()}, {"link": link})
    if stage == "joint":
        party.accept_joint_key(blobs["joint"], str(config["key"]))
        n, t = int(config["n"]), int(config["threshold"])
        if not 1 < t < n:
            return request("joint", {"partition-id": pid})
        sealed = party.share_key(t, n, _publics(config))
        return request("joint", {"partition-id": pid}, {f"share-{h}": b for h, b in sealed.items()})
    if stage == "hold":
        sealed = {int(k.split("-", 1)[1]): v for k, v in blobs.items()}
        party.hold_shares(sealed, _publics(config))
        return request("hold", {"partition-id": pid})
    if stage not in ("decrypt", "reseal", "recover"):
        raise ThresholdError(f"unknown threshold-CKKS stage {stage!r} (a client of another fedicd version?); known: "
                             "status, keygen, joint, hold, decrypt, reseal, recover")
    rnd = int(config["round"])
    if stage == "decrypt":
        return request("decrypt", {"partition-id": pid}, {"partial": party.partial_decrypt(blobs["aggregate"],
                                                                                             round=rnd)})
    if stage == "reseal":
        missing = [int(m) for m in config["missing"]]
        sealed = party.reseal_shares(missing, int(config["recipient"]), bytes(config["recipient-public"]))
        return request("reseal", {"partition-id": pid}, {f"of-{o}": b for o, b in sealed.items()})
    if stage == "recover":
        shares: dict[int, dict[int, bytes]] = {}
        for key, value in blobs.items():
            if key.startswith("share-"):
                _, owner, holder = key.split("-")
                shares.setdefault(int(owner), {})[int(holder)] = value
        parts = party.recover_partials(blobs["aggregate"], shares, _publics(config), round=rnd,
                                       n_parties=int(config["n"]), threshold=int(config["threshold"]))
        return request("recover", {"partition-id": pid}, {f"for-{o}": b for o, b in parts.items()})
    raise ValueError(f"unknown threshold-CKKS stage {stage!r}")
