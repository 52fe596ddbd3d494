"""Notes as short sequences of chunk vectors: stored flat, padded and masked one batch at a time.

A long note is embedded as overlapping chunks (:mod:`fedicd.embedding.chunking`). Pooled heads read one vector per
note; the chunk-sequence heads (:data:`fedicd.heads.SEQUENCE_HEADS`) read the chunk vectors themselves.
:class:`ChunkSequences` holds them without padding: every chunk vector of every note in one ``float32`` array
``chunks [total_chunks, d]`` and the notes' boundaries in ``offsets [n_notes + 1]`` (note ``i`` owns rows
``offsets[i]:offsets[i + 1]``, at least one). Indexing it with the rows of a batch returns that batch, padded to
its own longest note and masked, as one tensor: the corpus is never padded or copied per epoch.

The batch tensor
----------------
``[B, T, 1 + d]``: channel 0 is the mask (1.0 for a real chunk, 0.0 for padding), channels ``1:`` the chunk
vectors (zeros at padding). One tensor, so that every loop (central, federated, DP-SGD's Poisson batches,
Opacus) passes it to ``model(x)`` unchanged; a sequence head splits it with :func:`unpack`.

Privacy
-------
Chunk vectors are embeddings of note passages and can be inverted like note vectors (docs/threat-models.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedicd.errors import ConfigError, ShapeError

__all__ = ["ChunkSequences", "ChunksMissingError", "pack", "unpack", "is_sequence", "as_model_input",
           "select_rows", "require_sequences", "MASK_CHANNEL"]

MASK_CHANNEL = 0


class ChunksMissingError(ConfigError):
    """A chunk-sequence head was given one pooled vector per note (vectors made or cached without chunks)."""


class ChunkSequences:
    """Variable-length sequences of chunk vectors, one per note (see the module docstring).

    Parameters
    ----------
    chunks:
        ``[total_chunks, d]`` chunk vectors, notes in order (converted to C-contiguous ``float32``).
    offsets:
        ``[n_notes + 1]`` integers: ``offsets[0] == 0``, strictly increasing (every note has >= 1 chunk),
        ``offsets[-1] == total_chunks``.
    device:
        Where batches are put (the chunks themselves stay in host memory).

    Raises
    ------
    ShapeError
        Wrong dimensions, offsets that do not describe ``chunks``, a note without chunks, or NaN/Inf values.
    """

    def __init__(self, chunks: np.ndarray, offsets: np.ndarray, *, device: str | torch.device = "cpu"):
        chunks = np.ascontiguousarray(np.asarray(chunks), dtype=np.float32)
        offsets = np.asarray(offsets)
        if chunks.ndim != 2:
            raise ShapeError(f"chunks must be 2-D [total_chunks, dim], got shape {chunks.shape}")
        if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise ShapeError(f"offsets must be a 1-D integer array [n_notes + 1], got {offsets.dtype} {offsets.shape}")
        offsets = offsets.astype(np.int64)
        if offsets[0] != 0 or offsets[-1] != len(chunks):
            raise ShapeError(f"offsets must start at 0 and end at the {len(chunks)} chunks, got "
                             f"{int(offsets[0])} … {int(offsets[-1])}")
        steps = np.diff(offsets)
        if (steps < 1).any():
            bad = np.flatnonzero(steps < 1)
            raise ShapeError(f"{len(bad)} note(s) have no chunk (offsets not strictly increasing), first at note "
                             f"{int(bad[0])}: every note needs at least one chunk vector")
        if not np.isfinite(chunks).all():
            raise ShapeError(f"chunk vectors contain {int((~np.isfinite(chunks)).sum())} NaN/Inf values")
        self.chunks, self.offsets, self.device = chunks, offsets, torch.device(device)
        self._torch = torch.from_numpy(self.chunks)  # shares memory with self.chunks

    # --- size ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        """Chunk vector dimension ``d`` (a head's ``input_dim``)."""
        return self.chunks.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_notes, d)``: what ``x.shape`` of pooled vectors would be (so ``shape[1]`` is the head's input
        dimension); the batch tensors are ``[B, T, 1 + d]``."""
        return (len(self), self.dim)

    @property
    def lengths(self) -> np.ndarray:
        """Chunks per note, ``int64 [n_notes]``."""
        return np.diff(self.offsets)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    @property
    def nbytes(self) -> int:
        return int(self.chunks.nbytes + self.offsets.nbytes)

    def __repr__(self) -> str:
        return (f"ChunkSequences(notes={len(self)}, chunks={len(self.chunks)}, dim={self.dim}, "
                f"max_length={self.max_length})")

    # --- selection ----------------------------------------------------------------------------------------
    def _rows(self, idx: Any) -> np.ndarray:
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        if isinstance(idx, slice):
            return np.arange(len(self))[idx]
        rows = np.asarray(idx)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ShapeError(f"boolean index of shape {rows.shape} for {len(self)} notes")
            return np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"note index out of range for {len(self)} notes")
        return rows % max(len(self), 1)

    def take(self, idx: Any) -> ChunkSequences:
        """The notes ``idx`` (in that order) as a new :class:`ChunkSequences` (their chunks copied once)."""
        rows = self._rows(idx)
        lengths = self.lengths[rows]
        chunk_rows = _chunk_rows(self.offsets[rows], lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return ChunkSequences(self.chunks[chunk_rows], offsets, device=self.device)

    def __getitem__(self, idx: Any) -> torch.Tensor:
        """The batch of notes ``idx``, padded to its longest note: ``[B, T, 1 + d]`` (channel 0 the mask)."""
        rows = self._rows(idx)
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        out = torch.zeros(len(rows), width, 1 + self.dim, dtype=torch.float32)
        if len(rows):
            mask = torch.as_tensor(np.arange(width)[None, :] < lengths[:, None])
            chunk_rows = torch.as_tensor(_chunk_rows(self.offsets[rows], lengths))
            out[..., MASK_CHANNEL] = mask.float()
            out[..., 1:][mask] = self._torch[chunk_rows]
        return out.to(self.device) if self.device.type != "cpu" else out

    def to(self, device: str | torch.device) -> ChunkSequences:
        """The same notes, with batches put on ``device``."""
        copy = object.__new__(ChunkSequences)
        copy.chunks, copy.offsets, copy._torch, copy.device = self.chunks, self.offsets, self._torch, torch.device(device)
        return copy

    # --- transforms ---------------------------------------------------------------------------------------
    def map_chunks(self, fn) -> ChunkSequences:
        """``fn`` (e.g. a fitted scaler's ``transform``) applied to the ``[total_chunks, d]`` chunk array."""
        return ChunkSequences(np.asarray(fn(self.chunks), dtype=np.float32), self.offsets, device=self.device)

    def mean_pooled(self) -> np.ndarray:
        """The unweighted mean of each note's chunk vectors, ``float32 [n_notes, d]``."""
        sums = np.add.reduceat(self.chunks.astype(np.float64), self.offsets[:-1], axis=0) if len(self) else \
            np.zeros((0, self.dim))
        return (sums / self.lengths[:, None]).astype(np.float32)

    # --- storage ------------------------------------------------------------------------------------------
    def to_arrays(self, name: str) -> dict[str, np.ndarray]:
        """``{name: chunks, name + "_offsets": offsets}`` for ``np.savez``."""
        return {name: self.chunks, f"{name}_offsets": self.offsets}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], name: str) -> ChunkSequences:
        """Read back :meth:`to_arrays`' entries (raises :class:`ChunksMissingError` without ``name + "_offsets"``)."""
        if f"{name}_offsets" not in arrays:
            raise ChunksMissingError(f"{name!r} holds one pooled vector per note (no {name + '_offsets'!r}): it was "
                                     "made without chunk sequences")
        return cls(arrays[name], arrays[f"{name}_offsets"])

    @classmethod
    def from_lists(cls, sequences: list[np.ndarray]) -> ChunkSequences:
        """From one ``[n_chunks_i, d]`` array per note (tests and small inputs)."""
        if not sequences:
            raise ShapeError("no sequences given")
        lengths = [len(s) for s in sequences]
        return cls(np.concatenate([np.asarray(s, dtype=np.float32) for s in sequences]),
                   np.concatenate([[0], np.cumsum(lengths)]))


def _chunk_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row numbers ``starts[k] + j`` for ``j < lengths[k]``, note by note, in order."""
    if len(lengths) == 0:
        return np.zeros(0, dtype=np.int64)
    total = int(lengths.sum())
    note = np.repeat(np.arange(len(lengths)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return (starts[note] + np.arange(total) - first[note]).astype(np.int64)


def pack(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T, d]`` vectors and a ``[B, T]`` mask → the ``[B, T, 1 + d]`` batch tensor (padding zeroed)."""
    if x.dim() != 3 or mask.shape != x.shape[:2]:
        raise ShapeError(f"pack needs x [B, T, d] and mask [B, T], got {tuple(x.shape)} and {tuple(mask.shape)}")
    m = mask.to(x.dtype)
    return torch.cat([m[..., None], x * m[..., None]], dim=-1)


def unpack(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch tensor → ``(x [B, T, d], mask [B, T] bool)``.

    Raises :class:`ChunksMissingError` for a 2-D tensor (one pooled vector per note).
    """
    if batch.dim() == 2:
        raise ChunksMissingError(f"a chunk-sequence head got pooled vectors [B, d] = {tuple(batch.shape)}; it reads "
                                 "chunk sequences [B, T, 1 + d] (fedicd.sequences.ChunkSequences)")
    if batch.dim() != 3 or batch.shape[-1] < 2:
        raise ShapeError(f"a chunk-sequence batch is [B, T, 1 + d], got {tuple(batch.shape)}")
    return batch[..., 1:], batch[..., MASK_CHANNEL] > 0.5


def is_sequence(x: object) -> bool:
    return isinstance(x, ChunkSequences)


def as_model_input(x: np.ndarray | torch.Tensor | ChunkSequences) -> torch.Tensor | ChunkSequences:
    """Pooled vectors as a ``float32`` tensor; chunk sequences unchanged (they are batched by indexing)."""
    if isinstance(x, ChunkSequences):
        return x
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)


def select_rows(x: np.ndarray | ChunkSequences, idx: Any) -> np.ndarray | ChunkSequences:
    """Rows ``idx`` of pooled vectors (``x[idx]``) or of chunk sequences (``x.take(idx)``)."""
    return x.take(idx) if isinstance(x, ChunkSequences) else x[idx]


def require_sequences(x: object, head: str, where: str) -> ChunkSequences:
    """``x`` when it holds chunk sequences, else a :class:`ChunksMissingError` naming ``head`` and ``where``."""
    if isinstance(x, ChunkSequences):
        return x
    shape = getattr(x, "shape", None)
    raise ChunksMissingError(f"train.head = {head!r} reads chunk sequences, but {where} holds one pooled vector per "
                             f"note (shape {shape}): embed the notes with chunks kept (a chunk-sequence head asks for "
                             "them) or choose a pooled head (mlp, deep_mlp, deep_res_mlp, linear, bottleneck)")
