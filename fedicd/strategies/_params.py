"""Parameter checks shared by the strategy builders.

Every check raises :class:`fedicd.errors.ConfigError` (a ``ValueError``) whose
message names the parameter, the bad value and the allowed range.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fedicd.errors import ConfigError

__all__ = ["Sampling"]


def check_fraction(name: str, value: float) -> float:
    """Require ``0 <= value <= 1``."""
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_count(name: str, value: int, *, minimum: int = 0) -> int:
    """Require an integer ``>= minimum`` (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: float) -> float:
    """Require a finite number ``> 0``."""
    if not _is_real(value) or not value > 0.0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    """Require a finite number ``>= 0``."""
    if not _is_real(value) or not value >= 0.0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_unit_interval_open(name: str, value: float) -> float:
    """Require ``0 <= value < 1`` (momentum and moment-decay factors)."""
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Sampling:
    """Node-sampling settings shared by every strategy (checked on construction).

    Weights (``"num-examples"``), the ArrayRecord key (``"arrays"``) and the
    ConfigRecord key (``"config"``) stay at Flower's defaults.
    """

    fraction_train: float = 1.0
    fraction_evaluate: float = 0.5
    min_available_nodes: int = 10
    min_train_nodes: int = 10
    min_evaluate_nodes: int = 5

    def __post_init__(self) -> None:
        check_fraction("fraction_train", self.fraction_train)
        check_fraction("fraction_evaluate", self.fraction_evaluate)
        check_count("min_available_nodes", self.min_available_nodes, minimum=1)
        check_count("min_train_nodes", self.min_train_nodes)
        check_count("min_evaluate_nodes", self.min_evaluate_nodes)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a Flower ``FedAvg``-family constructor."""
        return asdict(self)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
