"""Sample-level DP-SGD for one client's local training (Opacus noise, accounting and sampling).

One step: a Poisson-sampled batch (each note kept with probability q,
:func:`poisson_batches`), the
per-sample HybridLoss, per-sample gradients clipped to norm C and summed
(:mod:`fedicd.privacy.fused_clipping`, or Opacus' ghost clipping / hooks),
Gaussian noise of std σ·C added by Opacus' optimizer, division by the expected
batch size q·n, then the local optimizer's update (AdamW or SGD; FedProx's
proximal gradient, which does not touch data, is added after the noise). An
empty Poisson batch still takes a noise-only step, as the analysis assumes.
Every step is recorded in Opacus' RDP accountant.

:meth:`DPStepper.step` is a step of :func:`fedicd.train.run_epoch`, the loop
non-private training runs too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator
from torch import nn

from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import DPPlan
from fedicd.privacy.fused_clipping import FusedClipper, resolve_clipping
from fedicd.sequences import ChunkSequences

__all__ = ["make_private_head", "DPStepper", "PerSampleCriterion", "poisson_batches"]

log = logging.getLogger(__name__)


def make_private_head(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Replace layers incompatible with per-sample DP (BatchNorm → GroupNorm) via Opacus' ModuleValidator.

    Returns the (possibly new) model and a notice per replaced layer type; an
    empty list when the model was already valid.
    """
    errors = ModuleValidator.validate(model, strict=False)
    if not errors:
        return model, []
    notices = sorted({f"{type(e).__name__}: {e}" for e in errors})
    fixed = ModuleValidator.fix(model)
    remaining = ModuleValidator.validate(fixed, strict=False)
    if remaining:
        raise ValueError(f"the head cannot be made DP-compatible: {remaining}")
    for n in notices:
        log.warning("DP: %s; replaced by Opacus ModuleValidator.fix (BatchNorm → GroupNorm)", n)
    return fixed, notices


class PerSampleCriterion:
    """HybridLoss with the reduction contract Opacus' ghost clipping expects.

    ``DPLossFastGradientClipping`` sets ``criterion.reduction = "none"`` and
    multiplies the result by a ``[B]`` vector of clipping factors; a plain
    multi-label loss would return ``[B, C]`` there and broadcast wrongly (or
    fail). Here ``"none"`` means one value per sample (the mean over labels).
    """

    def __init__(self, loss: HybridLoss):
        self.per_sample = per_sample_loss(loss)
        self.reduction = "mean"

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        values = self.per_sample(logits, targets)
        if self.reduction == "none":
            return values
        return values.mean() if self.reduction == "mean" else values.sum()


def per_sample_loss(loss: HybridLoss) -> HybridLoss:
    """The same HybridLoss with one value per sample (the mean over labels)."""
    return HybridLoss(alpha=loss.alpha, gamma=loss.gamma, bce_weight=loss.bce_weight, reduction="per_sample")


def poisson_batches(x: torch.Tensor | ChunkSequences, y: torch.Tensor, sample_rate: float, steps: int,
                    generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` Poisson-sampled batches of ``(x, y)``: each row kept independently with probability
    ``sample_rate`` (a batch may be empty). For chunk sequences ``x[idx]`` is the padded batch
    ``[B, T, 1 + d]`` (:class:`~fedicd.sequences.ChunkSequences`)."""
    for _ in range(steps):
        idx = (torch.rand(len(x), generator=generator) < sample_rate).nonzero().squeeze(1)
        yield x[idx], y[idx]


@dataclass
class StepStats:
    steps: int = 0
    empty_batches: int = 0
    clipped_fraction_sum: float = 0.0
    loss_sum: float = 0.0
    loss_batches: int = 0


class DPStepper:
    """Wraps a model and a local optimizer for DP-SGD steps under a :class:`DPPlan`.

    ``history`` is the client's accountant history so far (persisted across
    rounds by the caller); :attr:`history` holds it after the steps taken here.
    ``clipping`` is ``"fused"``, ``"ghost"``, ``"hooks"`` or ``"auto"`` (``"fused"`` when every trainable layer
    has a fused norm, else ``"ghost"``: :func:`~fedicd.privacy.fused_clipping.resolve_clipping`; :attr:`clipping`
    holds the method used). ``canary_gradients`` (auditing only,
    :mod:`fedicd.privacy.canaries`) returns, each step, ``{parameter name: tensor}`` added to the clipped
    per-sample sum before the noise (or None: nothing this step); None (the default) changes nothing.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss: HybridLoss, plan: DPPlan, *,
                 clip: float, clipping: str = "auto", history: list | None = None,
                 noise_generator: torch.Generator | None = None, secure_rng: bool = False,
                 canary_gradients: Callable[[], dict[str, torch.Tensor] | None] | None = None):
        if clipping not in ("auto", "fused", "ghost", "hooks"):
            raise ValueError(f"clipping must be 'auto', 'fused', 'ghost' or 'hooks', got {clipping!r}")
        clipping, _ = resolve_clipping(clipping, model)
        self.model, self.plan, self.clip, self.clipping = model, plan, float(clip), clipping
        self.canary_gradients = canary_gradients
        self.accountant = RDPAccountant()
        self.accountant.history = [tuple(h) for h in (history or [])]
        kwargs = {"noise_multiplier": plan.noise_multiplier, "max_grad_norm": self.clip,
                  "expected_batch_size": max(1, round(plan.sample_rate * plan.n)), "loss_reduction": "mean",
                  "generator": noise_generator, "secure_mode": secure_rng}
        self._gsm = None
        if clipping == "fused":
            self._clipper = FusedClipper(model)
            self.optimizer = DPOptimizerFastGradientClipping(optimizer, **kwargs)
        elif clipping == "ghost":
            self._gsm = GradSampleModuleFastGradientClipping(model, max_grad_norm=self.clip, use_ghost_clipping=True,
                                                             loss_reduction="mean")
            self.optimizer = DPOptimizerFastGradientClipping(optimizer, **kwargs)
            self._criterion = DPLossFastGradientClipping(self._gsm, self.optimizer, PerSampleCriterion(loss), "mean")
        else:  # hooks
            self._gsm = GradSampleModule(model, loss_reduction="mean")
            self.optimizer = DPOptimizer(optimizer, **kwargs)
        self.optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=plan.sample_rate))
        self.stats = StepStats()
        self._per_sample = per_sample_loss(loss)

    @property
    def history(self) -> list:
        return [tuple(h) for h in self.accountant.history]

    def close(self) -> None:
        """Detach every hook from the model (it is plain again)."""
        if self.clipping == "fused":
            self._clipper.remove()
        elif self._gsm is not None:
            self._gsm._close()

    def step(self, x: torch.Tensor, y: torch.Tensor, before_update: Callable[[], None] | None = None) -> float | None:
        """One DP-SGD step on the sampled rows ``x, y`` (may be empty); returns the mean per-sample loss,
        None for an empty batch. ``before_update`` edits the noised gradients before the optimizer update."""
        self.optimizer.zero_grad(set_to_none=False)
        loss = None
        if len(x) == 0:
            self._empty_gradients()
        elif self.clipping == "fused":
            per_sample = self._per_sample(self.model(x), y)
            norms = self._clipper.clip_and_accumulate(per_sample, self.clip)
            loss = self._record(per_sample, norms)
        elif self.clipping == "ghost":
            ghost_loss = self._criterion(self._gsm(x), y)
            ghost_loss.backward()
            loss = self._record(ghost_loss.loss_per_sample, None)
        else:
            per_sample = self._per_sample(self._gsm(x), y)
            per_sample.mean().backward()
            loss = self._record(per_sample, None)
        if self.canary_gradients is not None:
            self._add_canaries(self.canary_gradients())
        if self.optimizer.pre_step():
            if before_update is not None:
                before_update()
            self.optimizer.original_optimizer.step()
        self.stats.steps += 1
        return loss

    def _add_canaries(self, extra: dict[str, torch.Tensor] | None) -> None:
        """Add auditing canaries' (already clipped) gradients to the clipped sum, before Opacus' noise."""
        if not extra:
            return
        params = dict(self.model.named_parameters())
        for name, g in extra.items():
            p = params[name]
            if self.clipping == "hooks":  # DPOptimizer.clip_and_accumulate adds the clipped sum to summed_grad
                p.summed_grad = g.detach().clone().to(p) if p.summed_grad is None else p.summed_grad + g.to(p)
            else:  # fused / ghost: p.grad is the clipped sum until DPOptimizerFastGradientClipping.pre_step
                p.grad.add_(g.to(p))

    def _empty_gradients(self) -> None:
        """Zero gradients for an empty Poisson batch: the step is noise only."""
        self.stats.empty_batches += 1
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
                if self.clipping == "hooks":
                    p.grad_sample = torch.zeros(0, *p.shape, dtype=p.dtype)

    def _record(self, per_sample: torch.Tensor, norms: torch.Tensor | None) -> float:
        loss = float(per_sample.detach().mean())
        self.stats.loss_sum += loss
        self.stats.loss_batches += 1
        if norms is not None:
            self.stats.clipped_fraction_sum += float((norms > self.clip).float().mean())
        return loss
