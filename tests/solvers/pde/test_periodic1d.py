"""The periodic 1D semilinear solver against exact solutions (advection, heat, the KdV soliton),
its order in time, its invariants, and the KdV / Kuramoto-Sivashinsky families built on it."""

import math

import pytest
import torch

from solvers.pde.burgers import BurgersSolver
from solvers.pde.periodic1d import PeriodicAdvection1D

F64 = torch.float64


def grid(n, length):
    return torch.arange(n, dtype=F64) * length / n


def test_odd_and_even_orders_have_the_right_signs_exact_shift_and_decay():
    """u_t = c u_x shifts u0 to u0(x + c t); u_t = nu u_xx damps mode k by exp(-nu (2 pi k / L)^2 t):
    both linear, solved exactly to roundoff whatever the step."""
    L, x = 60.0, grid(128, 60.0)
    shape = lambda s: torch.sin(2 * math.pi * 3 * s / L) + 0.5 * torch.cos(2 * math.pi * 7 * s / L)  # noqa: E731
    for c in (0.7, -1.3):
        u = PeriodicAdvection1D({1: c}, advection=0.0, length=L).solve(shape(x)[None], [2.0, 5.0])[0]
        for i, t in enumerate((2.0, 5.0)):
            assert (u[i] - shape(x + c * t)).abs().max() < 1e-13
    nu, t = 3.0, 0.7
    heat = PeriodicAdvection1D({2: nu}, advection=0.0, length=L).solve(shape(x)[None], [t])[0, 0]
    decay = lambda k: math.exp(-nu * (2 * math.pi * k / L) ** 2 * t)  # noqa: E731
    exact = decay(3) * torch.sin(2 * math.pi * 3 * x / L) + 0.5 * decay(7) * torch.cos(2 * math.pi * 7 * x / L)
    assert (heat - exact).abs().max() < 1e-13


def soliton(x, t, c=1.0, x0=20.0):
    """u_t + 6 u u_x + u_xxx = 0: (c/2) sech^2(sqrt(c)/2 (x - c t - x0))."""
    return 0.5 * c / torch.cosh(0.5 * math.sqrt(c) * (x - c * t - x0)) ** 2


def test_kdv_soliton_travels_unchanged_at_fourth_order_in_the_step():
    """L = 60, 256 points, t = 5 (measured 2026-11-26: 2.25e-3, 1.17e-4, 7.36e-6, 3.64e-7 for dt = 0.2 ... 0.025;
    the automatic step, 0.039, 2.29e-6)."""
    x = grid(256, 60.0)
    errors = []
    for dt in (0.2, 0.1, 0.05, 0.025):
        u = PeriodicAdvection1D({3: -1.0}, advection=6.0, length=60.0, dt=dt).solve(soliton(x, 0)[None], [5.0])[0, 0]
        errors.append(float((u - soliton(x, 5.0)).norm() / soliton(x, 5.0).norm()))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(3.7 < p < 4.6 for p in orders), (errors, orders)
    auto = PeriodicAdvection1D({3: -1.0}, advection=6.0, length=60.0).solve(soliton(x, 0)[None], [5.0])[0, 0]
    assert float((auto - soliton(x, 5.0)).norm() / soliton(x, 5.0).norm()) < 2e-5


def test_kuramoto_sivashinsky_self_converges_and_conserves_the_mean():
    """Against a 16x smaller step at t = 10, L = 64 (measured: 5.2e-5, 6.7e-6, 6.9e-7 for dt = 0.2, 0.1, 0.05,
    observed orders 2.9 and 3.3: Cox-Matthews ETDRK4 loses up to one order on stiff problems,
    Hochbruck and Ostermann 2005)."""
    from sciml.data.families.periodic1d import SineSumParams, sine_sum

    L = 64.0
    u0 = sine_sum(4, 256, SineSumParams(length=L), generator=torch.Generator().manual_seed(0), device="cpu")
    ks = {2: -1.0, 4: -1.0}
    ref = PeriodicAdvection1D(ks, length=L, dt=0.0125).solve(u0, [10.0])
    errors = [float((PeriodicAdvection1D(ks, length=L, dt=dt).solve(u0, [10.0]) - ref).norm() / ref.norm())
              for dt in (0.2, 0.1, 0.05)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert errors[-1] < 2e-6 and all(2.7 < p < 4.6 for p in orders), (errors, orders)
    assert (ref[:, 0].mean(-1) - u0.mean(-1)).abs().max() < 1e-15


def test_burgers_is_the_instance_with_viscosity_as_its_linear_part():
    x = grid(128, 1.0)
    u0 = torch.sin(2 * math.pi * x)[None] + 0.3 * torch.cos(4 * math.pi * x)[None]
    burgers = BurgersSolver(nu=0.05)
    generic = PeriodicAdvection1D({2: 0.05}, dt=burgers.step_size(u0))
    assert torch.equal(burgers.solve(u0, [0.2, 0.5]), generic.solve(u0, [0.2, 0.5]))


@pytest.mark.parametrize("kwargs, match", [
    ({"linear": {}}, "derivative order >= 1"),
    ({"linear": {0: 1.0}}, "derivative order >= 1"),
    ({"linear": {2: math.nan}}, "finite"),
    ({"linear": {2: 1.0}, "length": -1.0}, "positive period"),
    ({"linear": {2: 1.0}, "cfl": 2.0}, "cfl"),
])
def test_bad_settings_are_refused(kwargs, match):
    linear = kwargs.pop("linear")
    with pytest.raises(ValueError, match=match):
        PeriodicAdvection1D(linear, **kwargs)


@pytest.mark.parametrize("family", ["kdv1d", "ks1d"])
def test_the_families_store_the_simulated_grid_subsampled_and_stay_bounded(family):
    from sciml.data.recipes import FAMILIES

    fam = FAMILIES.get(family)()
    p = fam.Params(t_end=5.0, n_times=5, **({"burn_in": 5.0} if family == "ks1d" else {}))
    out, diag = fam.generate(p, 6, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    u0, u = out["inputs/u0"], out["outputs/u"]
    assert u0.shape == (6, p.resolution) and u.shape == (6, 5, p.resolution)
    assert float(diag["mean_drift"].max()) < 1e-14
    layout = fam.layout(p)
    assert layout.grid["x"][1] == pytest.approx(p.length / p.resolution)
    # the same solve without oversampling drifts from the stored one only by the coarse grid's error
    if p.oversample > 1:
        coarse, _ = fam.generate(p.model_copy(update={"oversample": 1}), 6, generator=torch.Generator().manual_seed(0),
                                 device=torch.device("cpu"))
        assert not torch.equal(coarse["outputs/u"], u)
        assert float((coarse["outputs/u"] - u).norm() / u.norm()) < 1e-2
    bound = 4.0 if family == "ks1d" else 3.0 * float(u0.abs().max())
    assert float(u.abs().max()) < bound
