"""Named numpy arrays ↔ Flower ArrayRecords, and message sizes.

A Flower :class:`~flwr.app.Array` holds its array as the bytes of an ``.npy`` file (``np.save``'s output).
Flower's own converters go through ``np.save`` into a ``BytesIO`` (two copies of the data, then ``getvalue``)
and ``np.load`` from one (the header parsed by ``ast.literal_eval`` every time, two more copies). A model
crosses this boundary ~50 times per round of a 20-client run (global model out, updates back, client
evaluation), so :func:`encode_array` writes the same bytes with one copy (the header cached per dtype and
shape) and :func:`decode_array` reads them with at most one (the parsed header cached per header), or none
(``copy=False``: a read-only view of the message's bytes). The bytes and the arrays are exactly Flower's:
``decode_array(a)`` equals ``a.numpy()`` bit for bit, and ``encode_array(x).data`` equals ``Array(x).data``
(tests/federated/test_records.py). Anything unusual (object arrays, an ``.npy`` version other than 1.0/2.0,
a truncated buffer) takes Flower's path, so its errors are Flower's.

Privacy: nothing here changes what a message carries; only how many times this process copies it.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.common.constant import SType

__all__ = ["to_record", "from_record", "encode_array", "decode_array", "message_bytes"]

_MAGIC = b"\x93NUMPY"


def to_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord keeping the array names (e.g. a model's state_dict keys), in C order (a 0-d array travels as
    shape ``(1,)``, as ``np.ascontiguousarray`` makes it)."""
    return ArrayRecord(array_dict={k: encode_array(v) for k, v in arrays.items()})


def from_record(record: ArrayRecord, *, copy: bool = True) -> dict[str, np.ndarray]:
    """The record's arrays by name: writable copies, or (``copy=False``) read-only views of the message's bytes
    (for a reader that copies them anyway, e.g. ``Module.load_state_dict``)."""
    return {k: decode_array(v, copy=copy) for k, v in record.items()}


def encode_array(value: np.ndarray) -> Array:
    """``Array(np.ascontiguousarray(value))`` with one copy of the data: the same ``.npy`` bytes as ``np.save``
    (``np.ascontiguousarray`` makes a 0-d array 1-D)."""
    a = np.ascontiguousarray(value)
    if a.dtype.hasobject:
        return Array(a)  # np.save refuses object arrays without pickle: Flower's error
    header = _npy_header(a.dtype, tuple(int(s) for s in a.shape))
    if header is None:
        return Array(a)
    data = b"".join((header, a.reshape(-1).view(np.uint8)))
    return Array(dtype=str(a.dtype), shape=tuple(int(s) for s in a.shape), stype=SType.NUMPY, data=data)


def decode_array(array: Array, *, copy: bool = True) -> np.ndarray:
    """``array.numpy()`` (same values, dtype, shape and memory order) with at most one copy; ``copy=False``: a
    read-only view of ``array.data``."""
    if array.stype != SType.NUMPY:
        return array.numpy()  # Flower's TypeError
    data = array.data
    parsed = _parse_header(bytes(data[:_header_end(data)])) if data[:6] == _MAGIC else None
    if parsed is None:
        return array.numpy()
    offset, dtype, fortran, shape = parsed
    count = math.prod(shape)
    if dtype.hasobject or len(data) != offset + count * dtype.itemsize:
        return array.numpy()
    view = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
    return np.array(view, copy=True, order="K") if copy else view


def _header_end(data: bytes) -> int:
    """Length of the magic, version, header-length field and header of ``.npy`` bytes (0 when unreadable)."""
    if len(data) < 10:
        return 0
    major = data[6]
    if major == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    if major == 2 and len(data) >= 12:
        return 12 + int.from_bytes(data[8:12], "little")
    return 0  # version 3.0 (utf-8 field names) and unknown versions: Flower's path


@functools.lru_cache(maxsize=256)
def _parse_header(header: bytes) -> tuple[int, np.dtype, bool, tuple[int, ...]] | None:
    """(data offset, dtype, Fortran order, shape) of an ``.npy`` header, or None when numpy would not read it."""
    if len(header) < 10:
        return None
    reader = np.lib.format.read_array_header_1_0 if header[6] == 1 else np.lib.format.read_array_header_2_0
    fp = io.BytesIO(header)
    try:
        np.lib.format.read_magic(fp)
        shape, fortran, dtype = reader(fp)
    except (ValueError, TypeError, SyntaxError):
        return None
    return len(header), dtype, bool(fortran), tuple(int(s) for s in shape)


@functools.lru_cache(maxsize=256)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes | None:
    """The header ``np.save`` writes for a C-ordered array of ``dtype`` and ``shape`` (None: let numpy decide)."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    for write in (np.lib.format.write_array_header_1_0, np.lib.format.write_array_header_2_0):
        fp = io.BytesIO()
        try:
            write(fp, d)
        except ValueError:  # the header does not fit version 1.0's length field
            continue
        return fp.getvalue()
    return None


def message_bytes(messages: Iterable[Message]) -> int:
    """Bytes of array payload carried by ``messages`` (errors carry none)."""
    total = 0
    for msg in messages:
        if msg.has_content():
            total += sum(r.count_bytes() for r in msg.content.array_records.values())
    return total
