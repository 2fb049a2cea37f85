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
    # nor at any depth inside problem_args: opts.D_true passed as 'problem_args.opts' was skipped
    nested = {**saved, "problem_args": {"opts": {"other": 1}}}
    run.write_config(yaml.safe_dump(nested))
    with pytest.raises(ConfigError, match=r"would change it: problem_args\.opts\.D_true\b"):
        run.check_resume(yaml.safe_dump({**nested, "problem_args": {"opts": {"other": 1, "D_true": 0.3}}}), "pinn")


@pytest.mark.parametrize("domain, point", [("interval", [273.15, 0.5]), ("box", [-122.53, 37.71])])
def test_float32_points_on_the_bounds_of_an_offset_box_are_inside(domain, point):
    """The tolerance scaled with the width only: 273.15 rounded to float32 (273.149994) lay 'outside' [273.15, 274.15],
    and the error sent the user looking for swapped columns."""
    from sciml.pde import Box, Data, Interval, Problem

    space = Interval(273.15, 274.15).with_time(0, 1) if domain == "interval" else Box([-122.53, 37.71], [-122.31, 37.83])
    pts = torch.tensor([point], dtype=torch.float32)
    Problem(domain=space, residual=lambda d: d.u, conditions=[Data(pts, torch.zeros(1))])
    with pytest.raises(ValueError, match="outside the domain"):  # a real miss is still one
        Problem(domain=space, residual=lambda d: d.u, conditions=[Data(pts - 0.01, torch.zeros(1))])


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


def test_weight_decay_does_not_pull_the_unknowns_to_zero(monkeypatch):
    """AdamW decayed D with the weights (D 0.687 for 0.697 without decay on it)."""
    import sciml.train.pinn as pinn
    from sciml.pde import Data

    built = []

    def recording(params, name, **kw):
        built.append(pinn_build(params, name, **kw))
        return built[-1]

    pinn_build = pinn.build_optimizer
    monkeypatch.setattr(pinn, "build_optimizer", recording)
    x, u = _obs()
    cfg = {**TINY_FIT, "phases": [{"optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.5}, "steps": 2},
                                  {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 2}, "steps": 1}]}
    result = pinn.fit(_heat(Data(x, u)), cfg)
    D = result.model.unknowns["D"]
    adamw, lbfgs = built
    (d_group,) = [g for g in adamw.param_groups if any(p is D for p in g["params"])]
    assert d_group["weight_decay"] == 0.0 and d_group["params"] == [D]
    assert [g["weight_decay"] for g in adamw.param_groups if g is not d_group] == [0.5]  # the net's weights decay
    assert len(lbfgs.param_groups) == 1  # L-BFGS takes one group (and has no decay)
    # an optimizer state saved with one group (before the split) resumes as it was
    saved = {"param_groups": [{"params": list(range(7))}]}
    assert not isinstance(list(pinn._param_groups(result.model, "none", saved))[0], dict)


@pytest.mark.parametrize("name", ["perpgrad", "grokfast"])
def test_a_gradient_filter_leaves_the_unknowns_alone(name):
    """⊥Grad projects a gradient off its parameter: a scalar's gradient is all parallel, so D never moved."""
    import sciml.train.pinn as pinn
    from sciml.pde import Data

    x, u = _obs()
    cfg = {**TINY_FIT, "phases": [{"optimizer": {"name": name, "lr": 1e-2}, "steps": 3}]}
    result = pinn.fit(_heat(Data(x, u)), cfg)
    assert abs(float(result.model.unknowns["D"].detach()) - 0.2) > 1e-3  # from 0.2 by ~lr per step (frozen: 3e-9)


@pytest.mark.parametrize("what,bad", [("values", float("nan")), ("values", float("inf")), ("points", float("nan"))])
def test_non_finite_observations_are_refused_at_construction_naming_the_first(what, bad):
    """A NaN observation was blamed on the learning rate / precision by the guard."""
    from sciml.pde import Data

    x, u = _obs()
    if what == "values":
        u = torch.where(torch.arange(50) == 3, bad, u)
    else:
        x = torch.where(torch.arange(50)[:, None] == 3, bad, x)
    with pytest.raises(ValueError, match=rf"Data {what} hold non-finite numbers \(NaN or inf\) at 1 of 50 observations, "
                                         rf"the first at index 3"):
        Data(x, u)


def test_an_unknown_starts_from_a_finite_number():
    from sciml.pde import Unknown

    with pytest.raises(ValueError, match=r"Unknown\(init=nan\): init must be finite"):
        Unknown(float("nan"))
    with pytest.raises(ValueError, match=r"Unknown\(true=inf\): true must be finite"):
        Unknown(0.2, true=float("inf"))
    with pytest.raises(TypeError, match=r"Unknown\(init='abc'\): init must be a real number"):
        Unknown("abc")
    assert Unknown(1).init == 1 and Unknown(0.2, true=None).true is None


HEAT_MODULE = '''
import math, torch
from sciml.pde import Data, Dirichlet, Initial, Interval, Problem, Unknown

def heat(D_true=0.7, n_obs=50, reference=True, unknown=True, name="custom"):
    exact = lambda x: torch.exp(-D_true * x[:, 1]) * torch.sin(x[:, 0])
    domain = Interval(0, math.pi).with_time(0, 1)
    obs = domain.sample_interior(n_obs, method="halton", seed=7)
    return Problem(domain=domain, residual=lambda d, p: d.u_t - p.D * d.u_xx,
                   conditions=[Dirichlet(0.0), Initial(lambda x: torch.sin(x[:, 0])), Data(obs, exact(obs))],
                   params={"D": Unknown(0.2, true=D_true) if unknown else D_true}, reference=exact if reference else None,
                   name=name)

def buggy():
    return heat(D_true=torch.randn(2, "float64"))  # a TypeError inside the factory
'''


@pytest.fixture
def heat_module(tmp_path, monkeypatch):
    """A user module ``invheat_<n>`` with a `heat` factory (an inverse heat problem), importable as 'invheat_<n>:heat'."""
    name = f"invheat_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(HEAT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _cli_config(tmp_path, problem, run="r", **extra):
    cfg = tmp_path / f"{run}.yaml"
    cfg.write_text(yaml.safe_dump({"task": "pinn", "problem": problem, "device": "cpu", **TINY_FIT, **extra,
                                   "output": {"root": str(tmp_path / "runs"), "name": run}}))
    return str(cfg)


def test_train_and_eval_report_the_inferred_unknowns(tmp_path, capsys, heat_module):
    """`sciml eval` printed no param_D and `sciml train` only the relative L2; with no reference eval printed nothing useful."""
    import json

    from sciml.cli import main

    assert main(["train", _cli_config(tmp_path, f"{heat_module}:heat")]) == 0
    out = capsys.readouterr().out
    final = RunDir(tmp_path / "runs" / "r").read_metrics()[-1]
    assert f"inferred D = {final['param_D']:.6g} (true 0.7, abs error {final['param_D_abs_error']:.3e}, rel error " in out
    assert main(["eval", str(tmp_path / "runs" / "r"), "--checkpoint", "last"]) == 0
    cap = capsys.readouterr()
    row = json.loads(cap.out.splitlines()[-1])
    assert row["param_D"] == final["param_D"] and row["param_D_abs_error"] == final["param_D_abs_error"]
    assert f"inferred D = {final['param_D']:.6g} (true 0.7, abs error" in cap.err

    cfg = _cli_config(tmp_path, f"{heat_module}:heat", "n", problem_args={"reference": False, "unknown": False})
    assert main(["train", cfg]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "n"), "--checkpoint", "last"]) == 0
    assert "has no reference solution and no unknowns: nothing to measure" in capsys.readouterr().err


def test_data_refuses_n_rather_than_ignore_it():
    """Data(points, values, n=10) used all 50 observations without a word."""
    from sciml.pde import Data

    x, u = _obs()
    with pytest.raises(ValueError, match=r"Data\(n=10\): Data uses every observation it is given and takes no n"):
        Data(x, u, n=10)
    assert Data(x, u).n is None


def test_a_bug_inside_a_problem_factory_keeps_its_traceback_and_only_bad_arguments_are_a_rejection(heat_module):
    """Every TypeError was re-raised `from None` as 'rejected problem_args', the user's bug and its traceback lost."""
    import traceback

    from sciml.train.pinn import PINNConfig, load_problem

    with pytest.raises(TypeError) as info:
        load_problem(PINNConfig(problem=f"{heat_module}:buggy"))
    assert "rejected problem_args" not in str(info.value)
    assert any(frame.name == "buggy" for frame in traceback.extract_tb(info.tb))  # the user's frame is there
    with pytest.raises(ConfigError, match=r"rejected problem_args \{'D_tru': 0.3\}: .*D_tru.*did you mean 'D_true'"):
        load_problem(PINNConfig(problem=f"{heat_module}:heat", problem_args={"D_tru": 0.3}))
    # a factory's own `name` argument is not get_problem's
    assert load_problem(PINNConfig(problem=f"{heat_module}:heat", problem_args={"name": "mine"})).name == "mine"


def test_load_pinn_takes_the_problem_a_cli_run_built_under_its_default_name(tmp_path, capsys, heat_module):
    """A CLI run records 'pkg.mod:factory', the factory's Problem is named 'custom': load_pinn(run, problem=P) refused it."""
    from sciml.cli import main
    from sciml.train.pinn import load_pinn

    mod = __import__(heat_module)
    assert main(["train", _cli_config(tmp_path, f"{heat_module}:heat", problem_args={"D_true": 0.5})]) == 0
    run = tmp_path / "runs" / "r"
    model, cfg, problem = load_pinn(run, problem=mod.heat(D_true=0.5))
    assert float(model.unknowns["D"]) == RunDir(run).read_metrics()[-1]["param_D"]
    with pytest.raises(ConfigError, match=r"trained problem '.*:heat' \(problem_args \{'D_true': 0.5\}\); the problem given "
                                          r"differs from it in params: .*0.5.*0.7"):
        load_pinn(run, problem=mod.heat())
    with pytest.raises(ConfigError, match=r"differs from it in conditions\[2\] \(Data\) points"):
        load_pinn(run, problem=mod.heat(D_true=0.5, n_obs=60))
    with pytest.raises(ConfigError, match=r"trained problem '.*:heat', not 'other'"):  # a name of its own still must match
        load_pinn(run, problem=mod.heat(D_true=0.5, name="other"))


def test_a_misspelt_factory_name_gets_a_did_you_mean(heat_module):
    from sciml.pde import get_problem

    with pytest.raises(ValueError, match=rf"module '{heat_module}' has no attribute 'heta'.*did you mean 'heat'"):
        get_problem(f"{heat_module}:heta")


def test_a_positive_unknown_trains_its_log_and_reports_the_value(tmp_path):
    from sciml.pde import Data, Unknown
    from sciml.train.pinn import fit

    with pytest.raises(ValueError, match=r"positive=True\): a positive unknown starts above 0"):
        Unknown(0.0, positive=True)
    x, u = _obs()
    run = RunDir.create(tmp_path, "pos")
    result = fit(_heat(Data(x, u), params={"D": Unknown(0.2, true=0.7, positive=True)}), TINY_FIT, run=run)
    raw = float(result.model.unknowns["D"])
    assert raw != pytest.approx(math.log(0.2))  # it trained
    m = result.metrics
    assert m["param_D"] == pytest.approx(math.exp(raw), rel=1e-15) and m["param_D"] > 0
    assert m["param_D_abs_error"] == pytest.approx(abs(m["param_D"] - 0.7), rel=1e-15)
    steps = [r for r in run.read_metrics() if r["kind"] == "step"]
    assert steps[0]["param_D"] == pytest.approx(0.2, rel=0.05)  # the value after one step, not its log (-1.6)
    assert steps[-1]["param_D"] == m["param_D"]
    p = result.model.params(_heat(Data(x, u), params={"D": Unknown(0.2, positive=True)}))
    assert float(p.D) == pytest.approx(m["param_D"], rel=1e-15)
