"""Trap weights: a malicious server crafts the first layer it sends so that each unit fires for few samples.

Boenisch et al. 2023 ("When the curious abandon honesty", EuroS&P) draw random
rows and scale their negative entries by a factor ``s > 1``: for non-negative
inputs (pixels) most pre-activations turn negative, so each ReLU unit fires for
few samples of a batch and its ``G_W[i] / g_b[i]`` isolates one input. fedicd's
heads read *standardised* embeddings (zero mean per coordinate), for which
that scaling alone shifts no pre-activation's mean. So, as in the binning of
Fowl et al. 2022 ("Robbing the Fed"), this module also calibrates each unit's
bias on public auxiliary embeddings: ``b_i = -quantile(W_i · a, 1 - 1/B)``
over the auxiliary vectors ``a``, so each unit fires for a share ``1/B`` of
inputs; with ``h`` random directions a batch of ``B`` then has about
``h (1 - 1/B)^{B-1}`` isolating units, most of the batch for ``h >> B``.

Threat model: a malicious server (it deviates from the protocol for one round)
holding public auxiliary embeddings in the head's input space (scaled with
fedicd's shared scaler, or with its own estimate). The rest of the model it
sends unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from attacks.update_inversion.view import UpdateShapeError

__all__ = ["TrapConfig", "craft_trap", "activation_rate"]


@dataclass(frozen=True)
class TrapConfig:
    """``target_batch``: the batch size the trap is tuned for (each unit fires for ~1/target_batch of inputs);
    ``negative_scale``: Boenisch et al.'s factor on the rows' negative entries (1 = off);
    ``calibrate_bias``: set each bias from the auxiliary embeddings (else keep the sent bias)."""

    target_batch: int = 8
    negative_scale: float = 1.0
    calibrate_bias: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.target_batch, int) and self.target_batch >= 1):
            raise ValueError(f"target_batch must be an int >= 1, got {self.target_batch!r}")
        if not (np.isfinite(self.negative_scale) and self.negative_scale > 0):
            raise ValueError(f"negative_scale must be a finite number > 0, got {self.negative_scale!r}")


def _rows(h: int, d: int, config: TrapConfig) -> np.ndarray:
    w = np.random.default_rng(config.seed).standard_normal((h, d)) / np.sqrt(d)
    return np.where(w < 0, w * config.negative_scale, w)


def craft_trap(sent: Mapping[str, np.ndarray], aux_inputs: np.ndarray | None, config: TrapConfig = TrapConfig(), *,
               weight_name: str = "net.0.weight", bias_name: str = "net.0.bias") -> dict[str, np.ndarray]:
    """The state to send: ``sent`` with its first layer replaced by trap rows (and calibrated biases).

    ``aux_inputs`` are public auxiliary vectors in the head's input space, needed when
    ``config.calibrate_bias`` (at least ``target_batch`` of them).
    """
    if weight_name not in sent or bias_name not in sent:
        raise UpdateShapeError(f"sent has no first layer {weight_name!r}/{bias_name!r}; it holds {sorted(sent)}")
    w0 = np.asarray(sent[weight_name])
    h, d = w0.shape
    w = _rows(h, d, config)
    b = np.asarray(sent[bias_name], dtype=np.float64).copy()
    if config.calibrate_bias:
        a = _check_aux(aux_inputs, d, config.target_batch)
        b = -np.quantile(a @ w.T, 1.0 - 1.0 / config.target_batch, axis=0)
    out = {k: np.array(v, copy=True) for k, v in sent.items()}
    out[weight_name], out[bias_name] = w.astype(w0.dtype), b.astype(np.asarray(sent[bias_name]).dtype)
    return out


def _check_aux(aux_inputs: np.ndarray | None, d: int, target_batch: int) -> np.ndarray:
    if aux_inputs is None:
        raise ValueError("calibrate_bias needs public auxiliary inputs (aux_inputs), got None")
    a = np.asarray(aux_inputs, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != d or len(a) < target_batch:
        raise ValueError(f"aux_inputs must be [n >= target_batch={target_batch}, {d}], got shape {a.shape}")
    return a


def activation_rate(state: Mapping[str, np.ndarray], x: np.ndarray, *, weight_name: str = "net.0.weight",
                    bias_name: str = "net.0.bias") -> float:
    """Mean share of inputs ``x`` for which a first-layer unit is active (pre-activation > 0)."""
    pre = np.asarray(x, dtype=np.float64) @ np.asarray(state[weight_name], dtype=np.float64).T
    return float(np.mean(pre + np.asarray(state[bias_name], dtype=np.float64) > 0))
