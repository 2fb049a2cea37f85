"""Operator learning from the PDE alone: the grid problem, its loss and the model's wiring."""

import math

import pytest
import torch

from sciml.constraints import (GridCondition, GridProblem, HardConstraint, PhysicsOperator, get_grid_problem, periodic_velocity,
                              physics_loss)
from sciml.models import FNO
from sciml.pde.derivatives import GridDerivatives, Params


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


# --- Navier-Stokes: a derived (non-local, linear) velocity field -------------------------------------
def _torus(n):
    x = torch.arange(n, dtype=torch.float64) / n
    return torch.meshgrid(x, x, indexing="ij")


def _low_modes(n, batch, amplitude, seed=0):
    """Random vorticity of the modes |kx|, |ky| <= 2 on the n x n torus, (batch, n, n)."""
    X, Y = _torus(n)
    g, w = torch.Generator().manual_seed(seed), torch.zeros(batch, n, n, dtype=torch.float64)
    for kx in range(-2, 3):
        for ky in range(-2, 3):
            if (kx, ky) != (0, 0):
                a, b = torch.randn(2, batch, 1, 1, generator=g, dtype=torch.float64)
                phase = 2 * math.pi * (kx * X + ky * Y)
                w += a * torch.cos(phase) + b * torch.sin(phase)
    return amplitude * w


@pytest.mark.parametrize("n", [15, 16])
def test_periodic_velocity_is_the_stream_functions_on_odd_and_even_grids(n):
    """psi = sin(2 pi x) cos(4 pi y): w = -Lap psi = 20 pi^2 psi, (u, v) = (psi_y, -psi_x), on axes (-3, -2)."""
    X, Y = _torus(n)
    psi = torch.sin(2 * math.pi * X) * torch.cos(4 * math.pi * Y)
    w = (20 * math.pi ** 2 * psi)[None, :, :, None].expand(2, n, n, 3)
    u, v = periodic_velocity(w, (1 / n, 1 / n))
    torch.testing.assert_close(u[..., 1], (-4 * math.pi * torch.sin(2 * math.pi * X) * torch.sin(4 * math.pi * Y)).expand(2, n, n),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(v[..., 2], (-2 * math.pi * torch.cos(2 * math.pi * X) * torch.cos(4 * math.pi * Y)).expand(2, n, n),
                               rtol=0, atol=1e-12)


def test_the_navier_stokes_problem_vanishes_on_the_solvers_trajectory_at_order_two_in_time():
    """An independent check of the residual's conventions (velocity, signs, axes): on trajectories of
    the pseudo-spectral solver the residual (spectral in space, as the hard layer takes it) falls
    3.5x from 8 to 16 time levels and stays < 1 % of w_t; flipping the velocity makes it 70x larger.
    Measured 2026-11-26: 4.5e-3, 1.3e-3 (|w_t| 0.54), flipped 9.4e-2."""
    from dataclasses import replace

    from solvers.pde.navier_stokes import NavierStokes2D

    n, T, nu = 32, 1.0, 1e-3
    w0, problem = _low_modes(n, 2, 0.2), get_grid_problem("navier_stokes", nu=nu)
    flipped = replace(problem, derived={k: (lambda f, h, fn=fn: tuple(-c for c in fn(f, h)))
                                        for k, fn in problem.derived.items()})

    def residual_rms(p, nt):
        w = NavierStokes2D(nu=nu, forcing=None, dt=T / nt / 4).solve(w0, [T * k / nt for k in range(1, nt + 1)])
        field = torch.cat([w0[:, None], w], 1).movedim(1, -1)
        h = (1 / n, 1 / n, T / nt)
        d = GridDerivatives(p.fields(field, field[:, None, ..., :1].expand(-1, 1, -1, -1, nt + 1), h), p.coords, h,
                            periodic=p.periodic)
        (r,), (ic,) = p.terms(d, Params(dict(p.params)))
        assert ic[0][..., 0].abs().max() == 0  # w(t = 0) = w0
        return r.square().mean().sqrt().item(), d.w_t.square().mean().sqrt().item()

    (coarse, _), (fine, w_t) = residual_rms(problem, 8), residual_rms(problem, 16)
    assert coarse / fine > 3 and fine < 0.01 * w_t, (coarse, fine, w_t)
    assert residual_rms(flipped, 16)[0] > 30 * fine


def test_the_forced_steady_state_solves_the_problem_and_its_forcing_is_a_parameter():
    """w = f / (8 pi^2 nu) (sin + cos)(2 pi (x + y)) is steady under the forcing f (sin + cos)(2 pi (x + y)):
    its velocity is along its level lines, so advection vanishes, and nu Lap w = -f. The loss (FD in
    space) is FD error only; the same field under the unforced problem misses by f per node."""
    n, nt, nu, f = 32, 5, 1e-3, 0.1
    X, Y = _torus(n)
    phase = 2 * math.pi * (X + Y)
    w = (f / (8 * math.pi ** 2 * nu) * (torch.sin(phase) + torch.cos(phase)))[None, None, :, :, None].expand(1, 1, n, n, nt)
    h = (1 / n, 1 / n, 0.25)
    forced = physics_loss(w, w, get_grid_problem("navier_stokes", nu=nu, forcing=f), h)
    unforced = physics_loss(w, w, get_grid_problem("navier_stokes", nu=nu), h)
    assert forced < 0.02 * unforced, (forced, unforced)
    assert unforced.item() == pytest.approx(f * math.sqrt(math.prod(h) * n * n * nt), rel=0.02)  # |sin + cos| rms 1


def test_the_hard_layer_reads_derived_fields_per_basis_field_with_two_by_two_experts():
    """A basis holding the forced steady state among random fields: each of the 2 x 2 x 1 experts puts
    its weight on it (the PDE and w = w0 hold there exactly), so the layer returns it."""
    n, nt, nu, f = 16, 5, 1e-2, 0.1
    X, Y = _torus(n)
    phase = 2 * math.pi * (X + Y)
    steady = (f / (8 * math.pi ** 2 * nu) * (torch.sin(phase) + torch.cos(phase)))[:, :, None].expand(n, n, nt)
    g = torch.Generator().manual_seed(0)
    basis = torch.cat([steady[None], _low_modes(n, 5, 1.0, seed=1)[..., None].expand(5, n, n, nt)
                       * torch.linspace(0.5, 1.5, nt, dtype=torch.float64)], 0)[None].repeat(2, 1, 1, 1, 1)
    basis[1] = basis[1][torch.randperm(6, generator=g)]  # the second sample finds it elsewhere
    layer = get_grid_problem("navier_stokes", nu=nu, forcing=f).layer((1 / n, 1 / n, 0.25), experts=(2, 2, 1),
                                                                      points=300, ridge=1e-8)
    w = layer(basis, {"w0": steady[None, ..., :1].expand(2, n, n, nt)})
    torch.testing.assert_close(w, steady.expand(2, n, n, nt), rtol=0, atol=1e-6)
    assert (layer.last_stats["status"] == 0).all() and layer.last_stats["status"].numel() == 8


def test_derived_fields_must_be_linear_and_named_apart():
    problem = get_grid_problem("navier_stokes")
    squared = {"u": lambda f, h: f["w"] ** 2, "v": lambda f, h: periodic_velocity(f["w"], h[:2])[1]}
    layer = HardConstraint(problem.residual, coords=problem.coords, spacing=(0.25, 0.25, 0.1), periodic=("x", "y"),
                           params=problem.params, outputs=("w",), data_fields=("w0",), derived=squared)
    with pytest.raises(ValueError, match="derived field 'u' is not linear"):
        layer(torch.randn(1, 3, 4, 4, 3, dtype=torch.float64), {"w0": torch.zeros(1, 4, 4, 3, dtype=torch.float64)})
    for derived in ({"w0": lambda f, h: f["w"]}, {("u", "v"): problem.derived[("u", "v")], "u": lambda f, h: f["w"]}):
        with pytest.raises(ValueError, match=r"derived fields .* repeat a name or share one with an output or a data"):
            HardConstraint(problem.residual, coords=problem.coords, spacing=(0.25, 0.25, 0.1), outputs=("w",),
                           data_fields=("w0",), derived=derived)
    one_short = GridProblem(problem.residual, problem.coords, (), problem.params, periodic=("x", "y"), inputs=("w0",),
                            output="w", derived={("u", "v", "p"): problem.derived[("u", "v")]})
    with pytest.raises(ValueError, match=r"derived fields \('u', 'v', 'p'\) need 3 fields from their map, got 2"):
        physics_loss(torch.zeros(1, 1, 4, 4, 3), torch.zeros(1, 1, 4, 4, 3), one_short, (0.25, 0.25, 0.1))


# --- diffusion-sorption: a nonlinear coefficient and boundary conditions on part of a face ----------
def test_diffusion_sorptions_residual_is_u_t_minus_d_over_r_u_xx_with_freundlichs_r():
    """u = a + b x^2 is steady with u_xx = 2b, so the residual is -D / R(u) 2b with R written out here."""
    problem = get_grid_problem("diffusion_sorption")
    p = problem.params
    x = (torch.arange(32, dtype=torch.float64) + 0.5) / 32
    a = torch.tensor([0.05, 0.3, 0.9], dtype=torch.float64)
    u = (a[:, None] + 0.1 * x ** 2)[:, :, None].expand(3, 32, 5)
    d = GridDerivatives(problem.fields(u, u[:, None], (1 / 32, 5.0)), problem.coords, (1 / 32, 5.0), method="fd")
    (r,), _ = problem.terms(d, Params(dict(p)))
    R = 1 + (1 - p["porosity"]) / p["porosity"] * p["rho_s"] * p["k_f"] * p["n_f"] * (u + 1e-6) ** (p["n_f"] - 1)
    torch.testing.assert_close(r[:, 2:-2], (-p["D"] / R * 0.2)[:, 2:-2], rtol=1e-10, atol=0)
    assert float(R[0, 0, 0]) == pytest.approx(1 + 2.157 * (0.05 + 0.1 / 32 ** 2 / 4 + 1e-6) ** -0.126, rel=1e-3)


@pytest.mark.parametrize("boundary, resolution, left_max, right_max", [("pdebench", 64, 5e-3, 1e-3), ("face", math.inf, 2e-3, 5e-4)])
def test_diffusion_sorptions_residual_is_small_on_the_solvers_trajectories(boundary, resolution, left_max, right_max):
    """The finite-volume solver (steps of 1/16 s) against the problem, 64 cells saved every 2 s, on the
    data's grid (cell centres from h/2): after the start-up front the residual is < 5 % of u_t (FD error),
    and the boundary rows hold where the solver imposes the values: PDEBench's scheme (the datasets')
    in ghost cells half a cell outside the faces (the problem's `resolution`, the solver's cells), the
    solver's "face" variant at the faces (resolution inf). Measured from t = 20 s: inflow 3.3e-3 and
    outflow 6.8e-4 (pdebench), 1.2e-3 and 2.6e-4 (face); imposed at the end cell centres, as before, the
    rows were 0.156 and 0.026 (pdebench), 0.079 and 0.013 (face)."""
    from solvers.pde.diffusion_sorption import solve_diffusion_sorption

    times = [2.0 * k for k in range(41)]
    u = solve_diffusion_sorption(torch.tensor([0.05, 0.15], dtype=torch.float64), times=times, n_cells=64,
                                 dt=1 / 16, boundary=boundary).movedim(1, -1)
    problem, h = get_grid_problem("diffusion_sorption", resolution=resolution), (1 / 64, 2.0)
    d = GridDerivatives(problem.fields(u, u[:, None, :, :1].expand(-1, 1, -1, 41), h), problem.coords, h,
                        origin=(h[0] / 2, 0.0), method="fd")
    (r,), (ic, left, right) = problem.terms(d, Params(dict(problem.params)))
    late = (slice(None), slice(2, -2), slice(10, -1))

    def rms(a):
        return a.square().mean().sqrt()

    # the compact u_xx stencil is the solver's own: 0.0016 inside, 0.010 with the end cells (measured);
    # the first-derivative stencil twice gave 0.014 and 0.077
    assert rms(r[late]) < 0.005 * rms(d.u_t[late])
    assert rms(r[:, :, 10:-1]) < 0.02 * rms(d.u_t[late])
    assert ic[0][..., 0].abs().max() == 0
    assert left[0][:, 0, 10:].abs().max() < left_max
    assert right[0][:, -1, 10:].abs().max() < right_max


def test_diffusion_sorptions_boundary_rows_vanish_on_the_datas_ghost_values():
    """The inflow row is the value extrapolated (linearly, from the end node at d.x) to the ghost centre
    -1/(2 resolution), minus 1; the outflow row the value at 1 + 1/(2 resolution) plus D times the slope:
    both vanish on a line made to satisfy them, on any grid (here 16 cells of a 256-cell solver's data: the
    ghosts are the solver's, not the grid's)."""
    problem = get_grid_problem("diffusion_sorption").with_params({"resolution": 256, "D": 0.01})
    x = (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    g_left, g_right = -1 / 512, 1 + 1 / 512
    s = -1 / ((g_right - g_left) + 0.01)  # u = 1 + s (x - g_left): u(g_right) = -D u_x
    u = (1 + s * (x - g_left))[None, :, None].expand(1, 16, 4)
    d = GridDerivatives(problem.fields(u, u[:, None], (1 / 16, 1.0)), problem.coords, (1 / 16, 1.0),
                        origin=(1 / 32, 0.0), method="fd")
    _, (_, left, right) = problem.terms(d, Params(dict(problem.params)))
    assert problem.params["resolution"] == 256
    assert left[0][:, 0].abs().max() < 1e-12 and right[0][:, -1].abs().max() < 1e-12
    assert abs(float(u[0, 0, 0]) - 1) > 0.01  # the end cell itself is not at 1


def test_a_condition_on_part_of_a_face_counts_only_those_nodes():
    """at={"x": 0, "t": slice(1, None)}: the t = 0 node is left out of the loss and of the layer's rows."""
    cond = GridCondition(lambda d: d.u - 1, at={"x": 0, "t": slice(1, None)})
    problem = GridProblem(lambda d: d.u_t, ("x", "t"), (cond,), inputs=("u0",))
    u = torch.zeros(1, 1, 8, 5, dtype=torch.float64)
    h = (0.125, 0.5)
    assert physics_loss(u, u, problem, h).item() == pytest.approx(math.sqrt(0.5 * 4), rel=1e-12)  # 4 nodes, misfit 1
    layer = problem.layer(h)
    assert [int(v.sum()) for v in layer._layout((8, 5), "cpu")["conditions"][0][1:]] == [4]
    with pytest.raises(ValueError, match="fix at least one of the coordinates .* to a node index"):
        GridProblem(lambda d: d.u_t, ("x", "t"), (GridCondition(lambda d: d.u, at={"t": slice(1, None)}),)).layer(h)
