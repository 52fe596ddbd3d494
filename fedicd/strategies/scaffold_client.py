"""SCAFFOLD client side [Karimireddy et al., 2020]: gradient correction and control variates.

Paper: https://arxiv.org/abs/1910.06378, Algorithm 1. Pure torch; controls are
``dict[str, Tensor]`` keyed by ``model.named_parameters()`` names and cover trainable
parameters only (BatchNorm running statistics and other buffers have no control).

Privacy: ``c_i^+`` is a full-batch gradient of the client's local loss; the delta
``c_i^+ - c_i`` sent to the server leaks as much about the local data as a model update.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedicd.errors import ShapeError
from fedicd.local_training import scaffold_correct_gradients_

__all__ = [
    "control_from_arrayrecord",
    "control_to_arrayrecord",
    "scaffold_client_control",
    "scaffold_correct_gradients_",
]


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def scaffold_client_control(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 4096,
    train_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """Option I control: ``c_i^+`` = full-batch gradient of the local loss at the global model.

    Call on the *received* global model, before local training. The loss is taken
    as the mean over all ``len(x)`` local examples, accumulated in chunks of
    ``batch_size``; ``loss_fn`` must return the mean over its batch (as
    ``HybridLoss(reduction="mean")`` and ``torch.nn.BCEWithLogitsLoss`` do).

    ``model`` holds the global parameters (its ``.grad`` fields are not touched);
    ``x``, ``y`` are all local inputs and targets (moved to the model's device chunk
    by chunk); ``loss_fn(logits, targets)`` returns the scalar mean loss.
    ``batch_size`` (the chunk size) changes the result only through BatchNorm's
    batch statistics in train mode. ``train_mode`` (default): dropout is active, so
    ``c_i^+`` estimates the gradient of the objective the corrected local steps
    actually optimise (one dropout draw per example); ``False`` gives the
    deterministic eval-mode gradient. Either way the model's mode and buffers
    (BatchNorm running statistics) are restored afterwards.

    Returns the detached gradients, keyed by trainable parameter name.
    """
    n = int(x.shape[0])
    if n == 0 or int(y.shape[0]) != n:
        raise ShapeError(f"x and y must hold the same, non-zero number of rows, got {n} and {int(y.shape[0])}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    params = _trainable(model)
    was_training, buffers = model.training, {k: b.detach().clone() for k, b in model.named_buffers()}
    model.train(train_mode)
    try:
        grads = _mean_gradient(model, params, x, y, loss_fn, batch_size)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
    return {name: g.detach() for name, g in grads.items()}


def _mean_gradient(model: torch.nn.Module, params: dict[str, torch.nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   batch_size: int) -> dict[str, torch.Tensor]:
    """Gradient of the mean loss over all rows, accumulated chunk by chunk (each chunk weighted by its share)."""
    n = int(x.shape[0])
    device = next(iter(params.values())).device
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
        loss = loss_fn(model(xb), yb) * (xb.shape[0] / n)
        chunk = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for name, g in zip(params, chunk, strict=True):
            if g is not None:
                grads[name] += g
    return grads


def control_to_arrayrecord(control: dict[str, torch.Tensor]) -> ArrayRecord:
    """Pack a control (or control delta) into an ArrayRecord for a Message."""
    return ArrayRecord({name: Array(t.detach().cpu().numpy()) for name, t in control.items()})


def control_from_arrayrecord(record: ArrayRecord, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unpack a received control for ``model``'s trainable parameters.

    Names missing from ``record`` are zeros; names that are not trainable
    parameters (e.g. BatchNorm buffers the server tracks) are ignored.
    """
    control = {}
    for name, p in _trainable(model).items():
        if name in record:
            values = np.asarray(record[name].numpy())
            if tuple(values.shape) != tuple(p.shape):
                raise ShapeError(f"control {name!r} has shape {tuple(values.shape)}, expected {tuple(p.shape)}")
            control[name] = torch.as_tensor(values, dtype=p.dtype, device=p.device)
        else:
            control[name] = torch.zeros_like(p)
    return control
