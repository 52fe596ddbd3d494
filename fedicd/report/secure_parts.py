"""The two part benchmarks of secure aggregation on the cost page, as Markdown sections.

* ``experiments/results/secure/ckks_fast_path.json`` (``experiments/bench_secure_aggregation.py --server-only``):
  shared-key CKKS's client encryption, server addition and decryption of 10 updates, before and after the
  in-memory server path, per worker count, with the ratios measured in one run;
* ``experiments/results/secure/threshold_ckks.json`` (``experiments/bench_threshold_ckks.py``): threshold CKKS's
  pieces per model size and client count, with the measured decryption error against its bound.

Each section is left out when its file is absent; a file that is there but lacks an entry the table needs raises
:class:`SecureCostRecordError` naming the file and the entry (the cost page's error too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedicd.report.tables import Table

__all__ = ["fast_path_section", "threshold_section", "SecureCostRecordError", "FAST_PATH", "THRESHOLD"]

FAST_PATH = "ckks_fast_path.json"
THRESHOLD = "threshold_ckks.json"


class SecureCostRecordError(ValueError):
    """A secure-aggregation benchmark record cannot be read: not JSON, or a required entry is missing."""


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SecureCostRecordError(f"{path} is not JSON ({exc})") from exc


def _need(doc: dict, path: Path, *keys: str) -> Any:
    value: Any = doc
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise SecureCostRecordError(f"{path} lacks {'.'.join(keys)}")
        value = value[key]
    return value


def fast_path_section(folder: str | Path) -> list[str]:
    """Markdown lines: shared-key CKKS before and after the in-memory server path (empty without the file)."""
    path = Path(folder) / FAST_PATH
    if not path.exists():
        return []
    doc = _read(path)
    rows = []
    for label in ("before", "after"):
        for r in _need(doc, path, label, "rows"):
            rows.append([label, r["workers"], r["clients"], r["params"], r["encrypt_seconds_per_client"],
                         r["aggregate_seconds"], r["decrypt_seconds"], r["upload_vs_fp32"], r["download_vs_fp32"],
                         r["max_abs_error"]])
    table = Table("ckks fast path", ["code", "workers", "clients", "parameters", "encrypt s / client",
                                     "server add s", "decrypt s", "up ×fp32", "down ×fp32", "max error"], rows)
    ratios = [f"{r['workers']} worker(s): server addition {r['aggregate_seconds']:.1f}× faster, download "
              f"{r['download_bytes_per_client']:.2f}× smaller"
              for r in _need(doc, path, "ratios_before_over_after")]
    return ["## Shared-key CKKS: the server's addition", "",
            "Before: SEAL loads and saves every ciphertext through a file, one at a time, and the aggregate comes "
            "back without seeds. After: the server adds the clients' non-random halves in memory (NumPy threads) "
            "and forwards their seeds; clients encrypt and decrypt in worker processes. Seconds are the least of "
            f"the repeats; before/after in one run (`{_need(doc, path, 'command')}`).", "",
            table.to_markdown(), "", "Ratios (before / after): " + "; ".join(ratios) + ".", ""]


def threshold_section(folder: str | Path, run: str = "after") -> list[str]:
    """Markdown lines: threshold CKKS's pieces from run ``run`` of the file (empty without the file)."""
    path = Path(folder) / THRESHOLD
    if not path.exists():
        return []
    doc = _read(path)
    record = _need(doc, path, "runs", run)
    rows = [[r["size"], r["clients"], r["encrypt_s"], r["partial_decrypt_s"], r["add_s"]["1"], r["fuse_s"]["1"],
             r["x_fp32"]["up_update"], r["x_fp32"]["up_partial"], r["x_fp32"]["down_aggregate"], r["max_error"],
             r["error_bound"]] for r in _need(record, path, "rows")]
    table = Table("threshold pieces", ["parameters", "clients", "encrypt s", "partial decrypt s", "server add s",
                                       "fuse s", "up: update ×fp32", "up: partial ×fp32", "down ×fp32",
                                       "max error (integers)", "bound"], rows)
    return ["## Threshold CKKS: the pieces", "",
            "One party's encryption and partial decryption, the server's addition and fusion (one process), and "
            "the bytes, per model size and client count. The error is the fused sums' largest distance from the "
            "exact integers, against the bound the parameters are checked with (refused from 1/4 on; below 1/2 the rounding back to integers is exact). "
            f"OpenFHE {record.get('openfhe', '?')}, Python {record.get('python', '?')}; "
            f"`{record.get('command', 'python experiments/bench_threshold_ckks.py')}`.", "", table.to_markdown(), ""]
