"""initial="exact": the initial value built into the hard layer's field (u = u0 + m(t) b . w, m(0) = 0)."""

import math

import pytest
import torch

from sciml.constraints import GridCondition, GridProblem, HardConstraint, PhysicsOperator, get_grid_problem
from sciml.models import FNO

DT = torch.float64
TIGHT = {"rtol": 1e-13, "atol": 1e-14, "max_steps": 200}
# (problem, grid, spacing, experts) at tiny sizes: Burgers on x x t, Navier-Stokes on x x y x t
SETUPS = {"burgers": ((16, 9), (1 / 16, 0.02), (2, 1)), "navier_stokes": ((8, 8, 6), (1 / 8, 1 / 8, 0.3), (2, 2, 1))}


def _initial_value(B, grid, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, *grid[:-1], 1, generator=g, dtype=dtype).expand(B, *grid).contiguous()


@pytest.mark.parametrize("name", list(SETUPS))
@pytest.mark.parametrize("moe", [False, True])
def test_exact_holds_the_initial_value_on_the_layers_output(name, moe):
    """With exact, u(., t = 0) == u0 bit for bit, one expert or several, whatever the basis; with the default
    rows it is a least-squares compromise (off by O(1) on a random basis)."""
    grid, spacing, experts = SETUPS[name]
    problem = get_grid_problem(name)
    field = problem.inputs[0]
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(2, 5, *grid, generator=g, dtype=DT)
    u0 = _initial_value(2, grid)
    options = dict(experts=experts if moe else None, points=None, on_failure="raise")
    exact = problem.layer(spacing, initial="exact", **options)
    assert len(exact.conditions) == 0 and exact.initial == {problem.output: field}
    u = exact(basis, {field: u0})
    assert torch.equal(u[..., 0], u0[..., 0])
    assert not torch.equal(u[..., 1], u0[..., 1])  # the field moves after t = 0
    rows = problem.layer(spacing, **options)
    assert len(rows.conditions) == 1
    assert (rows(basis, {field: u0})[..., 0] - u0[..., 0]).abs().max() > 1e-2


@pytest.mark.parametrize("moe", [False, True])
def test_exact_holds_through_a_float32_physics_operator(moe):
    """Navier-Stokes through PhysicsOperator with an FNO backbone in float32: w(., 0) == w0 to float precision
    (exactly: the solve's float64 u0 comes back to the float32 it was)."""
    grid, spacing, experts = SETUPS["navier_stokes"]
    torch.manual_seed(0)
    backbone = FNO(in_channels=1, out_channels=4, modes=(3, 3, 2), width=6, n_layers=2, n_dims=3, padding=(0, 0, 0.25))
    model = PhysicsOperator(backbone, get_grid_problem("navier_stokes"), spacing, initial="exact",
                            experts=experts if moe else None, points=40)
    w0 = _initial_value(2, grid, dtype=torch.float32)[:, None]
    w = model(w0)
    assert w.dtype == torch.float32 and torch.equal(w[..., 0], w0[..., 0])
    w.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())


def test_the_residual_differentiates_the_mollified_field():
    """u_t = 1 from u0: the solution u0 + t is m(t) T (m = t / T) times the constant basis field T, and finite
    differences are exact on it. The layer finds it only if its u_t holds m' b (a raw basis' u_t is 0 here)."""
    nx, nt, h = 8, 6, (1 / 8, 0.1)
    T = h[1] * (nt - 1)
    layer = HardConstraint(lambda d: d.u_t - 1, coords=("x", "t"), spacing=h, periodic=("x",), data_fields=("u0",),
                           initial={"u": "u0"}, ridge=1e-10, **TIGHT)
    g = torch.Generator().manual_seed(0)
    basis = torch.stack([torch.full((nx, nt), T, dtype=DT), torch.randn(nx, nt, generator=g, dtype=DT)])[None]
    u0 = _initial_value(1, (nx, nt))
    t = torch.arange(nt, dtype=DT) * h[1]
    u = layer(basis, {"u0": u0})
    assert torch.allclose(u, u0 + t, rtol=0, atol=1e-8), (u - u0 - t).abs().max()
    assert float(layer.last_stats["residual_norm"].max()) < 1e-8


@pytest.mark.parametrize("overlap", [0, 2])
def test_gradients_through_the_exact_layer_match_finite_differences(overlap, check_layer_gradients):
    """The implicit gradient with the initial value built in, as the rows' test (test_hard.py): viscous Burgers, two
    experts, disjoint or blended; the gradient reaches the basis and u0 (which now enters every row). A source
    the basis cannot meet (constant in x) keeps the residual large at the solution, so that the check can tell the
    exact Hessian from Gauss-Newton's J^T J."""
    nx, nt, h = 16, 9, (1 / 16, 0.1 / 8)
    g = torch.Generator().manual_seed(4)
    layer = HardConstraint(lambda d, p: d.u_t + d.u * d.u_x - 0.01 * d.u_xx - 50, coords=("x", "t"), spacing=h,
                           periodic=("x",), experts=(2, 1), overlap=(overlap, 0), ridge=1e-2, data_fields=("u0",),
                           initial={"u": "u0"}, on_failure="raise", **TIGHT)
    x = torch.arange(nx, dtype=DT) / nx
    t = torch.arange(nt, dtype=DT) * h[1]
    shapes = torch.stack([f(2 * math.pi * k * x)[:, None] * t[None] ** j for k in (1, 2) for f in (torch.sin, torch.cos)
                          for j in range(3)])
    basis = torch.einsum("nk,kxt->nxt", torch.randn(4, 12, generator=g, dtype=DT), shapes)[None].requires_grad_()
    u0 = (torch.sin(2 * math.pi * x)[None, :, None].expand(1, nx, nt)).contiguous().requires_grad_()
    check_layer_gradients(layer, basis, u0, g)


def test_diffusion_sorption_keeps_its_boundary_rows():
    problem = get_grid_problem("diffusion_sorption")
    layer = problem.layer((1 / 32, 5.0), initial="exact")
    assert [dict(c.at) for c in layer.conditions] == [{"x": 0, "t": slice(1, None)}, {"x": -1, "t": slice(1, None)}]
    u0 = 0.2 * _initial_value(2, (32, 6)).abs()
    basis = torch.randn(2, 4, 32, 6, generator=torch.Generator().manual_seed(2), dtype=DT)
    assert torch.equal(layer(basis, {"u0": u0})[..., 0], u0[..., 0])


def test_a_user_problem_declares_its_initial_value_by_its_condition_or_by_name():
    def make(condition=None, **kw):
        conditions = () if condition is None else (GridCondition(condition, at={"t": 0}),)
        return GridProblem(lambda d: d.u_t - d.u_xx, ("x", "t"), conditions, periodic=("x",), inputs=("a", "g"), **kw)

    assert make(lambda d: d.u - d.g).initial_field() == ("g", [0])
    assert make(lambda d: 3 * (d.g - d.u)).initial_field() == ("g", [0])  # any nonzero multiple
    assert make(initial="a").initial_field() == ("a", [])  # declared, with no rows to drop
    with pytest.raises(ValueError, match="has none at"):
        make().layer((0.1, 0.1), initial="exact")
    with pytest.raises(ValueError, match=r"c \* \(d.u - d.<input>\)"):
        make(lambda d: d.u_t - d.g).layer((0.1, 0.1), initial="exact")  # a derivative: not a value to build in
    with pytest.raises(ValueError, match=r"c \* \(d.u - d.<input>\)"):
        make(lambda d: d.u - d.g, initial="a").layer((0.1, 0.1), initial="exact")  # it names another input
    corner = GridProblem(lambda d: d.u_t - d.u_xx, ("x", "t"), (GridCondition(lambda d: d.u - d.u0, at={"t": 0}),
                                                                GridCondition(lambda d: d.u, at={"x": 0, "t": 0})))
    with pytest.raises(ValueError, match="constrain part of it"):
        corner.layer((0.1, 0.1), initial="exact")
    steady = GridProblem(lambda d: d.u_xx + d.u_yy, ("x", "y"), (GridCondition(lambda d: d.u - d.u0, at={"x": 0}),))
    with pytest.raises(ValueError, match="non-periodic 't' axis"):
        steady.layer((0.1, 0.1), initial="exact")
    with pytest.raises(ValueError, match="initial must be one of"):
        make(lambda d: d.u - d.g).layer((0.1, 0.1), initial="exactly")


def test_the_layer_refuses_an_initial_value_it_cannot_build_in():
    common = dict(coords=("x", "t"), spacing=(0.1, 0.1), data_fields=("u0",))
    with pytest.raises(ValueError, match="initial maps outputs"):
        HardConstraint(lambda d: d.u_t, initial={"u": "v0"}, **common)
    with pytest.raises(ValueError, match="non-periodic coordinate"):
        HardConstraint(lambda d: d.u_t, initial={"u": "u0"}, periodic=("x", "t"), **common)


def test_the_soft_constraint_refuses_the_option():
    backbone = FNO(in_channels=1, out_channels=1, modes=(3, 3), width=4, n_layers=1, n_dims=2)
    with pytest.raises(ValueError, match="soft constraint has no layer"):
        PhysicsOperator(backbone, get_grid_problem("burgers"), (0.1, 0.1), constraint="soft", initial="exact")
