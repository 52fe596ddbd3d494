"""The auditor's instrumentation of fedicd's own DP mechanisms (for the one-run audit).

Sample-level DP-SGD (:class:`~fedicd.privacy.dp_sgd.DPStepper`):
:class:`GradientCanaries` is the stepper's ``canary_gradients`` callback. Each
of m canary "samples" has the clipped gradient ``C · u_j`` (``u_j`` a unit
direction in one parameter, e.g. the first layer's weight); an included canary
is Poisson-sampled every step with the plan's rate q, like every note, and its
gradient is added to the clipped per-sample sum *before* Opacus adds noise
of std σ·C: the mechanism the accountant describes, with the canaries as m
more records. :class:`NoisedStepRecorder` (a ``before_update`` hook) records
what the strongest white-box adversary sees, every noised step, projected on
the canary directions.

Client-level DP: :func:`client_dp_release` is one round of Flower's
``DifferentialPrivacyServerSideFixedClipping`` arithmetic, with Flower's own
functions for the clipping and the noise std (clip every update ``w_i − w`` to
norm C, average with equal weights, add N(0, (σ·C / n_sampled)²) per
coordinate), but a seeded generator for the noise where Flower draws from
numpy's global one (same numbers for the same seed).

Privacy: canaries only *add* records the accountant already covers (norm ≤ C,
sampled with rate q); with ``canary_gradients=None`` the stepper is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv
from torch import nn

__all__ = ["GradientCanaries", "NoisedStepRecorder", "client_dp_release", "canary_stream_seed"]

_CANARY_STREAM = int.from_bytes(b"canary-sampling"[:8], "little")


def canary_stream_seed(seed: int) -> int:
    """A 63-bit seed for the canaries' sampling generator, from its own ``SeedSequence`` stream (never equal to
    the small seeds fedicd derives for data sampling, noise or dropout)."""
    state = np.random.SeedSequence([int(seed), _CANARY_STREAM]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _check_directions(numel: int, coords: np.ndarray, signs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    c, s = np.asarray(coords), np.asarray(signs, dtype=np.float64)
    if c.ndim != 2 or c.shape != s.shape:
        raise ValueError(f"coords {c.shape} and signs {s.shape} must both be [m, sparsity]")
    if c.size and (c.min() < 0 or c.max() >= numel):
        raise ValueError(f"canary coordinates must be in [0, {numel}) (the parameter's size)")
    if not np.allclose((s ** 2).sum(1), 1.0):
        raise ValueError("every canary direction must have unit norm")
    return torch.as_tensor(c, dtype=torch.long), torch.as_tensor(s, dtype=torch.float32)


class GradientCanaries:
    """``canary_gradients`` callback of :class:`~fedicd.privacy.dp_sgd.DPStepper`: Poisson-sampled gradient canaries.

    Parameters
    ----------
    model : nn.Module
        The model the stepper trains (to find ``param_name``).
    param_name : str
        The parameter the canaries live in (e.g. ``"net.0.weight"``).
    coords, signs : arrays [m, s]
        Flat coordinates in that parameter and the unit directions' values there.
    included : bool array [m]
        The auditor's coins: only included canaries are ever sampled.
    clip : float
        C: every canary's gradient has norm exactly C (a clipped sample at the bound).
    sample_rate : float
        q: the plan's Poisson rate.
    seed : int
        Seeds the canaries' own Poisson sampling, through its own stream
        (``SeedSequence([seed, "canary-sampling"])``): a plain ``manual_seed(seed)`` could coincide with the
        seed of the data sampler or of dropout (small integers derived from the run's seed) and correlate the
        canaries' batches with the real rows' batches, which the Poisson-sampling analysis assumes independent.
    """

    def __init__(self, model: nn.Module, param_name: str, coords: np.ndarray, signs: np.ndarray,
                 included: np.ndarray, *, clip: float, sample_rate: float, seed: int):
        params = dict(model.named_parameters())
        if param_name not in params:
            raise ValueError(f"the model has no parameter {param_name!r}; it has {sorted(params)}")
        self.param_name, self.shape = param_name, tuple(params[param_name].shape)
        self.coords, self.signs = _check_directions(params[param_name].numel(), coords, signs)
        inc = np.asarray(included, dtype=bool)
        if inc.shape != (len(self.coords),):
            raise ValueError(f"included must have one coin per canary ({len(self.coords)}), got shape {inc.shape}")
        if not clip > 0 or not 0 < sample_rate <= 1:
            raise ValueError(f"need clip > 0 and sample_rate in (0, 1], got clip={clip}, sample_rate={sample_rate}")
        self.included = torch.as_tensor(inc)
        self.clip, self.sample_rate = float(clip), float(sample_rate)
        self.generator = torch.Generator().manual_seed(canary_stream_seed(seed))
        self.draws = torch.zeros(len(self.coords), dtype=torch.long)  # how often each canary was in a batch

    def __call__(self) -> dict[str, torch.Tensor] | None:
        """This step's canary gradients ``{param_name: Σ_sampled C·u_j}``, or None when none was sampled."""
        sampled = (torch.rand(len(self.coords), generator=self.generator) < self.sample_rate) & self.included
        self.draws += sampled.long()
        if not bool(sampled.any()):
            return None
        flat = torch.zeros(int(np.prod(self.shape)))
        flat.index_add_(0, self.coords[sampled].reshape(-1), (self.clip * self.signs[sampled]).reshape(-1))
        return {self.param_name: flat.reshape(self.shape)}


class NoisedStepRecorder:
    """``before_update`` hook: after Opacus' noise and scaling, records ``⟨grad · B, u_j⟩`` for every canary.

    ``B`` is the stepper's expected batch size (Opacus divides the noised sum by
    it), so :attr:`projections` are in units of the clipped sum: ``[steps, m]``.
    """

    def __init__(self, model: nn.Module, param_name: str, coords: np.ndarray, signs: np.ndarray,
                 expected_batch_size: int):
        self.param = dict(model.named_parameters())[param_name]
        self.coords, self.signs = _check_directions(self.param.numel(), coords, signs)
        self.scale = float(expected_batch_size)
        self.rows: list[np.ndarray] = []

    def __call__(self) -> None:
        g = self.param.grad.detach().reshape(-1) * self.scale
        self.rows.append((g[self.coords] * self.signs).sum(1).double().numpy())

    @property
    def projections(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, len(self.coords)))


def client_dp_release(current: list[np.ndarray], replies: list[list[np.ndarray]], *, clip: float,
                      noise_multiplier: float, rng: np.random.RandomState,
                      extra_sum: list[np.ndarray] | None = None, extra_count: int = 0) -> list[np.ndarray]:
    """One round of Flower's server-side fixed-clipping client-level DP: the new global arrays.

    Each reply's arrays are clipped towards ``current`` with Flower's
    ``compute_clip_model_update`` (update norm ≤ ``clip``), averaged with equal
    weights (FedAvg with unit weights), and Gaussian noise of std
    ``compute_stdv(σ, C, n_replies)`` is added to every coordinate.
    ``extra_sum`` is the summed *update* (not weights) of ``extra_count`` further
    replies whose updates already have norm ≤ ``clip`` (clipping leaves them as
    they are), e.g. canary clients: the same result as passing them one by one,
    without materialising each.
    """
    n = len(replies) + int(extra_count)
    if n < 1:
        raise ValueError("a client-level DP round needs at least one reply")
    cur = [np.asarray(c, dtype=np.float64) for c in current]
    total = [np.zeros_like(c) for c in cur] if extra_sum is None else [np.asarray(e, dtype=np.float64).copy()
                                                                       for e in extra_sum]
    for arrays in replies:
        own = [np.array(a, dtype=np.float64) for a in arrays]
        compute_clip_model_update(own, cur, clip)
        for t, o, c in zip(total, own, cur):
            t += o - c
    std = compute_stdv(noise_multiplier, clip, n)
    return [(c + t / n + rng.normal(0, std, c.shape)).astype(np.asarray(orig).dtype)
            for c, t, orig in zip(cur, total, current)]
