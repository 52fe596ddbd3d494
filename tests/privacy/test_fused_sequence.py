"""Fused clipping on chunk-sequence layers (Linear on [B, T, p], Conv1d, LayerNorm on [B, T, f])
equals clipping brute-force per-sample gradients (torch.func), layer by layer and for whole sequence heads."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fedicd.losses import HybridLoss
from fedicd.privacy.fused_clipping import (FusedClipper, UnsupportedLayerError, conv1d_windows, resolve_clipping,
                                           unsupported_layers)
from fedicd.sequences import ChunkSequences, unpack

LOSS = HybridLoss(reduction="per_sample")


def _brute_force(model, x, y, clip, *, vmap=True):
    """Per-sample gradients by torch.func.grad (vmapped, or one sample at a time), clipped and summed by hand."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def one(p, xi, yi):
        return LOSS(torch.func.functional_call(model, p, (xi[None],)), yi[None]).squeeze(0)

    if vmap:
        per = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(params, x, y)
    else:  # heads with data-dependent checks (masked_softmax refuses an all-padding row) cannot be vmapped
        rows = [torch.func.grad(one)(params, x[i], y[i]) for i in range(len(x))]
        per = {k: torch.stack([r[k] for r in rows]) for k in params}
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in per.values()))
    coef = (clip / (norms + 1e-6)).clamp(max=1.0)
    return norms, {k: (g * coef.view(-1, *[1] * (g.dim() - 1))).sum(0) for k, g in per.items()}


def _check(model, x, y, clip, *, norm_rtol=1e-10, sum_rtol=1e-9, vmap=True):
    """Fused norms and clipped sums against :func:`_brute_force`; returns the norms."""
    model.train()
    ref_norms, ref_sums = _brute_force(model, x, y, clip, vmap=vmap)
    clipper = FusedClipper(model)
    model.zero_grad(set_to_none=True)
    norms = clipper.clip_and_accumulate(LOSS(model(x), y), max_grad_norm=clip)
    clipper.remove()
    torch.testing.assert_close(norms, ref_norms, rtol=norm_rtol, atol=1e-12)
    scale = max(float(g.abs().max()) for g in ref_sums.values())  # absolute error relative to the largest entry
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ref_sums[name], rtol=sum_rtol, atol=sum_rtol * scale)
        else:
            assert p.grad is None
    return norms


class Pool(nn.Module):
    """Wraps a [B, T, ·] → [B, T, q] block: mean over positions, then a Linear to the labels."""

    def __init__(self, block: nn.Module, width: int, labels: int, channels_first: bool = False):
        super().__init__()
        self.block, self.head, self.channels_first = block, nn.Linear(width, labels), channels_first

    def forward(self, x):
        h = self.block(x.transpose(1, 2) if self.channels_first else x)
        h = h.transpose(1, 2) if self.channels_first else h
        return self.head(torch.tanh(h).mean(1))


def _data(batch, steps, dim, labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, dim, generator=g, dtype=torch.float64)
    y = (torch.rand(batch, labels, generator=g) < 0.4).double()
    return x, y


@pytest.mark.parametrize(("p", "q", "steps"), [(3, 2, 6), (12, 10, 2), (5, 5, 1)])  # materialised, Gram, T = 1
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("clip", [1e-3, 100.0])
def test_linear_on_sequences_both_norm_paths(p, q, steps, bias, clip):
    assert (p * q < steps * (p + q)) == ((p, q, steps) == (3, 2, 6))  # which path each case takes
    torch.manual_seed(0)
    model = Pool(nn.Linear(p, q, bias=bias), q, 3).double()
    x, y = _data(7, steps, p, 3)
    _check(model, x, y, clip)


def test_frozen_parameters_get_no_gradient_and_no_norm():
    torch.manual_seed(1)
    model = Pool(nn.Linear(4, 6), 6, 3).double()
    model.block.weight.requires_grad_(False)
    x, y = _data(5, 3, 4, 3)
    _check(model, x, y, 0.05)


@settings(deadline=None, max_examples=15)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 3), padding=st.integers(0, 3),
       steps=st.integers(1, 7), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv1d_any_padding_stride_dilation(kernel, stride, dilation, padding, steps, bias, seed):
    if steps + 2 * padding < dilation * (kernel - 1) + 1:
        return  # no output position: torch refuses this convolution too
    torch.manual_seed(seed)
    conv = nn.Conv1d(3, 4, kernel, stride=stride, dilation=dilation, padding=padding, bias=bias)
    model = Pool(conv, 4, 2, channels_first=True).double()
    x, y = _data(5, steps, 3, 2, seed)
    _check(model, x, y, 0.01, vmap=False)  # vmap of conv backward fails for some shapes (slow_conv2d)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel", [2, 3])
def test_conv1d_string_padding_and_windows_reproduce_the_convolution(padding, kernel):
    torch.manual_seed(2)
    conv = nn.Conv1d(3, 4, kernel, padding=padding, dilation=2).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    windows = conv1d_windows(conv, x)  # [B, T_out, C_in·k]
    as_linear = windows @ conv.weight.reshape(4, -1).t() + conv.bias
    torch.testing.assert_close(as_linear.transpose(1, 2), conv(x), rtol=1e-12, atol=1e-12)
    _check(Pool(conv, 4, 2, channels_first=True).double(), *_data(4, 6, 3, 2), 0.02, vmap=False)


def test_attention_pooled_linear_scores_and_layer_norm_on_sequences():
    """The sequence heads' output: a Linear on every position, its scores pooled by each label's attention."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.proj, self.out = nn.LayerNorm(5), nn.Linear(5, 4), nn.Linear(5, 4)

        def forward(self, x):
            h = self.norm(x)
            weights = torch.softmax(self.proj(h), dim=1)  # [B, T, L]: attention of each label over positions
            return (weights * self.out(h)).sum(1)

    torch.manual_seed(3)
    model = Block().double()
    x, y = _data(6, 4, 5, 4)
    for clip in (1e-3, 0.1, 1e3):
        _check(model, x, y, clip)


def test_a_subclass_of_a_supported_layer_is_not_clipped_with_its_parents_formula():
    """A Linear subclass with its own forward (here: twice the output) would get half its true gradient norm."""
    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Doubled(3, 2))
    assert unsupported_layers(model) == ["'0' (Doubled is not one of ['Linear', 'Conv1d', 'LayerNorm', 'GroupNorm'])"]
    assert resolve_clipping("auto", model)[0] == "ghost"
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(Doubled\)"):
        FusedClipper(model)


def test_group_norm_over_positions():
    torch.manual_seed(4)
    model = Pool(nn.Sequential(nn.Conv1d(4, 6, 3, padding=1), nn.GroupNorm(3, 6)), 6, 2, channels_first=True)
    _check(model.double(), *_data(5, 5, 4, 2), 0.05, vmap=False)


def _head(name, **kwargs):
    from fedicd.heads import build_head

    return build_head(name, 6, 5, dropout=0.0, **kwargs)


def _packed(n=7, dim=6, labels=5, max_len=4, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    seqs = ChunkSequences.from_lists([rng.standard_normal((int(k), dim)) for k in rng.integers(1, max_len + 1, n)])
    y = torch.as_tensor(rng.random((n, labels)) < 0.4, dtype=dtype)
    return seqs, seqs[np.arange(n)].to(dtype), y


SEQUENCE_CASES = [("label_attention", {"hidden": (4, 3)}), ("multires_cnn", {"hidden": (2,), "kernel_sizes": (1, 3)}),
                  ("multires_cnn", {"hidden": (3,), "kernel_sizes": (3,), "norm": "layer"})]


@pytest.mark.parametrize(("name", "kwargs"), SEQUENCE_CASES)
def test_sequence_heads_match_brute_force_in_float64(name, kwargs):
    torch.manual_seed(5)
    model = _head(name, **kwargs).double()
    assert unsupported_layers(model) == [] and resolve_clipping("auto", model) == ("fused", None)
    _, x, y = _packed()
    norms = _check(model, x, y, 0.05, vmap=False)
    assert bool((norms > 0.05).any()) and bool((norms < 1e3).all())


@pytest.mark.parametrize(("name", "kwargs"), SEQUENCE_CASES[:2])
def test_sequence_heads_in_float32_norms_to_1e4_and_sums_to_1e5(name, kwargs):
    torch.manual_seed(6)
    model = _head(name, **kwargs)
    _, x, y = _packed(dtype=torch.float32, seed=1)
    _check(model, x.float(), y, 0.05, norm_rtol=1e-4, sum_rtol=1e-5, vmap=False)


def test_a_notes_gradient_does_not_depend_on_the_batch_padding():
    """Sample 0 alone (padded to its own length) and inside a longer batch: same per-sample norm."""
    torch.manual_seed(7)
    model = _head("label_attention", hidden=(4, 3)).double()
    seqs, x, y = _packed(n=5, max_len=5, seed=2)
    clipper = FusedClipper(model)
    model.train()
    full = clipper.clip_and_accumulate(LOSS(model(x), y), 1.0)
    short = int(np.argmin(seqs.lengths))
    alone = clipper.clip_and_accumulate(LOSS(model(seqs[[short]].double()), y[[short]]), 1.0)
    assert seqs[[short]].shape[1] < x.shape[1]
    torch.testing.assert_close(alone[0], full[short], rtol=1e-10, atol=0)


def test_unsupported_layers_are_named_and_auto_falls_back_to_ghost():
    model = nn.Sequential(nn.Conv1d(4, 4, 3, groups=2), nn.Conv1d(4, 2, 1, padding_mode="circular"),
                          nn.Embedding(3, 2), nn.ReLU())
    named = unsupported_layers(model)
    assert len(named) == 3 and "'0' (Conv1d with groups=2" in named[0] and "padding_mode='circular'" in named[1]
    assert "'2' (Embedding is not one of" in named[2]
    with pytest.raises(UnsupportedLayerError, match=r"layer '0' \(Conv1d\) .*groups=2"):
        FusedClipper(model)
    clipping, why = resolve_clipping("auto", model)
    assert clipping == "ghost" and why.startswith("privacy.clipping = 'auto' → 'ghost' (Opacus)") and "'2'" in why
    with pytest.raises(UnsupportedLayerError, match="privacy.clipping = 'fused' cannot clip layers"):
        resolve_clipping("fused", model)
    assert resolve_clipping("hooks", model) == ("hooks", None)


def test_shared_layers_and_bad_shapes_are_refused():
    lin = nn.Linear(3, 3)
    tied = nn.Sequential(lin, nn.Tanh(), lin)
    clipper = FusedClipper(tied)
    tied.train()
    with pytest.raises(RuntimeError, match=r"layers \['0'\] ran more than once in one forward pass"):
        clipper.clip_and_accumulate(tied(torch.randn(2, 3)).sum(1), 1.0)
    deep = nn.Sequential(nn.Linear(3, 2))
    c2 = FusedClipper(deep)
    deep.train()
    with pytest.raises(ValueError, match=r"needs \[B, features\] or \[B, T, features\] inputs to nn.Linear"):
        c2.clip_and_accumulate(deep(torch.randn(2, 4, 5, 3)).sum((1, 2, 3)), 1.0)


def test_a_new_forward_pass_replaces_the_last_ones_records():
    """A training forward pass that is never clipped (e.g. an extra loss evaluation) does not leak into the next."""
    torch.manual_seed(8)
    model = Pool(nn.Linear(3, 4), 4, 2).double()
    x, y = _data(4, 3, 3, 2)
    clipper = FusedClipper(model)
    model.train()
    model(x[:2])  # recorded, then discarded by the next forward pass
    norms = clipper.clip_and_accumulate(LOSS(model(x), y), 1.0)
    clipper.remove()
    torch.testing.assert_close(norms, _brute_force(model, x, y, 1.0)[0], rtol=1e-10, atol=0)


def test_packed_batches_unpack_to_the_chunks():
    seqs, x, _ = _packed(n=3)
    chunks, mask = unpack(x)
    assert mask.sum().item() == len(seqs.chunks)
    torch.testing.assert_close(chunks[mask].float(), torch.from_numpy(seqs.chunks))
