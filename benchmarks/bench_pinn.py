"""PINN benchmark: speed side by side with DeepXDE, and accuracy vs reference over seeds.

    python benchmarks/bench_pinn.py --parts speed,time_to_target          # GPU, about 3 min
    python benchmarks/bench_pinn.py --parts accuracy --jobs 9             # GPU: 6 problems x 3 seeds
    python benchmarks/bench_pinn.py --small                               # CPU: speed, L-BFGS, small budgets
    python benchmarks/bench_pinn.py --parts lbfgs                         # L-BFGS iteration: torch's vs ours

Speed (issue 6, point 8): DeepXDE 1.15's Burgers example (`examples/pinn_forward/Burgers.py`:
3 x 20 tanh, Glorot normal, 2540 domain + 80 boundary + 160 initial points, soft BC/IC, Adam
1e-3) against sciml with the same net, points and optimizer, time per Adam step (eager reverse and
jet modes; on GPU also the jet step under torch.compile, replayed as one CUDA graph, and both), and
the trainer `fit` itself per step (on GPU also with ``cuda_graph: true``, and with compile). DeepXDE
runs in a subprocess (``DDE_BACKEND=pytorch``, a private HOME so ``~/.deepxde`` is untouched, its
default-device change confined to that process), interleaved with ours so both see the same
machine load. Wall time to rel. L2 1e-2 on Burgers (part time_to_target): DeepXDE's recipe (Adam,
checked every 500 steps, then L-BFGS) against ``configs/burgers/pinn.yaml`` (on GPU also with
``cuda_graph: true``, and with compile). Inside gpu_session.sh every time-to-target run is capped at
what the device call has left (DeepXDE's also at --dde-cap): a capped row says "not reached by X s"
with its rel. L2 then, a lower bound that does not replace a row of the same variant that reached the
target sooner; one stopped by the call's SIGINT saves what its last check saw.

L-BFGS (part lbfgs): time per iteration of torch.optim.LBFGS (two-loop recursion: a host read
per stored pair) and sciml's LBFGS (compact form, the same iterates) on the Burgers config's float64
L-BFGS phase, each closure a CUDA-graph replay on GPU as in the trainer.

Accuracy (point 7): ``configs/<problem>/pinn.yaml`` per seed (--small: the CPU regression
budgets), each run capped at --max-minutes (default 10) and run --jobs at a time in separate
processes (a PINN step leaves an H100 mostly idle). Every run has its folder under --out; running
the same command again reuses finished runs and resumes the ones the cap stopped, so a longer run
is "rerun with a larger --max-minutes". Results: ``benchmarks/results/pinn.json``; a run of some
parts or problems keeps the other rows measured on the same device.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (SessionTimeShort, add_dry_run, cuda_graph, dry_run_done,  # noqa: E402
                               minutes_left_in_session, paired_range, previous_row, round_robin, session_budget, sync,
                               write_result)
from sciml.utils import compile_jet_loss  # noqa: E402

DDE_BURGERS = r"""
import json, sys, time, numpy as np
import deepxde as dde
import torch
def pde(x, y):
    dy_x = dde.grad.jacobian(y, x, i=0, j=0); dy_t = dde.grad.jacobian(y, x, i=0, j=1)
    dy_xx = dde.grad.hessian(y, x, i=0, j=0)
    return dy_t + y * dy_x - 0.01 / np.pi * dy_xx
geomtime = dde.geometry.GeometryXTime(dde.geometry.Interval(-1, 1), dde.geometry.TimeDomain(0, 0.99))
bc = dde.icbc.DirichletBC(geomtime, lambda x: 0, lambda _, on_boundary: on_boundary)
ic = dde.icbc.IC(geomtime, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_initial: on_initial)
data = dde.data.TimePDE(geomtime, pde, [bc, ic], num_domain=2540, num_boundary=80, num_initial=160)
"""  # DeepXDE's Burgers example, shared by both scripts below

DDE_SCRIPT = DDE_BURGERS + r"""
n_steps, warm = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]))
net = dde.nn.FNN([2] + [20] * 3 + [1], "tanh", "Glorot normal")
model = dde.Model(data, net)
model.compile("adam", lr=1e-3, verbose=0)
model.train(iterations=warm, display_every=10**9, verbose=0)
if torch.cuda.is_available(): torch.cuda.synchronize()
t0 = time.perf_counter()
model.train(iterations=n_steps, display_every=10**9, verbose=0)
if torch.cuda.is_available(): torch.cuda.synchronize()
print("RESULT", json.dumps({"ms_per_step": (time.perf_counter() - t0) / n_steps * 1e3,
      "device": str(torch.get_default_device()) if hasattr(torch, "get_default_device") else "?"}))
"""


def _run_deepxde(script: str, args: list, gpu: bool, timeout: int) -> dict:
    """Run a DeepXDE script in a subprocess (pytorch backend, private HOME); its RESULT line as a dict."""
    env = {**os.environ, "DDE_BACKEND": "pytorch", "HOME": tempfile.mkdtemp(prefix="dde-home-")}
    if not gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    if out.returncode != 0 or not line:
        raise RuntimeError(f"DeepXDE subprocess failed:\n{out.stderr[-2000:]}")
    return json.loads(line[0][6:])


def deepxde_ms_per_step(n_steps: int, warm: int, threads: int, gpu: bool) -> dict:
    """DeepXDE's time per Adam step (``ms_per_step``) and the device it says it ran on (``device``)."""
    return _run_deepxde(DDE_SCRIPT, [n_steps, warm, threads], gpu, timeout=1800)


DDE_TARGET_SCRIPT = r"""
import sys, torch, deepxde as dde
torch.set_num_threads(int(sys.argv[5])); dde.config.set_random_seed(int(sys.argv[6]))  # before it draws points
""" + DDE_BURGERS + r"""
target, max_adam, chunk = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ref = np.load(sys.argv[4]); X, U = ref["x"], ref["u"]
model = dde.Model(data, dde.nn.FNN([2] + [20] * 3 + [1], "tanh", "Glorot normal"))
err = lambda: float(np.linalg.norm(model.predict(X)[:, 0] - U) / np.linalg.norm(U))
model.compile("adam", lr=1e-3, verbose=0)
t0, steps, e = time.perf_counter(), 0, 1.0
while steps < max_adam:
    model.train(iterations=chunk, display_every=10**9, verbose=0); steps += chunk; e = err()
    print("PROGRESS", json.dumps({"seconds": time.perf_counter() - t0, "rel_l2": e, "adam_steps": steps}), flush=True)
    if e <= target: break
lbfgs_iters = 0
if e > target:  # DeepXDE's recipe: L-BFGS after Adam, checked every 500 iterations and stopped at the target
    from deepxde.optimizers import config as lbfgs_config
    lbfgs_config.LBFGS_options.update(iter_per_step=500, fun_per_step=625)  # read when the optimizer is built

    class StopAtTarget(dde.callbacks.Callback):
        def on_epoch_end(self):
            global e, lbfgs_iters
            e, lbfgs_iters = err(), lbfgs_iters + 500
            print("PROGRESS", json.dumps({"seconds": time.perf_counter() - t0, "rel_l2": e, "adam_steps": steps,
                                          "lbfgs_iters": lbfgs_iters}), flush=True)
            if e <= target:
                self.model.stop_training = True

    model.compile("L-BFGS", verbose=0); model.train(display_every=10**9, verbose=0, callbacks=[StopAtTarget()]); e = err()
print("RESULT", json.dumps({"seconds": time.perf_counter() - t0, "rel_l2": e, "adam_steps": steps, "lbfgs_iters": lbfgs_iters,
      "device": str(torch.get_default_device()) if hasattr(torch, "get_default_device") else "?"}))
"""


def deepxde_time_to_target(target: float, max_adam: int, gpu: bool, cap_seconds: float, seed: int = 0) -> dict:
    """Wall time of DeepXDE's Burgers recipe until rel. L2 <= target (checked every 500 Adam steps, then
    every 500 L-BFGS iterations), on the script's own clock (from after its setup).
    Stopped at `cap_seconds` (subprocess start-up, imports and setup included): then ``seconds`` is the
    last progress time it reported, a lower bound, with the error it reported then. Same
    torch threads as sciml's runs, and a fixed seed (its net's initialisation; its points are Hammersley)."""
    from sciml.pde import get_problem

    problem = get_problem("burgers")
    x = problem.default_eval_points()
    import numpy as np

    ref = Path(tempfile.mkdtemp(prefix="dde-ref-")) / "ref.npz"
    np.savez(ref, x=x.numpy(), u=problem.reference_values(x)[:, 0].numpy())
    try:
        result = _run_deepxde(DDE_TARGET_SCRIPT, [target, max_adam, 500, ref, torch.get_num_threads(), seed], gpu,
                              timeout=cap_seconds)
        return {**result, "reached": result["rel_l2"] <= target}
    except subprocess.TimeoutExpired as stopped:
        text = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else (stopped.stdout or "")
        last = [json.loads(ln[8:]) for ln in text.splitlines() if ln.startswith("PROGRESS")][-1:]
        if not last:  # no check reported: nothing but the cap, start-up included
            return {"seconds": None, "reached": False, "stopped_at_cap": True, "cap_s": cap_seconds,
                    "note": f"not reached: no check within the {cap_seconds:.0f} s cap (start-up included)"}
        return {"seconds": last[0]["seconds"], "reached": False, "stopped_at_cap": True, "cap_s": cap_seconds,
                "last_rel_l2": last[0]["rel_l2"], "adam_steps": last[0]["adam_steps"],
                **({"lbfgs_iters": last[0]["lbfgs_iters"]} if "lbfgs_iters" in last[0] else {}),
                "note": f"not reached by {last[0]['seconds']:.0f} s (its last check; the {cap_seconds:.0f} s cap "
                        "includes the subprocess's start-up)"}


def sciml_time_to_target(target: float, device: str, cap_seconds: float | None = None, **overrides) -> dict:
    """Wall time of configs/burgers/pinn.yaml (with `overrides`, e.g. cuda_graph=True) until
    rel. L2 <= target, through the trainer as a user runs it. Checked every 25 steps: 500 iterations
    of an L-BFGS phase (20 a step), DeepXDE's interval; every 100 steps overstated the L-BFGS phase
    by up to 2000 iterations. The checks' own time counts against sciml.

    `cap_seconds`: the trainer stops there (its ``max_minutes``) and the row says "not reached by X s"
    with the rel. L2 at the cap (a lower bound, as DeepXDE's capped row). Interrupted (the device call's
    SIGINT), it returns what the last check saw, marked ``interrupted``, for the caller to save."""
    from sciml.config import load_yaml, validate
    from sciml.train.pinn import PINNConfig, fit, load_problem

    cap = {} if cap_seconds is None else {"max_minutes": cap_seconds / 60}
    cfg = validate(PINNConfig, {**load_yaml("configs/burgers/pinn.yaml"), "device": device, "eval_every": 25,
                                "log_every": 25, **overrides, **cap})
    hit, adam, last = {}, {}, {}

    def watch(rec):
        if "rel_l2" in rec:
            last.update(seconds=rec["seconds"], rel_l2=rec["rel_l2"], phase=rec["phase"], step=rec["step"])
        if "rel_l2" in rec and rec["phase"] == 0:  # where the first (Adam) phase stood: says which phase costs what
            adam.update(adam_seconds=rec["seconds"], adam_rel_l2=rec["rel_l2"], adam_steps=rec["step"])
        if "rel_l2" in rec and rec["rel_l2"] <= target and not hit:
            hit.update(seconds=rec["seconds"], rel_l2=rec["rel_l2"], phase=rec["phase"], step=rec["step"])
            raise _Reached

    try:
        res = fit(load_problem(cfg), cfg, progress=watch)
    except _Reached:
        return {**hit, "reached": True, **adam}
    except KeyboardInterrupt:  # the call's deadline: what the last check saw, so the row is not lost
        return {"seconds": last.get("seconds"), "rel_l2": last.get("rel_l2"), "reached": False, "interrupted": True,
                **adam, "note": "interrupted by the device call's end" + (
                    f": not reached by {last['seconds']:.0f} s (its last check)" if last else ", before its first check")}
    row = {"seconds": res.metrics["seconds"], "rel_l2": res.metrics["rel_l2"], "reached": False, **adam}
    if res.metrics.get("stopped_early"):
        row.update(stopped_at_cap=True, cap_s=round(cap_seconds, 1),
                   note=f"not reached by {res.metrics['seconds']:.0f} s (capped at what the device call had left); "
                        "rel_l2 at the cap")
    return row


class _Reached(Exception):
    pass


def sciml_trainer_ms_per_step(n_steps: int, device: torch.device, mode: str, **overrides) -> float:
    """Per-step time of `fit` itself, the trainer a user runs, on the setup of `sciml_ms_per_step`
    (soft constraints, Sobol points, Adam), guard and logging included. Timed over the second half
    of the steps, so warm-up, capture and compilation are left out."""
    from sciml.pde import get_problem
    from sciml.train.pinn import fit

    half = n_steps // 2
    cfg = {"problem": "burgers", "device": str(device), "dtype": "float32", "derivatives": mode, "constraints": "soft",
           "points": {"method": "sobol"}, "eval_every": 0, "log_every": half, "checkpoint_every": 0,
           "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 2 * half}], **overrides}
    seconds = []
    fit(get_problem("burgers"), cfg, progress=lambda rec: seconds.append(rec["seconds"]))
    return (seconds[-1] - seconds[-2]) / half * 1e3


def sciml_ms_per_step(n_steps: int, warm: int, device: torch.device, mode: str, *, compile_step: bool = False,
                      graph: bool = False) -> float:
    from sciml.optim import build_optimizer, graph_optimizer_kwargs
    from sciml.pde import MLP, PINNModel, get_problem, loss_terms, sample_collocation

    problem = get_problem("burgers")
    # DeepXDE's counts: 2540 domain, 80 boundary, 160 initial points, soft constraints
    pts = sample_collocation(problem, interior=2540, boundary=80, initial=160, method="sobol", seed=0).to(device, torch.float32)
    model = PINNModel(MLP(2, 1, width=20, depth=3, seed=0)).to(device)
    # the registry's Adam, as the trainer builds it (fused on either device; capturable for a graph)
    opt = build_optimizer(model.parameters(), "adam", lr=1e-3, **(graph_optimizer_kwargs("adam", device) if graph else {}))

    def loss_fn():
        return sum(loss_terms(model, problem, pts, mode=mode).values())

    fn = compile_jet_loss(loss_fn) if compile_step else loss_fn

    def step():
        opt.zero_grad(set_to_none=True)
        fn().backward()
        opt.step()

    if graph:
        step = cuda_graph(step, device)
    for _ in range(warm):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    return (time.perf_counter() - t0) / n_steps * 1e3


def lbfgs_ms_per_iteration(cls, device: torch.device, *, graph: bool, warm: int = 5, steps: int = 3) -> dict:
    """Time per L-BFGS iteration on the setup of configs/burgers/pinn.yaml's L-BFGS phase (float64,
    4096 + 240 points, 4 x 32 tanh, history 100, strong Wolfe), its loss and gradient replayed as a
    CUDA graph when `graph` (as the trainer does), after `warm` steps of 20 iterations fill the history."""
    from sciml.pde import MLP, PINNModel, get_problem, loss_terms, sample_collocation

    problem = get_problem("burgers")
    pts = sample_collocation(problem, interior=4096, boundary=80, initial=160, method="sobol", seed=0).to(device, torch.float64)
    model = PINNModel(MLP(2, 1, width=32, depth=4, seed=0)).to(device, torch.float64)
    opt = cls(model.parameters(), lr=1.0, max_iter=20, history_size=100, line_search_fn="strong_wolfe",
              tolerance_grad=1e-12, tolerance_change=0.0)

    def loss_and_grad():
        opt.zero_grad(set_to_none=True)
        loss = sum(loss_terms(model, problem, pts, mode="jet").values())
        loss.backward()
        return loss.detach()

    evaluate = cuda_graph(loss_and_grad, device) if graph else loss_and_grad
    closure = (lambda: evaluate().clone()) if graph else evaluate  # a replay rewrites its output tensor
    for _ in range(warm):
        opt.step(closure)
    state = opt.state[next(model.parameters())]
    iters, evals = state["n_iter"], state["func_evals"]
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step(closure)
    sync(device)
    seconds = time.perf_counter() - t0
    iters, evals = state["n_iter"] - iters, state["func_evals"] - evals
    return {"ms_per_iteration": seconds / iters * 1e3, "evaluations_per_iteration": evals / iters, "iterations": iters}


SMALL = ("burgers", "poisson_lshape")  # problems with a CPU budget: configs/<problem>/pinn_small.yaml
PUBLISHED = {
    "burgers": "6.7e-4 (Raissi et al. 2019)",
    "allen_cahn": "5.37e-5 (jaxpi, Wang et al. 2023)",
    "convection": "4.19e-3 Adam+L-BFGS, 1.94e-3 +NysNewton-CG, at beta=40 (Rathore et al. 2024)",
    "diffusion_reaction": "none found for this exact setup (gPINN paper reports ~1e-2, recalled, unverified)",
    "poisson_lshape": "none published (DeepXDE example)",
    "wave": "~1.7e-3 with NTK weights (Wang, Yu & Perdikaris 2022, recalled, unverified)",
}


def accuracy_run(problem_name: str, seed: int, small: bool, device: str, max_minutes: float, out: str) -> dict:
    """One (problem, seed) run in its folder: reused when finished, resumed when the cap stopped it."""
    from sciml.config import load_yaml
    from sciml.train.pinn import run_pinn
    from sciml.train.run import RunDir

    torch.set_num_threads(1)  # the runs share the machine
    raw = load_yaml(f"configs/{problem_name}/pinn{'_small' if small else ''}.yaml")
    # on a GPU, every phase that can replays as CUDA graphs (9 runs share the device: fewer launches each)
    graph = _graph_phases(raw) if device.startswith("cuda") else [False] * len(raw["phases"])
    raw = {**raw, "seed": seed, "device": device, "max_minutes": max_minutes,
           "phases": [{**ph, "cuda_graph": g} for ph, g in zip(raw["phases"], graph)]}
    run = RunDir(Path(out) / (f"{problem_name}-seed{seed}" + ("-small" if small else "")))
    final = run.final_record()
    if final is not None and not final.get("stopped_early"):
        return {"problem": problem_name, "seed": seed, **final, "cuda_graph": graph}
    resume = (run.path / "checkpoints" / "last.pt").exists()
    run.path.mkdir(parents=True, exist_ok=True)
    metrics = run_pinn(raw, run_dir=run.path, resume=resume)
    return {"problem": problem_name, "seed": seed, **metrics, "cuda_graph": graph}


def _graph_phases(raw: dict) -> list[bool]:
    """Per phase, whether PINNConfig accepts ``cuda_graph: true`` for it (a graph-safe first-order
    optimizer with a polled guard, or L-BFGS, whose evaluations replay)."""
    from sciml.config import ConfigError, validate
    from sciml.train.pinn import PINNConfig

    def accepted(i: int) -> bool:
        phases = [{**ph, "cuda_graph": j == i} for j, ph in enumerate(raw["phases"])]
        try:
            validate(PINNConfig, {**raw, "phases": phases})
            return True
        except ConfigError:
            return False

    return [accepted(i) for i in range(len(raw.get("phases", [])))]


def accuracy(problems: list[str], seeds: list[int], *, small: bool, device: str, max_minutes: float, jobs: int,
             out: str, on_rows=None) -> list[dict]:
    """Every (problem, seed) run, `jobs` at a time in spawned processes; one row per problem, passed to `on_rows`
    after every finished run (a call that ends early keeps them; a failed run is counted, not fatal)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    tasks = [(name, seed) for name in problems for seed in seeds]
    # capped runs checkpoint and resume on the next call; killed by the device call's end, they lose their work
    max_minutes = minutes_left_in_session(max_minutes, reserve_s=45)
    if max_minutes < 0.5:  # not worth the processes' start: the runs wait for the next call
        print(f"accuracy: {max_minutes:.1f} min left in this device call; run the part in a call of its own", flush=True)
        return []
    args = lambda t: (*t, small, device, max_minutes, out)  # noqa: E731
    runs, failed = [], []

    def finished(task, run=None, error=None):
        if error is not None:
            print(f"accuracy: {task[0]} seed {task[1]} failed: {type(error).__name__}: {error}", flush=True)
            failed.append(task)
        else:
            runs.append(run)
        if on_rows is not None:
            on_rows(_accuracy_rows(problems, runs, failed, small, min(jobs, len(tasks))))

    if jobs <= 1:
        for t in tasks:
            try:
                finished(t, accuracy_run(*args(t)))
            except Exception as err:  # noqa: BLE001 - one run's failure must not cost the others' rows
                finished(t, error=err)
    else:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(accuracy_run, *args(t)): t for t in tasks}
            for fut in as_completed(futures):
                try:
                    finished(futures[fut], fut.result())
                except Exception as err:  # noqa: BLE001
                    finished(futures[fut], error=err)
    return _accuracy_rows(problems, runs, failed, small, min(jobs, len(tasks)))


def _accuracy_rows(problems: list[str], runs: list[dict], failed: list[tuple], small: bool, concurrent: int) -> list[dict]:
    """One row per problem with a finished run: mean and spread over its seeds so far."""
    rows = []
    for name in problems:
        mine = sorted((r for r in runs if r["problem"] == name), key=lambda r: r["seed"])
        n_failed = sum(t[0] == name for t in failed)
        if not mine and not n_failed:
            continue
        vals = [r["rel_l2"] for r in mine]  # none when every run failed: the row says so, not an older row
        rows.append({"benchmark": f"accuracy: {name}" + (" (CPU small budget)" if small else ""),
                     "seeds": len(mine), "rel_l2_mean": statistics.fmean(vals) if vals else None,
                     "rel_l2_min": min(vals, default=None), "rel_l2_max": max(vals, default=None),
                     # which seed made the spread: a rerun of that seed alone needs its number
                     "rel_l2_by_seed": ", ".join(f"{r['seed']}: {r['rel_l2']:.3g}" for r in mine),
                     "seconds_per_run": statistics.fmean(r["seconds"] for r in mine) if mine else None,
                     "stopped_by_cap": sum(bool(r.get("stopped_early")) for r in mine),
                     "failed_runs": n_failed,
                     "concurrent_runs": concurrent,
                     "cuda_graph": any(any(g) if isinstance(g, list) else g for g in (r["cuda_graph"] for r in mine)),
                     "published": PUBLISHED.get(name, "")})
    return rows


def _merge_key(row: dict) -> tuple:
    """Rows a new run replaces: a speed run replaces every speed row (their speed-ups are over its own
    DeepXDE time: an older row kept beside a new DeepXDE row showed a ratio to a time no longer there);
    other rows by benchmark and library."""
    if row["benchmark"].startswith("Burgers Adam step"):
        return (row["benchmark"],)
    return (row["benchmark"], row.get("library"))


TTT_RESERVE_S = 30  # a time-to-target run's setup, final evaluation and the results' write, after its cap
TTT_MIN_S = 30  # a cap shorter than this measures nothing worth a row: the variant is skipped


def ttt_cap(requested_s: float | None) -> float | None:
    """A time-to-target run's cap in seconds: `requested_s` (None: none) lowered to what the device call has
    left after TTT_RESERVE_S; SessionTimeShort when under TTT_MIN_S. Outside gpu_session.sh the request stands."""
    cap = 60 * session_budget(float("inf") if requested_s is None else requested_s / 60, reserve_s=TTT_RESERVE_S,
                              at_least=TTT_MIN_S / 60, what="this time-to-target variant (gpu_plan.sh 3b)")
    return None if cap == float("inf") else cap


def time_to_target_variants(target: float, device: torch.device, gpu: bool, dde_cap: float) -> dict:
    """--ttt's variants, name: (library, measure); nothing runs until a measure is called."""
    # DeepXDE's setup through sciml's trainer: its net (3 x 20 tanh), point counts, soft conditions,
    # Adam 1e-3 for up to 15000 steps, then L-BFGS with its options (history 100, gtol 1e-8, ftol 0), as
    # DDE_TARGET_SCRIPT runs it (torch's defaults, 1e-7 and 1e-9, would stop a phase DeepXDE's goes on with).
    dde_setup = {"cuda_graph": gpu, "constraints": "soft", "net": {"width": 20, "depth": 3},
                 "points": {"interior": 2540, "boundary": 80, "initial": 160, "method": "halton"},
                 "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 15000},
                            {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "history_size": 100,
                                           "line_search_fn": "strong_wolfe", "tolerance_grad": 1e-8,
                                           "tolerance_change": 0.0}, "steps": 750}]}

    def sciml(overrides):
        return lambda: sciml_time_to_target(target, str(device), cap_seconds=ttt_cap(None), **overrides)

    return {
        "graph": ("sciml, configs/burgers/pinn.yaml + cuda_graph", sciml({"cuda_graph": True})),
        "dde_setup": ("sciml, DeepXDE's net, points and optimizers" + (" + cuda_graph" if gpu else ""), sciml(dde_setup)),
        "deepxde": ("DeepXDE 1.15 (pytorch), its Burgers recipe",
                    lambda: deepxde_time_to_target(target, 15000, gpu, ttt_cap(dde_cap))),
        "eager": ("sciml, configs/burgers/pinn.yaml", sciml({})),
        "compile_graph": ("sciml, configs/burgers/pinn.yaml + compile + cuda_graph",
                          sciml({"cuda_graph": True, "compile": True})),
    }


PARTS = ("speed", "lbfgs", "time_to_target", "accuracy")
PROBLEMS = ("burgers", "allen_cahn", "convection", "diffusion_reaction", "poisson_lshape", "wave")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="CPU mode: speed + small-budget accuracy on burgers and poisson_lshape")
    ap.add_argument("--parts", default=None, help=f"comma-separated subset of {PARTS} (default: all; --small: no time_to_target)")
    ap.add_argument("--problems", default=None, help=f"accuracy problems (default: {PROBLEMS}; --small: {tuple(SMALL)})")
    ap.add_argument("--steps", type=int, default=None, help="timed Adam steps per measurement")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="accuracy runs at a time (separate processes)")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="wall-time cap of one accuracy run")
    ap.add_argument("--out", default="runs/bench_pinn", help="run folders of the accuracy runs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads for both libraries (default: torch's)")
    ap.add_argument("--target", type=float, default=1e-2)
    ap.add_argument("--dde-cap", type=float, default=300.0,
                    help="time_to_target: stop DeepXDE after this many seconds, start-up included (lowered to what the "
                         "device call has left; its last check's time is then a lower bound)")
    ap.add_argument("--ttt", default=None,
                    help="time_to_target variants in order, of graph,dde_setup,deepxde,eager,compile_graph (default: all "
                         "on GPU, eager,dde_setup,deepxde on CPU)")
    ap.add_argument("--speed-rounds", type=int, default=3,
                    help="speed: rounds, each timing every row once (DeepXDE's included), round-robin")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="also time sciml's jet step under torch.compile (default: on GPU only)")
    add_dry_run(ap)
    args = ap.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.small
    device = torch.device("cuda" if gpu else "cpu")
    parts = (args.parts or ",".join(p for p in PARTS if not (args.small and p == "time_to_target"))).split(",")
    problems = (args.problems or ",".join(SMALL if args.small else PROBLEMS)).split(",")
    for given, known, what in ((parts, PARTS, "parts"), (problems, PROBLEMS, "problems")):
        if set(given) - set(known):
            ap.error(f"unknown {what} {sorted(set(given) - set(known))}; known: {list(known)}")
    if args.small and set(problems) - set(SMALL):
        ap.error(f"--small has budgets for {list(SMALL)} only")
    # on a GPU, in the order a part cut short loses least: the trainer's graph mode (what a user
    # gets from `cuda_graph: true`), DeepXDE (capped: its recipe can outlast a device command),
    # then the slower eager and the compiled variants
    ttt = (args.ttt or ("graph,dde_setup,deepxde,eager,compile_graph" if gpu else "eager,dde_setup,deepxde")).split(",")
    variants = time_to_target_variants(args.target, device, gpu, args.dde_cap)
    if set(ttt) - set(variants):
        ap.error(f"--ttt: unknown variants {sorted(set(ttt) - set(variants))}; choose from {list(variants)}")
    if dry_run_done(args):
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    n_steps = args.steps or (200 if args.small else 1000)
    warm = 20 if args.small else 100
    rows = []
    name = "pinn_small" if args.small else "pinn"

    def save():  # after every part too: a command stopped by its time limit keeps the finished parts
        notes = ("CPU torch threads: each speed row's own (threads, both libraries; accuracy runs use 1 each). DeepXDE "
                 f"in a subprocess with DDE_BACKEND=pytorch, interleaved with sciml runs (every speed row once per "
                 f"round, round-robin; ms_runs: the rounds' times; speedup_range: DeepXDE's time over this row's "
                 f"in the same round, min and max); machine load average "
                 f"{os.getloadavg()[0]:.1f} at the end. Accuracy rows: "
                 f"configs/<problem>/pinn.yaml (--small: the CPU regression budgets), each run capped at "
                 f"--max-minutes, concurrent_runs at a time on one device.")
        write_result(name, title="PINN: speed vs DeepXDE and accuracy vs reference" + (" (CPU, --small)" if args.small else ""),
                     rows=rows, merge_key=_merge_key,
                     notes=notes, device=device)

    def emit(row):
        print(json.dumps(row), flush=True)
        rows.append(row)

    if "speed" in parts:
        bench = "Burgers Adam step, 3x20 tanh, 2540+80+160 points"
        dde_label = "DeepXDE 1.15 (pytorch)"
        dde_devices, failed = set(), {}

        def deepxde_ms():  # unguarded: without DeepXDE's time no row has a speed-up
            v = deepxde_ms_per_step(n_steps, warm, threads, gpu)
            dde_devices.add(str(v.get("device", "?")))
            return v["ms_per_step"]

        measures = {dde_label: deepxde_ms}
        # the trainer itself (`fit`): what `sciml train` costs per step, guard and logging included
        measures["sciml trainer (jet)"] = lambda: sciml_trainer_ms_per_step(n_steps, device, "jet")
        if gpu:
            measures["sciml trainer (jet, cuda_graph: true)"] = lambda: sciml_trainer_ms_per_step(
                n_steps, device, "jet", cuda_graph=True)
            measures["sciml trainer (jet, compile + cuda_graph)"] = lambda: sciml_trainer_ms_per_step(
                n_steps, device, "jet", cuda_graph=True, compile=True)
        # not `variants`: that name holds the time-to-target variants, read by that part below
        steps = [(f"sciml ({m})", m, {}) for m in ("reverse", "jet")]
        if args.compile if args.compile is not None else gpu:
            steps.append(("sciml (jet + torch.compile)", "jet", dict(compile_step=True)))
        if gpu:
            steps += [(f"sciml ({m}, whole step as one CUDA graph)", m, dict(graph=True)) for m in ("jet", "reverse")]
            # replay is bound by kernel count (~240 small kernels in the eager jet step); Inductor fuses them
            steps.append(("sciml (jet + torch.compile, whole step as one CUDA graph)", "jet",
                          dict(compile_step=True, graph=True)))
        for label, mode, kw in steps:
            measures[label] = partial(sciml_ms_per_step, n_steps, warm, device, mode, **kw)
        # every row, DeepXDE's included, once per round, round-robin: each speed-up is over DeepXDE runs
        # interleaved with its own, and a change in machine load shows up as spread

        def guarded(label, measure):
            """`measure`'s ms per step; None once it has failed (recorded in `failed`, skipped from then on)."""
            def run():
                if label in failed:
                    return None
                try:
                    return measure()
                except Exception as err:  # noqa: BLE001 - record why a lever failed, keep the other rows
                    failed[label] = f"{type(err).__name__}: {err}"[:300]
                    return None
            return run

        def speed_rows(runs):
            dde_ms = statistics.fmean(runs[dde_label])
            out = [{"benchmark": bench, "library": dde_label, "ms_per_step": dde_ms,
                    "ms_runs": [round(v, 3) for v in runs[dde_label]], "speedup_vs_deepxde": 1.0,
                    "deepxde_device": ", ".join(sorted(dde_devices))}]
            for label, v in runs.items():
                if label in failed:
                    out.append({"benchmark": bench, "library": label, "error": failed[label]})
                elif label != dde_label and v:
                    out.append({"benchmark": bench, "library": label, "ms_per_step": statistics.fmean(v),
                                "ms_runs": [round(x, 3) for x in v], "speedup_vs_deepxde": dde_ms / statistics.fmean(v),
                                # DeepXDE's run of the same round over ours
                                "speedup_range": paired_range(runs[dde_label], v)})
            return out

        def after_round(runs):  # after every round: a command stopped by its time limit keeps the finished ones
            rows[:] = [r for r in rows if r["benchmark"] != bench] + speed_rows(runs)
            print(json.dumps(rows[-len(measures):]), flush=True)
            save()

        round_robin({label: m if label == dde_label else guarded(label, m) for label, m in measures.items()},
                    args.speed_rounds, after_round)

    if "lbfgs" in parts:
        # torch's two-loop recursion against sciml's compact form: the same iterates, one closure each
        from sciml.optim import LBFGS

        bench = "Burgers L-BFGS iteration, float64, 4096+240 points, 4x32 tanh, history 100, strong Wolfe"
        found = {}
        for label, cls in (("torch.optim.LBFGS", torch.optim.LBFGS), ("sciml LBFGS (compact form)", LBFGS)):
            for graph in (False, True) if gpu else (False,):
                found[label, graph] = lbfgs_ms_per_iteration(cls, device, graph=graph)
                emit({"benchmark": bench, "library": label + (", loss and gradient as a CUDA graph" if graph else ""),
                      **found[label, graph],
                      "speedup_vs_torch_lbfgs": found["torch.optim.LBFGS", graph]["ms_per_iteration"]
                      / found[label, graph]["ms_per_iteration"]})
        save()

    if "time_to_target" in parts:
        bench = f"Burgers wall time to rel. L2 <= {args.target:g}"
        for lib, measure in (variants[v] for v in ttt):
            try:
                result = measure()
            except SessionTimeShort as err:  # not a result: an earlier row of the variant stays as it is
                print(f"skipped {lib}: {err}", flush=True)
                continue
            except KeyboardInterrupt:  # the call's end, outside a sciml run (e.g. DeepXDE's): keep the rows so far
                save()
                raise
            except Exception as err:  # noqa: BLE001 - record why a variant failed, keep the other rows
                result = {"error": f"{type(err).__name__}: {err}"[:300]}
            earlier = previous_row(name, lambda r: r.get("benchmark") == bench and r.get("library") == lib
                                   and r.get("reached") and isinstance(r.get("seconds"), (int, float)), device)
            if not result.get("reached") and earlier is not None and \
                    (result.get("seconds") or 0) < earlier["seconds"]:  # a lower bound below a measured time says nothing
                print(f"kept the earlier row of {lib} (reached in {earlier['seconds']:.1f} s); this run: "
                      f"{json.dumps(result)}", flush=True)
            else:
                emit({"benchmark": bench, "library": lib, **result})
                save()
            if result.get("interrupted"):  # the device call is ending: the row is saved, stop here
                raise KeyboardInterrupt

    if "accuracy" in parts:
        seeds = list(range(args.seeds or (1 if args.small else 3)))

        def update(acc_rows):  # saved after every finished run
            names = {r["benchmark"] for r in acc_rows}
            rows[:] = [r for r in rows if r["benchmark"] not in names] + acc_rows
            save()

        for r in accuracy(problems, seeds, small=args.small, device=str(device), max_minutes=args.max_minutes,
                          jobs=args.jobs, out=args.out, on_rows=update):
            print(json.dumps(r), flush=True)

    save()
    print(f"wrote results/{name}.json")


if __name__ == "__main__":
    main()
