"""Differential privacy for fedicd's federated runs.

* :mod:`fedicd.privacy.config` — the ``[privacy]`` section (``dp = "none" | "sample" | "client"``).
* :mod:`fedicd.privacy.fused_clipping` — exact one-pass per-sample clipping for vector heads.
* :mod:`fedicd.privacy.dp_sgd` — a DP-SGD step over Opacus' optimizer (fused, ghost or hooks norms)
  and the BatchNorm → GroupNorm conversion.
* :mod:`fedicd.privacy.accounting` — σ calibration for a whole run and per-client RDP histories
  persisted across rounds.
* :mod:`fedicd.privacy.dp_local` — one client's DP-SGD round and its budget check.
* :mod:`fedicd.privacy.client_level` — client-level central DP with Flower's wrappers and accountant.
* :mod:`fedicd.privacy.plan` — the run's privacy plan, fixed at staging (σ per client or per round).
* :mod:`fedicd.privacy.client_dp_rounds` — client-level DP in the round loop: the strategy wrapper, the
  clients' clipping mod, the release log and accountant (a round observer).
* :mod:`fedicd.privacy.sample_trainer` — DP-SGD as a client's local trainer.
* :mod:`fedicd.privacy.defences` — what a privacy plan adds to a run, and its results block.

Submodules are imported on use (Opacus and dp-accounting load only when DP is on).
"""

from fedicd.privacy.config import DP_MODES, PrivacyConfig

__all__ = ["DP_MODES", "PrivacyConfig"]
