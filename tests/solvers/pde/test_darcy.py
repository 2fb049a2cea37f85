"""Darcy: 5-point FD with DST-preconditioned CG against closed forms, manufactured solutions, scipy."""

import math

import pytest
import torch

from solvers.pde.darcy import DarcySolver, darcy_coefficient, dst1, solve_darcy, solve_darcy_scipy

U_CENTRE = 0.0736713532814  # -Lap u = 1 on the unit square, u = 0 on the boundary: u(1/2, 1/2)


def nodes(s):
    x = torch.linspace(0, 1, s, dtype=torch.float64)
    return torch.meshgrid(x, x, indexing="ij")


def test_dst1_matches_definition_and_inverse():
    x = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    j = torch.arange(1, 8, dtype=torch.float64)
    S = torch.sin(math.pi * j[:, None] * j[None, :] / 8)
    torch.testing.assert_close(dst1(x), x @ S, rtol=0, atol=1e-13)
    torch.testing.assert_close(dst1(dst1(x)) * 2 / 8, x, rtol=0, atol=1e-14)


def test_poisson_centre_value_second_order():
    errs = []
    for s in (33, 65, 129):
        u = solve_darcy(torch.ones(1, s, s, dtype=torch.float64))
        errs.append(abs(float(u[0, s // 2, s // 2]) - U_CENTRE))
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(p - 2) < 0.3 for p in orders), (errs, orders)
    assert abs(errs[0] / 5.66e-5 - 1) < 0.01  # research note: 5.66e-5 at s = 33


def test_manufactured_smooth_coefficient_second_order():
    errs = []
    for s in (17, 33, 65):
        X, Y = nodes(s)
        pi = math.pi
        a = 1 + 0.5 * torch.sin(2 * pi * X) * torch.cos(2 * pi * Y)
        u = torch.sin(pi * X) * torch.sin(pi * Y)
        ax, ay = pi * torch.cos(2 * pi * X) * torch.cos(2 * pi * Y), -pi * torch.sin(2 * pi * X) * torch.sin(2 * pi * Y)
        ux, uy = pi * torch.cos(pi * X) * torch.sin(pi * Y), pi * torch.sin(pi * X) * torch.cos(pi * Y)
        f = -(ax * ux + ay * uy) + 2 * pi ** 2 * a * u
        uh = solve_darcy(a[None], f[None])
        errs.append(float((uh[0] - u).abs().max()))
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(p - 2) < 0.3 for p in orders), (errs, orders)


def test_pcg_matches_scipy_on_random_piecewise_coefficients():
    a = darcy_coefficient(4, 49, generator=torch.Generator().manual_seed(3))
    assert set(torch.unique(a).tolist()) == {3.0, 12.0}
    sol = DarcySolver(rtol=1e-10).solve(a)
    ref = solve_darcy_scipy(a)
    err = (sol.value - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    assert (err < 1e-8).all(), err  # measured ~1e-13
    assert (sol.status == 0).all()
    assert int(sol.stats["num_steps"].max()) < 40  # contrast 4 bounds the condition number (measured 22)
    # discrete maximum principle (f >= 0 => u >= 0) and zero boundary
    assert (sol.value >= 0).all() and sol.value[:, 0].abs().max() == 0 and sol.value[:, :, -1].abs().max() == 0


def test_operator_symmetric_and_forcing_shapes():
    a = darcy_coefficient(2, 17, generator=torch.Generator().manual_seed(1))
    A = DarcySolver.operator(a)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 15, 15, dtype=torch.float64, generator=g), torch.randn(2, 15, 15, dtype=torch.float64, generator=g)
    lhs, rhs = (A(x) * y).sum(dim=(1, 2)), (x * A(y)).sum(dim=(1, 2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=0)
    torch.testing.assert_close(solve_darcy(a, 2.0), 2 * solve_darcy(a, 1.0), rtol=1e-9, atol=1e-14)
    f = torch.full((17, 17), 2.0, dtype=torch.float64)
    torch.testing.assert_close(solve_darcy(a, f), solve_darcy(a, 2.0), rtol=1e-9, atol=1e-14)


def test_float32_runs():
    a = darcy_coefficient(2, 33, generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    u = solve_darcy(a, rtol=1e-5)
    ref = solve_darcy_scipy(a)
    assert u.dtype == torch.float32
    assert float((u.double() - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.parametrize("a,f,match", [
    (torch.ones(5, 5, dtype=torch.float64), 1.0, "shape"),
    (-torch.ones(1, 5, 5, dtype=torch.float64), 1.0, "> 0"),
    (torch.ones(1, 5, 5, dtype=torch.float64), torch.ones(4, 4, dtype=torch.float64), "f has shape"),
    (torch.ones(1, 5, 5, dtype=torch.float64), "one", "f="),
])
def test_invalid_inputs(a, f, match):
    with pytest.raises(ValueError, match=match):
        solve_darcy(a, f)
