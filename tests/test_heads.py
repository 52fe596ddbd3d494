import pytest
import torch

from fedicd.heads import HEADS, build_head, count_parameters, expected_parameters


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("input_dim", [768, 1024, 1536])
@pytest.mark.parametrize("n_labels", [1085, 1267])
def test_parameter_count_matches_closed_form(name, input_dim, n_labels):
    model = build_head(name, input_dim, n_labels)
    assert count_parameters(model) == expected_parameters(name, input_dim, n_labels)


def test_mlp_count_by_hand():
    # 1024·512 + 512 + 512·1267 + 1267
    assert count_parameters(build_head("mlp", 1024, 1267)) == 524_288 + 512 + 648_704 + 1267


@pytest.mark.parametrize("name", sorted(HEADS))
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
