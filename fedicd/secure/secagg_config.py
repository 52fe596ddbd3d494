"""The parameters of Flower's SecAgg+ workflow, validated, and the error bound they give.

Weighting and quantisation (Flower's mod and workflow): client ``i`` with weight
``n_i`` uses ``dq_i = round(n_i / max_weight * Q) / Q``, clips ``dq_i * x_i`` to
``[-c, c]`` (``c = clipping_range``), quantises it stochastically to integers in
``[0, Q]`` (``Q = quantization_range``), prepends ``round(dq_i * Q)`` and masks.
The server recovers ``sum_i dq_i x_i`` and ``sum_i dq_i`` and returns their
ratio. With ``k`` survivors and ``D = sum_i dq_i``, every entry differs from the
exactly weighted average by at most :meth:`SecAggPlusConfig.error_bound`::

    k * (2c/Q + 8c*u) / D  +  k * spread / (2 Q D)  +  |average| * u

(stochastic rounding < 1 step of ``2c/Q`` per client, float rounding of the
input dtype's unit roundoff ``u`` before quantising, the weights' own
quantisation acting on the spread ``max_i x_i - min_i x_i`` of the entry, and
the final cast). Entries with ``|dq_i x_i| > c`` are clipped: the client bridge
(:mod:`fedicd.secure.secagg_client`) counts them (``secagg-clipped-entries``)
and the server reports the total.

Under distributed DP the masked values are clipped updates plus Gaussian noise
shares, not model weights: ``max_weight = 1`` and ``c = C·(1 + 8σ/√m)``
(:func:`fedicd.privacy.distributed_dp.clipping_range`; a noise entry beyond it
has probability 1.2e-15), so the bound above holds with ``D = k``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["SecAggPlusConfig"]


@dataclasses.dataclass(frozen=True)
class SecAggPlusConfig:
    """The parameters of Flower's ``SecAggPlusWorkflow`` (validated here, with readable messages).

    ``num_shares``: each client's secrets are split among itself and ``num_shares - 1`` neighbours (an int
    >= 3), or a fraction in (0, 1] of the sampled clients (``1.0``: everyone). ``reconstruction_threshold``:
    shares needed to rebuild a secret (an int >= 2 and < ``num_shares``, or a fraction in (0, 1] of the
    shares); every sampled client must keep at least that many surviving neighbours (itself included),
    so at most ``shares - threshold`` neighbours of any client may drop out. ``max_weight``: the largest
    client weight (``num-examples``) — keep it close to the largest client for precision; a client whose
    weight exceeds it refuses to take part. ``clipping_range`` ``c`` and ``quantization_range`` ``Q``: see
    the module docstring. ``timeout``: seconds to wait for replies in each of the four stages (None: wait
    for every reply); a client that does not answer in time counts as dropped out.
    """

    num_shares: int | float = 1.0
    reconstruction_threshold: int | float = 0.5
    max_weight: float = 1000.0
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    timeout: float | None = None

    def __post_init__(self) -> None:
        shares, thr = self.num_shares, self.reconstruction_threshold
        if isinstance(shares, bool) or not isinstance(shares, (int, float)):
            raise ValueError(f"secure_aggregation.num_shares must be an int or a float, got {shares!r}")
        if isinstance(shares, int) and shares < 3:
            raise ValueError(f"secure_aggregation.num_shares = {shares}: an integer number of shares must be "
                             ">= 3 (or give a fraction of the sampled clients in (0, 1], e.g. 1.0 for all)")
        if isinstance(shares, float) and not 0.0 < shares <= 1.0:
            raise ValueError(f"secure_aggregation.num_shares = {shares}: a fraction of the sampled clients "
                             "must lie in (0, 1]")
        if isinstance(thr, bool) or not isinstance(thr, (int, float)):
            raise ValueError(f"secure_aggregation.reconstruction_threshold must be an int or a float, got {thr!r}")
        if isinstance(thr, int):
            if thr < 2:
                raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr}: an integer threshold "
                                 "must be >= 2 (Flower reads 1 as 'all shares'; write 1.0 for that)")
            if isinstance(shares, int) and thr >= shares:
                raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr} must be smaller than "
                                 f"num_shares = {shares} (a secret split into {shares} shares cannot need "
                                 f"{thr} of them and still tolerate a dropout)")
        elif not 0.0 < thr <= 1.0:
            raise ValueError(f"secure_aggregation.reconstruction_threshold = {thr}: a fraction of the shares "
                             "must lie in (0, 1]")
        if not (isinstance(self.max_weight, (int, float)) and math.isfinite(self.max_weight)
                and self.max_weight > 0):
            raise ValueError(f"secure_aggregation.max_weight = {self.max_weight!r} must be a finite number > 0")
        if not (isinstance(self.clipping_range, (int, float)) and math.isfinite(self.clipping_range)
                and self.clipping_range > 0):
            raise ValueError(f"secure_aggregation.clipping_range = {self.clipping_range!r} must be a finite "
                             "number > 0")
        q, m = self.quantization_range, self.modulus_range
        if isinstance(q, bool) or not isinstance(q, int) or q < 2:
            raise ValueError(f"secure_aggregation.quantization_range = {q!r} must be an integer >= 2")
        if isinstance(m, bool) or not isinstance(m, int) or m <= q or m & (m - 1) or m > 2**32:
            raise ValueError(f"secure_aggregation.modulus_range = {m!r} must be a power of 2, greater than "
                             f"quantization_range = {q} and at most 2**32")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"secure_aggregation.timeout = {self.timeout!r} must be None or seconds > 0")
        object.__setattr__(self, "clipping_range", float(self.clipping_range))  # Flower's mod wants a float
        object.__setattr__(self, "max_weight", float(self.max_weight))

    # -- what Flower resolves at run time (mirrors SecAggPlusWorkflow.setup_stage)
    def resolved(self, num_sampled: int) -> tuple[int, int]:
        """(shares, threshold) Flower uses for ``num_sampled`` clients."""
        if isinstance(self.num_shares, float):
            shares = round(self.num_shares * num_sampled)
            if shares < num_sampled and shares & 1 == 0:
                shares += 1
            if shares <= 2:
                shares = num_sampled
        else:
            shares = self.num_shares
        if isinstance(self.reconstruction_threshold, float):
            threshold = max(round(self.reconstruction_threshold * shares), 2)
        else:
            threshold = self.reconstruction_threshold
        return shares, threshold

    def check_round(self, num_sampled: int) -> tuple[int, int]:
        """Refuse a round Flower would run into trouble with; returns the resolved (shares, threshold)."""
        if num_sampled < 2:
            raise ValueError(f"SecAgg+ needs at least 2 sampled clients, got {num_sampled}")
        shares, threshold = self.resolved(num_sampled)
        if shares > num_sampled:
            raise ValueError(f"secure_aggregation.num_shares = {shares} exceeds the {num_sampled} sampled clients")
        if threshold > shares:
            raise ValueError(f"secure_aggregation.reconstruction_threshold resolves to {threshold} shares, more "
                             f"than the {shares} shares each secret is split into")
        if num_sampled * self.quantization_range >= self.modulus_range:
            raise ValueError(f"{num_sampled} clients x quantization_range {self.quantization_range} would overflow "
                             f"modulus_range {self.modulus_range}; lower quantization_range")
        return shares, threshold

    def check_weights(self, weights: Iterable[float]) -> None:
        """Refuse client weights above ``max_weight`` (e.g. the staged client sizes, before a run)."""
        too_big = [w for w in weights if w > self.max_weight]
        if too_big:
            raise ValueError(f"secure_aggregation.max_weight = {self.max_weight:g} is below client weight(s) "
                             f"{sorted(too_big)[-3:]}; set it to at least the largest client's num-examples")

    def weight_factor(self, weight: float) -> float:
        """``dq``: the quantised weight factor Flower's mod multiplies a client's arrays by."""
        return round(weight / self.max_weight * self.quantization_range) / self.quantization_range

    def error_bound(self, weights: Iterable[float], value_spread: float | np.ndarray = 0.0,
                    value_abs: float | np.ndarray = 0.0, dtype: Any = np.float32) -> float | np.ndarray:
        """Largest |SecAgg+ average - exactly weighted average| of an entry (see the module docstring).

        ``weights``: the survivors' weights; ``value_spread``: max_i x_i - min_i x_i of the entry (or a
        bound); ``value_abs``: |average| (or a bound), for the final cast to ``dtype``.
        """
        weights = list(weights)
        k, q, c = len(weights), self.quantization_range, self.clipping_range
        d = sum(self.weight_factor(w) for w in weights)
        if k == 0 or d <= 0:
            raise ValueError("error_bound needs at least one client with a weight factor > 0")
        if np.issubdtype(np.dtype(dtype), np.floating):
            u = float(np.finfo(dtype).eps) / 2
            cast = np.asarray(value_abs) * u
        else:  # integers are quantised as float64 and rounded back
            u, cast = float(np.finfo(np.float64).eps) / 2, 0.5
        return k * (2 * c / q + 8 * c * u) / d + k * np.asarray(value_spread) / (2 * q * d) + cast
