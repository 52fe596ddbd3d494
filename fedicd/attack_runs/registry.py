"""The attacks ``fedicd attack`` runs, by name: one :class:`Attack` each.

An attack is registered with its name (``--method`` for ``invert``, or the
command itself), the ``fedicd attack`` command it belongs to (``invert`` or
``attribute``), the report it writes (an :data:`attacks.threat.THREAT_MODELS`
key: what the adversary sees and wants), the leakage metric the sweep plots,
the argument checks made before any data is loaded, and ``run``: given the
defender's data (:class:`fedicd.attack_runs.data.AttackData`) and the defence,
it hands the adversary its :class:`attacks.AdversaryView` and returns the scored
:class:`attacks.AttackReport`.

Adding an attack: one module with its ``run`` function and a
``register_attack(Attack(...))`` call (plus
:func:`attacks.threat.register_threat_model` for a new report kind); import it
from :data:`_BUILT_IN_MODULES` to ship it with fedicd. The CLI's choices come
from :func:`attack_names`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from attacks.threat import THREAT_MODELS

__all__ = ["ATTACKS", "COMMANDS", "Attack", "AttackOptions", "AttackRun", "register_attack", "unregister_attack",
           "attack_spec", "attack_names"]

COMMANDS = ("invert", "attribute")


@dataclass(frozen=True)
class AttackOptions:
    """What ``fedicd attack`` passes on to an attack (each attack reads the options it knows)."""

    attribute: str = "mental_health"
    n_labelled: int = 200
    gen_cfg: Any = None       # attacks.generative.GenerativeConfig
    gen_spans: int = 8000
    extra: Mapping[str, Any] = field(default_factory=dict)


class AttackRun(Protocol):
    """``run(data, defend, options) -> AttackReport``: build the adversary's view, attack, score."""

    def __call__(self, data: Any, defend: Callable, options: AttackOptions) -> Any: ...


@dataclass(frozen=True)
class Attack:
    """A registered attack.

    Attributes
    ----------
    name : str
        Registry name (``bow``, ``generative``, ``attribute``).
    command : str
        The ``fedicd attack`` command that runs it (:data:`COMMANDS`).
    report : str
        Its :class:`attacks.AttackReport` kind, a key of :data:`attacks.threat.THREAT_MODELS`.
    run : callable or str
        An :class:`AttackRun`, or ``"module:function"`` naming one (imported when it runs).
    leakage : str or callable
        The report metric the sweep plots, or ``leakage(report) -> metric name``.
    check : callable or None
        ``check(options)`` raising :class:`fedicd.errors.ConfigError` before any data is loaded.
    needs_attribute : bool
        Load the ``--attribute`` values with the data (checked before anything is embedded).
    """

    name: str
    command: str
    report: str
    run: AttackRun | str
    leakage: str | Callable[[Any], str]
    check: Callable[[AttackOptions], None] | None = None
    needs_attribute: bool = False

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f"attack {self.name!r}: command must be one of {list(COMMANDS)}, got {self.command!r}")

    @property
    def threat_model(self) -> str:
        """What the adversary holds and wants (from :data:`attacks.threat.THREAT_MODELS`)."""
        return THREAT_MODELS[self.report]

    def runner(self) -> AttackRun:
        if not isinstance(self.run, str):
            return self.run
        module, _, attr = self.run.partition(":")
        return getattr(importlib.import_module(module), attr)

    def leakage_metric(self, report: Any) -> str:
        return self.leakage if isinstance(self.leakage, str) else self.leakage(report)


_REGISTRY: dict[str, Attack] = {}
ATTACKS: Mapping[str, Attack] = MappingProxyType(_REGISTRY)
"""Registered attacks by name (read-only view; add with :func:`register_attack`)."""


def register_attack(attack: Attack, *, replace: bool = False) -> Attack:
    """Add ``attack`` (its report kind must have a threat model); returns it."""
    if attack.name in _REGISTRY and not replace:
        raise ValueError(f"attack {attack.name!r} is already registered")
    if attack.report not in THREAT_MODELS:
        raise ValueError(f"attack {attack.name!r}: report {attack.report!r} has no threat model; register it with "
                         "attacks.threat.register_threat_model")
    _REGISTRY[attack.name] = attack
    return attack


def unregister_attack(name: str) -> None:
    _REGISTRY.pop(name, None)


def attack_names(command: str | None = None) -> tuple[str, ...]:
    """Registered attack names (those of ``command``: ``invert`` → the ``--method`` choices)."""
    return tuple(n for n, a in _REGISTRY.items() if command is None or a.command == command)


def attack_spec(name: str) -> Attack:
    """The attack registered as ``name``; :class:`ConfigError` naming the valid ones otherwise."""
    if name not in _REGISTRY:
        from fedicd.errors import ConfigError

        names = list(_REGISTRY)
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else ", ".join(names)
        raise ConfigError(f"unknown attack {name!r}; use {listed}")
    return _REGISTRY[name]


_BUILT_IN_MODULES = ("fedicd.attack_runs.builtin",)
for _module in _BUILT_IN_MODULES:
    importlib.import_module(_module)
