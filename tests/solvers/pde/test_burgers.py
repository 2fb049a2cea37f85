"""Burgers: ETDRK4 pseudo-spectral solver against Cole–Hopf, order, invariants; exact references."""

import math

import numpy as np
import pytest
import torch
from scipy.special import ive

from solvers.pde.burgers import (BurgersSolver, burgers_raissi_reference, burgers_step_size, cole_hopf_sine,
                                 solve_burgers)
from solvers.pde.grf import GaussianRandomField


def grid(n):
    return torch.linspace(0, 1, n + 1, dtype=torch.float64)[:-1]


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


def bessel_series(A, nu, t, x):
    """Independent closed form: phi0 = exp(c cos 2 pi x) = I0(c) + 2 sum I_k(c) cos(2 pi k x), c = A/(4 pi nu)."""
    c = A / (4 * math.pi * nu)
    k = np.arange(1, int(c + 40 * math.sqrt(c + 1) + 40) + 1)
    Ik = ive(k, c) * np.exp(-4 * math.pi ** 2 * nu * k ** 2 * t)
    arg = 2 * math.pi * np.outer(x, k)
    return 8 * math.pi * nu * (k * Ik * np.sin(arg)).sum(1) / (ive(0, c) + 2 * (Ik * np.cos(arg)).sum(1))


@pytest.mark.parametrize("nu,t", [(0.1, 0.5), (0.02, 0.01), (0.01, 0.5)])
def test_cole_hopf_reference_matches_bessel_series(nu, t):
    x = np.linspace(0, 1, 129)[:-1]
    exact = bessel_series(1.0, nu, t, x)
    got = cole_hopf_sine(1.0, nu, t, torch.as_tensor(x))
    assert got.dtype == torch.float64
    assert np.abs(got.numpy() - exact).max() / np.abs(exact).max() < 2e-12  # measured 1e-15 .. 3e-13


def test_solver_matches_cole_hopf_nu_0p1_at_several_times():
    n, nu = 128, 0.1
    x = grid(n)
    u0 = torch.stack([torch.sin(2 * math.pi * x), 0.5 * torch.sin(2 * math.pi * x)])
    times = [0.0, 0.1, 0.35, 0.5]  # non-uniform: steps must land on each
    u = solve_burgers(u0, nu=nu, times=times)
    assert u.shape == (2, 4, n) and u.dtype == torch.float64
    assert torch.equal(u[:, 0], u0)
    for i, t in enumerate(times[1:], start=1):
        for b, A in enumerate([1.0, 0.5]):
            err = rel_l2(u[b, i], cole_hopf_sine(A, nu, t, x))
            assert err < 1e-6, "required accuracy"
            assert err < 3e-8, f"t={t}, A={A}: {err:.2e} (measured 8e-11 .. 3.3e-9 with the automatic step)"


def test_temporal_order_four_nu_0p01():
    n, nu, t = 512, 0.01, 0.5
    x = grid(n)
    u0 = torch.sin(2 * math.pi * x)[None]
    exact = cole_hopf_sine(1.0, nu, t, x)
    errors = [rel_l2(solve_burgers(u0, nu=nu, times=[t], dt=dt)[0, -1], exact) for dt in (2e-3, 1e-3, 5e-4)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(p - 4) < 0.3 for p in orders), f"errors {errors}, orders {orders}"
    assert errors[-1] < 2e-10  # measured 1.85e-11 at dt = 5e-4 (research note: 1.9e-11)


def fno_initial_conditions(n, batch, seed=0):
    grf = GaussianRandomField((n,), alpha=2, tau=5, sigma=25)
    return grf.sample(batch, generator=torch.Generator().manual_seed(seed))


def test_fno_data_automatic_step_accuracy_and_invariants():
    u0 = fno_initial_conditions(256, 4)
    times = [0.0, 0.25, 0.5]
    u = solve_burgers(u0, nu=0.1, times=times)
    dt = burgers_step_size(float(u0.abs().max()), 256, 0.1)
    ref = solve_burgers(u0, nu=0.1, times=times, dt=dt / 4)
    err = ((u[:, -1] - ref[:, -1]).norm(dim=-1) / ref[:, -1].norm(dim=-1)).max().item()
    assert err < 1e-6, f"automatic step (dt={dt:.2e}) is {err:.2e} from dt/4"
    assert err < 3e-8, f"{err:.2e} (measured ~3e-9)"
    # mean conserved to roundoff; energy non-increasing; max principle
    mean = u.mean(-1)
    assert (mean - mean[:, :1]).abs().max() < 1e-14
    energy = (u ** 2).mean(-1)
    assert (energy[:, 1:] <= energy[:, :-1]).all()
    assert u[:, -1].abs().amax(-1).le(u0.abs().amax(-1) + 1e-12).all()


def test_float32_close_to_float64():
    u0 = fno_initial_conditions(128, 2, seed=1)
    u64 = solve_burgers(u0, nu=0.1, times=[0.2])
    u32 = solve_burgers(u0.float(), nu=0.1, times=torch.tensor([0.2]))
    assert u32.dtype == torch.float32
    assert rel_l2(u32.double(), u64) < 1e-5


def test_zero_initial_condition_stays_zero():
    u = solve_burgers(torch.zeros(1, 16, dtype=torch.float64), nu=0.1, times=[1.0])
    assert torch.equal(u, torch.zeros_like(u))


@pytest.mark.parametrize("kwargs,match", [
    (dict(nu=-1.0, times=[1.0]), "nu"),
    (dict(nu=0.1, times=[1.0, 0.5]), "sorted"),
    (dict(nu=0.1, times=[-1.0]), "times"),
    (dict(nu=0.1, times=[]), "empty"),
    (dict(nu=0.1, times=[1.0], dt=0.0), "dt"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_burgers(torch.zeros(1, 16, dtype=torch.float64), **kwargs)


def test_invalid_shape_and_cfl():
    with pytest.raises(ValueError, match="u0"):
        solve_burgers(torch.zeros(16, dtype=torch.float64), nu=0.1, times=[1.0])
    with pytest.raises(ValueError, match="cfl"):
        BurgersSolver(nu=0.1, cfl=2.0)


def test_raissi_reference_basdevant_slope_and_boundaries():
    # Basdevant et al. (1986): max_t |u_x(0, t)| = 152.00516 at t = 1.6037/pi.
    t = 1.6037 / math.pi
    slope = lambda h: float((burgers_raissi_reference(h, t) - burgers_raissi_reference(-h, t)) / (2 * h))
    richardson = (9 * slope(1e-5) - slope(3e-5)) / 8  # central differences are O(h^2)
    assert abs(richardson + 152.00516) < 2e-4, richardson
    x = torch.linspace(-1, 1, 65, dtype=torch.float64)
    torch.testing.assert_close(burgers_raissi_reference(x, 0.0), -torch.sin(math.pi * x), rtol=0, atol=1e-15)
    ends = burgers_raissi_reference(torch.tensor([-1.0, 1.0], dtype=torch.float64), torch.tensor([[0.3], [1.0]]))
    assert ends.shape == (2, 2) and ends.abs().max() < 1e-12
    # odd symmetry u(-x, t) = -u(x, t)
    u = burgers_raissi_reference(x, 0.7)
    torch.testing.assert_close(u, -u.flip(0), rtol=0, atol=1e-12)


def test_unstable_step_raises_clear_error():
    x = grid(64)
    with pytest.raises(FloatingPointError, match="lower dt"):
        solve_burgers((10 * torch.sin(2 * math.pi * x))[None], nu=0.0, times=[20.0], dt=0.5)
