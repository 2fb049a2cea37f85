"""The optimizer grid runs in parts: written after every (task, optimizer), continued with --skip-done."""

import json
from dataclasses import replace

import pytest
import torch

import benchmarks.bench_optimizers as bench


def _toy_task(cfg):
    x = torch.linspace(-1, 1.3, 16, dtype=cfg.dtype)[:, None]
    y = torch.sin(3 * x) + 0.2

    def loss(f):
        return ((f(x.expand(f.members, *x.shape)) - y) ** 2).mean(dim=(-1, -2))

    def error(f):
        with torch.no_grad():
            return (f(x.expand(f.members, *x.shape)) - y).flatten(1).norm(dim=-1) / y.norm()

    return bench.TaskSpec("toy", lambda: bench.MLP([1, 4, 1]), loss, error, steps=cfg.steps or 5)


@pytest.fixture
def results(results_dir, monkeypatch):
    tmp_path = results_dir
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)  # the plots (the JSON goes through common)
    monkeypatch.setitem(bench.TASKS, "toy", _toy_task)
    return tmp_path / "grid.json"


def _run(*extra):
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--steps", "5", "--device", "cpu", "--name", "grid", *extra])


def _pairs(path):
    return {(r["task"], r["optimizer"], r["lr"]): r for r in json.loads(path.read_text())["rows"]}


def test_skip_done_continues_the_grid_without_rerunning_finished_pairs(results, capsys):
    _run("--merge", "--optimizers", "adam")
    first = _pairs(results)
    assert {k[1] for k in first} == {"adam"}
    _run("--merge", "--skip-done", "--optimizers", "adam,sgd")
    assert "adam" in capsys.readouterr().out.split("(--skip-done)")[0]
    second = _pairs(results)
    assert {k[1] for k in second} == {"adam", "sgd"}
    for key, row in first.items():  # the finished pair was kept as measured, not rerun
        assert second[key]["rel_l2_median"] == row["rel_l2_median"]


def test_max_minutes_starts_no_new_pair_after_the_deadline(results, capsys):
    _run("--merge", "--optimizers", "adam")
    before = results.read_text()
    _run("--merge", "--skip-done", "--optimizers", "sgd", "--max-minutes", "0")
    assert "stopped by --max-minutes before toy / sgd" in capsys.readouterr().out
    assert {k[1] for k in _pairs(results)} == {"adam"}
    unstamped = lambda rows: [{k: v for k, v in r.items() if k != "measured"} for r in rows]  # noqa: E731
    assert unstamped(json.loads(results.read_text())["rows"]) == unstamped(json.loads(before)["rows"])


def test_skip_done_needs_merge(results):
    with pytest.raises(SystemExit):
        _run("--skip-done")


def test_a_pair_whose_capture_fails_is_run_eagerly_and_the_grid_goes_on(results, capsys, monkeypatch):
    from sciml.train import graphs

    def broken_capture(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.CapturedStep, "_capture", broken_capture)
    _run("--graph", "--optimizers", "adabelief,soap")
    out = capsys.readouterr().out
    assert "toy                adabelief                  CUDA-graph run failed (RuntimeError" in out
    rows = _pairs(results)
    assert {k[1] for k in rows} == {"adabelief", "soap"}
    assert not any(r["cuda_graph"] for r in rows.values())  # the eager rerun's rows; soap never captures


def test_time_is_shared_equally_with_what_cheap_tasks_leave_going_to_the_rest():
    assert bench.share_time({"a": 10.0, "b": 100.0, "c": 100.0}, 120.0) == {"a": 10.0, "b": 55.0, "c": 55.0}
    assert bench.share_time({"a": 10.0, "b": 20.0}, 100.0) == {"a": 10.0, "b": 20.0}  # both fit: their need


def test_session_minutes_sizes_the_budget_and_later_parts_keep_it(results, monkeypatch, capsys):
    probes = []
    per_step = {"adam": 0.01, "soap": 0.04}  # seconds, whatever the members: a fixed device for the test

    def fake_probe(task, name, n_lrs, n_seeds, cfg):
        probes.append(name)
        return per_step[name], 0.0  # no set-up cost

    monkeypatch.setattr(bench, "_probe", fake_probe)
    # adam + soap: 0.05 s a step for the ensemble pairs; 3 s of grid -> 60 of the toy task's 5000 steps
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid", "--merge",
                "--optimizers", "adam", "--session-minutes", str(3 / 60)])
    monkeypatch.setitem(bench.TASKS, "toy", lambda cfg: replace(_toy_task(cfg), steps=5000))
    out = json.loads(results.read_text())
    assert out["budgets"]["toy"]["steps"] == 5  # the default is only 5 here: never more than the task's own
    probes.clear()
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid2", "--merge",
                "--optimizers", "adam,soap", "--session-minutes", str(3 / 60)])
    out = json.loads((results.parent / "grid2.json").read_text())
    steps = out["budgets"]["toy"]["steps"]  # 60, less the planning's own few milliseconds
    assert 58 <= steps <= 60 and {r["grad_evals"] for r in out["rows"]} == {steps}
    assert probes  # measured once ...
    probes.clear()
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid2", "--merge",
                "--skip-done", "--optimizers", "adam,soap,sgd", "--session-minutes", "60"])
    out = json.loads((results.parent / "grid2.json").read_text())
    assert not probes and {r["grad_evals"] for r in out["rows"]} == {steps}  # ... and kept by the next part


def test_the_budget_leaves_room_for_each_runs_set_up(monkeypatch):
    import argparse

    costs = {"adam": (0.01, 0.5), "soap": (0.04, 0.5)}  # (per step, per run besides its steps), seconds
    monkeypatch.setattr(bench, "_probe", lambda task, name, n_lrs, n_seeds, cfg: costs[name])
    cfg = argparse.Namespace(steps=None, dtype=torch.float32)
    task = replace(_toy_task(cfg), steps=5000)
    plan = bench.plan_budgets({"toy": task}, ["adam", "soap", "lbfgs"], (1.0,), [0, 1], cfg, minutes=6 / 60)
    # a step: adam 0.01 + soap 0.04 + lbfgs 2 seeds x one Adam member 0.01 = 0.07 s; set-up 0.5 + 0.5 + 2 x 0.5 = 2 s
    assert plan["toy"]["steps"] in (56, 57)  # (6 - 2) / 0.07 = 57.1, less the planning's own time


def test_a_recipe_is_costed_by_single_member_soap_steps():
    # an eager SOAP step is launch-bound: one member is timed itself, not taken as 1/members of the ensemble
    from benchmarks.bench_optimizers import pair_cost

    probe = {"adam": (1e-3, 0.1), "soap": (9e-3, 0.2), "one": (1e-3, 0.1), "soap_one": (8e-3, 0.3)}
    per_step, fixed = pair_cost("soap+lbfgs", probe, n_seeds=3)
    assert per_step == pytest.approx(3 * (0.8 * 8e-3 + 0.2 * 1e-3))
    assert fixed == pytest.approx(3 * (0.3 + 0.1))
    assert pair_cost("soap", probe, n_seeds=3) == (9e-3, 0.2)


def test_task_weights_share_the_session_in_proportion():
    # b and c both need more than their shares: c gets twice b's of what a leaves
    assert bench.share_time({"a": 10.0, "b": 100.0, "c": 100.0}, 130.0, weights={"c": 2.0}) == pytest.approx(
        {"a": 10.0, "b": 40.0, "c": 80.0})
    # a weight cannot give a task more than it needs
    assert bench.share_time({"a": 10.0, "b": 100.0}, 100.0, weights={"a": 5.0}) == {"a": 10.0, "b": 90.0}
    errors = []
    assert bench.parse_task_weights("pinn_convection=2", list(bench.TASKS), errors.append) == {"pinn_convection": 2.0}
    for bad in ("pinn_convektion=2", "pinn_convection", "pinn_convection=0"):
        bench.parse_task_weights(bad, list(bench.TASKS), errors.append)
    assert len(errors) == 3 and all("--task-weights" in e for e in errors)


def test_with_graphs_on_uncapturable_rules_and_newton_cg_are_priced_by_eager_probes(monkeypatch):
    # a replayed Adam step is cheap; what runs eagerly under --graph (nadam, grams: not capturable;
    # Newton-CG's HVPs) must be priced by probes of that eager path, or the plan overruns the session
    import argparse

    costs = {"adam": (0.01, 0.0), "soap": (0.04, 0.0), "nadam": (0.03, 0.0), "gravity": (0.05, 0.0)}
    probed = []

    def fake_probe(task, name, n_lrs, n_seeds, cfg):
        probed.append(name)
        return costs[name]

    monkeypatch.setattr(bench, "_probe", fake_probe)
    monkeypatch.setattr(bench, "_probe_newton", lambda task, cfg: probed.append("newton") or (0.02, 0.0))
    task = replace(_toy_task(argparse.Namespace(steps=None, dtype=torch.float32)), steps=5000)
    names = ["adam", "nadam", "grams", "nys_newton_cg", "soap+lbfgs+nys_newton_cg"]
    eager = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False)
    graphs = argparse.Namespace(**{**vars(eager), "graph": True})
    plan = {}
    for cfg in (eager, graphs):
        probed.clear()
        plan[cfg.graph] = bench.plan_budgets({"toy": task}, names, (1.0,), [0], cfg, minutes=6 / 60)["toy"]
        assert ({"nadam", "gravity", "newton"} <= set(probed)) == cfg.graph  # no extra probe without graphs
    # without graphs: adam 0.01 x 3 + nys 0.01 + recipe 0.7*0.04 + 0.3*0.01 = 0.071 s a step
    assert plan[False]["steps"] in (83, 84)
    # graphs on: adam 0.01 + nadam 0.03 (torch's eager) + grams 0.05 (library eager) + nys 0.02
    # + recipe 0.7*0.04 + 0.2*0.01 + 0.1*0.02 = 0.142 s a step: 6 s -> 42 steps
    assert plan[True]["steps"] in (41, 42)


def test_the_newton_cg_probe_times_real_member_runs():
    import argparse

    cfg = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False, small=True)
    per_eval, fixed = bench._probe_newton(_toy_task(cfg), cfg)
    assert 0 < per_eval < 1 and fixed >= 0


def _lr_runs():
    # lr 1e-3: three finite seeds near 2e-2; lr 3e-3: one seed at 5e-3, two diverged (the reviewer's case)
    nan = float("nan")
    run = dict(loss=1.0, spikes=0, wall_s=1.0, evals=100)
    return ([{**run, "seed": s, "lr": 1e-3, "rel_l2": e, "diverged": False} for s, e in enumerate([2e-2, 2.1e-2, 2.2e-2])]
            + [{**run, "seed": s, "lr": 3e-3, "rel_l2": e, "diverged": d}
               for s, (e, d) in enumerate([(5e-3, False), (nan, True), (nan, True)])])


def test_the_best_lr_has_the_fewest_divergences_then_the_lowest_median():
    rows = bench.summarise("toy", "opt", _lr_runs())
    best = bench.best_row(rows)
    assert best["lr"] == 1e-3 and best["diverged"] == 0  # not the lone survivor of lr 3e-3
    only_diverging = [r for r in rows if r["lr"] == 3e-3]
    assert bench.best_row(only_diverging)["lr"] == 3e-3


def test_the_plot_shows_the_same_best_lr_and_its_divergences(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    real = matplotlib.axes.Axes.set_yticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_yticks",
                        lambda self, ticks, lbls=None, **kw: (labels.extend(lbls or []), real(self, ticks, lbls, **kw))[1])
    rows = bench.summarise("toy", "opt", _lr_runs())
    bench.plot_task("toy", rows, tmp_path / "a.png")
    assert labels == ["opt (lr 0.001)"]
    labels.clear()
    bench.plot_task("toy", [r for r in rows if r["lr"] == 3e-3], tmp_path / "b.png")
    assert labels == ["opt (lr 0.003, 2/3 div)"]


def test_lbfgs_spikes_are_counted_on_the_points_it_accepts(monkeypatch):
    # a line search's rejected trials (e.g. its first, at full step) are not points the run moved through
    import argparse

    seen = []
    real = bench._spikes
    monkeypatch.setattr(bench, "_spikes", lambda losses: (seen.append(losses[:, 0].clone()), real(losses))[1])
    monkeypatch.setitem(bench.TASKS, "toy", _toy_task)  # its float64 copy for the L-BFGS phase
    cfg = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False,
                             second_order_dtype=torch.float64, small=True)
    task = replace(_toy_task(cfg), steps=60)
    run = bench.run_second_order(task, "lbfgs", [1.0], [0], cfg, [("adam", 0.5), ("lbfgs", 0.5)])[0]
    losses = seen[-1]
    lbfgs = losses[30:]  # its start (Adam's last point), then one accepted point per iteration
    assert len(lbfgs) < run["evals"] - 30  # fewer than its evaluations: some trials were rejected ...
    assert bool((lbfgs[1:] <= lbfgs[:-1]).all())  # ... and strong Wolfe accepts only decreases


def test_a_gravity_member_runs_the_same_alone_and_in_any_ensemble(monkeypatch):
    # its initial velocity was drawn from the global RNG after the members before it
    import argparse

    cfg = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False, small=True)
    task = replace(_toy_task(cfg), steps=20)
    lr = bench.default_lr("gravity")

    def member(lrs, seeds):
        return next(r for r in bench.run_first_order(task, "gravity", lrs, seeds, cfg) if r["seed"] == 1 and r["lr"] == lr)

    alone = member([lr], [1])
    for lrs, seeds in (([lr], [0, 1]), ([lr], [2, 0, 1]), ([3 * lr, lr], [0, 1, 2])):
        other = member(lrs, seeds)
        assert other["loss"] == pytest.approx(alone["loss"], rel=1e-4)
        assert other["rel_l2"] == pytest.approx(alone["rel_l2"], rel=1e-4)


def test_a_spike_is_measured_against_the_true_median_of_an_even_window():
    # ten earlier points, five at log10 L = 0 and five at 2: the median is 1 (Tensor.median said 0), so 1.5 is no spike
    lg = torch.tensor([0.0, 2.0] * 5 + [1.5], dtype=torch.float64)
    assert bench._spikes((10 ** lg)[:, None]).tolist() == [0]
    assert bench._spikes((10 ** torch.cat([lg[:-1], lg.new_tensor([2.5])]))[:, None]).tolist() == [1]


def test_a_run_whose_first_phase_diverges_stops_before_newton_cg(monkeypatch):
    # at a huge SGD lr the weights are NaN after the first phase; Newton-CG's Nystrom eigh then raised
    import argparse

    monkeypatch.setitem(bench.LR_OVERRIDE, "sgd", 1e8)
    monkeypatch.setitem(bench.TASKS, "toy", _toy_task)
    cfg = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False,
                             second_order_dtype=torch.float64, small=True)
    run, = bench.run_second_order(replace(_toy_task(cfg), steps=40), "nys_newton_cg", [1.0], [0], cfg,
                                  [("sgd", 0.5), ("nys_newton_cg", 0.5)])
    assert run["diverged"] and run["evals"] == 20  # the SGD phase alone


def test_a_pair_that_raises_is_recorded_as_diverged_and_the_grid_goes_on(results, capsys, monkeypatch):
    real = bench.run_first_order

    def failing(task, name, *args):
        if name == "adabelief":
            raise torch.linalg.LinAlgError("linalg.eigh: the input matrix is ill-conditioned")
        return real(task, name, *args)

    monkeypatch.setattr(bench, "run_first_order", failing)
    _run("--merge", "--optimizers", "adabelief,adam")
    assert "adabelief                  failed (_LinAlgError: linalg.eigh" in capsys.readouterr().out
    rows = _pairs(results)
    failed = [r for k, r in rows.items() if k[1] == "adabelief"]
    assert len(failed) == len(bench.LR_FACTORS["small"]) and all(
        r["diverged"] == r["seeds"] == 1 and "ill-conditioned" in r["error"] for r in failed)
    assert any(k[1] == "adam" for k in rows)  # the grid went on
    _run("--merge", "--skip-done", "--optimizers", "adabelief,adam")  # a recorded failure is done, not rerun
    assert "every pair already in results/grid.json" in capsys.readouterr().out


def test_skip_done_builds_only_tasks_with_pairs_left(results, monkeypatch, capsys):
    # a task's build is start-up time (Darcy: 1200 solves): a later part builds only what it still runs
    built = []

    def minibatch(cfg):  # no L-BFGS here: its n/a pair must not count as left
        built.append("mb")
        return replace(_toy_task(cfg), name="mb", deterministic=False)

    monkeypatch.setitem(bench.TASKS, "mb", minibatch)
    monkeypatch.setitem(bench.TASKS, "toy", lambda cfg: built.append("toy") or _toy_task(cfg))
    _run("--merge", "--tasks", "toy,mb", "--optimizers", "adam,lbfgs")
    assert built == ["toy", "mb"]
    built.clear()
    _run("--merge", "--skip-done", "--tasks", "toy,mb", "--optimizers", "adam,lbfgs")
    assert built == []
    _run("--merge", "--skip-done", "--tasks", "toy,mb", "--optimizers", "adam,sgd")
    assert built == ["toy", "mb"]


def test_the_darcy_data_is_solved_on_the_tasks_device(monkeypatch):
    import argparse

    import solvers.pde.darcy as darcy

    seen = set()
    monkeypatch.setattr(darcy, "solve_darcy", lambda a: seen.add(a.device) or torch.zeros_like(a))
    cfg = argparse.Namespace(small=True, steps=None, device=torch.device("meta"), dtype=torch.float32)
    task = bench.task_fno_darcy(cfg)
    assert seen == {torch.device("meta")} and task.steps == 60


def test_the_plans_clock_counts_the_task_build(results, monkeypatch, capsys):
    import time

    costs = {"adam": (0.01, 0.0), "soap": (0.01, 0.0)}
    monkeypatch.setattr(bench, "_probe", lambda task, name, n_lrs, n_seeds, cfg: costs[name])
    slow = lambda cfg: time.sleep(0.5) or replace(_toy_task(cfg), steps=5000)  # noqa: E731
    monkeypatch.setitem(bench.TASKS, "toy", slow)
    # 1 s of session: 0.5 s went to the build, so about 0.5 s / (0.01 + 0.01) s = 25 steps, not 50
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid", "--merge",
                "--optimizers", "adam,soap", "--session-minutes", str(1 / 60)])
    assert json.loads(results.read_text())["budgets"]["toy"]["steps"] <= 26


def test_no_pair_starts_that_its_plan_ends_past_the_deadline(results, monkeypatch, capsys):
    # at the call's end it would be lost: it is left whole to the next call
    costs = {"adam": (1e-4, 0.0), "soap": (1e-4, 1000.0)}
    monkeypatch.setattr(bench, "_probe", lambda task, name, n_lrs, n_seeds, cfg: costs[name])
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid2", "--merge",
                "--optimizers", "adam,soap", "--session-minutes", "60", "--max-minutes", "1"])
    assert "soap                       not started: planned 1000 s" in capsys.readouterr().out
    assert {r["optimizer"] for r in json.loads((results.parent / "grid2.json").read_text())["rows"]} == {"adam"}


def test_every_runs_numbers_are_saved_and_stay_out_of_the_rendered_table(results):
    from benchmarks import render

    bench.main(["--small", "--tasks", "toy", "--seeds", "2", "--steps", "20", "--device", "cpu", "--name", "grid",
                "--optimizers", "adam,lbfgs"])
    out = json.loads(results.read_text())
    for row in out["rows"]:
        runs = row["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        assert {"rel_l2", "loss", "diverged", "spikes", "evals", "wall_s", "wall_s_solo", "trace"} <= set(runs[0])
        assert row["rel_l2_median"] == pytest.approx(sorted(r["rel_l2"] for r in runs)[0] / 2
                                                     + sorted(r["rel_l2"] for r in runs)[1] / 2)
        assert row["diverged"] == sum(r["diverged"] for r in runs)
    page = render.render_one(out)
    assert "| task | optimizer | lr |" in page and "'trace'" not in page and "| runs" not in page


def test_ensemble_rows_record_a_solo_equivalent_wall_time(results, monkeypatch):
    # whole long probes (25 steps): one member alone 0.25 + 25 x 0.02 = 0.75 s; its share of a 2-member Adam
    # ensemble's 0.5 + 25 x 0.01 = 0.75 s is half of it -> 2x (the slopes alone, 0.02 / 0.005, would say 4x);
    # of a SOAP ensemble's 0 + 25 x 0.04 = 1 s: 0.75 / 0.5 -> 1.5x
    costs = {"adam": (0.01, 0.5), "soap": (0.04, 0.0)}
    monkeypatch.setattr(bench, "_probe", lambda task, name, n_lrs, n_seeds, cfg: costs[name] if n_lrs > 1 else (0.02, 0.25))
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--device", "cpu", "--name", "grid",
                "--optimizers", "adam,lbfgs", "--session-minutes", "60"])
    out = json.loads(results.read_text())
    assert out["budgets"]["toy"]["solo_factor"] == {"adam": 2.0, "soap": 1.5}
    for row in out["rows"]:
        factor = 2.0 if row["optimizer"] == "adam" else 1.0  # L-BFGS runs alone: its own time
        run, = row["runs"]
        assert run["wall_s_solo"] == pytest.approx(factor * run["wall_s"])
        assert 0 < run["trace"][-1][0] <= run["wall_s_solo"] * (1 + 1e-3)  # L-BFGS's ends before its final evaluation


def test_a_first_order_trace_ends_before_the_final_evaluation(monkeypatch):
    # a clock that moves only in the error function: the final evaluation takes 100 s, the steps none
    import argparse

    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    cfg = argparse.Namespace(steps=None, dtype=torch.float32, device=torch.device("cpu"), graph=False, small=True)
    task = _toy_task(cfg)

    def error(f):
        clock[0] += 100.0
        return task.error(f)

    run, = bench.run_first_order(replace(task, error=error), "adam", [1e-3], [0], cfg)
    assert run["wall_s"] == 100.0 and run["trace"][-1][0] == 0.0  # the run's wall holds it, the trace does not


def test_a_trace_spreads_points_evenly_between_synchronised_marks():
    losses = torch.arange(1.0, 21.0, dtype=torch.float64)
    trace = bench._trace(losses, [(10, 1.0), (20, 3.0)])
    assert len(trace) == 20 and trace[9] == [1.0, 10.0] and trace[14] == [2.0, 15.0] and trace[-1] == [3.0, 20.0]
    long = bench._trace(torch.ones(1000, dtype=torch.float64), [(1000, 5.0)])
    assert len(long) == bench.TRACE_POINTS and long[-1] == [5.0, 1.0]


def test_equal_wall_time_compares_every_optimizer_at_the_fastest_ones_total(results):
    from benchmarks import render

    def row(name, solo, trace):
        return {"task": "toy", "optimizer": name, "lr": 1e-3, "seeds": 1, "diverged": 0, "rel_l2_median": 0.1,
                "wall_s_solo": solo, "runs": [{"seed": 0, "trace": trace}]}

    rows = [row("fast", 10.0, [[5.0, 1.0], [10.0, 0.5]]), row("slow", 20.0, [[5.0, 2.0], [10.0, 0.2], [20.0, 0.1]])]
    table = bench.equal_wall_time(rows)
    assert [(r["optimizer"], r["cut_s"], r["train_loss_at_cut"]) for r in table] == [("slow", 10.0, 0.2), ("fast", 10.0, 0.5)]
    stopped = {**row("stopped", 1.0, [[1.0, float("nan")]]), "diverged": 1}  # its phases cut short: no cut of 1 s
    assert {r["cut_s"] for r in bench.equal_wall_time(rows + [stopped])} == {10.0}
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--steps", "10", "--device", "cpu", "--name", "grid",
                "--optimizers", "adam,sgd"])
    out = json.loads(results.read_text())
    assert {r["optimizer"] for r in out["equal_wall_time"]} == {"adam", "sgd"}
    assert "Equal wall time" in render.render_one(out) and "| train_loss_at_cut |" in render.render_one(out)


def _summary(task, name, median, top, diverged=0, wall=1.0):
    return {"task": task, "optimizer": name, "lr": 1e-3, "seeds": 3, "diverged": diverged, "rel_l2_median": median,
            "rel_l2_min": median, "rel_l2_max": top, "wall_s_per_run": wall / 2, "wall_s_solo": wall}


def test_a_tasks_default_is_the_lowest_clean_median_with_ties_within_ten_percent_going_to_the_faster():
    rows = [_summary("a", "lead", 0.10, 0.12, wall=10.0), _summary("a", "close", 0.109, 0.13, wall=5.0),
            _summary("a", "in_spread", 0.115, 0.2, wall=1.0),  # within the lead's seed range, 15 % behind: no tie
            _summary("a", "lucky", 0.01, 0.01, diverged=1), _summary("a", "far", 0.5, 0.6, wall=1.0),
            _summary("b", "only", 0.2, 0.3), {**_summary("b", "broken", 0.1, 0.1), "error": "LinAlgError: eigh"},
            _summary("c", "lost", 0.2, 0.3, diverged=2),
            _summary("d", "best_of_none", 0.95, 1.1), _summary("d", "fast_none", 1.0, 1.0, wall=0.1)]
    got = {d["task"]: d for d in bench.task_defaults(rows)}
    assert got["a"]["optimizer"] == "close" and "lead" in got["a"]["reason"] and "faster" in got["a"]["reason"]
    assert got["b"]["optimizer"] == "only" and got["b"]["reason"].startswith("lowest median")
    assert got["c"]["optimizer"] is None and "lost a seed" in got["c"]["reason"]
    assert got["d"]["optimizer"] is None and "none learnt it" in got["d"]["reason"]  # rel. L2 ~1: zero's error


def test_the_defaults_are_saved_printed_and_rendered(results, capsys, monkeypatch):
    from benchmarks import render

    monkeypatch.setattr(bench, "LEARNT_BELOW", float("inf"))  # 5 toy steps learn little: any default will do here
    _run("--merge", "--optimizers", "adam,sgd")
    out = json.loads(results.read_text())
    default, = out["defaults"]
    assert default["task"] == "toy" and default["optimizer"] in ("adam", "sgd") and default["reason"]
    assert f"default toy                {default['optimizer']} (lr" in capsys.readouterr().out
    page = render.render_one(out)
    assert "Default optimizer per task" in page and f"| toy | {default['optimizer']} |" in page


def test_plots_are_drawn_when_a_deadline_interrupts_the_grid_and_by_plots_only(results, monkeypatch, capsys):
    real = bench.run_pair

    def interrupted(task, name, *args):
        if name == "sgd":
            raise KeyboardInterrupt  # what the deadline's SIGINT raises
        return real(task, name, *args)

    monkeypatch.setattr(bench, "run_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run("--merge", "--optimizers", "adam,sgd")
    plot = results.parent / "grid_toy.png"
    assert plot.exists() and {k[1] for k in _pairs(results)} == {"adam"}
    plot.unlink()
    _run("--plots-only")
    assert plot.exists() and "default toy" in capsys.readouterr().out
    old = json.loads(results.read_text())
    del old["defaults"]  # a file written before defaults were saved: they come from its rows
    results.write_text(json.dumps(old))
    _run("--plots-only")
    assert "default toy" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--plots-only", "--name", "nothing_here"])
    assert "--plots-only: no results/nothing_here.json" in capsys.readouterr().err
