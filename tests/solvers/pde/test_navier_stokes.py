"""2D Navier–Stokes (vorticity): exact Taylor–Green and Kolmogorov solutions, orders, FNO scheme comparison."""

import math

import pytest
import torch

from solvers.pde.grf import GaussianRandomField
from solvers.pde.navier_stokes import NavierStokes2D, fno_forcing, solve_navier_stokes


def mesh(s):
    x = torch.linspace(0, 1, s + 1, dtype=torch.float64)[:-1]
    return torch.meshgrid(x, x, indexing="ij")


def rel(a, b):
    return float((a - b).norm() / b.norm())


def grf_ic(s, batch, scale=1.0, seed=0):
    g = GaussianRandomField((s, s), alpha=2.5, tau=7.0)  # FNO's initial condition
    return scale * g.sample(batch, generator=torch.Generator().manual_seed(seed))


def test_taylor_green_exact_decay():
    X, Y = mesh(32)
    w0 = (torch.sin(2 * math.pi * X) * torch.sin(2 * math.pi * Y))[None]
    nu, T = 1e-2, 1.0
    exact = w0 * math.exp(-8 * math.pi ** 2 * nu * T)
    # ETDRK4 integrates the linear part exactly and J(psi, w) = 0: roundoff only.
    w = solve_navier_stokes(w0, nu=nu, times=[T], forcing=None)
    assert rel(w[:, -1], exact) < 1e-13  # measured 6e-16
    # FNO's Crank–Nicolson/Euler: second order on this linear decay.
    errs = [rel(solve_navier_stokes(w0, nu=nu, times=[T], forcing=None, integrator="cn_euler", dt=dt)[:, -1],
                exact) for dt in (2e-2, 1e-2, 5e-3)]
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(p - 2) < 0.3 for p in orders), (errs, orders)
    assert abs(errs[1] / 4.10e-6 - 1) < 0.02  # research note: 4.1e-6 at dt = 1e-2


def test_kolmogorov_shear_transient_exact():
    # f = F cos(2 pi k y) and w0 = 0: the flow is a shear (nonlinear term zero) and
    # w = F/(nu (2 pi k)^2) (1 - exp(-nu (2 pi k)^2 t)) cos(2 pi k y). Checks forcing sign and axes.
    s, k, F, nu = 32, 2, 0.5, 0.05
    X, Y = mesh(s)
    f = F * torch.cos(2 * math.pi * k * Y)
    lam = nu * (2 * math.pi * k) ** 2
    times = [0.1, 0.5, 2.0]
    w = solve_navier_stokes(torch.zeros(2, s, s, dtype=torch.float64), nu=nu, times=times, forcing=f, dt=0.05)
    for i, t in enumerate(times):
        exact = F / lam * (1 - math.exp(-lam * t)) * torch.cos(2 * math.pi * k * Y)
        assert rel(w[0, i], exact) < 1e-12  # ETD is exact for constant forcing
    wc = solve_navier_stokes(torch.zeros(1, s, s, dtype=torch.float64), nu=nu, times=[2.0], forcing=f,
                             integrator="cn_euler", dt=1e-2)
    assert rel(wc[0, -1], F / lam * (1 - math.exp(-lam * 2.0)) * torch.cos(2 * math.pi * k * Y)) < 1e-3


def test_etdrk4_temporal_order_four():
    w0 = grf_ic(32, 2, scale=20.0)  # max(|u|+|v|) ~ 1.3: advection matters
    T, nu = 0.5, 1e-2
    ref = solve_navier_stokes(w0, nu=nu, times=[T], dt=T / 256)
    errs = [rel(solve_navier_stokes(w0, nu=nu, times=[T], dt=T / n), ref) for n in (8, 16, 32)]
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(p - 4) < 0.3 for p in orders), (errs, orders)  # measured 4.07, 4.04
    solver = NavierStokes2D(nu=nu, cfl=0.5)
    err_auto = rel(solver.solve(w0, [T]), ref)
    assert err_auto < 1e-6 and solver.last_steps < 100  # measured 1.7e-7 in 40 steps
    solver = NavierStokes2D(nu=nu)  # the default cfl = 1: half the steps, 2^4 the error, still far under float32's
    err_default = rel(solver.solve(w0, [T]), ref)
    assert err_default < 1e-5 and solver.last_steps <= 25, (err_default, solver.last_steps)  # 2.2e-6 in 21


def test_fast_scheme_vs_fno_scheme_and_mean_vorticity():
    # FNO's setting scaled down: GRF IC, FNO forcing, nu = 1e-3, 32^2, T = 0.5.
    w0 = grf_ic(32, 1)
    times = [0.0, 0.25, 0.5]
    fast = NavierStokes2D(nu=1e-3)
    w = fast.solve(w0, times)
    w_fno = solve_navier_stokes(w0, nu=1e-3, times=times, integrator="cn_euler", dt=1e-4)
    err = ((w[:, -1] - w_fno[:, -1]).norm(dim=(-1, -2)) / w_fno[:, -1].norm(dim=(-1, -2))).max().item()
    # measured 7.9e-6 with 2 adaptive ETDRK4 steps vs 5000 cn_euler steps; cn_euler itself moves
    # 1.1e-6 when its dt is halved, so about 7e-6 is the fast scheme's own error at dt = 0.25.
    assert err < 3e-5, f"{err:.2e}"
    assert fast.last_steps < 10
    assert w.mean(dim=(-1, -2)).abs().max() < 1e-15
    assert torch.equal(w[:, 0], w0)


def test_downsampling_stride_and_spectral():
    w0 = grf_ic(32, 1)
    full = solve_navier_stokes(w0, nu=1e-3, times=[0.5], dt=0.1)
    strided = solve_navier_stokes(w0, nu=1e-3, times=[0.5], dt=0.1, out_resolution=8)
    assert strided.shape == (1, 1, 8, 8)
    torch.testing.assert_close(strided, full[..., ::4, ::4], rtol=0, atol=1e-14)
    # a field with modes |k| < 4 only: spectral truncation equals sampling
    X, Y = mesh(32)
    smooth = (torch.sin(2 * math.pi * X) * torch.cos(6 * math.pi * Y) + torch.cos(4 * math.pi * (X - Y)))[None]
    spec = solve_navier_stokes(smooth, nu=1e-3, times=[0.0], forcing=None, out_resolution=8, downsample="spectral")
    torch.testing.assert_close(spec[:, 0], smooth[:, ::4, ::4], rtol=0, atol=1e-13)


def test_forcing_batch_and_float32():
    w0 = grf_ic(16, 2)
    f = torch.stack([fno_forcing(16), torch.zeros(16, 16, dtype=torch.float64)])
    w = solve_navier_stokes(w0, nu=1e-3, times=[0.5], forcing=f)
    torch.testing.assert_close(w[:1], solve_navier_stokes(w0[:1], nu=1e-3, times=[0.5]), rtol=0, atol=1e-13)
    torch.testing.assert_close(w[1:], solve_navier_stokes(w0[1:], nu=1e-3, times=[0.5], forcing=None),
                               rtol=0, atol=1e-13)
    w32 = solve_navier_stokes(w0.float(), nu=1e-3, times=[0.5])
    w64 = solve_navier_stokes(w0, nu=1e-3, times=[0.5])
    assert w32.dtype == torch.float32 and rel(w32.double(), w64) < 1e-5


@pytest.mark.parametrize("kwargs,match", [
    (dict(nu=0.0), "nu"),
    (dict(nu=1e-3, integrator="rk4"), "integrator"),
    (dict(nu=1e-3, forcing="kolmogorov"), "forcing"),
    (dict(nu=1e-3, out_resolution=5), "divide"),
    (dict(nu=1e-3, downsample="area"), "downsample"),
    (dict(nu=1e-3, forcing=torch.zeros(8, 8, dtype=torch.float64)), "forcing"),
    (dict(nu=1e-3, cfl=3.0), "cfl"),
    (dict(nu=1e-3, speed_checks=0), "speed_checks"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_navier_stokes(torch.zeros(1, 16, 16, dtype=torch.float64), times=[0.1], **kwargs)


def test_the_adaptive_step_measures_the_speed_speed_checks_times_per_output_interval(monkeypatch):
    # the step follows a growing speed within an interval; a fixed dt never measures it
    calls = []
    real = NavierStokes2D._speed
    monkeypatch.setattr(NavierStokes2D, "_speed", staticmethod(lambda w, ops: calls.append(1) or real(w, ops)))
    w0 = grf_ic(16, 1)
    solve_navier_stokes(w0, nu=1e-3, times=[0.0, 0.5, 1.0], speed_checks=3)
    assert len(calls) == 6  # two intervals (t = 0 is the start: none), three pieces each
    calls.clear()
    solve_navier_stokes(w0, nu=1e-3, times=[0.5, 1.0], dt=0.05)
    assert not calls
