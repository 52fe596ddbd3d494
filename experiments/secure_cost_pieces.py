"""The mechanisms' cryptographic pieces for ``experiments/bench_secure_cost.py``, one thin adapter each.

:class:`CkksPieces` calls shared-key CKKS's entry points (:mod:`fedicd.secure.ckks_round`), :class:`ThresholdPieces`
threshold CKKS's parties and server (:mod:`fedicd.secure.threshold`); :func:`time_pieces` times a round's worth of
them at the paper's client count and checks the decrypted average against the plain one. Where the library's calls
change shape, only these adapters change.
"""

from __future__ import annotations

import importlib
import inspect
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

__all__ = ["Unavailable", "CkksPieces", "ThresholdPieces", "PIECES", "time_pieces", "ckks_keys"]


class Unavailable(RuntimeError):
    """A mechanism cannot run here (a missing package or round code); the message says what is missing."""


def ckks_keys(work: Path) -> Path:
    """One shared-key CKKS key folder per benchmark run (``<work>/ckks-keys``), made on first use."""
    from fedicd.secure.ckks_round import write_key_dir

    keys = work / "ckks-keys"
    if not (keys / "secret.ctx").exists():
        write_key_dir(keys)
    return keys


class CkksPieces:
    """Shared-key CKKS through its entry points (:mod:`fedicd.secure.ckks_round`); one exchange per round."""

    exchanges = 1

    def __init__(self, arrays: dict[str, np.ndarray], args, work: Path) -> None:
        from fedicd.secure.ckks_round import CkksKeyHolder, CkksServer

        keys = ckks_keys(work)
        self.holder = with_workers(CkksKeyHolder, keys / "secret.ctx", keys, workers=args.threads)
        self.server = with_workers(CkksServer, keys, tuple((k, tuple(int(s) for s in v.shape))
                                                           for k, v in arrays.items()), workers=args.threads)

    def encrypt(self, party: int, arrays: dict[str, np.ndarray], n: int):
        return self.holder.encrypt(arrays, n)[0]

    def aggregate(self, uploads: list):
        aggregate, rejected = self.server.aggregate(list(enumerate(uploads)))
        if aggregate is None or rejected:
            raise RuntimeError(f"the CKKS server refused the benchmark's uploads: {rejected}")
        from fedicd.secure.ckks_round import update_record

        return update_record(aggregate)

    def decrypt_share(self, party: int, aggregate):  # every client decrypts the global model itself
        return self.holder.decrypt(aggregate)

    def fuse(self, aggregate, shares: list):
        return shares[0]

    @staticmethod
    def size(obj) -> int:
        return int(obj["bytes"].numpy().nbytes)


class ThresholdPieces:
    """Threshold CKKS (:mod:`fedicd.secure.threshold`): the parties make the joint key (once per run), each encrypts,
    the server adds, every key holder partially decrypts, the server fuses (two exchanges per round).

    The library's calls are all here, in :meth:`_call`; :class:`Unavailable` when OpenFHE or the module is missing.
    """

    exchanges = 2
    ROUND = 1  # the round every envelope is tagged for (a party decrypts one aggregate per round)

    def __init__(self, arrays: dict[str, np.ndarray], args, work: Path) -> None:
        try:
            import openfhe  # noqa: F401
        except Exception as exc:  # ImportError, or a broken native library
            raise Unavailable(f"openfhe not importable: {exc}") from exc
        try:
            lib = {m: importlib.import_module(f"fedicd.secure.threshold.{m}")
                   for m in ("messages", "packing", "party", "server")}
        except ImportError as exc:
            raise Unavailable(f"fedicd.secure.threshold not importable: {exc}") from exc
        wanted = (("messages", "threshold_params"), ("packing", "Layout"), ("party", "ThresholdParty"),
                  ("server", "ThresholdServer"))
        missing = [f"{m}.{name}" for m, name in wanted if not hasattr(lib[m], name)]
        if missing:
            raise Unavailable(f"fedicd.secure.threshold lacks {missing}: plug the library's calls into "
                              "ThresholdPieces._call (experiments/bench_secure_cost.py)")
        self.lib, self.workers = SimpleNamespace(**lib), args.threads
        self._call("setup", args.paper_clients, args.paper_rows, arrays)

    def _call(self, step: str, *args):
        """Plug-in point: each step's call into the library (``self.lib``: its modules by name)."""
        lib, rnd = self.lib, self.ROUND
        if step == "setup":  # the key chain, as the round code runs it in its first round
            n, largest, arrays = args
            params = lib.messages.threshold_params(n, largest)
            self.parties = [lib.party.ThresholdParty(params, i, workers=self.workers) for i in range(n)]
            self.server, link = lib.server.ThresholdServer(params, lib.packing.Layout.of(arrays)), None
            for party in self.parties:
                link = party.keygen(link)
                self.server.add_link(party.party_id, link)
            for party in self.parties:
                party.accept_joint_key(self.server.joint_envelope, self.server.key_fp)
            return None
        if step == "encrypt":
            pid, arrays, n = args
            return self.parties[pid].encrypt(arrays, n, round=rnd, layout=self.server.layout)[0]
        if step == "aggregate":
            aggregate, rejected = self.server.add(list(enumerate(args[0])), round=rnd)
            if aggregate is None or rejected:
                raise RuntimeError(f"the threshold server refused the benchmark's uploads: {rejected}")
            return aggregate
        if step == "partial_decrypt":
            pid, aggregate = args
            return self.parties[pid].partial_decrypt(aggregate, round=rnd)
        aggregate, shares = args  # fuse
        return self.server.fuse(aggregate, dict(enumerate(shares)), round=rnd)

    def encrypt(self, party, arrays, n):
        return self._call("encrypt", party, arrays, n)

    def aggregate(self, uploads):
        return self._call("aggregate", uploads)

    def decrypt_share(self, party, aggregate):
        return self._call("partial_decrypt", party, aggregate)

    def fuse(self, aggregate, shares):
        return self._call("fuse", aggregate, shares)

    @staticmethod
    def size(obj) -> int:
        return len(obj)


PIECES = {"ckks": CkksPieces, "ckks-threshold": ThresholdPieces}


def with_workers(cls, *args, workers: int):
    """``cls(*args, workers=workers)`` where ``cls`` takes ``workers`` (processes for the crypto), else
    ``cls(*args)``."""
    takes = "workers" in inspect.signature(cls).parameters
    return cls(*args, workers=workers) if takes else cls(*args)


def time_pieces(mechanism: str, arrays: dict[str, np.ndarray], args, work: Path) -> dict:
    """Every one of ``--paper-clients`` parties encrypts its own update, the server adds them, every party decrypts
    (or partially decrypts, and the server fuses); the result is checked against the plain weighted mean."""
    t0 = time.perf_counter()
    adapter = PIECES[mechanism](arrays, args, work)
    setup_s = time.perf_counter() - t0
    rng, n = np.random.default_rng(1), args.paper_clients
    parties = [{k: v + 0.01 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in arrays.items()}
               for _ in range(n)]
    counts = [args.paper_rows + i for i in range(n)]
    warmup, _ = timed_calls(adapter.encrypt, [(0, parties[0], counts[0])])  # worker processes start; not sent
    enc, uploads = timed_calls(adapter.encrypt, [(p, parties[p], counts[p]) for p in range(n)])
    add, (aggregate,) = timed_calls(adapter.aggregate, [(uploads,)])
    dec, shares = timed_calls(adapter.decrypt_share, [(p, aggregate) for p in range(n)])
    fuse, (average,) = timed_calls(adapter.fuse, [(aggregate, shares)])
    expected = {k: sum(c * p[k].astype(np.float64) for c, p in zip(counts, parties)) / sum(counts) for k in arrays}
    return {"setup_s": setup_s, "warmup_encrypt_s": warmup[0], "encrypt_s": enc, "add_s": add[0],
            "decrypt_share_s": dec, "fuse_s": fuse[0],
            "client_s": max(enc) + max(dec), "server_s": add[0] + fuse[0], "exchanges": adapter.exchanges,
            "upload_bytes": adapter.size(uploads[0]) + (adapter.size(shares[0]) if adapter.exchanges > 1 else 0),
            "aggregate_bytes": adapter.size(aggregate), "parties": n,
            "max_abs_error": max(float(np.abs(np.asarray(average[k], np.float64) - expected[k]).max())
                                 for k in arrays)}


def timed_calls(fn, calls: list[tuple]) -> tuple[list[float], list]:
    seconds, results = [], []
    for call in calls:
        t0 = time.perf_counter()
        results.append(fn(*call))
        seconds.append(time.perf_counter() - t0)
    return seconds, results
