"""Operator learning from the PDE alone: the grid problem, its loss and the model's wiring."""

import math

import pytest
import torch

from sciml.constraints import GridCondition, GridProblem, HardConstraint, PhysicsOperator, get_grid_problem, physics_loss
from sciml.models import FNO


def heat(nu=0.1):
    return GridProblem(lambda d, p: d.u_t - p.nu * d.u_xx, ("x", "t"),
                       (GridCondition(lambda d: d.u - d.u0, at={"t": 0}),), {"nu": nu}, periodic=("x",))


def grid(nx=16, nt=9, t_end=0.5):
    x = torch.arange(nx, dtype=torch.float64) / nx
    t = torch.linspace(0, t_end, nt, dtype=torch.float64)
    return x[:, None], t[None, :], (1.0 / nx, t_end / (nt - 1))


def test_the_loss_is_the_residual_norm_over_the_grid_scaled_by_the_cell():
    """u = c t has residual c at every node (finite differences are exact on it) and meets u0 = 0:
    the loss is c sqrt(hx ht nx nt) per sample, averaged."""
    x, t, h = grid()
    c = torch.tensor([0.5, 2.0], dtype=torch.float64)
    u = (c[:, None, None] * t.expand(16, 9))[:, None]
    u0 = torch.zeros_like(u)
    expected = (c * math.sqrt(h[0] * h[1] * 16 * 9)).mean()
    assert physics_loss(u, u0, heat(), h).item() == pytest.approx(expected.item(), rel=1e-12)


def test_a_condition_adds_its_misfit_norm_on_its_face():
    """The exact heat mode leaves finite-difference error only; an initial value off by delta adds
    sqrt(hx) |delta| (the face's cell) per sample, exactly."""
    nu, (x, t, h) = 0.1, grid(nx=32, nt=33)
    u = (torch.exp(-4 * math.pi ** 2 * nu * t) * torch.sin(2 * math.pi * x))[None, None].expand(3, 1, 32, 33)
    u0 = u[..., :1].expand_as(u).clone()
    exact = physics_loss(u, u0, heat(nu), h)
    assert exact.item() < 2e-2  # second-order FD in t at ht = 1/64: |residual| ~ 1e-2 relative to u_t ~ 4
    delta = 0.01 * torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    shifted = u0 + delta[:, None, :, None]
    extra = (math.sqrt(h[0]) * delta.norm(dim=1)).mean()
    assert (physics_loss(u, shifted, heat(nu), h) - exact).item() == pytest.approx(extra.item(), rel=1e-10)


def test_a_finer_grid_shrinks_the_exact_solutions_loss_quadratically():
    nu, losses = 0.1, []
    for n in (16, 32, 64):
        x, t, h = grid(nx=n, nt=n + 1)
        u = (torch.exp(-4 * math.pi ** 2 * nu * t) * torch.sin(2 * math.pi * x))[None, None]
        losses.append(physics_loss(u, u[..., :1].expand_as(u), heat(nu), h).item())
    rates = [math.log2(a / b) for a, b in zip(losses, losses[1:])]
    assert all(1.5 < r < 2.5 for r in rates), rates  # O(ht^2) interior, one-sided ends of order 2 as well


def test_physics_operator_feeds_the_inputs_to_the_layer_as_data_fields():
    torch.manual_seed(0)
    problem, h = heat(), (1.0 / 16, 0.5 / 8)
    backbone = FNO(1, 4, n_dims=2, modes=(4, 3), width=8, padding=(0, 0.25))
    model = PhysicsOperator(backbone, problem, h, points=40)
    x = torch.randn(2, 1, 16, 1).expand(2, 1, 16, 9).contiguous()
    torch.manual_seed(1)
    u = model(x)
    layer = HardConstraint(problem.residual, coords=("x", "t"), spacing=h, periodic=("x",), params={"nu": 0.1},
                           data_fields=("u0",), conditions=problem.conditions, points=40)
    torch.manual_seed(1)
    assert u.shape == (2, 1, 16, 9)
    assert torch.equal(u[:, 0], layer(backbone(x), {"u0": x[:, 0]}))
    soft = PhysicsOperator(backbone, problem, h, constraint="soft")
    assert torch.equal(soft(x), backbone(x))


def test_physics_operator_refuses_what_it_cannot_do():
    backbone = FNO(1, 1, n_dims=2, modes=(4, 3), width=8)
    with pytest.raises(ValueError, match="constraint must be 'soft' or 'hard'"):
        PhysicsOperator(backbone, heat(), (0.1, 0.1), constraint="exact")
    with pytest.raises(ValueError, match="soft constraint has no layer; drop \\['points'\\]"):
        PhysicsOperator(backbone, heat(), (0.1, 0.1), constraint="soft", points=10)
    with pytest.raises(ValueError, match="reads 1 input field"):
        physics_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), heat(), (0.25, 0.25))


def test_grid_problems_by_name_with_arguments_and_dataset_parameters():
    p = get_grid_problem("burgers", nu=0.05)
    assert p.params == {"nu": 0.05} and p.coords == ("x", "t") and p.periodic == ("x",)
    assert p.with_params({"nu": 0.02, "t_end": 0.5}).params == {"nu": 0.02}
    assert get_grid_problem(f"{__name__}:heat").params == {"nu": 0.1}
    with pytest.raises(ValueError, match="unknown grid problem 'burger'.*did you mean 'burgers'"):
        get_grid_problem("burger")
    with pytest.raises(TypeError, match="returned float, not a sciml.constraints.operator.GridProblem"):
        get_grid_problem(f"{__name__}:not_a_problem")
    with pytest.raises(ValueError, match="is a GridProblem object; it takes no arguments"):
        get_grid_problem(f"{__name__}:HEAT", nu=1.0)


def not_a_problem():
    return 1.0


HEAT = heat()
