"""Fused per-sample clipping equals clipping explicitly computed per-sample gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedicd.heads import build_head
from fedicd.losses import HybridLoss
from fedicd.privacy.fused_clipping import FusedClipper, UnsupportedLayerError


def _explicit(model, x, y, loss_fn, clip):
    """Per-sample gradients by torch.func (vmap over grad), clipped and summed by hand."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def one(p, xi, yi):
        return loss_fn(torch.func.functional_call(model, p, (xi[None],)), yi[None]).squeeze(0)

    per = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per.values()))
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    summed = {k: (g * coef.view(-1, *[1] * (g.dim() - 1))).sum(0) for k, g in per.items()}
    return norms, summed, per, coef


def _assert_fused_matches_explicit(model, x, y, clip, rtol):
    """Run the fused clipper and compare norms and summed gradients with :func:`_explicit`; return its output."""
    loss_fn = HybridLoss(reduction="per_sample")
    ref = _explicit(model, x, y, loss_fn, clip)
    clipper = FusedClipper(model)
    model.train()
    norms = clipper.clip_and_accumulate(loss_fn(model(x), y), max_grad_norm=clip)
    torch.testing.assert_close(norms, ref[0], rtol=rtol, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[1][name], rtol=10 * rtol, atol=1e-12)
    return ref


HEADS = [("mlp", {}), ("mlp", {"norm": "layer"}), ("deep_mlp", {"norm": "group", "hidden": (64, 64)}),
         ("deep_mlp", {"norm": "layer", "hidden": (24, 16)}), ("deep_res_mlp", {"norm": "layer", "hidden": (16,)}),
         ("deep_res_mlp", {"norm": "group", "hidden": (96,)})]


@pytest.mark.parametrize(("head", "kwargs"), HEADS)
@pytest.mark.parametrize("clip", [1e-3, 0.05, 100.0])
def test_fused_clipping_matches_explicit_per_sample_gradients(head, kwargs, clip):
    torch.manual_seed(0)
    model = build_head(head, 12, 7, dropout=0.0, **kwargs).double()
    x = torch.randn(9, 12, dtype=torch.float64)
    y = (torch.rand(9, 7) < 0.3).double()
    _, _, per, coef = _assert_fused_matches_explicit(model, x, y, clip, rtol=1e-10)
    # every clipped per-sample gradient has norm <= C
    clipped_norms = torch.sqrt(sum((g * coef.view(-1, *[1] * (g.dim() - 1))).flatten(1).pow(2).sum(1)
                                   for g in per.values()))
    assert bool((clipped_norms <= clip * (1 + 1e-9)).all())


@settings(deadline=None, max_examples=25)
@given(batch=st.integers(1, 20), width=st.integers(1, 9), labels=st.integers(1, 6),
       clip=st.floats(1e-4, 10.0), seed=st.integers(0, 2**16))
def test_fused_clipping_property_on_mlp(batch, width, labels, clip, seed):
    torch.manual_seed(seed)
    model = build_head("mlp", 5, labels, hidden=(width,), dropout=0.0).double()
    x = torch.randn(batch, 5, dtype=torch.float64)
    y = (torch.rand(batch, labels) < 0.5).double()
    _assert_fused_matches_explicit(model, x, y, clip, rtol=1e-9)


def test_dropout_masks_are_the_ones_used_in_the_forward_pass():
    torch.manual_seed(1)
    model = build_head("mlp", 6, 3, hidden=(8,), dropout=0.5).double()
    x, y = torch.randn(5, 6, dtype=torch.float64), (torch.rand(5, 3) < 0.5).double()
    loss_fn = HybridLoss(reduction="per_sample")
    clipper = FusedClipper(model)
    model.train()
    torch.manual_seed(7)
    loss = loss_fn(model(x), y)
    clipper.clip_and_accumulate(loss, max_grad_norm=1e6)  # no clipping: equals the plain summed gradient
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}
    clipper.remove()
    model.zero_grad()
    torch.manual_seed(7)
    loss_fn(model(x), y).sum().backward()
    for k, p in model.named_parameters():
        torch.testing.assert_close(fused[k], p.grad)


def test_batchnorm_and_bad_losses_are_refused():
    with pytest.raises(UnsupportedLayerError, match=r"layer 'net.1' \(BatchNorm1d\)"):
        FusedClipper(build_head("deep_mlp", 4, 2, hidden=(8,)))
    model = build_head("mlp", 4, 2, hidden=(8,))
    clipper = FusedClipper(model)
    model.train()
    out = model(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"one loss per sample \(shape \[B\]\), got shape \(3, 2\)"):
        clipper.clip_and_accumulate(HybridLoss(reduction="none")(out, torch.zeros(3, 2)), 1.0)
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        clipper.clip_and_accumulate(HybridLoss(reduction="per_sample")(out, torch.zeros(3, 2)), 0.0)
    seq = nn.Sequential(nn.Linear(4, 2))
    c2 = FusedClipper(seq)
    seq.train()
    with pytest.raises(ValueError, match=r"needs \[B, features\] or \[B, T, features\] inputs to nn.Linear, "
                                         r"got \(3, 2, 5, 4\)"):
        c2.clip_and_accumulate(seq(torch.randn(3, 2, 5, 4)).sum((1, 2, 3)), 1.0)
