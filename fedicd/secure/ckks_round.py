"""CKKS in a federated round: who holds which key, and what travels in the Flower messages.

Roles
-----
* **Server** (:class:`CkksServer`): loads ``<key_dir>/public.ctx`` only (refuses a context that
  holds a secret key). Each round it sends the *encrypted* global model (the previous round's
  aggregate; round 1 sends the public, seeded initial model in plain text), receives one
  encrypted, example-weighted update per client, checks each (key fingerprint, parameters,
  array layout, digests, residues below the data prime) and adds the valid ones, in threads
  (``workers``). It never sees a model, an update or a count. It refuses an update whose seed it
  has already added (a replay, in this round or an earlier one of this server process).
* **Clients** (:class:`CkksKeyHolder`): load ``secret.ctx`` (the path in node config
  ``ckks-secret-key``; in simulation ``<key_dir>/secret.ctx``), decrypt the global model
  (Σ n_k x_k / Σ n_k), train, and encrypt n_k·x_k (and n_k) for the server.
* **Evaluator** (optional, a :class:`CkksKeyHolder` too): the global model exists in plain text
  only where the secret key is. With ``secure_aggregation.evaluator_key`` set, a key-holding
  evaluator scores it every round on the val/test notes; in the simulation that evaluator lives
  in the ServerApp's process (which can then decrypt: a convenience of the simulation, not of a
  deployment, where it is its own node). Without it the ServerApp never opens a secret context:
  rounds carry only client-side evaluation (``fraction_evaluate``, decrypted on the clients) and
  the experiment driver — the researcher, who holds the clients' key — decrypts the final model.

An update travels as one ``uint8`` array (``EncryptedUpdate.to_bytes``) in the ArrayRecord
``"ckks"``; message sizes therefore count the ciphertext bytes. The aggregate (c0 sums and the
clients' seeds) is about as large as one update.

Entry points: ``CkksServer(key_dir, layout, *, workers=0).aggregate(updates)`` and
``CkksKeyHolder(secret_path, key_dir, *, clip_values=False, workers=0)`` with ``encrypt(arrays,
n_examples)`` and ``decrypt(record, dtypes=None)``; ``workers`` is ``secure_aggregation.workers``.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from fedicd.secure.ckks import aggregate_encrypted, check_header, decrypt_average, encrypt_update
from fedicd.secure.ckks_errors import CiphertextError, ReplayError, SecretKeyError, SecureAggregationError
from fedicd.secure.ckks_keys import key_id, load_context
from fedicd.secure.ckks_params import CkksParams
from fedicd.secure.ckks_seal import data_moduli
from fedicd.secure.ckks_update import EncryptedUpdate
from fedicd.secure.ckks_workers import resolve_workers

__all__ = ["CKKS_RECORD", "CkksServer", "CkksKeyHolder", "write_key_dir", "read_params", "update_record",
           "record_update", "STATE_KEY", "check_key_pair"]

log = logging.getLogger(__name__)

CKKS_RECORD = "ckks"
STATE_KEY = "__ckks_aggregate__"  # the encrypted global model in checkpoints
PARAMS_FILE = "params.json"
_NPY_HEADER_MAX = 4096  # a .npy header is padded to a multiple of 64 bytes; a 1-D array's is far below this


def write_key_dir(directory: str | Path, params: CkksParams | None = None, *, overwrite: bool = False) -> dict:
    """``fedicd keys``: a fresh key pair (``secret.ctx``, ``public.ctx``) and ``params.json`` in ``directory``."""
    from fedicd.secure.ckks_keys import save_keys

    params = params or CkksParams()
    secret, public = save_keys(directory, params, overwrite=overwrite)
    (Path(directory) / PARAMS_FILE).write_text(json.dumps(params.to_dict(), indent=2))
    return {"secret": str(secret), "public": str(public), "params": params.to_dict(),
            "key_id": key_id(load_context(public))}


def check_key_pair(key_dir: str | Path, secret_paths: list[str | Path]) -> str:
    """Refuse a key folder whose ``public.ctx`` and the secret contexts hold different keys; returns the key id.

    Two ``fedicd keys`` calls into one folder (or a secret copied from another folder) leave a server
    that rejects every client's ciphertext as "made under another key": refused here, before any round,
    by comparing the public-key fingerprints (milliseconds).
    """
    from fedicd.errors import ConfigError

    public = Path(key_dir) / "public.ctx"
    if not public.exists():
        raise FileNotFoundError(f"CKKS public context not found: {public} (make the key folder with `fedicd keys`)")
    expected = key_id(load_context(public))
    for path in map(Path, secret_paths):
        if not path.exists():
            raise FileNotFoundError(f"CKKS secret context not found: {path}; the clients (and the evaluator) need it "
                                    f"(make the key folder with `fedicd keys --out {key_dir}`)")
        found = key_id(load_context(path))
        if found != expected:
            raise ConfigError(f"CKKS keys do not match: {path} holds key {found} but {public} holds key {expected} "
                              "(they come from two different `fedicd keys` calls), so the server would reject every "
                              f"client's update; make one fresh pair with `fedicd keys --out {key_dir} --overwrite`")
    return expected


def read_params(key_dir: str | Path) -> CkksParams:
    path = Path(key_dir) / PARAMS_FILE
    if not path.exists():
        raise FileNotFoundError(f"CKKS parameters not found: {path} (make the key folder with `fedicd keys`)")
    return CkksParams(**json.loads(path.read_text()))


def update_record(update: EncryptedUpdate) -> ArrayRecord:
    return ArrayRecord(array_dict={"bytes": Array(np.frombuffer(update.to_bytes(), dtype=np.uint8))})


def record_update(record: ArrayRecord) -> EncryptedUpdate:
    if "bytes" not in record:
        raise SecureAggregationError("the 'ckks' record carries no 'bytes' array")
    return EncryptedUpdate.from_bytes(_payload(record["bytes"]))


def _payload(array: Array) -> bytes | memoryview:
    """The bytes of a 1-D uint8 Flower Array, without copying them out of its .npy serialisation when it is one."""
    data = array.data
    if array.stype == "numpy.ndarray" and isinstance(data, bytes):
        stream = io.BytesIO(data[:_NPY_HEADER_MAX])
        try:
            version = np.lib.format.read_magic(stream)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                     else np.lib.format.read_array_header_2_0)(stream)
        except ValueError:
            shape, dtype = (), None
        if dtype == np.uint8 and len(shape) == 1 and stream.tell() + shape[0] == len(data):
            return memoryview(data)[stream.tell():]
    return array.numpy().tobytes()


class CkksServer:
    """The server's side: the public context, and nothing that can decrypt.

    ``workers``: threads that check and add ciphertexts (0 = every core this process may use).
    """

    def __init__(self, key_dir: str | Path, layout: tuple, *, workers: int = 0):
        path = Path(key_dir) / "public.ctx"
        if not path.exists():
            raise FileNotFoundError(f"CKKS public context not found: {path} (make it with `fedicd keys`)")
        self.context = load_context(path)
        if self.context.is_private():
            raise SecretKeyError(f"{path} holds a secret key; the server must get a public context only "
                                 "(write it with save_secret_key=False, as `fedicd keys` does)")
        self.params = read_params(key_dir)
        self.key = key_id(self.context)
        self.moduli = data_moduli(self.context)
        self.layout = tuple(layout)
        self.workers = resolve_workers(workers)
        self.added_seeds: set[bytes] = set()  # every client seed this server has added: replays are refused

    def aggregate(self, updates: list[tuple[int, ArrayRecord]]) -> tuple[EncryptedUpdate | None, list[dict]]:
        """Check each client's update, add the valid ones; returns (aggregate or None, rejections)."""
        valid, rejected, owners = [], [], {}
        for pid, record in updates:
            try:
                update = record_update(record)
                check_header(update, key=self.key, params=self.params, layout=self.layout, moduli=self.moduli)
                self._check_replay(update, owners)
            except SecureAggregationError as exc:
                self._reject(rejected, pid, exc)
                continue
            owners.update(dict.fromkeys(update.seeds, pid))
            valid.append((pid, update))
        while valid:
            try:
                aggregate = aggregate_encrypted(self.context, [u for _, u in valid], workers=self.workers)
            except CiphertextError as exc:  # corrupted bytes or out-of-range residues: drop that client, add the rest
                if exc.update is None:
                    raise
                self._reject(rejected, valid.pop(exc.update)[0], exc)
                continue
            self.added_seeds.update(aggregate.seeds)
            return aggregate, rejected
        return None, rejected

    def _check_replay(self, update: EncryptedUpdate, owners: dict[bytes, int]) -> None:
        """Refuse a seed this server added before, or one another client's update of this round carries."""
        for seed in update.seeds:
            if seed in self.added_seeds:
                raise ReplayError("its seed was already added in an earlier round (a replayed update)")
            if seed in owners:
                raise ReplayError(f"it carries the seed of client {owners[seed]}'s update of this round (a replayed "
                                  "or duplicated update)")

    @staticmethod
    def _reject(rejected: list[dict], pid: int, exc: Exception) -> None:
        rejected.append({"partition-id": pid, "reason": f"{type(exc).__name__}: {exc}"})
        log.warning("client %d: encrypted update rejected: %s", pid, exc)


class CkksKeyHolder:
    """A party with the secret key: a client, or the evaluator."""

    def __init__(self, secret_path: str | Path, key_dir: str | Path, *, clip_values: bool = False, workers: int = 0):
        path = Path(secret_path)
        if not path.exists():
            raise FileNotFoundError(f"CKKS secret context not found: {path}; this node cannot take part in a "
                                    "CKKS run without the clients' key")
        self.context = load_context(path)
        if not self.context.is_private():
            raise SecretKeyError(f"{path} holds no secret key (it is a public context); clients and the evaluator "
                                 "need secret.ctx")
        self.params = read_params(key_dir)
        self.clip_values = clip_values
        self.workers = resolve_workers(workers)  # processes that encrypt/decrypt ranges of ciphertexts (0 = every core)

    def decrypt(self, record: ArrayRecord, dtypes: dict[str, np.dtype] | None = None) -> dict[str, np.ndarray]:
        """The global model: the weighted average, cast back to the model's dtypes (float32 by default)."""
        avg, _ = decrypt_average(self.context, record_update(record), self.params, workers=self.workers)
        dtypes = dtypes or {}
        out = {}
        for name, value in avg.items():
            dt = np.dtype(dtypes.get(name, np.float32))
            out[name] = (np.rint(value) if dt.kind in "iu" else value).astype(dt)
        return out

    def encrypt(self, arrays: dict[str, np.ndarray], n_examples: int) -> tuple[ArrayRecord, int]:
        """n_k·x_k encrypted (integer arrays such as BatchNorm counters as floats); returns (record, clipped)."""
        floats = {k: np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind in "iub" else v
                  for k, v in arrays.items()}
        update = encrypt_update(self.context, floats, int(n_examples), self.params, clip=self.clip_values,
                                workers=self.workers)
        return update_record(update), update.n_clipped
