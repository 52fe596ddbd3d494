"""Frozen encoders that embed chunks given as token ids.

Texts are tokenized once, without special tokens and without truncation; the
encoder then wraps each chunk of ids as ``prefix + instruction + chunk +
suffix`` (the tokenizer's own special tokens) and pads batches itself, so a
chunk is never re-tokenized and nothing is cut off silently. Two backends
share this: sentence-transformers (the model's own pooling and normalisation
modules) and plain transformers (mean, CLS or last-token pooling here).

Privacy
-------
Encoders read raw note text; keep them on the data holder's machine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fedicd.embedding.config import EmbedConfig
from fedicd.embedding.models import canonical_model_id, resolve_backend, resolve_model_dir
from fedicd.errors import ConfigError, ShapeError

__all__ = ["Encoder", "load_encoder", "pool_tokens", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

_PROBE = "hello world"


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(config: EmbedConfig) -> torch.dtype:
    """float16 when ``half_precision`` is set and the device is CUDA, else float32."""
    cuda = resolve_device(config.device).startswith("cuda")
    return torch.float16 if config.half_precision and cuda else torch.float32


def _special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after a single sequence."""
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ConfigError(f"cannot locate the special-token template of tokenizer {type(tokenizer).__name__}")


class Encoder:
    """A frozen model that maps chunks of token ids to vectors.

    Attributes
    ----------
    tokenizer:
        The model's tokenizer.
    dim:
        Output dimension.
    max_tokens:
        Tokens per chunk including special and instruction tokens.
    window:
        Content tokens per chunk (``max_tokens`` minus special and instruction tokens).
    dtype:
        ``"float32"`` or ``"float16"``.
    config:
        The settings it was loaded with.
    """

    def __init__(self, *, model: torch.nn.Module, tokenizer: Any, config: EmbedConfig,
                 model_id: str, dim: int, max_tokens: int, device: str, dtype: torch.dtype) -> None:
        self._model = model.eval()
        self.tokenizer, self.config = tokenizer, config
        self.model_id, self.dim, self.max_tokens, self.device = model_id, dim, max_tokens, device
        self.dtype = str(dtype).removeprefix("torch.")
        self.batch_size = config.batch_size
        self.prefix_ids, self.suffix_ids = _special_template(tokenizer)
        self.instruction_ids = self.tokenize([config.instruction])[0] if config.instruction else []
        self.window = max_tokens - len(self.prefix_ids) - len(self.suffix_ids) - len(self.instruction_ids)
        if self.window <= config.chunk_overlap:
            raise ConfigError(
                f"max_tokens={max_tokens} leaves {self.window} content tokens per chunk after special and "
                f"instruction tokens, not more than chunk_overlap={config.chunk_overlap}"
            )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad_id = 0 if pad is None else int(pad)
        self._left_pad = getattr(tokenizer, "padding_side", "right") == "left"
        self._token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Content token ids of each text: no special tokens, no truncation."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False,
                             return_attention_mask=False, return_token_type_ids=False)
        return [list(ids) for ids in enc["input_ids"]]

    def encode_chunks(self, chunks: Sequence[str | Sequence[int]], *, progress: bool = False,
                      on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed chunks (texts or content token ids), longest first, in input order out.

        Parameters
        ----------
        chunks:
            Strings, or token-id lists without special tokens, each at most
            ``window`` tokens long; longer ones raise ``ShapeError`` (use
            :func:`fedicd.embedding.embed_texts` to split long texts).
        progress:
            Show a tqdm bar over chunks.
        on_batch:
            Called with the number of chunks finished after each batch.

        Returns
        -------
        numpy.ndarray
            ``float32`` ``[len(chunks), dim]``.
        """
        ids = [self.tokenize([c])[0] if isinstance(c, str) else list(c) for c in chunks]
        too_long = [i for i, c in enumerate(ids) if len(c) > self.window]
        if too_long:
            raise ShapeError(f"chunk {too_long[0]} has {len(ids[too_long[0]])} tokens; window is {self.window}")
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        order = np.argsort([-len(c) for c in ids], kind="stable")
        with torch.inference_mode(), tqdm(total=len(ids), unit="chunk", disable=not progress) as bar:
            for start in range(0, len(ids), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = [self.prefix_ids + self.instruction_ids + ids[i] + self.suffix_ids for i in rows]
                out[rows] = self._forward(self._features(batch)).float().cpu().numpy()
                bar.update(len(rows))
                if on_batch is not None:
                    on_batch(len(rows))
        return out

    def _features(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(seq) for seq in batch)
        input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            cols = slice(width - len(seq), width) if self._left_pad else slice(0, len(seq))
            input_ids[row, cols] = seq
            mask[row, cols] = 1
        features = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self._token_types:
            features["token_type_ids"] = torch.zeros_like(features["input_ids"])
        return {name: t.to(self.device) for name, t in features.items()}

    def _forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class _SentenceTransformerEncoder(Encoder):
    """Runs the model's own modules (Transformer, Pooling, Normalize...) on our features."""

    def _forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.instruction_ids:
            features["prompt_length"] = len(self.prefix_ids) + len(self.instruction_ids)
        return self._model(features)["sentence_embedding"]


class _TransformersEncoder(Encoder):
    """AutoModel hidden states pooled by mean, first (CLS) or last non-pad token."""

    def __init__(self, *, pooling: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pooling = pooling

    def _forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self._model(**features).last_hidden_state
        return pool_tokens(hidden, features["attention_mask"], self._pooling)


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``[batch, seq, dim]`` hidden states over attended tokens; left or right padding."""
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if pooling == "cls":
        return hidden[rows, mask.argmax(dim=1)]
    if pooling == "last":
        return hidden[rows, mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)]
    raise ConfigError(f"pooling={pooling!r} is not supported; allowed values: mean, cls, last")


def _check_max_tokens(requested: int | None, default: int, hard_limit: int | None) -> int:
    max_tokens = default if requested is None else requested
    if hard_limit is not None and max_tokens > hard_limit:
        raise ConfigError(f"max_tokens={max_tokens} exceeds the model's {hard_limit} position embeddings")
    return max_tokens


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No "Loading weights" progress bar from transformers unless fedicd logs at INFO (``-v``)."""
    from transformers.utils import logging as hf_logging

    if logger.isEnabledFor(logging.INFO) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _load_sentence_transformer(model_dir: Path, config: EmbedConfig, device: str, dtype: torch.dtype) -> Encoder:
    from sentence_transformers import SentenceTransformer

    if config.pooling != "mean":
        logger.warning("pooling=%r ignored: sentence-transformers models pool as modules.json says", config.pooling)
    with _quiet_loading():
        model = SentenceTransformer(str(model_dir), device=device, local_files_only=True).to(dtype)
    auto_config = getattr(getattr(model[0], "auto_model", None), "config", None)
    default = model.max_seq_length or model.tokenizer.model_max_length
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return _SentenceTransformerEncoder(
        model=model, tokenizer=model.tokenizer, config=config, model_id=canonical_model_id(config.model),
        dim=int(dim_fn()), device=device, dtype=dtype,
        max_tokens=_check_max_tokens(config.max_tokens, default, getattr(auto_config, "max_position_embeddings", None)),
    )


def _load_transformers(model_dir: Path, config: EmbedConfig, device: str, dtype: torch.dtype) -> Encoder:
    from transformers import AutoModel, AutoTokenizer

    with _quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device=device, dtype=dtype)
    limit = getattr(model.config, "max_position_embeddings", None)
    default = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else limit
    if default is None:
        raise ConfigError(f"{model_dir} states no maximum length; set max_tokens")
    return _TransformersEncoder(
        model=model, tokenizer=tokenizer, config=config, model_id=canonical_model_id(config.model),
        dim=int(model.config.hidden_size), device=device, dtype=dtype, pooling=config.pooling,
        max_tokens=_check_max_tokens(config.max_tokens, min(default, limit or default), limit),
    )


def load_encoder(config: EmbedConfig) -> Encoder:
    """Load the frozen encoder described by ``config`` (offline unless ``local_files_only=False``).

    Returns
    -------
    Encoder
        Object with ``tokenizer``, ``dim``, ``max_tokens`` and ``encode_chunks``.
    """
    model_dir = resolve_model_dir(config)
    backend = resolve_backend(config, model_dir)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config)
    loader = _load_sentence_transformer if backend == "sentence-transformers" else _load_transformers
    encoder = loader(model_dir, config, device, dtype)
    logger.info("loaded %s (%s, %s, %s): dim=%d, max_tokens=%d", encoder.model_id, backend, device,
                encoder.dtype, encoder.dim, encoder.max_tokens)
    return encoder
