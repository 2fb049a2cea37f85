"""ODE systems: a time interval Interval(t0, t1) with coords=("t",), Initial conditions at t0 (soft or hard)."""

import pytest
import torch

from sciml.pde import Box, Data, Initial, Interval, Problem, Unknown
from sciml.train.pinn import PINNConfig, build_model, fit

F64 = torch.float64
TWO_STAGE = [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 200},
             {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "line_search_fn": "strong_wolfe"}, "steps": 15}]


def oscillator():
    """x' = y, y' = -k x, x(0) = 1, y(0) = 0 with k unknown (4): x = cos 2t, y = -2 sin 2t; x observed."""
    t = torch.linspace(0, 1.5, 16, dtype=F64)[:, None]
    return Problem(Interval(0, 1.5), coords=("t",), outputs=("x", "y"), residual=lambda d, p: [d.x_t - d.y, d.y_t + p.k * d.x],
                   conditions=[Initial(1.0, component="x"), Initial(0.0, component="y"), Data(t, torch.cos(2 * t[:, 0]), component="x")],
                   params={"k": Unknown(1.0, true=4.0)},
                   reference=lambda x: torch.stack([torch.cos(2 * x[:, 0]), -2 * torch.sin(2 * x[:, 0])], -1))


@pytest.mark.parametrize("constraints", ["soft", "hard"])
def test_an_ode_system_with_initial_conditions_recovers_its_unknown(constraints):
    torch.manual_seed(0)
    r = fit(oscillator(), {"constraints": constraints, "dtype": "float64", "net": {"width": 16, "depth": 2},
                           "points": {"interior": 32}, "phases": TWO_STAGE, "eval_every": 0})
    assert r.metrics["rel_l2"] < 5e-3 and r.metrics["param_k_rel_error"] < 5e-3


def test_the_hard_transform_makes_an_ode_initial_value_and_velocity_exact():
    # u'' = -u, u(0) = 1, u'(0) = 0.5: both Initial conditions leave the loss, and hold on the fresh net
    p = Problem(Interval(0, 2), coords=("t",), residual=lambda d: d.u_tt + d.u,
                conditions=[Initial(1.0), Initial(0.5, derivative=1)])
    model, covered = build_model(p, PINNConfig(problem="custom", constraints="hard", dtype="float64"))
    assert covered == (0, 1)
    t = torch.zeros(1, 1, dtype=F64, requires_grad=True)
    u = model.double()(t)[:, 0]
    (du,) = torch.autograd.grad(u.sum(), t)
    assert float(u.detach()) == pytest.approx(1.0, abs=1e-12) and float(du) == pytest.approx(0.5, abs=1e-12)


def test_an_ode_initial_condition_is_the_one_point_t0():
    p = Problem(Interval(0.5, 3), coords=("t",), residual=lambda d: d.u_t + d.u, conditions=[Initial(1.0)])
    assert p.sample_condition(p.conditions[0], 8)["x"].tolist() == [[0.5]]


def test_ode_set_up_mistakes_name_the_time_interval_form():
    with pytest.raises(ValueError, match=r"Box needs at least one coordinate.*Interval\(t0, t1\), coords=\('t',\)"):
        Box([], []).with_time(0, 3)
    with pytest.raises(ValueError, match=r"both outputs .* set coords=\('t',\)"):  # Lorenz's x, y, z against default coord x
        Problem(Interval(0, 3), residual=lambda d: [d.x, d.y, d.z], outputs=("x", "y", "z"))
    with pytest.raises(ValueError, match=r"Initial condition needs a time coordinate.*coords=\('t',\)"):
        Problem(Interval(0, 1), residual=lambda d: d.u_xx, conditions=[Initial(0.0)])
