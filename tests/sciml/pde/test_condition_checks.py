"""Condition values, weights and evaluation points are checked when a problem is set up, naming the fix."""

import math

import pytest
import torch

from sciml.pde import Dirichlet, Initial, Interval, Problem
from sciml.pde.losses import sample_collocation
from sciml.train.pinn import build_model, PINNConfig

DOM = Interval(-1, 1).with_time(0, 1)
HEAT = lambda d: d.u_t - 0.1 * d.u_xx
U0 = lambda x: torch.cos(math.pi * x[:, 0] / 2)


@pytest.mark.parametrize("value", [lambda x: torch.sqrt(x[:, 1] - 0.5), float("nan")])
def test_a_non_finite_condition_value_is_refused_where_its_points_are_drawn(value):
    p = Problem(DOM, residual=HEAT, conditions=[Initial(U0), Dirichlet(value)])
    with pytest.raises(ValueError, match=r"Dirichlet \(conditions\[1\], component 'u'\) value is not finite .* the first \(-?1\.0, "):
        sample_collocation(p, interior=16, boundary=16, initial=8)


def test_a_non_finite_value_of_a_condition_the_hard_transform_covers_is_refused_too():
    p = Problem(DOM, residual=HEAT, conditions=[Dirichlet(0.0), Initial(lambda x: torch.log(x[:, 0]))])
    with pytest.raises(ValueError, match=r"Initial \(conditions\[1\], component 'u'\) value is not finite"):
        build_model(p, PINNConfig(problem="custom", constraints="hard"))
