"""Exact per-sample gradient clipping in one backward pass, for heads over vectors.

For a linear layer applied to one vector per sample, sample *i*'s weight
gradient is the outer product ``g_i a_iᵀ`` of the gradient at the layer's output
and the layer's input, so its norm is ``‖g_i‖ · ‖a_i‖`` and never needs to be
materialised (Goodfellow 2015; "ghost" norms, Li et al. 2022). The clipped sum
``Σ_i c_i g_i a_iᵀ`` is then one matrix product ``(c ⊙ G)ᵀ A`` (the
book-keeping trick of Bu et al. 2023), so a DP-SGD step costs one forward pass,
one backward pass to the layer outputs and the usual weight-gradient products:
about a non-private step. Opacus' ghost clipping instead runs a second full
backward pass.

Supported parameterised layers: ``nn.Linear``, ``nn.LayerNorm`` and
``nn.GroupNorm`` on ``[B, features]`` inputs: every layer of fedicd's heads
once BatchNorm is replaced (:func:`fedicd.privacy.heads.make_private_head`).
Anything else raises :class:`UnsupportedLayerError` at construction, and an
input with a sequence dimension raises at the first step; nothing falls back
to an inexact norm. Parameter-free layers (ReLU, Dropout, residual additions)
need nothing. The per-sample losses must not mix samples (no BatchNorm, no
batch-level loss terms).

The clipping factor is Opacus': ``c_i = min(1, C / (‖∇ℓ_i‖ + 1e-6))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedClipper", "UnsupportedLayerError", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = (nn.Linear, nn.LayerNorm, nn.GroupNorm)


class UnsupportedLayerError(TypeError):
    """A layer whose per-sample gradient norm the fused clipper cannot compute exactly."""


class FusedClipper:
    """Hooks on a model's layers that turn per-sample losses into clipped, summed gradients.

    Usage (one DP-SGD step)::

        clipper = FusedClipper(model)
        loss = loss_fn(model(x), y)            # shape [B]: one loss per sample
        norms = clipper.clip_and_accumulate(loss, max_grad_norm=C)
        # every p.grad now holds Σ_i min(1, C/‖∇ℓ_i‖) ∇ℓ_i (a sum, not a mean)

    ``norms`` are the unclipped per-sample gradient norms. Call :meth:`remove`
    to detach the hooks.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers: list[tuple[str, nn.Module]] = []
        for name, module in model.named_modules():
            own = [p for p in module.parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            if not isinstance(module, SUPPORTED_LAYERS):
                raise UnsupportedLayerError(
                    f"layer {name or '<root>'!r} ({type(module).__name__}) has trainable parameters but no exact "
                    f"per-sample norm here; supported: {[c.__name__ for c in SUPPORTED_LAYERS]} "
                    "(replace BatchNorm with fedicd.privacy.make_private_head)")
            self.layers.append((name, module))
        if not self.layers:
            raise UnsupportedLayerError("the model has no trainable layers")
        self._seen: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [m.register_forward_hook(self._keep) for _, m in self.layers]

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if torch.is_grad_enabled() and self.model.training:
            self._seen[module] = (inputs[0].detach(), output)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()

    def clip_and_accumulate(self, per_sample_loss: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
        """Set every parameter's ``.grad`` to the sum of clipped per-sample gradients; return the raw norms."""
        if per_sample_loss.dim() != 1:
            raise ValueError(f"need one loss per sample (shape [B]), got shape {tuple(per_sample_loss.shape)}; "
                             "use HybridLoss(reduction='per_sample')")
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {max_grad_norm}")
        missing = [name for name, m in self.layers if m not in self._seen]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the last training-mode forward pass")
        batch = per_sample_loss.shape[0]
        seen = [self._seen[m] for _, m in self.layers]
        self._seen = {}
        out_grads = torch.autograd.grad(per_sample_loss.sum(), [out for _, out in seen])
        parts = []
        sq_norms = per_sample_loss.new_zeros(batch)
        for (name, module), (a, _), g in zip(self.layers, seen, out_grads):
            if a.dim() != 2 or a.shape[0] != batch:
                raise ValueError(f"layer {name!r}: fused clipping needs [B, features] inputs, got {tuple(a.shape)}")
            g = g.detach()
            feature = _weight_feature(module, a)  # per-sample weight gradient is g ⊙ feature (norm layers)
            if isinstance(module, nn.Linear):
                sq_norms += g.pow(2).sum(1) * a.pow(2).sum(1)
            elif module.weight is not None and module.weight.requires_grad:
                sq_norms += (g * feature).pow(2).sum(1)
            if module.bias is not None and module.bias.requires_grad:
                sq_norms += g.pow(2).sum(1)
            parts.append((module, a, g, feature))
        norms = sq_norms.sqrt()
        coef = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for module, a, g, feature in parts:
            gc = g * coef[:, None]
            if module.weight is not None and module.weight.requires_grad:
                grad = gc.t() @ a if isinstance(module, nn.Linear) else (gc * feature).sum(0)
                module.weight.grad = grad.view_as(module.weight)
            if module.bias is not None and module.bias.requires_grad:
                module.bias.grad = gc.sum(0).view_as(module.bias)
        return norms.detach()


def _weight_feature(module: nn.Module, a: torch.Tensor) -> torch.Tensor | None:
    """What the output gradient multiplies to give a norm layer's per-sample weight gradient (x̂)."""
    if isinstance(module, nn.LayerNorm):
        return F.layer_norm(a, module.normalized_shape, None, None, module.eps)
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(a, module.num_groups, None, None, module.eps)
    return None
