import copy

import pytest
import torch

from fedicd.heads import HEADS, POOLED_HEADS, L2Normalize, build_head, count_parameters, expected_parameters, output_layer
from fedicd.losses import HybridLoss
from fedicd.privacy.accounting import DPPlan
from fedicd.privacy.dp_sgd import DPStepper
from fedicd.privacy.plan import dp_compatible_train
from fedicd.train_config import TrainConfig


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("input_dim", [768, 1024, 1536])
@pytest.mark.parametrize("n_labels", [1085, 1267])
def test_parameter_count_matches_closed_form(name, input_dim, n_labels):
    model = build_head(name, input_dim, n_labels)
    assert count_parameters(model) == expected_parameters(name, input_dim, n_labels)


def test_mlp_count_by_hand():
    # 1024·512 + 512 + 512·1267 + 1267
    assert count_parameters(build_head("mlp", 1024, 1267)) == 524_288 + 512 + 648_704 + 1267


@pytest.mark.parametrize("name", sorted(POOLED_HEADS))  # sequence heads: tests/test_heads_sequence.py
def test_forward_shape_any_input_dim(name):
    model = build_head(name, 37, 11).eval()
    assert model(torch.randn(5, 37)).shape == (5, 11)


@pytest.mark.parametrize("norm", ["layer", "group", "none"])
def test_norm_choice_removes_batchnorm(norm):
    model = build_head("deep_res_mlp", 64, 10, norm=norm)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert count_parameters(model) == expected_parameters("deep_res_mlp", 64, 10, norm=norm)


def test_custom_widths_and_errors():
    model = build_head("deep_mlp", 64, 10, hidden=[32, 16, 8])
    assert count_parameters(model) == expected_parameters("deep_mlp", 64, 10, hidden=(32, 16, 8))
    with pytest.raises(ValueError, match="unknown head 'cnn'; choose one of"):
        build_head("cnn", 64, 10)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_head("mlp", 64, 10, norm="instance")
    with pytest.raises(ValueError, match="dropout must be in"):
        build_head("mlp", 64, 10, dropout=1.0)


# --- DP-friendly heads (linear, bottleneck), input normalisation, the output layer ---------------------------------

def test_linear_and_bottleneck_counts_by_hand():
    # linear: 1024·1267 + 1267; bottleneck r=64: 1024·64 (no bias) + 64·1267 + 1267
    assert count_parameters(build_head("linear", 1024, 1267)) == 1_297_408 + 1267
    assert count_parameters(build_head("bottleneck", 1024, 1267)) == 65_536 + 81_088 + 1267
    for hidden, norm in [((8,), None), ((128,), "layer"), ((32,), "group")]:
        model = build_head("bottleneck", 300, 50, hidden=hidden, norm=norm)
        assert count_parameters(model) == expected_parameters("bottleneck", 300, 50, hidden=hidden, norm=norm)


def test_bottleneck_is_a_rank_r_linear_map():
    model = build_head("bottleneck", 40, 30, hidden=(3,)).eval()
    x = torch.randn(50, 40, dtype=torch.float32)
    b = model.out.bias.detach()
    logits = model(x).detach() - b
    assert torch.linalg.matrix_rank(logits.double(), rtol=1e-4).item() == 3  # float32 round-off above 1e-4
    torch.testing.assert_close(model(2 * x).detach() - b, 2 * logits)  # linear: no non-linearity


@pytest.mark.parametrize("name", sorted(POOLED_HEADS))  # sequence heads: tests/test_heads_sequence.py
def test_output_layer_is_the_layer_that_writes_the_logits(name):
    model = build_head(name, 16, 7, input_norm="l2").eval()
    out = output_layer(model)
    assert isinstance(out, torch.nn.Linear) and out.out_features == 7
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.arange(7.0))
    torch.testing.assert_close(model(torch.randn(4, 16)), torch.arange(7.0).expand(4, 7))


def test_output_layer_needs_a_linear_layer():
    with pytest.raises(ValueError, match="ReLU has no nn.Linear layer"):
        output_layer(torch.nn.ReLU())


def test_l2_normalize_gives_rows_of_norm_sqrt_d_and_keeps_zero_rows():
    x = torch.cat([torch.randn(5, 9) * torch.tensor([[0.01], [1], [3], [100], [7]]), torch.zeros(1, 9)])
    norms = L2Normalize()(x).norm(dim=1)
    torch.testing.assert_close(norms, torch.tensor([3.0] * 5 + [0.0]))


@pytest.mark.parametrize("name", sorted(POOLED_HEADS))  # sequence heads: tests/test_heads_sequence.py
def test_input_norm_makes_the_head_blind_to_row_scale_and_keeps_the_state_dict(name):
    plain = build_head(name, 12, 5, dropout=0.0)
    normed = build_head(name, 12, 5, dropout=0.0, input_norm="l2")
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in normed.state_dict().items()}
    normed.load_state_dict(plain.state_dict())  # a saved head loads either way
    plain.eval(), normed.eval()
    x = torch.randn(6, 12)
    scale = torch.tensor([[0.5], [2.0], [10.0], [1.0], [3.0], [0.1]])
    torch.testing.assert_close(normed(x * scale), normed(x), rtol=1e-5, atol=1e-5)
    unit = x / x.norm(dim=1, keepdim=True) * 12 ** 0.5
    torch.testing.assert_close(normed(x), plain(unit), rtol=1e-5, atol=1e-6)


def test_dp_head_errors_name_the_setting():
    with pytest.raises(ValueError, match=r"head 'linear' has no hidden layer, got hidden=\[8\]; unset train.hidden"):
        build_head("linear", 10, 3, hidden=[8])
    with pytest.raises(ValueError, match="head 'linear' has no hidden layer to normalise, got norm='group'"):
        build_head("linear", 10, 3, norm="group")
    with pytest.raises(ValueError, match=r"hidden for head 'bottleneck' takes exactly one width >= 1, got \[8, 4\]"):
        build_head("bottleneck", 10, 3, hidden=[8, 4])
    with pytest.raises(ValueError, match=r"input_norm must be one of \('none', 'l2'\), got 'l1' \(set train.input_norm\)"):
        build_head("mlp", 10, 3, input_norm="l1")
    with pytest.raises(ValueError, match="set train.input_norm"):
        TrainConfig(input_norm="unit")
    assert TrainConfig(head="linear", input_norm="l2").build(10, 3).inp.__class__ is L2Normalize


@pytest.mark.parametrize("name, input_norm", [("linear", "none"), ("linear", "l2"), ("bottleneck", "none"),
                                              ("bottleneck", "l2")])
def test_dp_step_on_dp_heads_fused_equals_opacus_hooks(name, input_norm):
    """Fused clipping and Opacus' per-sample hooks give the same clipped, summed update on the new heads."""
    torch.manual_seed(0)
    base = build_head(name, 10, 6, hidden=None if name == "linear" else (4,), dropout=0.0, input_norm=input_norm)
    x, y = torch.randn(20, 10) * 3, (torch.rand(20, 6) < 0.3).float()
    plan = DPPlan(n=40, sample_rate=0.5, steps_per_epoch=2, total_steps=2, noise_multiplier=0.0, delta=1e-5,
                  target_epsilon=0.0)
    updated = {}
    for mode in ("fused", "hooks"):
        model = copy.deepcopy(base)
        stepper = DPStepper(model, torch.optim.SGD(model.parameters(), lr=1.0), HybridLoss(), plan, clip=0.05,
                            clipping=mode)
        stepper.step(x, y)
        stepper.close()
        assert mode == "hooks" or stepper.stats.clipped_fraction_sum == 1.0  # the clip binds on every row
        updated[mode] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k in updated["fused"]:
        torch.testing.assert_close(updated["fused"][k], updated["hooks"][k], rtol=1e-5, atol=1e-7)
        assert not torch.equal(updated["fused"][k], base.state_dict()[k])


@pytest.mark.parametrize("head", ["linear", "bottleneck"])
def test_dp_heads_pass_opacus_module_validator_unchanged(head):
    train = TrainConfig(head=head, input_norm="l2", mode="federated")
    used, notices = dp_compatible_train(train, 32, 9)
    assert used is train and notices == []
