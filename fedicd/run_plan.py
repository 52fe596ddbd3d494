"""The typed plan of a federated run: written once when the run is staged, read by the server, every client and
the results writer.

``<run_dir>/run_plan.json`` holds :meth:`RunPlan.to_dict`; :func:`read_plan` turns it back into a frozen
:class:`RunPlan` (cached per process and file version). A run folder staged by a fedicd without run plans
(it holds ``run_meta.json`` only) or by a newer plan version is refused with a message that says so.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedicd.federated.config import FedConfig
from fedicd.privacy.config import PrivacyConfig
from fedicd.secure.config import SecureAggConfig
from fedicd.train_config import TrainConfig

__all__ = ["RunPlan", "StrategyPlan", "PrivacyPlan", "DPPlan", "PLAN_VERSION", "PLAN_FILE", "read_plan", "write_plan", "resolved_config",
           "plan_from_json",
           "section_from_dict", "train_config_from_dict", "StalePlanError"]

PLAN_VERSION = 2  # 2: per-site data files (clients/<pid>/data.npz, server/eval.npz), no data/features.npz
PLAN_FILE = "run_plan.json"
LEGACY_META = "run_meta.json"


class StalePlanError(ValueError):
    """The run folder was staged by another version of fedicd's run plan."""


def section_from_dict(cls: type, raw: dict[str, Any]):
    """A config section dataclass from its JSON form (arrays become tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def train_config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` recorded as a dict (run plans, saved models)."""
    return section_from_dict(TrainConfig, raw)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def resolved_config(cfg) -> dict:
    """An ExperimentConfig as its run plan records it (JSON types): what ``--resume`` compares."""
    from fedicd.config import config_to_dict

    return _json(config_to_dict(cfg))


@dataclass(frozen=True)
class DPPlan:
    """One client's DP-SGD schedule for a whole run."""

    n: int
    sample_rate: float
    steps_per_epoch: int
    total_steps: int
    noise_multiplier: float
    delta: float
    target_epsilon: float  # 0 when σ was given instead
    calibrated_with: str = "rdp"  # the accountant that calibrated σ and enforces the budget ("rdp" or "pld")
    planned_epsilon_rdp: float = 0.0  # ε of the whole planned schedule under each accountant (0: not computed)
    planned_epsilon_pld: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PrivacyPlan:
    """The run's differential privacy: ``dp`` is ``"none"``, ``"sample"`` (DP-SGD on every client, one
    :class:`DPPlan` per client in ``clients``) or ``"client"`` (Flower's fixed-clipping wrapper on the
    server: ``noise_multiplier``, ``sampled_clients``, ``population``, ``client_side_clipping``)."""

    dp: str = "none"
    clip: float = 0.0
    delta: float = 0.0
    target_epsilon: float = 0.0
    secure_rng: bool = False
    accountant: str = ""
    head_notices: tuple[str, ...] = ()
    clipping: str = ""  # sample: how per-sample norms are computed
    clients: tuple[DPPlan, ...] = ()  # sample: one schedule per client
    noise_multiplier: float = 0.0  # client: σ of the server's noise
    sampled_clients: int = 0
    population: int = 0
    client_side_clipping: bool = False
    noise_std: float = 0.0
    calibrated_with: str = ""  # client: the accountant that calibrated σ ("rdp" or "pld")
    client_sampling: str = ""  # client: "fixed" (no amplification credited) or "poisson"
    sample_rate: float = 0.0  # client, poisson: each client's per-round inclusion probability
    adaptive_clipping: bool = False  # client: Flower's adaptive clipping (clip is the initial norm)
    target_quantile: float = 0.0
    clip_count_stddev: float = 0.0
    distributed: bool = False  # client: clients add the noise shares before SecAgg+ masking
    planned_epsilon_rdp: float = 0.0  # client: ε of the whole planned run under each accountant
    planned_epsilon_pld: float = 0.0
    _keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def sample_level(self) -> bool:
        return self.dp == "sample"

    @property
    def client_level(self) -> bool:
        return self.dp == "client"

    def to_dict(self) -> dict:
        """The plan as ``run_plan.json`` and ``results.json`` record it (the keys of its mode, in planning order)."""
        names = self._keys or (("dp",) if self.dp == "none" else [f.name for f in fields(self) if f.name != "_keys"])
        out = {}
        for name in names:
            value = getattr(self, name)
            out[name] = ([c.to_dict() for c in value] if name == "clients" else
                         list(value) if isinstance(value, tuple) else value)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> PrivacyPlan:
        known = {f.name for f in fields(cls)} - {"_keys"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown privacy plan key(s) {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        values["clients"] = tuple(DPPlan(**c) for c in raw.get("clients", ()))
        return cls(**values, _keys=tuple(raw))


@dataclass(frozen=True)
class StrategyPlan:
    """The server strategy: a registered name and the keyword arguments of its builder."""

    name: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """Everything a federated run fixed at staging; ``train`` is the effective head config (DP may change
    its norm), ``config`` the resolved experiment config it was staged from."""

    seed: int
    train: TrainConfig
    federated: FedConfig
    privacy: PrivacyPlan
    secure: SecureAggConfig
    strategy: StrategyPlan
    input_dim: int
    n_labels: int
    client_sizes: tuple[int, ...]
    config: dict
    partition: dict = field(default_factory=dict)
    labels: dict | None = None
    embedding: dict | None = None
    load_summary: dict | None = None
    version: int = PLAN_VERSION

    @property
    def n_clients(self) -> int:
        return len(self.client_sizes)

    @functools.cached_property
    def privacy_config(self) -> PrivacyConfig:
        """The run's ``[privacy]`` section (the DP-SGD settings clients apply)."""
        return section_from_dict(PrivacyConfig, self.config.get("privacy", {}))

    def to_dict(self) -> dict:
        return _json({"version": self.version, "seed": self.seed, "train": dataclasses.asdict(self.train),
                      "federated": dataclasses.asdict(self.federated), "privacy": self.privacy.to_dict(),
                      "secure_aggregation": dataclasses.asdict(self.secure),
                      "strategy": {"name": self.strategy.name, "args": self.strategy.args},
                      "input_dim": self.input_dim, "n_labels": self.n_labels, "client_sizes": list(self.client_sizes),
                      "partition": self.partition, "labels": self.labels, "embedding": self.embedding,
                      "load_summary": self.load_summary, "config": self.config})

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "the run plan") -> RunPlan:
        version = raw.get("version")
        if version != PLAN_VERSION:
            raise StalePlanError(f"{source} has run plan version {version!r}; this fedicd reads version "
                                 f"{PLAN_VERSION} only: stage the run again with this fedicd (a new --out)")
        plan = cls(seed=int(raw["seed"]), train=train_config_from_dict(raw["train"]),
                   federated=section_from_dict(FedConfig, raw["federated"]),
                   privacy=PrivacyPlan.from_dict(raw["privacy"]),
                   secure=section_from_dict(SecureAggConfig, raw["secure_aggregation"]),
                   strategy=StrategyPlan(raw["strategy"]["name"], dict(raw["strategy"]["args"])),
                   input_dim=int(raw["input_dim"]), n_labels=int(raw["n_labels"]),
                   client_sizes=tuple(int(n) for n in raw["client_sizes"]), config=raw["config"],
                   partition=raw.get("partition") or {}, labels=raw.get("labels"), embedding=raw.get("embedding"),
                   load_summary=raw.get("load_summary"))
        plan.check_privacy(source)
        return plan

    def check_privacy(self, source: str = "the run plan") -> None:
        """A config asking for DP must come with a DP plan: nobody trains without the noise it asked for."""
        wanted = self.config.get("privacy", {}).get("dp", "none")
        if wanted != self.privacy.dp:
            raise ValueError(f"the config asks for privacy.dp = {wanted!r} but {source} holds the DP plan "
                             f"{self.privacy.dp!r}; refusing to train without it (stage the run again)")


def write_plan(run_dir: str | Path, plan: RunPlan) -> Path:
    path = Path(run_dir) / PLAN_FILE
    path.write_text(json.dumps(plan.to_dict(), indent=2))
    return path


def read_plan(run_dir: str | Path) -> RunPlan:
    """The run plan of ``run_dir`` (refused when the folder was staged by an older fedicd)."""
    path = Path(run_dir) / PLAN_FILE
    if not path.exists():
        legacy = Path(run_dir) / LEGACY_META
        if legacy.exists():
            raise StalePlanError(f"{legacy} was staged by an older fedicd (no {PLAN_FILE}, no run plan version; "
                                 f"this fedicd reads run plan version {PLAN_VERSION}): it cannot be resumed or "
                                 "served by this version; stage the run again (a new --out)")
        raise FileNotFoundError(f"run plan not found: {path} (stage the run first)")
    return _read(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> RunPlan:
    return RunPlan.from_dict(json.loads(Path(path).read_text()), source=path)


def plan_from_json(text: str, *, source: str = "the run config's plan") -> RunPlan:
    """The run plan whose ``run_plan.json`` text is ``text`` (a deployment's run config carries it to the nodes).

    Raises
    ------
    ValueError
        ``text`` is not JSON (the message names ``source``); :class:`StalePlanError` for another plan version.
    """
    return _from_text(str(text), source)


@functools.lru_cache(maxsize=8)
def _from_text(text: str, source: str) -> RunPlan:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not a run plan: not JSON ({exc}); give run_plan.json's text") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{source} is not a run plan: JSON {type(raw).__name__}, expected an object")
    try:
        return RunPlan.from_dict(raw, source=source)
    except KeyError as exc:
        raise ValueError(f"{source} is not a complete run plan: it lacks {exc}; give run_plan.json's text") from None
