"""Exact per-sample gradient clipping in one backward pass, for heads over vectors and over chunk sequences.

For a linear layer applied to one vector per sample, sample *i*'s weight
gradient is the outer product ``g_i a_iᵀ`` of the gradient at the layer's output
and the layer's input, so its norm is ``‖g_i‖ · ‖a_i‖`` and never needs to be
materialised (Goodfellow 2015; "ghost" norms, Li et al. 2022). The clipped sum
``Σ_i c_i g_i a_iᵀ`` is then one matrix product ``(c ⊙ G)ᵀ A`` (the
book-keeping trick of Bu et al. 2023), so a DP-SGD step costs one forward pass,
one backward pass to the layer outputs and the usual weight-gradient products:
about a non-private step. Opacus' ghost clipping instead runs a second full
backward pass.

Applied to a sequence ``[B, T, p]`` (a chunk-sequence head), sample *b*'s weight
gradient is ``Σ_t g_bt a_btᵀ`` and its squared norm
``Σ_{t,s} (g_bt·g_bs)(a_bt·a_bs)``: the ghost-norm Gram trick of Li et al. 2022,
``O(B T² (p + q))``; when ``p q < T (p + q)`` the per-sample gradient itself
(``O(B T p q)``) is cheaper and is materialised instead. ``nn.Conv1d`` is the
same once its input is unfolded into ``[B, T_out, C_in·k]`` windows. (The
chunk-sequence heads' output layer is such an ``nn.Linear`` on ``[B, T, k]``:
:mod:`fedicd.heads_sequence` pools its per-chunk label scores with the
attention weights.)

Supported parameterised layers: ``nn.Linear`` on ``[B, features]`` or
``[B, T, features]``; ``nn.Conv1d`` (zero padding, any stride and dilation,
``groups = 1``) on ``[B, C, L]``; ``nn.LayerNorm`` on
``[B, …, *normalized_shape]``; ``nn.GroupNorm`` on ``[B, C, …]``: every layer
of fedicd's heads once BatchNorm is replaced
(:func:`fedicd.privacy.dp_sgd.make_private_head`). These exact classes only: a
subclass may compute something else in its ``forward`` (Opacus matches
samplers by exact type too). Anything else raises
:class:`UnsupportedLayerError` at construction (:func:`unsupported_layers` says
which; ``privacy.clipping = "auto"`` then picks Opacus' ghost clipping), and an
input of another shape raises at the first step; nothing falls back to an
inexact norm. Parameter-free layers (ReLU, tanh, Dropout, masked softmax,
residual additions) need nothing. Each layer must run once per forward pass
(no weight tying), and the per-sample losses must not mix samples (no
BatchNorm, no batch-level loss terms).

The clipping factor is Opacus': ``c_i = min(1, C / (‖∇ℓ_i‖ + 1e-6))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedClipper", "UnsupportedLayerError", "SUPPORTED_LAYERS", "unsupported_layers", "resolve_clipping"]

SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.LayerNorm, nn.GroupNorm)

# (squared per-sample norm [B], finish(coef [B]) -> {parameter: clipped sum})
Terms = tuple[torch.Tensor, Callable[[torch.Tensor], dict[nn.Parameter, torch.Tensor]]]


class UnsupportedLayerError(TypeError):
    """A layer whose per-sample gradient norm the fused clipper cannot compute exactly."""


def _refusal(module: nn.Module) -> str | None:
    """Why ``module`` (which has trainable parameters) has no exact fused norm; None when it has one."""
    if type(module) not in SUPPORTED_LAYERS:  # exact type: a subclass's forward may not be the formula's layer
        return f"{type(module).__name__} is not one of {[c.__name__ for c in SUPPORTED_LAYERS]}"
    if isinstance(module, nn.Conv1d) and (module.groups != 1 or module.padding_mode != "zeros"):
        return (f"Conv1d with groups={module.groups}, padding_mode={module.padding_mode!r} (fused clipping takes "
                "groups=1 and zero padding)")
    return None


def unsupported_layers(model: nn.Module) -> list[str]:
    """``"name (why)"`` for every layer with trainable parameters that :class:`FusedClipper` cannot clip exactly."""
    out = []
    for name, module in model.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            why = _refusal(module)
            if why is not None:
                out.append(f"{name or '<root>'!r} ({why})")
    return out


def resolve_clipping(requested: str, model: nn.Module) -> tuple[str, str | None]:
    """The clipping method to run for ``privacy.clipping = requested`` on ``model``, and a notice (or None).

    ``"auto"`` → ``"fused"`` when every trainable layer is supported, else ``"ghost"`` with a notice naming the
    layers; ``"fused"`` on an unsupported model raises :class:`UnsupportedLayerError`; ``"ghost"`` and
    ``"hooks"`` are returned as given.
    """
    if requested not in ("auto", "fused"):
        return requested, None
    missing = unsupported_layers(model)
    if not missing:
        return "fused", None
    if requested == "fused":
        raise UnsupportedLayerError(f"privacy.clipping = 'fused' cannot clip layers {missing} exactly; set "
                                    "privacy.clipping = 'auto' (or 'ghost') to use Opacus' ghost clipping")
    return "ghost", (f"privacy.clipping = 'auto' → 'ghost' (Opacus): no fused per-sample norm for layers "
                     f"{missing}")


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
            why = _refusal(module)
            if why is not None:
                raise UnsupportedLayerError(
                    f"layer {name or '<root>'!r} ({type(module).__name__}) has trainable parameters but no exact "
                    f"per-sample norm here: {why} (replace BatchNorm with fedicd.privacy.make_private_head; "
                    "privacy.clipping = 'auto' or 'ghost' uses Opacus)")
            self.layers.append((name, module))
        if not self.layers:
            raise UnsupportedLayerError("the model has no trainable layers")
        self._seen: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._handles = [m.register_forward_hook(self._keep) for _, m in self.layers]
        self._handles.append(model.register_forward_pre_hook(self._start))

    def _recording(self) -> bool:
        return torch.is_grad_enabled() and self.model.training

    def _start(self, _module: nn.Module, _inputs: tuple) -> None:
        if self._recording():  # a new training forward pass: forget the last one's records
            self._seen = {}

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._recording():
            self._seen.setdefault(module, []).append((inputs[0].detach(), output))

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
        tied = [name for name, m in self.layers if len(self._seen[m]) > 1]
        if tied:
            raise RuntimeError(f"layers {tied} ran more than once in one forward pass (shared weights): fused "
                               "clipping needs each layer once; use privacy.clipping = 'hooks'")
        batch = per_sample_loss.shape[0]
        seen = [self._seen[m][0] for _, m in self.layers]
        self._seen = {}
        out_grads = torch.autograd.grad(per_sample_loss.sum(), [out for _, out in seen])
        finishers = []
        sq_norms = per_sample_loss.new_zeros(batch)
        for (name, module), (a, _), g in zip(self.layers, seen, out_grads):
            if a.shape[0] != batch:
                raise ValueError(f"layer {name!r}: its input {tuple(a.shape)} does not start with the batch "
                                 f"dimension {batch}")
            sq, finish = _terms(name, module, a, g.detach())
            sq_norms += sq
            finishers.append(finish)
        norms = sq_norms.sqrt()
        coef = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for finish in finishers:
            for param, grad in finish(coef).items():
                param.grad = grad.view_as(param)
        return norms.detach()


def _on(param: nn.Parameter | None) -> bool:
    return param is not None and param.requires_grad


def _terms(name: str, module: nn.Module, a: torch.Tensor, g: torch.Tensor) -> Terms:
    """The layer's squared per-sample norms and the function that sums its clipped per-sample gradients."""
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            return _linear_terms(module, a, g)
        if a.dim() == 3:
            return _sequence_linear_terms(module.weight, module.bias, a, g)
        raise ValueError(f"layer {name!r}: fused clipping needs [B, features] or [B, T, features] inputs to "
                         f"nn.Linear, got {tuple(a.shape)}")
    if isinstance(module, nn.Conv1d):
        if a.dim() != 3:
            raise ValueError(f"layer {name!r}: fused clipping needs batched [B, C, L] inputs to nn.Conv1d, got "
                             f"{tuple(a.shape)}")
        return _sequence_linear_terms(module.weight, module.bias, conv1d_windows(module, a), g.transpose(1, 2))
    if isinstance(module, nn.GroupNorm) and a.dim() < 2:
        raise ValueError(f"layer {name!r}: fused clipping needs [B, C, …] inputs to nn.GroupNorm, got "
                         f"{tuple(a.shape)}")
    return _norm_terms(module, a, g)


def _linear_terms(module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> Terms:
    """``[B, p]`` inputs: ``‖g_i a_iᵀ‖ = ‖g_i‖ ‖a_i‖``; clipped sum ``(c ⊙ G)ᵀ A``."""
    sq = a.new_zeros(a.shape[0])
    if _on(module.weight):
        sq = sq + g.pow(2).sum(1) * a.pow(2).sum(1)
    if _on(module.bias):
        sq = sq + g.pow(2).sum(1)

    def finish(coef: torch.Tensor) -> dict:
        gc = g * coef[:, None]
        out = {module.weight: gc.t() @ a} if _on(module.weight) else {}
        if _on(module.bias):
            out[module.bias] = gc.sum(0)
        return out

    return sq, finish


def _sequence_linear_terms(weight: nn.Parameter, bias: nn.Parameter | None, a: torch.Tensor,
                           g: torch.Tensor) -> Terms:
    """``a [B, T, p]``, ``g [B, T, q]``: per-sample weight gradient ``Σ_t g_bt a_btᵀ`` (``[q, p]``, viewed as
    ``weight``'s shape), bias gradient ``Σ_t g_bt``."""
    batch, steps, p = a.shape
    q = g.shape[2]
    sq = a.new_zeros(batch)
    per_sample = None
    if _on(weight):
        if p * q < steps * (p + q):  # materialising costs B·T·p·q, the Gram matrices B·T²·(p + q)
            per_sample = torch.bmm(g.transpose(1, 2), a)  # [B, q, p]
            sq = sq + per_sample.pow(2).sum((1, 2))
        else:
            gram = torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))
            sq = sq + gram.sum((1, 2)).clamp(min=0)
    bias_per_sample = g.sum(1) if _on(bias) else None
    if bias_per_sample is not None:
        sq = sq + bias_per_sample.pow(2).sum(1)

    def finish(coef: torch.Tensor) -> dict:
        out = {}
        if _on(weight):
            if per_sample is not None:
                out[weight] = (coef @ per_sample.reshape(batch, -1)).view(q, p)
            else:
                out[weight] = (g * coef[:, None, None]).reshape(-1, q).t() @ a.reshape(-1, p)
        if bias_per_sample is not None:
            out[bias] = coef @ bias_per_sample
        return out

    return sq, finish


def conv1d_padding(module: nn.Conv1d) -> tuple[int, int]:
    """(left, right) zero padding ``module`` applies to its length axis (``"same"``, ``"valid"`` or an int)."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return 0, 0
        total = module.dilation[0] * (module.kernel_size[0] - 1)  # "same": torch puts the odd one on the right
        return total // 2, total - total // 2
    return module.padding[0], module.padding[0]


def conv1d_windows(module: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``x [B, C_in, L]`` → the input windows ``[B, T_out, C_in·k]`` each output position of ``module`` reads
    (ordered like ``module.weight.view(C_out, C_in·k)``), so the convolution is a Linear layer over them."""
    (k,), (stride,), (dilation,) = module.kernel_size, module.stride, module.dilation
    left, right = conv1d_padding(module)
    padded = F.pad(x, (left, right)) if left or right else x
    span = dilation * (k - 1) + 1
    windows = padded.unfold(2, span, stride)[..., ::dilation]  # [B, C_in, T_out, k]
    return windows.permute(0, 2, 1, 3).reshape(x.shape[0], windows.shape[2], -1)


def _norm_terms(module: nn.LayerNorm | nn.GroupNorm, a: torch.Tensor, g: torch.Tensor) -> Terms:
    """Norm layers: sample ``b``'s weight gradient is ``g ⊙ x̂`` summed over its positions, bias ``g`` summed."""
    batch = a.shape[0]
    if isinstance(module, nn.LayerNorm):
        feature = F.layer_norm(a, module.normalized_shape, None, None, module.eps)

        def per_sample(t: torch.Tensor) -> torch.Tensor:  # [B, …, *normalized_shape] → [B, prod(shape)]
            return t.reshape(batch, -1, *module.normalized_shape).sum(1).reshape(batch, -1)
    else:
        feature = F.group_norm(a, module.num_groups, None, None, module.eps)

        def per_sample(t: torch.Tensor) -> torch.Tensor:  # [B, C, …] → [B, C]
            return t.reshape(batch, t.shape[1], -1).sum(2)
    grads = {}
    if _on(module.weight):
        grads[module.weight] = per_sample(g * feature)
    if _on(module.bias):
        grads[module.bias] = per_sample(g)
    sq = sum((ps.pow(2).sum(1) for ps in grads.values()), a.new_zeros(batch))

    def finish(coef: torch.Tensor) -> dict:
        return {param: coef @ ps for param, ps in grads.items()}

    return sq, finish
