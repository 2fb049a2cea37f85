"""Inverse problems (Unknown parameters, Data observations): what a run silently got wrong."""

import math

import pytest
import torch
import yaml

from sciml.config import ConfigError
from sciml.train.run import RunDir

F64 = torch.float64


def test_a_resume_refuses_a_new_problem_args_key_but_skips_a_field_an_older_config_lacks(tmp_path):
    """A new problem_args key was skipped as 'saved by an older version': D_true=0.3 rewrote a finished run's metrics."""
    run = RunDir.create(tmp_path, "r")
    saved = {"task": "pinn", "problem": "mypkg.heat:heat", "problem_args": {"noise": 0.01}, "seed": 0}
    run.write_config(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match=r"would change it: problem_args\.D_true\b"):
        run.check_resume(yaml.safe_dump({**saved, "problem_args": {"noise": 0.01, "D_true": 0.3}}), "pinn")
    with pytest.raises(ConfigError, match=r"would change it: problem_args\.noise\b"):
        run.check_resume(yaml.safe_dump({**saved, "problem_args": {}}), "pinn")
    # a schema field the old config did not write (keep_soft) is still no change
    run.check_resume(yaml.safe_dump({**saved, "keep_soft": []}), "pinn")


def _heat(data, params=None, residual=None):
    from sciml.pde import Dirichlet, Initial, Interval, Problem, Unknown

    return Problem(domain=Interval(0, math.pi).with_time(0, 1), residual=residual or (lambda d, p: d.u_t - p.D * d.u_xx),
                   conditions=[Dirichlet(0.0), Initial(lambda x: torch.sin(x[:, 0])), data],
                   params=params or {"D": Unknown(0.2, true=0.7)})


def _obs(n=50):
    from sciml.pde import Interval

    x = Interval(0, math.pi).with_time(0, 1).sample_interior(n, method="halton", seed=7)
    return x, torch.exp(-0.7 * x[:, 1]) * torch.sin(x[:, 0])


def test_data_points_outside_a_box_domain_are_refused_naming_the_coordinate_order():
    """(t, x) columns for an (x, t) domain: 136 of 200 points had t > 1 and D came out -0.06, without a word."""
    from sciml.pde import Data

    x, u = _obs(200)
    with pytest.raises(ValueError, match=r"Data \(conditions\[2\]\): 136 of 200 points lie outside the domain "
                                         r"x in \[0, 3.14159\], t in \[0, 1\] \(136 with t out of range\).*"
                                         r"coordinate order \(x, t\), time last"):
        _heat(Data(x[:, [1, 0]], u))
    with pytest.raises(ValueError, match=r"points have 3 column\(s\), but the domain has 2 coordinates \(x, t\)"):
        _heat(Data(torch.cat([x, x[:, :1]], 1), u))
    _heat(Data(x, u))  # inside
    _heat(Data(torch.tensor([[0.0, 0.0], [math.pi * (1 + 1e-9), 1.0]]), torch.zeros(2)))  # on the bounds: rounding is fine


def test_data_points_outside_a_disk_are_refused_by_its_inside_test():
    from sciml.pde import Data, Disk, Problem

    disk = Disk([0.0, 0.0], 1.0)
    ok = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.6, 0.6]], dtype=F64)  # a point on the circle counts as inside
    Problem(domain=disk, residual=lambda d: d.laplacian("u"), conditions=[Data(ok, torch.zeros(3))])
    corner = torch.tensor([[0.0, 0.0], [0.9, 0.9]], dtype=F64)  # inside the bounding box, outside the disk
    with pytest.raises(ValueError, match=r"1 of 2 points lie outside the domain .*\(Disk: its inside test\).*point 1"):
        Problem(domain=disk, residual=lambda d: d.laplacian("u"), conditions=[Data(corner, torch.zeros(2))])


TINY_FIT = {"dtype": "float64", "net": {"width": 8, "depth": 2}, "points": {"interior": 32}, "log_every": 1,
            "eval_every": 0, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 2}]}


def test_an_unknown_the_residual_never_reads_is_refused_before_training():
    """param_k stayed at its init 0.5 (its gradient always None) and was reported as inferred."""
    from sciml.pde import Data, Unknown
    from sciml.train.pinn import fit

    x, u = _obs()
    params = {"D": Unknown(0.2, true=0.7), "k": Unknown(0.5, true=0.1)}
    with pytest.raises(ConfigError, match=r"Unknown 'k' of problem 'custom' is not used by the residual.*init \(k=0.5\)"):
        fit(_heat(Data(x, u), params=params), TINY_FIT)
    detached = lambda d, p: d.u_t - float(p.D) * d.u_xx  # read as a number: no gradient either
    with pytest.raises(ConfigError, match=r"Unknown 'D' .*not used by the residual"):
        fit(_heat(Data(x, u), residual=detached), TINY_FIT)
    both = lambda d, p: d.u_t - p.D * d.u_xx - p.k * d.u
    assert set(fit(_heat(Data(x, u), params=params, residual=both), TINY_FIT).metrics) >= {"param_D", "param_k"}
