"""PINN loss machinery and trainer: backends agree, weights behave, adaptive sampling, exact resume."""

import json
from pathlib import Path
import math

import pytest
import torch

from sciml.config import ConfigError
from sciml.pde import (MLP, CausalWeights, LossWeights, PINNModel, get_problem, loss_terms, rad_sample, rar_add,
                       sample_collocation)
from sciml.train.pinn import PINNConfig, build_model, evaluate_pinn_run, fit, load_pinn, run_pinn
from sciml.train.run import RunDir

F64 = torch.float64


JAXPI_NET = {"modified": True, "weight_factorization": {"mean": 1.0, "std": 0.1}}


@pytest.mark.parametrize("name,constraints,net", [("burgers", "hard", {}), ("burgers", "soft", {}), ("wave", "hard", {}),
                                                  ("allen_cahn", "hard", {}), ("allen_cahn", "hard", JAXPI_NET),
                                                  ("wave", "soft", JAXPI_NET)])
def test_jet_forward_and_reverse_losses_agree(name, constraints, net):
    problem = get_problem(name)
    cfg = PINNConfig(problem=name, constraints=constraints, net={"width": 8, "depth": 2, "fourier_features": 4, **net})
    model, covered = build_model(problem, cfg)
    model.to(F64)
    pts = sample_collocation(problem, interior=64, boundary=16, initial=16, seed=0, skip=covered).to(dtype=F64)
    ref = loss_terms(model, problem, pts, mode="reverse")
    for mode in ("forward", "jet"):
        got = loss_terms(model, problem, pts, mode=mode)
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-11, atol=1e-13, msg=f"{mode} {k}")


def test_causal_weights_decay_in_time_and_reduce_to_mean():
    t = torch.linspace(0, 1, 400, dtype=F64)
    r2 = torch.ones_like(t)
    cw = CausalWeights(0.0, 1.0, bins=8, eps=1.0)
    cw.loss(r2, t)
    w = cw.weights()
    assert cw.last_min_weight == w.min()
    assert bool((w[1:] < w[:-1]).all()) and w[0] == 1.0
    torch.testing.assert_close(w, torch.exp(-torch.arange(8, dtype=F64)))  # prefix sums of bin losses 1
    assert CausalWeights(0.0, 1.0, bins=8, eps=0.0).loss(r2 * 3, t).item() == pytest.approx(3.0)


@pytest.mark.parametrize("method", ["grad_norm", "ntk"])
def test_adaptive_loss_weights_are_positive_and_balance(method):
    problem = get_problem("burgers")
    model = PINNModel(MLP(2, 1, width=8, depth=2, dtype=F64))
    pts = sample_collocation(problem, interior=64, boundary=16, initial=16, seed=0).to(dtype=F64)
    lw = LossWeights(method=method, every=1)
    terms, res = loss_terms(model, problem, pts, return_residuals=True)
    assert lw.maybe_update(1, model, terms, res)
    w = {k: lw.weight(k) for k in terms}
    assert all(v > 0 and math.isfinite(v) for v in w.values()) and len(w) == 3
    # the term with the largest gradient (or NTK trace) gets the smallest weight
    assert min(w, key=w.get) != max(w, key=w.get)


def test_rad_concentrates_where_the_residual_is_large_and_rar_appends():
    problem = get_problem("convection")
    score = lambda x: (x[:, 0] < 1.0).double() * 100.0  # residual lives in x < 1 (a sixth of the domain)
    x = rad_sample(problem, score, 500, k=1.0, c=1.0, candidates=5000, seed=0)
    assert x.shape == (500, 2) and (x[:, 0] < 1.0).double().mean() > 0.5
    y = rar_add(problem, score, x, 20, candidates=2000, seed=0)
    assert y.shape == (520, 2) and bool((y[500:, 0] < 1.0).all())


TINY = {"problem": "diffusion_reaction", "task": "pinn", "device": "cpu", "dtype": "float64", "constraints": "hard",
        "net": {"width": 8, "depth": 2}, "points": {"interior": 64, "resample_every": 2, "adaptive": "rad", "candidates": 256},
        "log_every": 1, "eval_every": 2, "checkpoint_every": 3,
        "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 6},
                   {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 5, "line_search_fn": "strong_wolfe"}, "steps": 2}]}


def test_run_pinn_writes_run_folder_and_resumes_exactly(tmp_path):
    full = run_pinn(TINY, run_dir=RunDir.create(tmp_path, "a").path)
    a = tmp_path / "a"
    assert (a / "config.yaml").exists() and (a / "checkpoints" / "last.pt").exists()
    assert (a / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # reference, prediction, |error|
    lines = [json.loads(s) for s in (a / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["kind"] == "final" and lines[-1]["rel_l2"] == full["rel_l2"] and "rel_l2" in lines[1]

    class Stop(Exception):
        pass

    def crash(rec):
        if rec["phase"] == 0 and rec["step"] == 5:
            raise Stop

    from sciml.config import validate
    cfg = validate(PINNConfig, TINY)
    run_b = RunDir.create(tmp_path, "b")
    with pytest.raises(Stop):
        fit(get_problem("diffusion_reaction"), cfg, run=run_b, progress=crash)
    resumed = fit(get_problem("diffusion_reaction"), cfg, run=run_b, resume=True)
    assert resumed.metrics["rel_l2"] == pytest.approx(full["rel_l2"], rel=1e-10)
    steps = [(r["phase"], r["step"]) for r in run_b.read_metrics() if r.get("kind") == "step"]
    assert steps == [(0, s) for s in range(1, 7)] + [(1, 1), (1, 2)]  # no duplicates after the resume


def test_a_python_resume_refuses_a_config_that_changes_what_the_run_trains(tmp_path):
    from sciml.config import ConfigError, validate

    run = RunDir.create(tmp_path, "p")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 1e-9}), run=run)
    with pytest.raises(ConfigError, match="these overrides would change it: seed. Start a new run"):
        fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "seed": 7}), run=run, resume=True)
    resumed = fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 5}), run=run,
                  resume=True)  # how long it goes on may change
    assert resumed.metrics["stopped_early"] is False


def test_a_pinn_run_loads_as_its_trained_model(tmp_path):
    from sciml.config import validate

    run = RunDir.create(tmp_path, "p")
    result = fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=run)
    model, cfg, problem = load_pinn(run.path)
    assert cfg.problem == problem.name == "diffusion_reaction"
    pts = torch.rand(50, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(pts), result.model.cpu()(pts), rtol=0, atol=0)  # the last checkpoint
    assert evaluate_pinn_run(run.path)["rel_l2"] == pytest.approx(result.metrics["rel_l2"], rel=1e-12)


def test_a_run_of_a_problem_defined_in_a_script_reloads_given_the_problem(tmp_path):
    """Its config names a problem no registry knows: load_pinn failed with 'unknown problem' and had no way in."""
    from sciml.config import ConfigError, validate
    from sciml.pde import Dirichlet, Problem, Rectangle

    mine = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: d.laplacian("u") + 1, conditions=[Dirichlet(0.0)],
                   name="my_poisson")
    run = RunDir.create(tmp_path, "m")
    result = fit(mine, validate(PINNConfig, {**TINY, "problem": "my_poisson", "constraints": "soft"}), run=run)
    with pytest.raises(ConfigError, match=r"unknown problem 'my_poisson'.*load_pinn\(run, problem=\.\.\.\)"):
        load_pinn(run.path)
    model, cfg, problem = load_pinn(run.path, problem=mine)
    pts = torch.rand(20, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(pts), result.model.cpu()(pts), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="trained problem 'my_poisson', not 'diffusion_reaction'"):
        load_pinn(run.path, problem=get_problem("diffusion_reaction"))


def test_a_checkpoint_that_does_not_fit_the_net_built_today_is_a_clear_error(tmp_path):
    from sciml.config import ConfigError, validate

    run = RunDir.create(tmp_path, "w")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=run)
    state = run.load_checkpoint("last")
    state["model"] = {k: (v[:, :1] if v.ndim == 2 else v) for k, v in state["model"].items()}  # another net
    torch.save(state, run.checkpoint_path("last"))
    with pytest.raises(ConfigError, match="checkpoint does not fit the net its config builds now"):
        load_pinn(run.path)
    with pytest.raises(ConfigError, match="checkpoint does not fit"):
        fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=run, resume=True)


def test_max_minutes_stops_with_a_checkpoint_and_resume_finishes_the_run(tmp_path):
    from sciml.config import validate
    full = run_pinn(TINY, run_dir=RunDir.create(tmp_path, "a").path)
    run = RunDir.create(tmp_path, "b")
    stopped = fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 1e-9}), run=run)
    assert stopped.metrics["stopped_early"] is True
    assert [(r["phase"], r["step"]) for r in run.read_metrics() if r.get("kind") == "step"] == [(0, 1)]
    resumed = fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=run, resume=True)
    assert resumed.metrics["stopped_early"] is False
    assert resumed.metrics["rel_l2"] == pytest.approx(full["rel_l2"], rel=1e-10)
    steps = [(r["phase"], r["step"]) for r in run.read_metrics() if r.get("kind") == "step"]
    assert steps == [(0, s) for s in range(1, 7)] + [(1, 1), (1, 2)]


def test_a_resumed_run_decays_the_learning_rate_from_the_config_not_twice(tmp_path):
    # the checkpoint holds the decayed lr; taking it as the base decayed it again on resume
    from sciml.config import validate
    cfg = {**TINY, "phases": [{**TINY["phases"][0], "steps": 12, "decay_every": 4, "decay_rate": 0.5}]}
    full = run_pinn(cfg, run_dir=RunDir.create(tmp_path, "a").path)
    run = RunDir.create(tmp_path, "b")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**cfg, "max_minutes": 1e-9}), run=run)
    resumed = fit(get_problem("diffusion_reaction"), validate(PINNConfig, cfg), run=run, resume=True)
    assert resumed.metrics["rel_l2"] == pytest.approx(full["rel_l2"], rel=1e-10)


def test_a_phase_warms_its_learning_rate_up_linearly_then_decays_it():
    from sciml.train.pinn import PhaseConfig, _lr_schedule

    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=1e-3)
    ph = PhaseConfig(optimizer={"name": "adam"}, steps=8, warmup_steps=4, decay_every=2, decay_rate=0.5)
    seen = []
    for step in range(1, 9):
        _lr_schedule(opt, [1e-3], ph, step)
        seen.append(opt.param_groups[0]["lr"])
    expected = [1e-3 * min(1.0, s / 4) * 0.5 ** (s / 2) for s in range(1, 9)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[0] == pytest.approx(1e-3 / 4 * 0.5 ** 0.5)


def _scale_loss_terms(monkeypatch, from_call, factor=1e3, lasting=10**9):
    """Multiply the PINN loss terms by `factor` for `lasting` loss evaluations from the
    `from_call`-th on: a NaN step, or new collocation points exposing a residual the net never saw."""
    import sciml.train.pinn as pinn

    calls = {"n": 0}
    real = pinn.loss_terms

    def jumped(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        return {k: v * factor for k, v in terms.items()} if 0 <= calls["n"] - from_call < lasting else terms

    monkeypatch.setattr(pinn, "loss_terms", jumped)


def test_guard_is_on_by_default_and_survives_a_nan_step(monkeypatch, tmp_path):
    _scale_loss_terms(monkeypatch, 3, factor=float("nan"), lasting=1)
    cfg = {**TINY, "points": {"interior": 64}, "log_every": 2, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 6}]}
    run = RunDir.create(tmp_path, "g")
    metrics = run_pinn(cfg, run_dir=run.path)
    assert math.isfinite(metrics["rel_l2"])
    assert all(torch.isfinite(v).all() for v in torch.load(run.path / "checkpoints" / "last.pt")["model"].values())
    events = [r for r in run.read_metrics() if r.get("kind") == "guard"]
    assert [(e["step"], e["event"]) for e in events] == [(3, "skip_nonfinite")], events

    monkeypatch.undo()  # the same run unguarded: the NaN reaches the weights
    _scale_loss_terms(monkeypatch, 3, factor=float("nan"), lasting=1)
    unguarded = {**cfg, "phases": [{**cfg["phases"][0], "guard": None}]}
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        run_pinn(unguarded, run_dir=RunDir.create(tmp_path, "u").path)


def test_a_run_resumed_after_a_rollback_keeps_the_guards_lowered_rate(monkeypatch, tmp_path):
    cfg = {**TINY, "points": {"interior": 64}, "log_every": 1, "eval_every": 0, "checkpoint_every": 5,
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 40}]}
    _scale_loss_terms(monkeypatch, 20, lasting=5)
    full = run_pinn(cfg, run_dir=RunDir.create(tmp_path, "a").path)
    assert [r["event"] for r in RunDir(tmp_path / "a").read_metrics() if r.get("kind") == "guard"].count("rollback") == 1

    class Stop(Exception):
        pass

    def crash(rec):
        if rec["step"] == 32:
            raise Stop

    from sciml.config import validate
    monkeypatch.undo()
    _scale_loss_terms(monkeypatch, 20, lasting=5)
    run = RunDir.create(tmp_path, "b")
    with pytest.raises(Stop):
        fit(get_problem("diffusion_reaction"), validate(PINNConfig, cfg), run=run, progress=crash)
    saved = torch.load(run.path / "checkpoints" / "last.pt", weights_only=False)
    assert saved["step"] == 30 and saved["guard"]["lr_scale"] == 0.5
    monkeypatch.undo()  # the steps after 30 are unscaled in the full run too
    resumed = fit(get_problem("diffusion_reaction"), validate(PINNConfig, cfg), run=run, resume=True)
    assert resumed.metrics["rel_l2"] == pytest.approx(full["rel_l2"], rel=1e-10)


def test_resampling_resets_the_guard_so_a_new_loss_level_is_not_a_spike(monkeypatch, tmp_path):
    _scale_loss_terms(monkeypatch, 40)  # step 40's loss, the first on the points resampled at step 40
    cfg = {**TINY, "points": {"interior": 64, "resample_every": 40}, "log_every": 20, "eval_every": 0,
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 80}]}
    run = RunDir.create(tmp_path, "r")
    run_pinn(cfg, run_dir=run.path)
    assert [r for r in run.read_metrics() if r.get("kind") == "guard"] == []

    # a PINN loss may climb tens of times for a few steps: that is not a spike either
    monkeypatch.undo()
    _scale_loss_terms(monkeypatch, 55, factor=30.0, lasting=5)
    run = RunDir.create(tmp_path, "t")
    run_pinn(cfg, run_dir=run.path)
    assert [r for r in run.read_metrics() if r.get("kind") == "guard"] == []

    # without a resample at the jump the same run sees spikes and rolls back
    monkeypatch.undo()
    _scale_loss_terms(monkeypatch, 40)
    run = RunDir.create(tmp_path, "s")
    run_pinn({**cfg, "points": {"interior": 64, "resample_every": 50}}, run_dir=run.path)
    events = [r["event"] for r in run.read_metrics() if r.get("kind") == "guard"]
    assert "spike" in events and events.count("rollback") == 1, events


def test_a_guard_that_gives_up_saves_the_last_good_state_and_says_how_to_resume(monkeypatch, tmp_path):
    from sciml.optim import GuardError

    _scale_loss_terms(monkeypatch, 31)
    guard = {"max_rollbacks": 0, "check_every": 1, "snapshot_every": 5}
    cfg = {**TINY, "points": {"interior": 64}, "log_every": 10, "eval_every": 0, "checkpoint_every": 0,
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 60, "guard": guard}]}
    run = RunDir.create(tmp_path, "g")
    with pytest.raises(GuardError, match=rf"sciml train --resume {run.path} phases\.0\.optimizer\.lr="):
        run_pinn(cfg, run_dir=run.path)
    state = torch.load(run.path / "checkpoints" / "last.pt", weights_only=False)
    assert state["phase"] == 0 and state["step"] == 33  # three spikes: 31, 32, 33
    events = [(r["step"], r["event"]) for r in run.read_metrics() if r.get("kind") == "guard"]
    assert events[-1] == (33, "gave_up") and [e for _, e in events].count("spike") == 3
    gave_up = [r for r in run.read_metrics() if r.get("event") == "gave_up"][0]
    # every detail the guard reports is logged; snapshots every 5 healthy steps from step 1: the last at 26
    assert gave_up["to_step"] == 26 and gave_up["phase"] == 0

    monkeypatch.undo()  # the objective is healthy again: the run finishes from its checkpoint
    run_pinn(cfg, run_dir=run.path, resume=True)
    lines = run.read_metrics()
    steps = [r["step"] for r in lines if r.get("kind") == "step"]
    assert steps == [10, 20, 30, 40, 50, 60] and lines[-1]["kind"] == "final"
    assert [(r["step"], r["event"]) for r in lines if r.get("kind") == "guard"] == events


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[3] / "configs").glob("*/pinn*.yaml")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_pinn_config_validates_and_builds_its_model_and_optimizers(path):
    """A misspelt key or optimizer keyword fails here, not after a GPU run has started."""
    from sciml.config import load_yaml, validate
    from sciml.optim import build_optimizer
    from sciml.train.pinn import load_problem

    cfg = validate(PINNConfig, load_yaml(path), source=str(path))
    problem = load_problem(cfg)
    model, _ = build_model(problem, cfg)
    for ph in cfg.phases:
        kw = dict(ph.optimizer)
        build_optimizer(model.parameters(), kw.pop("name"), **kw)
    assert problem.reference_values(problem.default_eval_points()[:4]).shape[0] == 4


def test_compiled_pinn_runs_again_from_a_warm_compile_cache(tmp_path):
    """torch 2.13's AOT-autograd cache corrupted the jet graph's warm start (see compile_jet_loss)."""
    import os
    import subprocess
    import sys

    script = ("import json, torch; torch.set_num_threads(1)\n"
              "from sciml.pde import get_problem\nfrom sciml.train.pinn import fit\n"
              "cfg = {'derivatives': 'jet', 'compile': True, 'device': 'cpu', 'net': {'width': 8, 'depth': 2},\n"
              "       'points': {'interior': 64}, 'eval_every': 0, 'log_every': 5,\n"
              "       'phases': [{'optimizer': {'name': 'adam', 'lr': 1e-2}, 'steps': 5}]}\n"
              "print(json.dumps(fit(get_problem('burgers'), cfg).metrics['loss']))\n")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    losses = []
    for _ in range(2):  # cold cache, then warm
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-1500:]
        losses.append(float(out.stdout.strip().splitlines()[-1]))
    assert losses[0] == losses[1]


def test_cli_says_how_to_go_on_after_the_cap_and_resume_with_a_new_cap_finishes(tmp_path, capsys):
    import yaml

    from sciml.cli import main
    cfg = tmp_path / "pinn.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output": {"root": str(tmp_path), "name": "r"}}))
    assert main(["train", str(cfg), "max_minutes=1e-9"]) == 0
    assert f"sciml train --resume {tmp_path / 'r'}" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "r"), "max_minutes=null"]) == 0
    assert "stopped by the time cap" not in capsys.readouterr().out
    final = [r for r in RunDir(tmp_path / "r").read_metrics() if r.get("kind") == "final"]
    assert len(final) == 1 and final[0]["stopped_early"] is False
    # the resume's override is the run's config now: a later resume or eval reads max_minutes: null
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["max_minutes"] is None


def test_a_resume_takes_the_learning_rate_it_is_given(monkeypatch, tmp_path):
    """GuardError's advice, `--resume RUN phases.0.optimizer.lr=...`: the checkpoint's lr came back."""
    from sciml.config import validate

    seen = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        seen.append(float(self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Adam, "step", record)
    cfg = {**TINY, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 4}]}
    run = RunDir.create(tmp_path, "r")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**cfg, "max_minutes": 1e-9}), run=run)
    lower = {**cfg, "phases": [{"optimizer": {"name": "adam", "lr": 1e-6}, "steps": 4}]}
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, lower), run=run, resume=True)
    assert seen == [1e-2, 1e-6, 1e-6, 1e-6]


def test_every_eval_step_is_evaluated_whatever_log_every_is(tmp_path):
    cfg = {**TINY, "log_every": 4, "eval_every": 6, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 13}]}
    run_pinn(cfg, run_dir=RunDir.create(tmp_path, "r").path)
    steps = [r["step"] for r in RunDir(tmp_path / "r").read_metrics() if r.get("kind") == "step" and "rel_l2" in r]
    assert steps == [6, 12, 13]


def test_a_one_column_reference_of_a_two_output_problem_evaluates_its_first_output(tmp_path):
    from dataclasses import replace

    from sciml.train.pinn import _Evaluator

    problem = get_problem("diffusion_reaction")
    two = replace(problem, residual=lambda d, p: [d.u_t - d.u_xx, d.v_t - d.v_xx], outputs=("u", "v"))
    errors = _Evaluator(two, "cpu").errors(torch.zeros(len(_Evaluator(two, "cpu").x), 2, dtype=torch.float64))
    assert errors["rel_l2"] == pytest.approx(1.0) and "rel_l2_v" not in errors
    with pytest.raises(ConfigError, match="eval_outputs \\['v'\\] asks for outputs its reference does not give"):
        _Evaluator(replace(two, eval_outputs=("v",)), "cpu")


def test_a_cli_run_that_fails_before_writing_anything_leaves_no_empty_folder(tmp_path, capsys):
    import yaml

    from sciml.cli import main
    cfg = tmp_path / "pinn.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "output": {"root": str(tmp_path / "runs")}}))
    assert main(["train", str(cfg), "problem=no_such_module_here:problem"]) == 2
    assert "cannot import module 'no_such_module_here'" in capsys.readouterr().err
    assert not any((tmp_path / "runs").iterdir())


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="did you mean 'points'"):
        run_pinn({**TINY, "pionts": {}}, run_dir=None)
    with pytest.raises(ConfigError, match="causal"):
        fit(get_problem("poisson_lshape"), {"loss": {"causal": {"enabled": True}}, "phases": [{"optimizer": {"name": "adam"}, "steps": 1}]})
    # the jet backend cannot carry a GELU net: said, not run in reverse mode behind the user's back
    with pytest.raises(ConfigError, match="not 'gelu'.*derivatives: reverse"):
        fit(get_problem("burgers"), {**TINY, "problem": "burgers", "derivatives": "jet", "net": {"activation": "gelu"}})


def test_nys_newton_cg_phase_runs_from_a_pinn_config_and_lowers_the_loss(tmp_path):
    """A closure that returns the loss without backward (NysNewton-CG) is stepped correctly."""
    cfg = {**TINY, "points": {"interior": 64}, "eval_every": 0, "checkpoint_every": 100,
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 20},
                      {"optimizer": {"name": "nys_newton_cg"}, "steps": 30}]}
    run = RunDir.create(tmp_path, "n")
    run_pinn(cfg, run_dir=run.path)
    losses = {(r["phase"], r["step"]): r["loss"] for r in run.read_metrics() if r.get("kind") == "step"}
    # measured 2026-11-25: 5.646 after Adam -> 2.501 after 30 Newton-CG steps (ratio 0.44)
    assert losses[(1, 30)] < 0.6 * losses[(0, 20)], losses


def test_a_misspelt_loss_weight_is_an_error_not_ignored():
    from sciml.pde import Dirichlet, Problem, Rectangle

    p = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: d.laplacian("u") + 1, conditions=[Dirichlet(0.0)])
    cfg = {"net": {"width": 8, "depth": 2}, "points": {"interior": 32, "boundary": 16}, "eval_every": 0,
           "phases": [{"optimizer": {"name": "adam"}, "steps": 2}]}
    for bad, hint in [("dirichlet_1", "did you mean 'dirichlet_0'"), ("poisson", "its terms are \\['residual', 'dirichlet_0'\\]")]:
        with pytest.raises(ConfigError, match=f"loss.weights names \\['{bad}'\\].*{hint}"):
            fit(p, {**cfg, "loss": {"weights": {bad: 10.0}}})
    # a dict's terms are named by its keys (they were numbered, and the keys refused)
    two = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: {"a": d.laplacian("u"), "b": d.u - 1})
    result = fit(two, {**cfg, "loss": {"weights": {"residual_b": 10.0}}})
    pts = sample_collocation(two, interior=8, boundary=4, initial=4).to(dtype=next(result.model.parameters()).dtype)
    assert list(loss_terms(result.model, two, pts)) == ["residual_a", "residual_b"]
    with pytest.raises(ConfigError, match=r"loss.weights names \['residual_1'\].*did you mean 'residual_b'"):
        fit(two, {**cfg, "loss": {"weights": {"residual_1": 10.0}}})
    # a weight on a condition the constraints make exact weighs nothing: said, not ignored silently (a warning: a
    # config's weights outlive an override such as poisson_lshape's problem_args.hard=true)
    with pytest.warns(UserWarning, match=r"names \['dirichlet_0'\], conditions the constraints make exact"):
        fit(p, {**cfg, "constraints": "hard", "loss": {"weights": {"dirichlet_0": 10.0}}})


def test_one_residual_function_serves_problems_of_two_dimensions_under_the_jet_backend():
    """The probed derivative paths were cached per residual function: the second problem got the
    first's paths (an IndexError or a KeyError blaming the residual), and an unhashable residual failed."""
    from dataclasses import dataclass

    from sciml.pde import Dirichlet, Interval, Problem, Rectangle

    poisson = lambda d: d.laplacian("u") + 1
    cfg = {"net": {"width": 8, "depth": 2}, "points": {"interior": 32, "boundary": 16}, "eval_every": 0,
           "derivatives": "jet", "phases": [{"optimizer": {"name": "adam"}, "steps": 2}]}
    for dom in (Interval(0, 1), Rectangle([0, 0], [1, 1])):
        fit(Problem(domain=dom, residual=poisson, conditions=[Dirichlet(0.0)]), cfg)

    @dataclass
    class Poisson:  # a dataclass with eq=True is unhashable
        f: float = 1.0

        def __call__(self, d):
            return d.laplacian("u") + self.f

    p = Problem(domain=Rectangle([0, 0], [1, 1]), residual=Poisson(), conditions=[Dirichlet(0.0)])
    model, covered = build_model(p, PINNConfig(problem="custom", net={"width": 8, "depth": 2}))
    model.to(F64)
    pts = sample_collocation(p, interior=32, boundary=16, initial=0, seed=0, skip=covered).to(dtype=F64)
    torch.testing.assert_close(loss_terms(model, p, pts, mode="jet"), loss_terms(model, p, pts, mode="reverse"))


def test_closure_phase_records_hold_one_point_and_the_final_loss_is_the_final_weights():
    """A step record's loss was the step's first evaluation but its terms the last line-search trial
    (0.741 against 0.435 on Burgers), and the final loss was the one before the last step."""
    records = []
    cfg = {"problem": "burgers", "constraints": "hard", "net": {"width": 8, "depth": 2}, "eval_every": 0,
           "log_every": 1, "points": {"interior": 128},
           "phases": [{"optimizer": {"name": "adam", "lr": 2e-3}, "steps": 3},
                      {"optimizer": {"name": "lbfgs", "max_iter": 10, "line_search_fn": "strong_wolfe"}, "steps": 3},
                      {"optimizer": {"name": "nys_newton_cg", "rank": 5}, "steps": 2}]}
    result = fit(get_problem("burgers"), cfg, progress=records.append)
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 8 and all(r["loss"] == pytest.approx(r["loss_residual"], rel=1e-6) for r in steps)
    model = result.model
    points = sample_collocation(get_problem("burgers"), interior=128, boundary=100, initial=100, seed=0,
                                skip=build_model(get_problem("burgers"), PINNConfig(**cfg))[1])
    points = points.to(dtype=next(model.parameters()).dtype)
    final = float(sum(loss_terms(model, get_problem("burgers"), points).values()))
    assert result.metrics["loss"] == pytest.approx(final, rel=1e-6)
    assert final < steps[-1]["loss"]  # after the last step, not before it


def test_causal_weights_hold_still_within_an_lbfgs_step():
    """They were recomputed at every closure call, so the line search compared values of different
    objectives: Burgers' L-BFGS phase stuck at one loss (0.13767) from its sixth step on."""
    w = CausalWeights(0.0, 1.0, bins=4, eps=1.0)
    w.hold_within_step = True
    t = torch.linspace(0.05, 0.95, 8, dtype=F64)
    w.new_step()
    first = w.loss(torch.ones(8, dtype=F64), t)
    assert w.loss(torch.full((8,), 2.0, dtype=F64), t) == pytest.approx(2 * float(first))  # the step's weights
    w.new_step()
    assert w.loss(torch.full((8,), 2.0, dtype=F64), t) < 2 * float(first)  # a new step: new weights
    cfg = {"problem": "burgers", "constraints": "soft", "net": {"width": 16, "depth": 2}, "eval_every": 0, "log_every": 1,
           "points": {"interior": 300, "boundary": 40, "initial": 40},
           "loss": {"causal": {"enabled": True, "bins": 8, "eps": 1.0}},
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 40},
                      {"optimizer": {"name": "lbfgs", "max_iter": 10, "line_search_fn": "strong_wolfe", "history_size": 20,
                                     "tolerance_change": 0.0, "tolerance_grad": 0.0}, "steps": 15, "dtype": "float64"}]}
    records = []
    fit(get_problem("burgers"), cfg, progress=records.append)
    lbfgs = [r["loss"] for r in records if r["phase"] == 1]
    assert lbfgs[-1] < 0.97 * lbfgs[5]  # still descending after its sixth step


def test_adaptive_sampling_without_a_period_is_refused():
    with pytest.raises(ConfigError, match="points.adaptive: rad samples every points.resample_every steps, which is 0"):
        from sciml.config import validate

        validate(PINNConfig, {"problem": "burgers", "points": {"adaptive": "rad"}})


def test_an_unknown_whose_true_value_is_zero_reports_an_absolute_error():
    """Its relative error read 8e296."""
    from sciml.pde import Data, Dirichlet, Interval, Problem, Unknown

    x = torch.linspace(0.1, 0.9, 9, dtype=F64)[:, None]
    p = Problem(domain=Interval(0, 1), residual=lambda d, p: d.u_xx + p.k * d.u, params={"k": Unknown(0.1, true=0.0)},
                conditions=[Dirichlet(0.0, where="x=lo"), Dirichlet(1.0, where="x=hi"), Data(x, x[:, 0])])
    m = fit(p, {"net": {"width": 8, "depth": 2}, "eval_every": 0, "points": {"interior": 32},
                "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 20}]}).metrics
    assert m["param_k_abs_error"] == abs(m["param_k"]) and "param_k_rel_error" not in m


def test_the_lagrangian_error_is_that_of_the_physical_solution():
    """rel_l2 compared u(ξ, t) with sin ξ alone, which a wrong characteristic X fits as well when ν = 0:
    1.18e-3 was reported for a run whose physical error was 1.05."""
    p = get_problem("convection_diffusion", beta=30.0, nu=0.0, frame="lagrangian")
    z = p.default_eval_points()
    exact = p.reference_values(z)  # columns X = ξ + βt, u = sin ξ
    slow = torch.stack([z[:, 0] + 28.0 * z[:, 1], exact[:, 1]], -1)  # the right u along a 7 % slow X
    assert float(p.eval_error(z, exact)) < 1e-12
    assert float(p.eval_error(z, slow)) > 0.5


def test_eval_of_a_pinn_run_refuses_operator_options(tmp_path, capsys):
    from sciml.cli import main

    run_pinn({**TINY, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 2}]}, run_dir=tmp_path / "p")
    assert main(["eval", str(tmp_path / "p"), "--resolution", "64"]) == 2  # was accepted and ignored
    assert "--resolution are for operator runs" in capsys.readouterr().err


def test_a_pinn_resume_with_fewer_steps_than_taken_is_refused(tmp_path, capsys):
    from sciml.cli import main

    run_pinn({**TINY, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 6}]}, run_dir=tmp_path / "p")
    assert main(["train", "--resume", str(tmp_path / "p"), "phases.0.steps=3"]) == 2
    assert "phases.0.steps=3 is below the 6 steps this run has taken" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "p"), "stop_after_minutes=1"]) == 2  # not a PINN key
    assert "unknown key 'stop_after_minutes'" in capsys.readouterr().err


def test_a_pinn_resume_that_changes_a_finished_phase_is_refused(tmp_path, capsys):
    """phases.0.steps=9 after the run had finished phase 0 exited 0 with no step taken, and config.yaml then said 9."""
    from sciml.cli import main

    phases = [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 4}, {"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 4}]
    run_pinn({**TINY, "phases": phases}, run_dir=tmp_path / "p")
    saved = (tmp_path / "p" / "config.yaml").read_text()
    for change in ("phases.0.steps=9", "phases.1.steps=9", "phases.0.optimizer.lr=0.1"):
        assert main(["train", "--resume", str(tmp_path / "p"), change]) == 2
        err = capsys.readouterr().err
        assert f"{change.split('=')[0]}: a resume goes on from where it stopped (the run has finished) and does not run a " \
               "finished phase again" in err, err
    assert (tmp_path / "p" / "config.yaml").read_text() == saved


def test_causal_weights_held_through_a_step_are_each_terms_own():
    """Held within an L-BFGS step, one pair of buffers gave the second residual term the first's weights
    (a two-term NLS residual: 1.58 against its own 0.752)."""
    t = torch.linspace(0, 1, 400, dtype=F64)
    early, late = (t < 0.3).double() * 4, (t > 0.7).double() * 4
    free = CausalWeights(0.0, 1.0, bins=8, eps=1.0)
    own = [free.loss(early, t, key="a"), free.loss(late, t, key="b")]
    held = CausalWeights(0.0, 1.0, bins=8, eps=1.0)
    held.hold_within_step = True
    held.new_step()
    first = [held.loss(early, t, key="a"), held.loss(late, t, key="b")]
    torch.testing.assert_close(torch.stack(first), torch.stack(own))
    again = [held.loss(early * 2, t, key="a"), held.loss(late * 2, t, key="b")]  # a line-search trial: weights held
    torch.testing.assert_close(torch.stack(again), 2 * torch.stack(own))
    assert held.last_min_weight == min(held.weights("a").min(), held.weights("b").min())


def test_hard_periodicity_holds_for_the_whole_model_and_boundary_conditions_skip_periodic_faces():
    """g = x y on the face y = lo is 0 there, periodic; the transform's g(x, y) off the face is not: u(0, y) - u(1, y)
    = -y, yet Periodic was counted exact. And a Dirichlet without where held on the x faces in soft mode but not
    in hard mode: now on the faces of the coordinates its output is not periodic in, in both."""
    from sciml.config import validate
    from sciml.pde import Dirichlet, Initial, Interval, Periodic, Problem, Rectangle

    cfg = validate(PINNConfig, {"problem": "p", "constraints": "hard", "net": {"width": 8, "depth": 2}})
    broken = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: d.laplacian("u"), name="p",
                     conditions=[Dirichlet(lambda x: x[:, 0] * x[:, 1], where="y=lo"), Periodic("x")])
    with pytest.warns(UserWarning, match=r"not periodic where \['periodic_1'\]"):
        model, covered = build_model(broken, cfg)
    assert covered == (0,) and not model.net.periodic_cols
    fine = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: d.laplacian("u"), name="p",
                   conditions=[Dirichlet(lambda x: torch.sin(2 * math.pi * x[:, 0]) * (1 - x[:, 1]), where="y=lo"),
                               Periodic("x")])
    model, covered = build_model(fine, cfg)
    assert covered == (0, 1) and model.net.periodic_cols
    walls = Problem(domain=Rectangle([0, 0], [1, 1]), residual=lambda d: d.laplacian("u"), name="p",
                    conditions=[Dirichlet(0.0), Periodic("x")])
    x = walls.sample_condition(walls.conditions[0], 64, "sobol", 0)["x"]
    assert bool(((x[:, 1] == 0) | (x[:, 1] == 1)).all())  # the y walls only, as the hard transform builds in
    model, covered = build_model(walls, cfg)
    assert covered == (0, 1)
    ring = Problem(domain=Interval(-1, 1).with_time(0, 1), residual=lambda d: d.u_t, name="p",
                   conditions=[Periodic("x"), Dirichlet(1.0), Initial(1.0)])  # no face left to hold on, in either mode
    for mode in ("soft", "hard"):
        with pytest.raises(ValueError, match="has no boundary to hold on"):
            build_model(ring, validate(PINNConfig, {**cfg.model_dump(mode="json"), "constraints": mode}))
            ring.sample_condition(ring.conditions[1], 8)
    y = torch.rand(16, 2, dtype=torch.float64)
    y[:, 0] = 0.0
    with torch.no_grad():  # u is free on x = 0 (a periodic face), zero on the walls
        assert model.double()(y).abs().max() > 1e-3


def test_pinn_integer_fields_take_whole_numbers_as_the_operator_schema_does():
    """The PINN schema's plain int fields took `steps: true` as 1 step and "3" as 3 (the operator schema refused
    them since f2fd897); 1e3 stays 1000."""
    from sciml.config import validate

    def phases(steps):
        return {"problem": "burgers", "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": steps}]}

    assert validate(PINNConfig, phases(1e3)).phases[0].steps == 1000
    for bad in (True, "3", 2.5):
        with pytest.raises(ConfigError, match=r"steps.*whole number"):
            validate(PINNConfig, phases(bad))
    with pytest.raises(ConfigError, match=r"net\.width.*whole number"):
        validate(PINNConfig, {**phases(10), "net": {"width": True}})


def test_a_pinn_resume_with_changed_settings_keeps_the_runs_history(tmp_path):
    """config.yaml and environment.json were rewritten as if the whole run had used a resume's new values."""
    import yaml
    from sciml.config import validate

    run = RunDir.create(tmp_path, "h")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 1e-9}), run=run)  # stops at (0, 1)
    lower = {**TINY, "phases": [{**TINY["phases"][0], "optimizer": {"name": "adam", "lr": 5e-3}}, TINY["phases"][1]]}
    result = fit(get_problem("diffusion_reaction"), validate(PINNConfig, lower), run=run, resume=True)
    (record,) = [r for r in run.read_metrics() if r["kind"] == "resume"]
    assert (record["phase"], record["step"]) == (0, 1)
    assert record["changed"] == {"max_minutes": {"old": 1e-9, "new": None},
                                 "phases.0.optimizer.lr": {"old": 1e-2, "new": 5e-3}}
    assert record["changes_result"] == ["phases.0.optimizer.lr"]  # a time cap only stops a sitting
    assert {"command", "git_commit", "environment"} <= set(record)
    env = json.loads((run.path / "environment.json").read_text())
    assert [s.get("resumed_at") for s in env["sittings"]] == [None, {"phase": 0, "step": 1}]
    text = run.config_path.read_text()
    assert text.startswith("# This run was resumed with changed settings")
    assert "#   phases.0.optimizer.lr: 0.01 -> 0.005, from phase 0 step 1" in text and "max_minutes" not in text.split("task:")[0]
    assert yaml.safe_load(text)["phases"][0]["optimizer"]["lr"] == 5e-3
    assert result.metrics["resumed_with_changes"] == [{"phase": 0, "step": 1, "changed": {
        "phases.0.optimizer.lr": {"old": 1e-2, "new": 5e-3}}}]


def test_a_pinn_final_record_names_its_weights(tmp_path):
    assert run_pinn(TINY, run_dir=RunDir.create(tmp_path, "w").path)["weights"] == "last"


def test_a_pinn_fit_leaves_the_callers_global_random_state_as_it_was(tmp_path):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    run_pinn(TINY, run_dir=RunDir.create(tmp_path, "rng").path)
    assert torch.equal(torch.get_rng_state(), before)


def test_a_resume_of_a_finished_pinn_run_is_refused(tmp_path, capsys):
    """It wrote a new final record, config.yaml and environment.json as a second sitting's, having trained nothing."""
    from sciml.cli import main

    run_pinn({**TINY, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 3}]}, run_dir=tmp_path / "p")
    files = {name: (tmp_path / "p" / name).read_bytes() for name in ("config.yaml", "environment.json", "metrics.jsonl")}
    assert main(["train", "--resume", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'p'} has finished: all its 1 phases are done, so a resume would train nothing" in err, err
    assert {name: (tmp_path / "p" / name).read_bytes() for name in files} == files


def test_eval_of_a_pinn_run_names_the_checkpoint_it_measured(tmp_path, capsys):
    """A PINN run writes no "best": eval's default fell back to "last" and its row did not say so."""
    from sciml.cli import main

    final = run_pinn({**TINY, "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 3}]}, run_dir=tmp_path / "p")
    assert main(["eval", str(tmp_path / "p")]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["checkpoint"] == "last" and row["rel_l2"] == pytest.approx(final["rel_l2"], rel=1e-12)
    assert evaluate_pinn_run(tmp_path / "p", which="last")["checkpoint"] == "last"
    assert evaluate_pinn_run(tmp_path / "p", which="best")["checkpoint"] == "last"  # none written: "last" read
    run = RunDir(tmp_path / "p")
    run.checkpoint_path("best").write_bytes(run.checkpoint_path("last").read_bytes())  # a "best" where one is written
    assert evaluate_pinn_run(tmp_path / "p", which="best")["checkpoint"] == "best"


def test_a_pinn_resume_goes_on_past_a_metric_line_cut_off_after_the_checkpoint(tmp_path):
    """A sitting killed while writing a metric line leaves it cut off after the checkpoint's lines: the check for a
    finished run parsed the whole file before the resume dropped them, and failed on it (JSONDecodeError)."""
    from sciml.config import validate

    full = run_pinn(TINY, run_dir=RunDir.create(tmp_path, "a").path)
    run = RunDir.create(tmp_path, "b")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 1e-9}), run=run)
    run.truncate_metrics(run.load_checkpoint("last")["metric_lines"])  # killed after the checkpoint ...
    with run.metrics_path.open("a") as fh:
        fh.write('{"kind": "step", "pha')  # ... while writing the next line
    resumed = fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=RunDir(run.path), resume=True)
    assert resumed.metrics["rel_l2"] == pytest.approx(full["rel_l2"], rel=1e-10)
    steps = [(r["phase"], r["step"]) for r in run.read_metrics() if r.get("kind") == "step"]
    assert steps == [(0, s) for s in range(1, 7)] + [(1, 1), (1, 2)]
    with run.metrics_path.open("a") as fh:  # finished, then a cut-off line: still refused as finished
        fh.write('{"kind": "st')
    with pytest.raises(ConfigError, match="has finished"):
        fit(get_problem("diffusion_reaction"), validate(PINNConfig, TINY), run=RunDir(run.path), resume=True)


def test_a_pinn_resume_with_another_checkpoint_interval_on_logged_steps_is_said_to_reproduce(tmp_path):
    from sciml.config import load_yaml, validate

    run = RunDir.create(tmp_path, "c")
    fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "max_minutes": 1e-9}), run=run)
    result = fit(get_problem("diffusion_reaction"), validate(PINNConfig, {**TINY, "checkpoint_every": 2}), run=run,
                 resume=True)
    (record,) = [r for r in run.read_metrics() if r["kind"] == "resume"]
    assert set(record["changed"]) == {"max_minutes", "checkpoint_every"} and record["changes_result"] == []
    assert not run.config_path.read_text().startswith("#") and "resumed_with_changes" not in result.metrics
    fresh = fit(get_problem("diffusion_reaction"), validate(PINNConfig, load_yaml(run.config_path)),
                run=RunDir.create(tmp_path, "fresh"))
    a, b = run.load_checkpoint("last")["model"], fresh.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and result.metrics["rel_l2"] == fresh.metrics["rel_l2"]
    # a checkpoint off the logged steps polls the (polled) guard where nothing else does: it may move its snapshots
    from sciml.train.run import changes_result

    old, new = ({**TINY, "log_every": 2, "checkpoint_every": every} for every in (4, 3))
    assert changes_result("pinn", "checkpoint_every", old, new, {"phase": 0, "step": 1})
    assert not changes_result("pinn", "checkpoint_every", old, {**new, "checkpoint_every": 0}, {"phase": 0, "step": 1})


_TINY_FIT = {"net": {"width": 8, "depth": 2}, "points": {"interior": 32, "boundary": 8, "initial": 8},
             "log_every": 1, "eval_every": 0, "checkpoint_every": 0,
             "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 1}]}


def _poisson_1d(**kw):
    from sciml.pde import Dirichlet, Interval, Problem

    return Problem(**{"domain": Interval(0, 1), "residual": lambda d, p: d.u_xx + 1.0,
                      "conditions": [Dirichlet(0.0)], **kw})


@pytest.mark.parametrize("network, error, message", [
    # torch's "mat1 and mat2 shapes cannot be multiplied (64x1 and 2x1)" at the first step
    (lambda **kw: torch.nn.Linear(2, 1), ValueError,
     r"network must take \(n, 1\) points, one column per coordinate \('x',\): its first layer takes 2 inputs"),
    # "'function' object has no attribute 'parameters'"
    (lambda **kw: (lambda x: x), TypeError, r"network builder must return a torch.nn.Module .* got function"),
])
def test_a_problems_own_net_of_the_wrong_kind_or_input_width_is_named(network, error, message):
    with pytest.raises(error, match=message):
        fit(_poisson_1d(network=network), _TINY_FIT)


def test_a_residual_returning_none_is_named_as_a_missing_return():
    """loss_terms met "'NoneType' object has no attribute 'shape'"."""
    with pytest.raises(ValueError, match=r"residual term residual is None: .*a missing `return`"):
        fit(_poisson_1d(residual=lambda d, p: None), _TINY_FIT)
    with pytest.raises(ValueError, match=r"residual term residual_a is None"):
        fit(_poisson_1d(residual=lambda d, p: {"a": None}), _TINY_FIT)


def test_fit_takes_the_path_of_a_yaml_config(tmp_path):
    """fit(problem, "x.yaml") said "'str' object is not a mapping"."""
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_TINY_FIT))
    result = fit(_poisson_1d(), str(path))
    assert math.isfinite(result.metrics["loss"])
    with pytest.raises(ConfigError, match=r"tiny.yaml has errors:\n  unknown key 'lr'"):
        path.write_text(yaml.safe_dump({**_TINY_FIT, "lr": 1}))
        fit(_poisson_1d(), path)
    with pytest.raises(ConfigError, match=r"config must be a mapping .* got list"):
        fit(_poisson_1d(), [1])


def test_a_pinn_run_folder_is_held_against_a_second_process_in_python_too(tmp_path):
    """`sciml train` held the folder, the Python API (`run_pinn`, `fit`) did not: two processes resuming one folder
    both trained, their metric lines interleaved."""
    import subprocess
    import sys

    run = RunDir.create(tmp_path, "p")
    run_pinn({**TINY, "max_minutes": 1e-9}, run_dir=run.path)  # stopped after its first step, resumable
    lines = run.metrics_path.read_text()
    other = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time\n"
        f"fd = os.open({str(run.path)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"  # as another process training it holds it
        "print('held', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"{run.path} is being trained by another process; wait for it"):
            run_pinn(TINY, run_dir=run.path, resume=True)
        with pytest.raises(ConfigError, match="is being trained by another process"):
            fit(get_problem("diffusion_reaction"), TINY, run=run, resume=True)
        assert run.metrics_path.read_text() == lines  # nothing written beside the other process
    finally:
        other.kill()
        other.wait()
    assert run_pinn(TINY, run_dir=run.path, resume=True)["stopped_early"] is False  # once it is gone


@pytest.mark.parametrize("phases, message", [
    ([], "phases is empty: give at least one training phase"),  # trained 0 steps, reported the untrained net
    ([{"optimizer": {"name": "adam", "lr": 0}, "steps": 5}], "phases.0.optimizer.lr=0 never moves the weights"),
    ([{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 5}, {"optimizer": {"name": "lbfgs", "lr": math.inf},
                                                                 "steps": 5}],
     r"phases\[1\]: optimizer 'lbfgs' lr=inf is not a finite number"),  # trained to NaN
])
def test_phases_that_cannot_train_are_refused_before_training(phases, message):
    problem = get_problem("diffusion_reaction")
    with pytest.raises(ConfigError, match=message):
        fit(problem, {**{k: v for k, v in TINY.items() if k not in ("problem", "phases")}, "phases": phases})


@pytest.mark.parametrize("problem, args, message", [
    ("poisson_lshape", {"hard": "maybe"}, r"problem_args.hard='maybe' .* valid boolean"),  # was taken as True
    ("burgers", {"nu": -1}, r"problem_args.nu=-1 .* greater than 0"),  # trained
    ("burgers", {"nu": "abc"}, r"problem_args.nu='abc' .* valid number"),  # a raw TypeError in the factory
    ("burgers", {"nu": math.nan}, r"problem_args.nu=nan .* finite number"),
    ("convection", {"beta": "abc"}, r"problem_args.beta='abc' .* valid number"),  # "Unknown format code 'g'"
])
def test_problem_args_are_checked_on_the_factorys_types_before_training(problem, args, message):
    from sciml.train.pinn import load_problem

    with pytest.raises(ConfigError, match=message):
        load_problem(PINNConfig(problem=problem, problem_args=args))
    assert load_problem(PINNConfig(problem="burgers", problem_args={"nu": 1})).params["nu"] == 1.0


def test_a_residual_that_is_nan_from_the_start_stops_with_a_guard_error_naming_it():
    """fit returned loss nan with no error: every step was skipped as non-finite and the phase ended on them."""
    from sciml.optim import GuardError
    from sciml.pde import Dirichlet, Interval, Problem

    problem = Problem(domain=Interval(0, 1), residual=lambda d, p: d.u_xx * math.nan, conditions=[Dirichlet(0.0)])
    cfg = {"net": {"width": 8, "depth": 2}, "points": {"interior": 32, "boundary": 8}, "log_every": 1,
           "eval_every": 0, "checkpoint_every": 0, "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 3}]}
    with pytest.raises(GuardError, match=r"non-finite at every one of the 3 steps .*the PDE residual .*\(phase 0, adam\)\. The guard kept "
                                         r"no good state of this phase, so none is saved: start again once the problem's data "
                                         r"or residual is fixed") as err:
        fit(problem, cfg)
    assert not err.value.lr_helps


def test_a_phase_that_diverges_is_the_one_named_and_its_bad_weights_are_never_saved(tmp_path):
    """phases.0.optimizer.lr=inf (refused now; 1e300 is finite) left weights at which the loss is non-finite:
    phase 0 handed them on, the GuardError named phase 1 (lbfgs), and the saved "last good state" was all NaN."""
    from sciml.optim import GuardError

    cfg = {**TINY, "points": {"interior": 64}, "log_every": 1, "eval_every": 0, "checkpoint_every": 0,
           "phases": [{"optimizer": {"name": "sgd", "lr": 1e300}, "steps": 2}, TINY["phases"][1]]}
    run = RunDir.create(tmp_path, "g")
    with pytest.raises(GuardError, match=r"\(phase 0, sgd\)\. The guard kept no good state of this phase, so none is "
                                         r"saved: start again with a much lower phases\.0\.optimizer\.lr") as err:
        run_pinn(cfg, run_dir=run.path)
    assert "optimizer.lr=1e+300" not in str(err.value) and "inf" not in str(err.value)
    assert not (run.path / "checkpoints" / "last.pt").exists()
