"""Experiment configuration: TOML → frozen dataclasses, checked before any work.

A config file has top-level keys (``name``, ``seed``, ``cache_dir``) and the
sections ``[data]``, ``[embedding]``, ``[train]`` (alias ``[training]``),
``[partition]`` and ``[federated]``; each section maps onto one dataclass
(:class:`DataConfig`, :class:`fedicd.embedding.EmbedConfig`,
:class:`fedicd.train_config.TrainConfig`, :class:`fedicd.partition.config.PartitionConfig`,
:class:`fedicd.federated.config.FedConfig`). Unknown keys are errors, and
``--set section.key=value`` overrides are parsed as TOML values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import tomllib

from fedicd.config_types import check_section_values
from fedicd.data.config import DataConfig
from fedicd.embedding import EmbedConfig
from fedicd.errors import ConfigError
from fedicd.federated.config import FedConfig
from fedicd.partition.config import PartitionConfig
from fedicd.privacy.config import PrivacyConfig
from fedicd.secure.config import SecureAggConfig, check_secure_compatible
from fedicd.train_config import TrainConfig
from fedicd.warm_start.config import WarmStartConfig

__all__ = ["DataConfig", "ExperimentConfig", "load_config", "config_from_dict", "config_to_dict", "apply_overrides"]

@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: data, embedding, head training, partition, seed and cache location."""

    name: str = "experiment"
    """Experiment name, recorded in results.json and used as plot titles."""
    seed: int = 0
    """Seed of everything random (synthetic corpus, splits, partition, head init and shuffling unless train.seed is
    set); an integer >= 0."""
    cache_dir: str = ".fedicd_cache"
    """Folder of the embedding cache (vectors keyed by model, settings and text); relative paths are relative to the
    working directory."""
    data: DataConfig = field(default_factory=DataConfig)
    embedding: EmbedConfig = field(default_factory=EmbedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    federated: FedConfig = field(default_factory=FedConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure_aggregation: SecureAggConfig = field(default_factory=SecureAggConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if self.privacy.enabled and self.train.mode != "federated":
            raise ConfigError(f"privacy.dp = {self.privacy.dp!r} needs train.mode = 'federated' (for a centralized "
                              "DP baseline, run one client: partition.n_clients = 1)")
        check_secure_compatible(self.secure_aggregation, self.federated.strategy, self.privacy.dp, self.train.mode,
                                distributed_dp=self.privacy.distributed)
        if self.train.seed is None:  # head init and shuffling follow the experiment seed by default
            object.__setattr__(self, "train", dataclasses.replace(self.train, seed=self.seed))


_SECTIONS = {"data": DataConfig, "embedding": EmbedConfig, "train": TrainConfig, "partition": PartitionConfig,
             "federated": FedConfig, "privacy": PrivacyConfig, "secure_aggregation": SecureAggConfig,
             "warm_start": WarmStartConfig}


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    valid = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{name}]; valid keys: {sorted(valid)}")
    coerced = check_section_values(name, cls, values)
    try:
        return cls(**coerced)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from a parsed TOML mapping (unknown keys raise).

    ``[training]`` is accepted as another name for ``[train]`` (``training.mode``).
    """
    if "training" in raw:
        if "train" in raw:
            raise ConfigError("give either [train] or [training], not both")
        raw = {("train" if k == "training" else k): v for k, v in raw.items()}
    top = {f.name for f in dataclasses.fields(ExperimentConfig)} - set(_SECTIONS)
    unknown = sorted(set(raw) - top - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; valid: {sorted(top | set(_SECTIONS))}")
    sections = {}
    for name, cls in _SECTIONS.items():
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{name}] must be a table, got {type(section).__name__}")
        sections[name] = _build_section(name, cls, section)
    top_values = check_section_values("", ExperimentConfig, {k: raw[k] for k in top if k in raw})
    return ExperimentConfig(**top_values, **sections)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as TOML, else kept as text)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *path, leaf = key.strip().split(".")
        target = out
        for part in path:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
        target[leaf] = value
    return out


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a TOML file (or start from defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return config_from_dict(apply_overrides(raw, overrides))


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """JSON-ready resolved config (tuples become lists)."""
    return dataclasses.asdict(config)
