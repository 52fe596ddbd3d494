"""The chunk-sequence heads: shapes, padding and batch invariance, closed-form sizes, errors, a quick overfit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedicd.heads import SEQUENCE_HEADS, build_head, count_parameters, expected_parameters, output_layer
from fedicd.heads_sequence import LabelAttention, masked_softmax
from fedicd.sequences import ChunkSequences, ChunksMissingError, pack
from fedicd.train_config import TrainConfig

SMALL = {"label_attention": {"hidden": (7, 6)}, "multires_cnn": {"hidden": (4,), "kernel_sizes": (1, 3)}}
VARIANTS = [("label_attention", {}), ("label_attention", {"input_norm": "l2"}), ("multires_cnn", {}),
            ("multires_cnn", {"norm": "layer", "kernel_sizes": (3, 5), "input_norm": "l2"})]


def _notes(lengths: list[int], dim: int = 5, seed: int = 0) -> ChunkSequences:
    rng = np.random.default_rng(seed)
    return ChunkSequences.from_lists([rng.normal(size=(n, dim)) for n in lengths])


def _head(name: str, dim: int = 5, n_labels: int = 3, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_head(name, dim, n_labels, **{**SMALL[name], "dropout": 0.0, **kwargs}).eval()


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_logits_have_one_row_per_note_and_one_column_per_label(name) -> None:
    notes = _notes([1, 4, 2, 7])
    with torch.no_grad():
        assert _head(name, n_labels=9)(notes[[0, 1, 2, 3]]).shape == (4, 9)
        assert _head(name, n_labels=9)(notes[[2]]).shape == (1, 9)


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=2, max_size=5), st.integers(0, len(VARIANTS) - 1), st.integers(0, 99))
def test_a_notes_logits_ignore_the_batch_padding(lengths, variant, seed) -> None:
    name, kwargs = VARIANTS[variant]
    model, notes = _head(name, **kwargs), _notes(lengths, seed=seed)
    with torch.no_grad():
        batch = model(notes[list(range(len(lengths)))])
        for i in range(len(lengths)):
            torch.testing.assert_close(batch[i], model(notes[[i]])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS)
def test_changing_one_note_leaves_the_others_logits_unchanged(name, kwargs) -> None:
    model, notes = _head(name, **kwargs), _notes([3, 2, 5])
    changed = ChunkSequences(notes.chunks.copy(), notes.offsets)
    changed.chunks[notes.offsets[1]:notes.offsets[2]] *= -7.0  # note 1 only
    with torch.no_grad():
        before, after = model(notes[[0, 1, 2]]), model(changed[[0, 1, 2]])
    torch.testing.assert_close(before[[0, 2]], after[[0, 2]], rtol=0, atol=1e-6)
    assert not torch.allclose(before[1], after[1])


def test_padding_values_never_reach_the_logits() -> None:
    """Garbage written into the padded positions of a packed batch changes nothing (the mask rules)."""
    notes = _notes([2, 6])
    for name in SEQUENCE_HEADS:
        model = _head(name)
        batch = notes[[0, 1]]
        dirty = batch.clone()
        dirty[0, 2:, 1:] = 1e3  # note 0's padding, mask channel still 0
        with torch.no_grad():
            torch.testing.assert_close(model(dirty), model(batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("label_attention", {}), ("label_attention", {"hidden": (7, 3)}), ("multires_cnn", {}),
    ("multires_cnn", {"hidden": (3,), "kernel_sizes": (1, 5, 9)}), ("multires_cnn", {"norm": "layer", "hidden": (2,)}),
])
@pytest.mark.parametrize(("dim", "n_labels"), [(12, 5), (33, 17)])
def test_parameter_count_matches_closed_form(name, kwargs, dim, n_labels) -> None:
    model = build_head(name, dim, n_labels, **kwargs)
    assert count_parameters(model) == expected_parameters(name, dim, n_labels, **kwargs)


def test_closed_forms_by_hand() -> None:
    # label_attention d=10, dh=4, da=3, L=2: W_h 40 + b_h 4, W 12 + w0 3, U 6, β 8 + 2
    assert count_parameters(build_head("label_attention", 10, 2, hidden=(4, 3))) == 44 + 15 + 6 + 10
    # defaults dh=512, da=256 at d=10, L=3
    model = build_head("label_attention", 10, 3)
    assert (model.value.out_features, model.proj.out_features) == (512, 256)
    assert count_parameters(model) == 10 * 512 + 512 + 512 * 256 + 256 + 256 * 3 + 512 * 3 + 3
    # multires_cnn d=10, F=2, k=3, L=3: base 60+2, two convs 2·(12+2), shortcut 4+2, U 6, β 6+3
    assert count_parameters(build_head("multires_cnn", 10, 3, hidden=(2,), kernel_sizes=(3,))) == \
        62 + 28 + 6 + 6 + 9


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, len(VARIANTS) - 1), st.integers(0, 99))
def test_output_layer_is_the_linear_out_and_its_bias_alone_gives_the_logits(lengths, variant, seed) -> None:
    """Zero output weights: every note's logits are exactly the bias, whatever its chunks (the weights sum to 1)."""
    name, kwargs = VARIANTS[variant]
    model = _head(name, n_labels=4, **kwargs)
    out = output_layer(model)
    assert type(out) is torch.nn.Linear and out is model.out and (out.in_features, out.out_features) == (
        model.attention.in_features if name == "multires_cnn" else 7, 4)  # label_attention: dh = 7
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.tensor([-2.5, 0.0, 1.0, 3.25]))
        logits = model(_notes(lengths, seed=seed)[list(range(len(lengths)))] * 10)
    torch.testing.assert_close(logits, torch.tensor([-2.5, 0.0, 1.0, 3.25]).expand(len(lengths), 4), rtol=0,
                               atol=1e-6)


def _v_form(model: torch.nn.Module, name: str, batch: torch.Tensor) -> torch.Tensor:
    """The heads' logits the long way: ``V = masked-softmax(U Z)ᵀ H [B, L, k]``, then ``⟨β_l, V_l⟩ + b_l``."""
    x, mask = batch[..., 1:], batch[..., 0] > 0
    if name == "label_attention":  # H' = ReLU(W_h x + b_h) (no dropout in eval), Z = tanh(W H' + w0)
        h = torch.relu(model.inp(x) @ model.value.weight.T + model.value.bias)
        scores = torch.tanh(h @ model.proj.weight.T + model.proj.bias) @ model.attention.weight.T
    else:
        h = model.features(x, mask)
        scores = h @ model.attention.weight.T
    weights = masked_softmax(scores, mask[..., None], dim=1)  # [B, T, L]
    v = weights.transpose(1, 2) @ h  # [B, L, k]
    return (v * model.out.weight).sum(-1) + model.out.bias


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS)
def test_forward_equals_the_label_wise_v_form(name, kwargs) -> None:
    model, notes = _head(name, n_labels=6, **kwargs), _notes([1, 5, 3, 8], seed=4)
    with torch.no_grad():
        torch.nn.init.normal_(model.attention.weight, std=2.0)  # peaked attention: the weights matter
        batch = notes[[0, 1, 2, 3]]
        torch.testing.assert_close(model(batch), _v_form(model, name, batch), rtol=1e-5, atol=1e-5)


def test_output_layer_is_the_last_linear_in_module_order() -> None:
    first, last = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    assert output_layer(torch.nn.Sequential(first, torch.nn.Tanh(), torch.nn.Sequential(last))) is last


def test_masked_softmax_gives_masked_positions_zero_and_refuses_an_empty_row() -> None:
    scores = torch.tensor([[1.0, 50.0, 2.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True], [True, True, True]])
    weights = masked_softmax(scores, mask, dim=1)
    torch.testing.assert_close(weights, torch.tensor([[1 / (1 + np.e), 0.0, np.e / (1 + np.e)], [1 / 3] * 3]))
    with pytest.raises(ValueError, match="a row has no unmasked position"):
        masked_softmax(scores, torch.tensor([[False] * 3, [True] * 3]), dim=1)


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_pooled_vectors_are_refused_naming_the_head(name) -> None:
    with pytest.raises(ChunksMissingError, match=f"head '{name}' reads chunk sequences"):
        _head(name)(torch.randn(4, 5))


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("mlp", {"kernel_sizes": (3,)}, r"train.kernel_sizes sets the convolutions of head 'multires_cnn'; head 'mlp'"),
    ("label_attention", {"kernel_sizes": (3,)}, r"head 'label_attention' has none.*unset train.kernel_sizes"),
    ("multires_cnn", {"kernel_sizes": (2, 3)}, r"distinct odd sizes >= 1 .*got \[2, 3\]"),
    ("multires_cnn", {"kernel_sizes": ()}, r"train.kernel_sizes takes one or more"),
    ("multires_cnn", {"kernel_sizes": (3, 3)}, r"got \[3, 3\]"),
    ("multires_cnn", {"hidden": (4, 4)}, r"hidden for head 'multires_cnn' takes exactly one width >= 1, got \[4, 4\]"),
    ("label_attention", {"hidden": (6,)},
     r"hidden for head 'label_attention' takes exactly two widths \[value, attention\] >= 1, got \[6\]; set train.hidden"),
    ("label_attention", {"hidden": (6, 0)}, r"takes exactly two widths .*got \[6, 0\]; set train.hidden"),
    ("label_attention", {"hidden": (6, 4, 2)}, r"takes exactly two widths .*got \[6, 4, 2\]; set train.hidden"),
    ("multires_cnn", {"norm": "batch"}, r"takes norm 'layer' or 'none' \(BatchNorm mixes.*set train.norm"),
    ("label_attention", {"norm": "layer"}, r"head 'label_attention' has no normalisation layer.*train.norm"),
    ("label_attention", {"input_norm": "l1"}, r"input_norm must be one of .*set train.input_norm"),
])
def test_bad_settings_name_the_setting(name, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_head(name, 5, 3, **kwargs)


def test_label_attention_built_directly_refuses_one_width() -> None:
    with pytest.raises(ValueError, match=r"exactly two widths \[value, attention\].*default \[512, 256\].*train.hidden"):
        LabelAttention(5, 3, hidden=(4,))


def test_label_attention_dropout_acts_on_the_value_layer_only_in_training() -> None:
    """Dropout p = 0.5 zeroes value units in training (logits change with the seed), never in eval."""
    torch.manual_seed(0)
    model, batch = build_head("label_attention", 5, 3, hidden=(64, 4), dropout=0.5), _notes([3, 2])[[0, 1]]
    with torch.no_grad():
        first, second = model(batch), model(batch)
        model.eval()
        torch.testing.assert_close(model(batch), _v_form(model, "label_attention", batch), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)


def test_train_config_carries_kernel_sizes() -> None:
    cfg = TrainConfig(head="multires_cnn", hidden=[3], kernel_sizes=[1, 7])
    assert cfg.kernel_sizes == (1, 7) and cfg.build(5, 2).kernel_sizes == (1, 7)
    with pytest.raises(ValueError, match="unset train.kernel_sizes"):
        TrainConfig(head="linear", kernel_sizes=[3])
    for name in SEQUENCE_HEADS:
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in TrainConfig(head=name).build(8, 4)
                       .modules())


def test_a_one_chunk_note_is_scored_from_that_chunk_alone() -> None:
    """T = 1: attention is 1 on the chunk, so label_attention's logits are the output layer on its value vector."""
    model, x = _head("label_attention", n_labels=4), torch.randn(3, 1, 5)
    out = output_layer(model)
    with torch.no_grad():
        expected = torch.relu(x[:, 0] @ model.value.weight.T + model.value.bias) @ out.weight.T + out.bias
        torch.testing.assert_close(model(pack(x, torch.ones(3, 1, dtype=torch.bool))), expected)


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_sixteen_random_notes_are_learnt_by_heart(name) -> None:
    notes = _notes(list(np.random.default_rng(1).integers(1, 6, size=16)), dim=8, seed=1)
    y = torch.as_tensor(np.random.default_rng(2).random((16, 5)) < 0.3, dtype=torch.float32)
    torch.manual_seed(0)
    model = build_head(name, 8, 5, **{**SMALL[name], "hidden": (8, 8) if name == "label_attention" else (8,)},
                       dropout=0.0)
    batch, opt = notes[list(range(16))], torch.optim.Adam(model.parameters(), lr=5e-2)
    for step in range(300):  # F1 = 1 after about 40 steps; stop there (a converged fit slows on denormals)
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(batch), y).backward()
        opt.step()
        if step % 10 == 9 and _f1(model, batch, y) > 0.99:
            break
    assert _f1(model, batch, y) > 0.99


def _f1(model: torch.nn.Module, batch: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = (model(batch) > 0).float()
    return float(2 * (predicted * y).sum() / (predicted.sum() + y.sum()))
