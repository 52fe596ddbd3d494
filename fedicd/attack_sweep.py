"""Moved to :mod:`fedicd.attack_runs.sweep`; kept only until ``fedicd.cli`` imports from there."""

from fedicd.attack_runs.sweep import *  # noqa: F401,F403
from fedicd.attack_runs.sweep import DEFAULT_SWEEP, run_attack_sweep  # noqa: F401
