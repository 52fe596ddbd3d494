"""``fedicd attack``'s and ``fedicd audit``'s jobs: the glue between fedicd's data and the ``attacks`` package.

``attacks`` never imports fedicd (it sees only what an adversary holds). Here:

* :mod:`~fedicd.attack_runs.registry`: the attacks by name (:class:`Attack`,
  :func:`register_attack`, :func:`attack_names` for the CLI's choices);
* :mod:`~fedicd.attack_runs.builtin`: bag-of-words and generative inversion,
  attribute inference;
* :mod:`~fedicd.attack_runs.data`: a config's notes split into the defender's
  parts and the adversary's public material, embedded by the public encoder;
* :mod:`~fedicd.attack_runs.reports`: each attack scored into an
  :class:`attacks.AttackReport`;
* :mod:`~fedicd.attack_runs.sweep`: one attack under a sweep of embedding
  defences (leakage vs utility);
* attacks on the federation, on a finished federated run
  (:mod:`~fedicd.attack_runs.federation`): :mod:`~fedicd.attack_runs.update_inversion`,
  :mod:`~fedicd.attack_runs.membership`, :mod:`~fedicd.attack_runs.audit` (the one-run DP
  audit), assembled by :mod:`~fedicd.attack_runs.battery` (``fedicd audit``,
  :mod:`~fedicd.attack_runs.audit_command`) and :mod:`~fedicd.attack_runs.matrix` (the privacy
  matrix of ``experiments/privacy_matrix.py``).

The registry is imported eagerly (it imports no torch); the rest on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import ATTACKS, COMMANDS, Attack, AttackOptions, attack_names, attack_spec, register_attack

__all__ = ["ATTACKS", "COMMANDS", "Attack", "AttackOptions", "attack_names", "attack_spec", "register_attack",
           "DEFAULT_SWEEP", "run_attack_sweep", "parse_defence", "make_defence", "load_attack_data", "AttackData"]

_LAZY = {"DEFAULT_SWEEP": ".sweep", "run_attack_sweep": ".sweep", "parse_defence": ".sweep",
         "make_defence": ".sweep", "load_attack_data": ".data", "AttackData": ".data"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
