"""FedProx proximal term: value and gradient against hand computations (Li et al. 2020, Eq. 2)."""

from __future__ import annotations

import pytest
import torch

from fedicd.errors import ConfigError, ShapeError
from fedicd.strategies.fedprox import proximal_term


def _model(weight: list[list[float]], bias: list[float]) -> torch.nn.Linear:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weight))
        model.bias.copy_(torch.tensor(bias))
    return model


def test_value_is_half_mu_times_squared_distance() -> None:
    model = _model([[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5])
    global_params = [torch.tensor([[0.0, 2.0], [3.0, 2.0]]), torch.tensor([0.5, 0.5])]
    # squared distances: weight 1 + 0 + 0 + 4 = 5, bias 0 + 1 = 1 -> (0.2 / 2) * 6 = 0.6
    assert proximal_term(model, global_params, mu=0.2).item() == pytest.approx(0.6)


def test_gradient_is_mu_times_difference_and_global_gets_none() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    global_params = [p.detach().clone().requires_grad_(True) + 0.1 * torch.randn_like(p) for p in model.parameters()]
    mu = 0.37
    proximal_term(model, global_params, mu).backward()
    for p, g in zip(model.parameters(), global_params):
        torch.testing.assert_close(p.grad, mu * (p.detach() - g.detach()))


def test_zero_at_the_global_model_and_mu_zero() -> None:
    model = torch.nn.Linear(3, 2)
    same = [p.detach().clone() for p in model.parameters()]
    assert proximal_term(model, same, mu=1.0).item() == 0.0
    moved = [p + 1 for p in same]
    assert proximal_term(model, moved, mu=0.0).item() == 0.0


def test_bad_inputs_name_the_problem() -> None:
    model = torch.nn.Linear(3, 2)
    params = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ConfigError, match="mu"):
        proximal_term(model, params, mu=-0.1)
    with pytest.raises(ShapeError, match="1 tensors"):
        proximal_term(model, params[:1], mu=0.1)
    with pytest.raises(ShapeError, match=r"global_params\[1\]"):
        proximal_term(model, [params[0], torch.zeros(3)], mu=0.1)
