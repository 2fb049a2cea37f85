"""The optimizer benchmark's vmap ensemble equals separate runs (so its figures are per-run figures)."""

import math
import types

import pytest
import torch

import benchmarks.bench_optimizers as bench


def _data():
    # no symmetry: a gradient entry that is zero up to rounding would let Adam-type rules
    # amplify 1e-16 differences between the batched and the plain forward into ±lr steps
    x = torch.linspace(-1, 1.3, 16)[:, None]
    return x, torch.sin(3 * x) + 0.5 * x ** 2 + 0.2


def _task(steps=15):
    x, y = _data()

    def loss(f):
        return ((f(x.expand(f.members, *x.shape)) - y) ** 2).mean(dim=(-1, -2))

    def error(f):
        with torch.no_grad():
            u = f(x.expand(f.members, *x.shape))
        return (u - y).flatten(1).norm(dim=-1) / y.norm()

    return bench.TaskSpec("toy", lambda: bench.MLP([1, 6, 6, 1]), loss, error, steps=steps)


@pytest.mark.parametrize("name", ["adam", "fadam", "mars", "clip_radagradd", "perpgrad"])
def test_ensemble_equals_separate_runs(name):
    cfg = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float64)
    task = _task()
    lrs = [1e-2, 3e-2]
    runs = bench.run_first_order(task, name, lrs, [0, 1], cfg)
    for r in runs:
        torch.manual_seed(r["seed"])
        model = bench.MLP([1, 6, 6, 1])
        opt = bench.build_optimizer(model.parameters(), name, lr=r["lr"], **bench._opt_kwargs(name))
        x, y = _data()
        for _ in range(task.steps):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()
        with torch.no_grad():
            err = ((model(x) - y).norm() / y.norm()).item()
        assert r["rel_l2"] == pytest.approx(err, rel=1e-10, abs=1e-13), (name, r)


def _minibatch_task(cfg, steps=12):
    # an operator task on toy data: its batch changes every step, through buffers a graph reads
    g = torch.Generator().manual_seed(0)
    a = torch.randn(24, 1, 8, generator=g, dtype=torch.float64)
    u = torch.cumsum(a, dim=-1) / 8
    make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 8), torch.nn.Tanh(),  # noqa: E731
                                       torch.nn.Linear(8, 8), torch.nn.Unflatten(1, (1, 8)))
    return bench._operator_task("toy_minibatch", make, a[:16], u[:16], a[16:], u[16:], cfg, batch=5, steps=steps,
                                notes="")


@pytest.mark.parametrize("name", ["adam", "adabelief", "spam", "ademamix", "grokfast", "soap"])
@pytest.mark.parametrize("minibatch", [False, True], ids=["full_batch", "minibatch"])
def test_ensemble_steps_replayed_as_a_graph_equal_eager_steps(simulate, captures, name, minibatch):
    cfg = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float64)
    runs = {}
    for graph in (False, True):
        cfg.graph = graph
        task = _minibatch_task(cfg) if minibatch else _task()
        runs[graph] = bench.run_first_order(task, name, [1e-2, 3e-2], [0, 1], cfg)
    capturable = name != "soap"  # pytorch-optimizer's SOAP keeps its step count on the host: eager
    assert len(captures) == capturable and all(r["cuda_graph"] == capturable for r in runs[True])
    for eager, graph in zip(runs[False], runs[True]):  # adam in graph mode takes its fused step: rounding apart
        assert graph["rel_l2"] == pytest.approx(eager["rel_l2"], rel=1e-10), (name, eager, graph)
        assert graph["loss"] == pytest.approx(eager["loss"], rel=1e-10)


@pytest.mark.parametrize("recipe", ["lbfgs", "adam+lbfgs"])
def test_second_order_runs_replayed_as_graphs_equal_eager_runs(simulate, captures, recipe):
    cfg = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float64)
    name, phases = bench.RECIPES.get(recipe, (recipe, None))
    runs = {}
    for graph in (False, True):
        cfg.graph = graph
        runs[graph] = bench.run_second_order(_task(steps=40), name, [1.0], [0, 1], cfg, phases=phases)
    assert len(captures) == 2 * len(phases or [recipe])  # per member: the Adam step, the L-BFGS closure
    for eager, graph in zip(runs[False], runs[True]):
        assert graph["evals"] == eager["evals"]
        # Adam's fused step in graph mode rounds apart from the eager one; L-BFGS continues from there
        assert graph["rel_l2"] == pytest.approx(eager["rel_l2"], rel=1e-6 if phases else 1e-12), (recipe, eager, graph)


def test_a_minibatch_run_sees_the_same_batches_whatever_ran_before_it():
    # the grid runs optimizers one after another on one task object, and in parts (--skip-done)
    cfg = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float64)
    task = _minibatch_task(cfg)
    first = bench.run_first_order(task, "adabelief", [1e-2], [0], cfg)
    bench.run_first_order(task, "adam", [1e-2], [0], cfg)
    again = bench.run_first_order(task, "adabelief", [1e-2], [0], cfg)
    assert again[0]["rel_l2"] == first[0]["rel_l2"] and again[0]["loss"] == first[0]["loss"]


def test_second_order_phases_run_in_their_own_dtype(monkeypatch):
    # first-order phases in float32, L-BFGS in float64 (every seed: the switch must not leak into the next run)
    cfg = types.SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, second_order_dtype=torch.float64,
                                small=True, steps=20, graph=False)
    task = bench.TASKS["pinn_convection"](cfg)
    seen = []
    real = bench.build_optimizer
    monkeypatch.setattr(bench, "build_optimizer", lambda params, name, **kw: seen.append((name, params[0].dtype)) or real(params, name, **kw))
    runs = bench.run_second_order(task, "lbfgs", [1.0], [0, 1], cfg, phases=[("adam", 0.5), ("lbfgs", 0.5)])
    assert seen == [("adam", torch.float32), ("lbfgs", torch.float64)] * 2
    assert all(math.isfinite(r["rel_l2"]) and r["evals"] == 20 for r in runs)
