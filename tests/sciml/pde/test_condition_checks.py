"""Condition values, weights and evaluation points are checked when a problem is set up, naming the fix."""

import math

import numpy as np
import pytest
import torch

from sciml.config import ConfigError
from sciml.pde import Data, Dirichlet, Initial, Interval, Neumann, Problem
from sciml.pde.conditions import evaluate_value
from sciml.pde.losses import sample_collocation
from sciml.train.pinn import PINNConfig, build_model, fit

DOM = Interval(-1, 1).with_time(0, 1)
HEAT = lambda d: d.u_t - 0.1 * d.u_xx
U0 = lambda x: torch.cos(math.pi * x[:, 0] / 2)


@pytest.mark.parametrize("value", [lambda x: torch.sqrt(x[:, 1] - 0.5), lambda x: 1.0 / (x[:, 0] + 1)])
def test_a_non_finite_condition_value_is_refused_where_its_points_are_drawn(value):
    p = Problem(DOM, residual=HEAT, conditions=[Initial(U0), Dirichlet(value)])
    with pytest.raises(ValueError, match=r"Dirichlet \(conditions\[1\], component 'u'\) value is not finite .* the first \(-?1\.0, "):
        sample_collocation(p, interior=16, boundary=16, initial=8)


def test_a_non_finite_value_of_a_condition_the_hard_transform_covers_is_refused_too():
    p = Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0), Initial(lambda x: torch.log(x[:, 0]))])
    with pytest.raises(ValueError, match=r"Initial \(conditions\[1\], component 'u'\) value is not finite"):
        build_model(p, PINNConfig(problem="custom", constraints="hard"))


@pytest.mark.parametrize("make", [lambda: Dirichlet(0.0, weight=-1.0), lambda: Initial(U0, weight=float("nan")),
                                  lambda: Data(torch.zeros(2, 2), torch.zeros(2), weight=float("inf"))])
def test_a_negative_or_non_finite_condition_weight_is_refused(make):
    with pytest.raises(ValueError, match="weight must be finite and >= 0"):
        make()


def test_a_constant_nan_value_is_refused_at_construction_and_a_zero_weight_is_allowed():
    with pytest.raises(ValueError, match=r"Dirichlet\(value=nan\): a constant value must be finite"):
        Dirichlet(float("nan"))
    assert Dirichlet(0.0, weight=0.0).weight == 0.0  # 0 leaves the term out of the loss


@pytest.mark.parametrize("w", [-5.0, float("nan")])
def test_a_negative_loss_weight_in_the_config_is_refused(w):
    p = Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0), Initial(U0)])
    with pytest.raises(ConfigError, match=r"loss.weights .*dirichlet_0.* must be finite and >= 0"):
        fit(p, {"phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 1}], "loss": {"weights": {"dirichlet_0": w}},
                "points": {"interior": 8, "boundary": 4, "initial": 4}, "eval_every": 0})


@pytest.mark.parametrize("g", [lambda x: 0, lambda x: 0.5, lambda x: np.float64(2.0), lambda x: np.array(1.5)])
def test_a_value_function_returning_one_constant_is_broadcast_to_the_points(g):
    x = torch.rand(8, 2, dtype=torch.float64)
    v = evaluate_value(g, x)
    assert v.shape == (8,) and v.dtype == torch.float64 and bool((v == float(torch.as_tensor(g(x)).reshape(()))).all())


@pytest.mark.parametrize("g", [lambda x: x, lambda x: torch.zeros(2), lambda x: x[:3, 0]])
def test_a_value_function_of_another_shape_is_still_refused(g):
    with pytest.raises(ValueError, match=r"must map \(n, d\) points to \(n,\) values"):
        evaluate_value(g, torch.rand(8, 2, dtype=torch.float64))


@pytest.mark.parametrize("g", [lambda x: x[0], lambda x: x[:1], lambda x: torch.sin(x).mean(), lambda x: torch.tensor([[3.0]]),
                               lambda x: torch.zeros(1)])
def test_a_one_element_tensor_is_refused_as_a_likely_slip_not_broadcast(g):
    """x[0] for x[:, 0], or a mean, was broadcast as a constant to every point and trained against silently."""
    with pytest.raises(ValueError, match=r"x\[0\] where x\[:, 0\] was meant, or a reduction\? a constant is a number"):
        evaluate_value(g, torch.rand(8, 1, dtype=torch.float64))


def test_dirichlet_lambda_x_0_trains_in_soft_and_hard_mode():
    p = Problem(DOM, residual=HEAT, conditions=[Dirichlet(lambda x: 0), Initial(U0)])
    for constraints in ("soft", "hard"):
        r = fit(p, {"constraints": constraints, "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 2}],
                    "points": {"interior": 16, "boundary": 8, "initial": 8}, "eval_every": 0})
        assert math.isfinite(r.metrics["loss"])


@pytest.mark.parametrize("points,match", [
    (torch.rand(10, 1), r"eval_points have 1 column\(s\), but the domain has 2 coordinates \(x, t\)"),
    (torch.rand(10), r"eval_points have shape \(10,\)"),
    (torch.rand(10, 2) + 5, r"eval_points: 10 of 10 points lie outside the domain x in \[-1, 1\], t in \[0, 1\]"),
    (torch.tensor([[0.0, 0.5], [float("nan"), 0.5]]), r"eval_points: 1 of 2 points lie outside .* the first is point 1"),
])
def test_eval_points_are_checked_at_construction_as_data_points_are(points, match):
    with pytest.raises(ValueError, match=match):
        Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0)], reference=lambda x: x[:, 0], eval_points=points)


@pytest.mark.parametrize("method", ["sobol", "uniform"])
def test_a_boundary_predicate_on_the_initial_time_points_at_initial(method):
    p = Problem(DOM, residual=HEAT, conditions=[Neumann(0.0, where=lambda x: x[:, 1] == 0)])
    with pytest.raises(ValueError, match=r"selects \(almost\) no boundary points.*∂Ω × \[t0, t1\].*Initial\(g, derivative=k\)"):
        p.sample_condition(p.conditions[0], 8, method)


def test_a_time_face_on_a_space_time_domain_points_at_initial():
    with pytest.raises(ValueError, match=r"Dirichlet\(where='t=lo'\): face .*'x=lo', 'x=hi'.* Time is no boundary face .*Initial\(g\)"):
        Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0, where="t=lo")])


@pytest.mark.parametrize("value, error, match", [
    (lambda x: -np.sin(np.pi * x[:, 0]), TypeError, r"Initial \(conditions\[1\], component 'u'\): its value function calls "
                                                    r"NumPy on the points .*torch.sin, not np.sin"),
    (lambda x: -np.sin(np.pi * x[:, 0].detach().numpy()), TypeError, r"Initial \(conditions\[1\], component 'u'\): its value "
                                                                     r"function returned ndarray"),
    (lambda x: -torch.sin(math.pi * x[:, 0]).detach(), ValueError, r"Initial \(conditions\[1\], component 'u'\): its value "
                                                                   r"varies smoothly over the points but has no "
                                                                   r"autograd path"),
])
def test_a_hard_constraint_refuses_a_value_it_cannot_differentiate(value, error, match):
    """The transform u = g + D N puts g's derivatives into the residual: a NumPy value failed deep inside autograd or
    the jet backend, and a detached one (torch's own advice) trained to rel. L2 0.87 where torch.sin gives 3e-6."""
    p = Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0), Initial(value)])
    with pytest.raises(error, match=match):
        build_model(p, PINNConfig(problem="custom", constraints="hard"))
    fit(p, {"constraints": "soft", "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 1}],
            "points": {"interior": 16, "boundary": 8, "initial": 8}, "eval_every": 0})  # a loss term needs no derivatives


def test_a_hard_constraint_takes_constant_torch_and_step_values():
    """A step (a Riemann initial value, a lid's wall value) has no autograd path yet the right derivative, 0."""
    for value in (lambda x: 0.0, lambda x: torch.zeros(len(x), dtype=x.dtype), U0,
                  lambda x: (x[:, 0] < 0).to(x.dtype), lambda x: torch.where(x[:, 0] < 0, 1.0, 0.0).to(x.dtype)):
        build_model(Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0), Initial(value)]),
                    PINNConfig(problem="custom", constraints="hard"))
