"""Optimizer benchmark: every registered optimizer x PDE tasks x seeds x a small LR grid.

    python benchmarks/bench_optimizers.py            # full scale (GPU)
    python benchmarks/bench_optimizers.py --small    # reduced scale, runs on a CPU in minutes
    python benchmarks/bench_optimizers.py --small --tasks pinn_convection --optimizers adam,soap
    python benchmarks/bench_optimizers.py --merge --skip-done --max-minutes 8.5   # the grid in parts
    python benchmarks/bench_optimizers.py --session-minutes 11 --merge --skip-done --max-minutes 8.5
        # budgets sized so the whole grid takes ~11 minutes on this device (kept for the later parts)
    python benchmarks/bench_optimizers.py --plots-only   # plots and defaults from results/optimizers.json

Each task's default optimizer (``defaults``, `DEFAULTS_RULE`) is chosen from the saved rows and printed; the
plots are drawn at every exit, a deadline's SIGINT included, from every pair saved so far.

Protocol (the project's optimizer study, reduced to fit a session): for each first-order optimizer,
learning rates ``default_lr x LR_FACTORS``; L-BFGS, NysNewton-CG and the recipes run one lr each, not
the grid (the second-order rule at 1.0, ``LR_OVERRIDE``; a recipe's first-order phase at its rule's
default), so their rows are not picked from a grid; seeds 0..n-1. Every run of a task gets the same budget of
gradient evaluations (``steps``; L-BFGS counts every closure call, Newton-CG every loss, gradient
and Hessian-vector evaluation). Both check the budget only between whole steps: L-BFGS after each
full line search, so its phase may end up to one line search over (e.g. 188 evaluations of 187), and
a Newton-CG step is taken whole, so its phase may end up to one step over; ``grad_evals`` records
what was spent. The same seed gives the same initial weights for every optimizer; no guard, no
schedule, weight decay 0 (the raw optimizer is measured). Per run: final relative L2 error against
the reference, divergence (non-finite, or final loss above the initial loss; for minibatch tasks,
final test error above the initial one), spike count (log10 loss more than 1 above the median of the
previous 50 steps, counted from step 10 on so that a median exists; over the points a run moves
through: each first-order step, L-BFGS's accepted points, not its line-search trials), wall time.
Reported per (task, optimizer, lr): median, min, max and IQR over the seeds that stayed finite, and
the number diverged. A run whose loss or weights turn non-finite stops before its next phase (diverged);
a pair that raises even eagerly is recorded with its ``error`` and every seed diverged, and the grid goes on.
An optimizer's best LR (log, plot) is the one with the fewest diverged
seeds, then the lowest median (`best_row`); it is chosen on the reported metric itself (test / reference
rel. L2; there is no validation split), as optimizer benchmarks commonly do, so it is slightly optimistic.

Batched ensembles: the seeds x LRs of one optimizer train together as one ensemble. Every
member has its own leaf tensors (so per-tensor rules — FAdam's RMS clip, MARS's norm clip,
Gravity's max|g|, SOAP's preconditioners, Subset-Norm, ⊥Grad — stay per member) and its own
param group (its LR; Clip-RAdaGradD's group-level norm stays per member); the forward pass
stacks the members' tensors and evaluates all members with one ``torch.func.vmap`` of
``functional_call``. This equals separate runs for every first-order rule here, to rounding (the
batched kernels sum in another order): where a rule amplifies rounding, as SOAP's eigenbasis of
rank-deficient preconditioner matrices does, a member drifts from its separate run about as far as
that run drifts under 1e-7 noise. Gravity's random initial velocity comes from each member's seed
(``velocity_seed``), not from the global RNG. It does NOT
hold for L-BFGS and NysNewton-CG (their line searches and curvature pairs treat all
parameters as one vector: members would share step lengths), so those run member by member,
and in float64 (``--second-order-dtype``; first-order rules in float32), as the PINN configs run
their L-BFGS phases: in float32 L-BFGS's tests trip early on PINNs (Xu et al. 2025), and from one
float32 Burgers state both torch's L-BFGS and ours stopped at step length 0 (issue 6).
Wall time (``wall_s_per_run``) is the ensemble's time divided by its members (or the member's own time). A
member run alone costs more per step than that share (about 2x on a CPU), so every row also records a
solo-equivalent time (``wall_s_solo``): the share times one member's step over its share of an ensemble's
step, as the planner's probes time them for Adam (used for every first-order rule but SOAP, whose own is
timed; a rule's solo cost itself is not), or the member's own time. The budgets equal gradient evaluations;
for equal wall time, each run keeps a 32-point training-loss trace (window means, collected on the device
and read once, timed solo-equivalently: evenly between the synchronised phase ends) and ``equal_wall_time``
gives each optimizer's training loss at one cut per task, the smallest solo-equivalent time any of its
optimizers took (`EQUAL_WALL_TIME`). Every run's own numbers are saved in its row (``runs``).

Budgets sized to the session (``--session-minutes M``): the issue asks the whole grid to fit the GPU
time of one session. Before the grid, each task times short and long probes (an Adam ensemble, a
SOAP ensemble, one Adam member, one SOAP member; with CUDA graphs on, also an eager ensemble of each kind of
rule that cannot be captured, and one Newton-CG member with its HVPs, since those never replay) and the
per-step and per-run costs give every pair's time; the
minutes are shared among tasks, equally or by ``--task-weights`` (what a cheap task leaves goes to the others), and each
task's budget is the most that fits its share, never above its own default. All optimizers of a
task keep one budget; the plan is saved in the results (``budgets``) and reused by later parts. The minutes
count from before the tasks are built (their data is made on the task's device), a later part builds only
tasks with pairs left, and no pair starts whose planned seconds (``pair_s``) end past the deadline.

Tasks are functions ``task(cfg) -> TaskSpec``; add one to TASKS. A task whose dependencies
are missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS_DIR, add_dry_run, dry_run_done, minutes_left_in_session, previous_result, write_result  # noqa: E402
from sciml.optim import OPTIMIZERS, build_optimizer, graph_optimizer_kwargs, graph_safe, optimizer_spec  # noqa: E402
from sciml.train.graphs import CapturedStep  # noqa: E402

LR_FACTORS = {"full": (1 / 3, 1.0, 3.0), "small": (1.0, 3.0)}
# default LRs where the constructor's default is not a training LR for these tasks
LR_OVERRIDE = {"sgd": 1e-2, "lbfgs": 1.0, "nys_newton_cg": 1.0}
SECOND_ORDER = ("lbfgs", "nys_newton_cg")


# ------------------------------------------------------------------------------------ tasks
@dataclass
class TaskSpec:
    """What the harness needs from a task.

    make_model(): a fresh module (called after torch.manual_seed(seed)).
    loss(f): training loss per member, shape (E,), where ``f(*inputs, in_dims)`` evaluates the
        stacked ensemble (see `Ensemble.__call__`).
    error(f): relative L2 error per member, shape (E,).
    steps: gradient-evaluation budget per run.
    """

    name: str
    make_model: Callable[[], nn.Module]
    loss: Callable[[Callable], Tensor]
    error: Callable[[Callable], Tensor]
    steps: int
    notes: str = ""
    deterministic: bool = True  # full-batch loss: L-BFGS / Newton-CG apply
    next_batch: Callable[[int], None] = lambda k: None  # called with k before optimizer step k of every run


class MLP(nn.Module):
    """tanh MLP with Xavier-normal weights (the PINN nets of Rathore et al. 2024)."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for lin in self.layers:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        for lin in self.layers[:-1]:
            x = torch.tanh(lin(x))
        return self.layers[-1](x)


def _grad(y: Tensor, x: Tensor) -> Tensor:
    return torch.autograd.grad(y.sum(), x, create_graph=True)[0]


def _members_input(x: Tensor, e: int) -> Tensor:
    # one copy of the points per member, so d u_e / d x_e is each member's own derivative
    return x.expand(e, *x.shape).clone().requires_grad_(True)


def _grid_error(grid: Tensor, exact: Tensor) -> Callable[[Callable], Tensor]:
    """A PINN task's `error`: relative L2 of u (output 0) against `exact` on the points `grid`."""

    def error(f):
        with torch.no_grad():
            u = f(grid.expand(f.members, *grid.shape))[..., 0]
        return (u - exact).norm(dim=-1) / exact.norm()

    return error


def _space_time_points(x0: float, x1: float, n_res: int, n_ic: int, n_bc: int, nx: int, nt: int, seed: int):
    """Points of a PINN on [x0, x1] x [0, 1] (float64, CPU): uniform random residual points,
    the initial line, the left and right boundary lines, and an nx x nt evaluation grid."""
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    xt = torch.rand(n_res, 2, generator=g, **f64) * torch.tensor([x1 - x0, 1.0], **f64) + torch.tensor([x0, 0.0], **f64)
    xs = torch.linspace(x0, x1, n_ic, **f64)
    ic = torch.stack([xs, torch.zeros_like(xs)], -1)
    tb = torch.linspace(0, 1, n_bc, **f64)
    left = torch.stack([torch.full_like(tb, x0), tb], -1)
    right = torch.stack([torch.full_like(tb, x1), tb], -1)
    X, T = torch.meshgrid(torch.linspace(x0, x1, nx, **f64), torch.linspace(0, 1, nt, **f64), indexing="ij")
    return xt, ic, left, right, torch.stack([X.reshape(-1), T.reshape(-1)], -1)


def task_pinn_convection(cfg) -> TaskSpec:
    """u_t + β u_x = 0 on x ∈ [0, 2π), t ∈ [0, 1], u(x, 0) = sin x, periodic; β = 30.
    Exact u = sin(x − βt). Loss: residual MSE + initial MSE + periodic-boundary MSE."""
    beta, dev, dt = 30.0, cfg.device, cfg.dtype
    small = cfg.small
    # 1000 periodic pairs: with 101 a well-trained net broke periodicity between them (configs/convection/pinn.yaml)
    n_res, n_ic, n_bc = (256, 64, 32) if small else (2048, 257, 1000)
    nx, nt = (128, 50) if small else (256, 100)
    xt, ic, left, right, grid = _space_time_points(0.0, 2 * math.pi, n_res, n_ic, n_bc, nx, nt, seed=1234)
    x0 = ic[:, 0]
    exact = torch.sin(grid[:, 0] - beta * grid[:, 1])
    xt, ic, left, right, grid, exact, u_ic = (t.to(dev, dt) for t in (xt, ic, left, right, grid, exact, torch.sin(x0)))
    width, depth = (32, 3) if small else (64, 4)

    def loss(f):
        e = f.members
        pts = _members_input(xt, e)
        u = f(pts)[..., 0]
        du = _grad(u, pts)
        res = du[..., 1] + beta * du[..., 0]
        l_ic = ((f(ic.expand(e, *ic.shape))[..., 0] - u_ic) ** 2).mean(-1)
        l_bc = ((f(left.expand(e, *left.shape)) - f(right.expand(e, *right.shape)))[..., 0] ** 2).mean(-1)
        return (res ** 2).mean(-1) + l_ic + l_bc

    # 8000 evaluations: at 4000 the best recipe's median (soap+lbfgs, 3 seeds) was 2.12e-3, above Rathore et
    # al.'s 1.94e-3; at 8000 1.23e-3 [1.08e-3, 1.25e-3] (CPU, 2026-11-26, results/optimizers_convection_*.json)
    return TaskSpec("pinn_convection", lambda: MLP([2] + [width] * depth + [1]), loss, _grid_error(grid, exact),
                    steps=cfg.steps or (200 if small else 8000),
                    notes=f"beta=30, MLP {depth}x{width} tanh, {n_res} residual points (fixed), "
                          f"{n_ic} IC, {n_bc} periodic pairs, rel. L2 on a {nx}x{nt} grid")


def task_pinn_burgers(cfg) -> TaskSpec:
    """Raissi's Burgers PINN: u_t + u u_x = (0.01/π) u_xx, x ∈ [−1, 1], t ∈ [0, 1],
    u(x, 0) = −sin πx, u(±1, t) = 0; reference from the Hopf formula (solvers.pde.burgers)."""
    from solvers.pde.burgers import RAISSI_NU, burgers_raissi_reference

    dev, dt, small = cfg.device, cfg.dtype, cfg.small
    n_res, n_ic, n_bc = (256, 64, 32) if small else (2048, 256, 100)
    nx, nt = (64, 26) if small else (256, 100)
    xt, ic, left, right, grid = _space_time_points(-1.0, 1.0, n_res, n_ic, n_bc, nx, nt, seed=4321)
    bc, x0 = torch.cat([left, right]), ic[:, 0]
    exact = burgers_raissi_reference(grid[:, 0], grid[:, 1]).to(torch.float64).reshape(-1)
    xt, ic, bc, grid, exact, u_ic = (t.to(dev, dt) for t in (xt, ic, bc, grid, exact, -torch.sin(math.pi * x0)))
    width, depth = (32, 3) if small else (64, 4)

    def loss(f):
        e = f.members
        pts = _members_input(xt, e)
        u = f(pts)[..., 0]
        du = _grad(u, pts)
        u_xx = _grad(du[..., 0], pts)[..., 0]
        res = du[..., 1] + u * du[..., 0] - RAISSI_NU * u_xx
        l_ic = ((f(ic.expand(e, *ic.shape))[..., 0] - u_ic) ** 2).mean(-1)
        l_bc = (f(bc.expand(e, *bc.shape))[..., 0] ** 2).mean(-1)
        return (res ** 2).mean(-1) + l_ic + l_bc

    return TaskSpec("pinn_burgers", lambda: MLP([2] + [width] * depth + [1]), loss, _grid_error(grid, exact),
                    steps=cfg.steps or (200 if small else 4000),
                    notes=f"nu=0.01/pi, MLP {depth}x{width} tanh, {n_res} residual points, rel. L2 on {nx}x{nt} grid")


def _operator_task(name, make_model, a_train, u_train, a_test, u_test, cfg, batch, steps, notes):
    """Supervised operator learning: per-step minibatch (same order for every member),
    relative L2 training loss, rel. L2 on the test set."""
    dev, dt = cfg.device, cfg.dtype
    a_train, u_train, a_test, u_test = (t.to(dev, dt) for t in (a_train, u_train, a_test, u_test))
    n = a_train.shape[0]
    perm = torch.Generator().manual_seed(99)
    order = torch.cat([torch.randperm(n, generator=perm) for _ in range(steps * batch // n + 1)]).to(dev)
    # the batch lives in buffers filled in place, so a step captured in a CUDA graph reads each new one
    batch_a, batch_u = a_train[order[:batch]], u_train[order[:batch]]

    def next_batch(k: int):  # batch k of the same sequence for every optimizer and every run
        idx = order[(k * batch) % (len(order) - batch):][:batch]
        torch.index_select(a_train, 0, idx, out=batch_a)
        torch.index_select(u_train, 0, idx, out=batch_u)

    def rel(pred, true):  # (E, B, ...) vs (B, ...)
        d = (pred - true).flatten(2).norm(dim=-1)
        return d / true.flatten(1).norm(dim=-1)

    def loss(f):
        return rel(f(batch_a.expand(f.members, *batch_a.shape), in_dims=0), batch_u).mean(-1)

    def error(f):
        with torch.no_grad():
            out = []
            for i in range(0, a_test.shape[0], 32):
                a = a_test[i:i + 32]
                out.append(rel(f(a.expand(f.members, *a.shape), in_dims=0), u_test[i:i + 32]))
            return torch.cat(out, dim=1).mean(-1)

    return TaskSpec(name, make_model, loss, error, steps=steps, notes=notes, deterministic=False,
                    next_batch=next_batch)


def task_fno_darcy(cfg) -> TaskSpec:
    """FNO on Darcy flow, FNO's 12/3 coefficient, f = 1, s = 85 (small: s = 29, fewer samples)."""
    from sciml.models.fno import FNO
    from solvers.pde.darcy import darcy_coefficient, solve_darcy

    s, n_train, n_test = (29, 64, 32) if cfg.small else (85, 1000, 200)
    g = torch.Generator().manual_seed(7)
    # the coefficients drawn on the CPU (the same on every device), solved on the task's device: on one CPU
    # thread the full set's 1200 solves took 35 s of the session
    a = darcy_coefficient(n_train + n_test, s, generator=g).to(cfg.device)
    u = torch.cat([solve_darcy(a[i:i + 64]) for i in range(0, a.shape[0], 64)])
    a, u = a[:, None].float() / 12.0, u[:, None].float()
    width, modes = (12, 6) if cfg.small else (32, 12)
    return _operator_task("fno_darcy", lambda: FNO(1, 1, 2, modes=modes, width=width, grid_embedding="closed"),
                          a[:n_train], u[:n_train], a[n_train:], u[n_train:], cfg, batch=16 if cfg.small else 20,
                          steps=cfg.steps or (60 if cfg.small else 5000),
                          notes=f"s={s}, {n_train}/{n_test} train/test, FNO width {width} modes {modes}, batch of relative L2")


def task_deeponet_burgers(cfg) -> TaskSpec:
    """DeepONet: Burgers u0 -> u(t=1), ν = 0.1, GRF initial data, n = 128 (small: 64) nodes."""
    from sciml.models.deeponet import DeepONet
    from solvers.pde.burgers import solve_burgers
    from solvers.pde.grf import GaussianRandomField

    n, n_train, n_test = (64, 128, 64) if cfg.small else (128, 1000, 200)
    g = torch.Generator().manual_seed(11)
    grf = GaussianRandomField((n,), alpha=2.5, tau=7.0, dtype=torch.float64)
    u0 = grf.sample(n_train + n_test, generator=g).to(cfg.device)  # drawn on the CPU, solved on the device
    u1 = solve_burgers(u0, nu=0.1, times=[1.0])[:, 0]
    a, u = u0[:, None].float(), u1[:, None].float()
    width = 64 if cfg.small else 128
    return _operator_task("deeponet_burgers",
                          lambda: DeepONet(1, 1, 1, sensors=n, basis=width // 2, width=width, depth=3),
                          a[:n_train], u[:n_train], a[n_train:], u[n_train:], cfg, batch=32,
                          steps=cfg.steps or (150 if cfg.small else 5000),
                          notes=f"nu=0.1, n={n}, {n_train}/{n_test} train/test, GRF(alpha=2.5, tau=7) u0, MLP branch/trunk width {width}")


TASKS: dict[str, Callable[[Any], TaskSpec]] = {
    "pinn_convection": task_pinn_convection,
    "pinn_burgers": task_pinn_burgers,
    "fno_darcy": task_fno_darcy,
    "deeponet_burgers": task_deeponet_burgers,
}


# ------------------------------------------------------------------------------- ensembles
class Ensemble:
    """Members (seed, lr) with their own leaf tensors; ``self(*inputs)`` runs them all at once.

    Inputs carry a leading member axis (E, ...) by default (``in_dims=0``)."""

    def __init__(self, make_model, seeds, device, dtype):
        self.template = None
        self.leaves: list[dict[str, nn.Parameter]] = []
        for seed in seeds:
            torch.manual_seed(seed)
            m = make_model().to(device=device, dtype=dtype)
            if self.template is None:
                self.template = m
            self.leaves.append({k: nn.Parameter(v.detach().clone()) for k, v in m.named_parameters()})
        self.members = len(self.leaves)
        self.buffers = {k: v for k, v in self.template.named_buffers()}

    def params(self, e: int) -> list[nn.Parameter]:
        return list(self.leaves[e].values())

    def __call__(self, *inputs, in_dims=0):
        stacked = {k: torch.stack([lv[k] for lv in self.leaves]) for k in self.leaves[0]}

        def one(p, *xs):
            return functional_call(self.template, {**p, **self.buffers}, xs)

        return vmap(one, in_dims=(0,) + (in_dims,) * len(inputs))(stacked, *inputs)


def default_lr(name: str) -> float:
    if name in LR_OVERRIDE:
        return LR_OVERRIDE[name]
    spec = optimizer_spec(name)
    if spec is None:  # filters: the base default
        return 1e-3
    cls = spec.resolve()
    lr = {**{k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()}, **spec.defaults}.get("lr", 1e-3)
    return float(lr)


def _opt_kwargs(name: str) -> dict:
    # weight decay off everywhere (FAdam's paper default is 0.1, SOAP's 1e-2): the raw update is compared
    kw = {}
    if name in ("fadam", "soap"):
        kw["weight_decay"] = 0.0
    if name == "lbfgs":
        kw.update(line_search_fn="strong_wolfe", history_size=50)
    return kw


def _spikes(losses: Tensor) -> Tensor:
    """losses (steps, E) -> spike count per member: log10 L > 1 + median of the previous 50, from
    step 10 on (the first steps have too few before them for a median)."""
    lg = torch.log10(losses.clamp_min(1e-300))
    count = torch.zeros(losses.shape[1], dtype=torch.long)
    for k in range(10, lg.shape[0]):
        # the true median: Tensor.median takes the lower of the two middle values of an even window
        med = lg[max(0, k - 50):k].quantile(0.5, dim=0)
        count += (lg[k] > med + 1).long()
    return count


TRACE_POINTS = 32  # saved points of a run's training-loss trace (the equal-wall-time comparison reads them)


def _trace(losses: Tensor, marks: list[tuple[int, float]]) -> list[list[float]]:
    """A run's training losses (n,) as at most TRACE_POINTS [seconds, loss] points: each the mean loss of a
    window of consecutive points (minibatch noise averaged), timed at the window's end. `marks`: [(points
    so far, seconds so far)] at synchronised moments (phase ends); points between two marks are spread evenly."""
    ends, times = [0] + [n for n, _ in marks], [0.0] + [t for _, t in marks]
    at = torch.empty(len(losses), dtype=torch.float64)
    for (i0, t0), (i1, t1) in zip(zip(ends, times), zip(ends[1:], times[1:])):
        at[i0:i1] = t0 + (t1 - t0) * torch.arange(1, i1 - i0 + 1, dtype=torch.float64) / max(i1 - i0, 1)
    cuts = torch.linspace(0, len(losses), min(TRACE_POINTS, len(losses)) + 1).round().long().tolist()
    return [[float(f"{float(at[b - 1]):.4g}"), float(f"{float(losses[a:b].double().mean()):.4g}")]
            for a, b in zip(cuts, cuts[1:]) if b > a]


def _finite(params, loss: Tensor | None) -> bool:
    """Whether `loss` (when given) and every parameter are finite."""
    return (loss is None or bool(torch.isfinite(loss).all())) and all(bool(torch.isfinite(p).all()) for p in params)


def _replays(cfg) -> bool:
    """Whether this run replays steps as CUDA graphs: ``cfg.graph``, by default on CUDA."""
    graph = getattr(cfg, "graph", None)
    return graph if graph is not None else getattr(cfg, "device", torch.device("cpu")).type == "cuda"


def _eager(cfg):
    """`cfg` with CUDA graphs off."""
    return argparse.Namespace(**{**vars(cfg), "graph": False})


def _build(params, name: str, cfg, **kwargs) -> tuple[torch.optim.Optimizer, bool]:
    """Optimizer `name` with the benchmark's keywords, and whether its steps replay as CUDA graphs:
    with ``cfg.graph`` (default on CUDA) where the optimizer, in these settings, can be captured."""
    kw = {**_opt_kwargs(name), **kwargs}
    graph_kw = graph_optimizer_kwargs(name, cfg.device, kw) if _replays(cfg) and graph_safe(name, kw) else None
    opt = build_optimizer(params, name, **kw, **(graph_kw or {}))
    return opt, graph_kw is not None and getattr(opt, "graph_capturable", True)


def _backward(opt: torch.optim.Optimizer, task: TaskSpec, ens) -> Tensor:
    """Gradients of the members' summed losses into .grad; the per-member losses, detached."""
    opt.zero_grad(set_to_none=True)
    per = task.loss(ens)
    per.sum().backward()
    return per.detach()


def run_first_order(task: TaskSpec, name: str, lrs, seeds, cfg) -> list[dict]:
    """The seeds x LRs of `name` as one ensemble. On CUDA (or with ``cfg.graph``), where the
    optimizer allows it, every step replays as one CUDA graph (`sciml.train.graphs`): the same
    arithmetic in one launch instead of hundreds of small ones per step."""
    members = [(s, lr) for lr in lrs for s in seeds]
    ens = Ensemble(task.make_model, [s for s, _ in members], cfg.device, cfg.dtype)
    # Gravity draws each member's initial velocity from the member's seed, not from the global RNG
    # (whose state would depend on the members before it: sciml.optim._library)
    groups = [{"params": ens.params(e), "lr": lr, **({"velocity_seed": s} if name == "gravity" else {})}
              for e, (s, lr) in enumerate(members)]
    opt, graphed = _build(groups, name, cfg)
    err0 = task.error(ens).detach()

    def step():
        per = _backward(opt, task, ens)
        opt.step()
        return per

    run = CapturedStep(step, cfg.device) if graphed else step
    hist = torch.empty(task.steps, len(members), dtype=torch.float64, device=cfg.device)
    start = time.perf_counter()
    for k in range(task.steps):
        task.next_batch(k)
        hist[k] = run()  # copied: a replay returns the same output tensor every time
    if cfg.device.type == "cuda":
        torch.cuda.synchronize()
    trained = (time.perf_counter() - start) / len(members)  # the trace ends before the final evaluation (as
    final = task.loss(ens).detach()                           # run_second_order's phase marks do)
    err = task.error(ens).detach()
    if cfg.device.type == "cuda":
        torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / len(members)
    losses = hist.cpu()
    spikes = _spikes(losses)
    out = []
    for e, (seed, lr) in enumerate(members):
        finite = _finite(ens.params(e), final[e])
        grew = float(final[e]) > float(losses[0, e]) if task.deterministic else float(err[e]) > float(err0[e])
        out.append({"seed": seed, "lr": lr, "rel_l2": float(err[e]) if finite else float("nan"),
                    "loss": float(final[e]), "diverged": (not finite) or grew,
                    "spikes": int(spikes[e]), "wall_s": wall, "evals": task.steps, "cuda_graph": graphed,
                    "trace": _trace(losses[:, e], [(task.steps, trained)])})
    return out


def _with_dtype(task: TaskSpec, cfg, dtype: torch.dtype) -> TaskSpec:
    """`task` rebuilt with its tensors in `dtype` (itself when that is cfg.dtype); built once per
    (task, dtype, device, scale) and kept, since a PINN task also computes its reference. Only its
    loss and error are used: the budget stays the caller's."""
    if dtype == cfg.dtype:
        return task
    key = (task.name, dtype, str(cfg.device), cfg.small)
    if key not in _TASKS_IN_DTYPE:
        _TASKS_IN_DTYPE[key] = TASKS[task.name](argparse.Namespace(**{**vars(cfg), "dtype": dtype}))
    return _TASKS_IN_DTYPE[key]


_TASKS_IN_DTYPE: dict = {}


def run_second_order(task: TaskSpec, name: str, lrs, seeds, cfg, phases: list[tuple[str, float]] | None = None) -> list[dict]:
    """Member by member. `phases`: [(optimizer, fraction of the budget)], e.g. Adam → L-BFGS.
    The budget counts gradient evaluations: L-BFGS closure calls; for Newton-CG the loss
    evaluations (gradient + line search) plus Hessian-vector products. L-BFGS and Newton-CG phases run in
    ``cfg.second_order_dtype`` (float64 by default: in float32 L-BFGS's tests trip early on PINNs, Xu et al.
    2025, and measured here on Burgers, issue 6), a first-order phase before them in ``cfg.dtype``. On CUDA (or with
    ``cfg.graph``) the L-BFGS closure's loss and gradient, and each step of a first-order phase,
    replay as CUDA graphs; Newton-CG differentiates its loss again and runs eagerly."""
    out = []
    phases = phases or [(name, 1.0)]
    graph = _replays(cfg)  # for L-BFGS's evaluations (_build decides the rest)
    # the task's points and reference in the second-order dtype (a harness built without one: cfg.dtype)
    wide = _with_dtype(task, cfg, getattr(cfg, "second_order_dtype", cfg.dtype))
    for lr in lrs:
        for seed in seeds:
            ens = Ensemble(task.make_model, [seed], cfg.device, cfg.dtype)
            params = ens.params(0)
            count = {"evals": 0}
            hist: list[Tensor] = []
            marks: list[tuple[int, float]] = []  # (points, seconds) at each phase's end, for the trace
            start = time.perf_counter()
            spent = 0
            task_now = task
            for ph_name, frac in phases:
                budget = int(round(frac * task.steps))
                ph_lr = lr if ph_name == name else default_lr(ph_name)
                if ph_name in SECOND_ORDER and task_now is not wide:  # from here on in the second-order dtype
                    with torch.no_grad():
                        for p in params:
                            p.data = p.data.to(cfg.second_order_dtype)
                    task_now = wide

                def loss_only():
                    count["evals"] += 1
                    return task_now.loss(ens).sum()

                if ph_name == "lbfgs":
                    opt = build_optimizer(params, "lbfgs", lr=ph_lr, max_iter=budget, max_eval=budget,
                                          tolerance_grad=0.0, tolerance_change=0.0, **_opt_kwargs("lbfgs"))

                    def loss_and_grad():  # L-BFGS moves the weights in place: a replay sees each new point
                        return _backward(opt, task_now, ens).sum()

                    evaluate = CapturedStep(loss_and_grad, cfg.device) if graph else loss_and_grad

                    def closure():
                        count["evals"] += 1
                        return evaluate().clone()  # a replay returns the same output tensor every time

                    # spikes count the points L-BFGS moves through (its start, then each accepted point), not
                    # the line search's rejected trials
                    accepted: list[float] = []
                    start_loss = opt.step(closure, on_accept=accepted.append).detach()
                    hist += [start_loss] + [start_loss.new_tensor(v) for v in accepted]
                elif ph_name == "nys_newton_cg":
                    opt = build_optimizer(params, "nys_newton_cg", lr=ph_lr, rank=min(60, max(1, budget // 4)),
                                          mu=1e-4, cg_max_iters=20, update_freq=20)
                    start_evals = count["evals"]  # this phase's budget, not the run's
                    while count["evals"] - start_evals + opt.state[params[0]].get("hvps", 0) < budget:
                        hist.append(opt.step(loss_only).detach())
                        if not torch.isfinite(hist[-1]):  # NysNewtonCG stands still on NaN: no budget left to use
                            break
                    spent += opt.state[params[0]].get("hvps", 0)
                else:
                    opt, graphed = _build(params, ph_name, cfg, lr=ph_lr)

                    def first_order_step():  # counted outside: a replay runs no Python
                        loss = _backward(opt, task_now, ens).sum()
                        opt.step()
                        return loss

                    run = CapturedStep(first_order_step, cfg.device) if graphed else first_order_step
                    for _ in range(budget):
                        count["evals"] += 1
                        hist.append(run().clone())
                # a diverged run stops (counted diverged): its later phases would only fail on NaN, e.g. Newton-CG's
                # Nystrom eigh, and take the pair down with it (one host read a phase)
                stop = not _finite(params, hist[-1] if hist else None)  # a host read: the time below is the phase's
                marks.append((len(hist), time.perf_counter() - start))
                if stop:
                    break
            final = task_now.loss(ens).detach()
            err = task_now.error(ens).detach()
            wall = time.perf_counter() - start
            losses = torch.stack(hist).double().cpu()[:, None]
            finite = _finite(params, final)
            out.append({"seed": seed, "lr": lr, "rel_l2": float(err[0]) if finite else float("nan"),
                        "loss": float(final[0]), "diverged": (not finite) or float(final[0]) > float(losses[0, 0]),
                        "spikes": int(_spikes(losses)[0]), "wall_s": wall, "evals": count["evals"] + spent,
                        "trace": _trace(losses[:, 0], marks)})
    return out


# second-order recipes compared with Rathore et al. (Adam → L-BFGS → NysNewton-CG)
RECIPES = {
    "adam+lbfgs": ("lbfgs", [("adam", 0.8), ("lbfgs", 0.2)]),
    "adam+lbfgs+nys_newton_cg": ("nys_newton_cg", [("adam", 0.7), ("lbfgs", 0.2), ("nys_newton_cg", 0.1)]),
    # SOAP first: on convection beta = 30 it leaves the failure mode where Adam stalls (CPU, 2026-11-25:
    # 4000 SOAP steps 1.6e-2 vs Adam ~0.9 on the same 4x64 net and 2048 points)
    "soap+lbfgs": ("lbfgs", [("soap", 0.8), ("lbfgs", 0.2)]),
    "soap+lbfgs+nys_newton_cg": ("nys_newton_cg", [("soap", 0.7), ("lbfgs", 0.2), ("nys_newton_cg", 0.1)]),
}


def _quantile(xs, q):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarise(task: str, optimizer: str, runs: list[dict]) -> list[dict]:
    rows = []
    for lr in sorted({r["lr"] for r in runs}):
        rs = [r for r in runs if r["lr"] == lr]
        # a run that lost finiteness has no error to rank (NaN): it shows only in 'diverged'; a finite run counted
        # diverged (final loss above its initial one) stays in the median, as the docstring says
        errs = [r["rel_l2"] for r in rs if math.isfinite(r["rel_l2"])]
        rows.append({
            "task": task, "optimizer": optimizer, "lr": lr, "seeds": len(rs),
            "rel_l2_median": statistics.median(errs) if errs else float("nan"),
            "rel_l2_min": min(errs) if errs else float("nan"), "rel_l2_max": max(errs) if errs else float("nan"),
            "rel_l2_iqr": _quantile(errs, 0.75) - _quantile(errs, 0.25) if errs else float("nan"),
            "diverged": sum(r["diverged"] for r in rs),
            "spikes_median": statistics.median([r["spikes"] for r in rs]),
            "wall_s_per_run": statistics.median([r["wall_s"] for r in rs]),
            "wall_s_solo": statistics.median([r.get("wall_s_solo", r["wall_s"]) for r in rs]),
            "grad_evals": max(r["evals"] for r in rs),
            "cuda_graph": any(r.get("cuda_graph", False) for r in rs),
            **({"error": rs[0]["error"]} if "error" in rs[0] else {}),
            # every run's own numbers, so figures can be recomputed from the results
            "runs": [{k: v for k, v in r.items() if k not in ("lr", "cuda_graph", "error")} for r in rs],
        })
    return rows


def best_row(rows: list[dict]) -> dict:
    """The best LR's row among one (task, optimizer)'s rows: the fewest diverged seeds, then the lowest
    median final rel. L2 (a median over the surviving seeds alone would crown an LR that lost 2 of 3).
    Chosen on the reported metric itself (test / reference rel. L2, no separate validation split), as
    optimizer benchmarks commonly do: the table and the plot both use this."""
    return min(rows, key=lambda r: (r["diverged"], r["rel_l2_median"] if math.isfinite(r["rel_l2_median"]) else math.inf))


def best_per_optimizer(rows: list[dict], task: str, keep: Callable[[dict], bool] = lambda r: True) -> dict[str, dict]:
    """Each optimizer's `best_row` among `task`'s rows that `keep` takes."""
    by_opt: dict[str, list[dict]] = {}
    for r in rows:
        if r["task"] == task and keep(r):
            by_opt.setdefault(r["optimizer"], []).append(r)
    return {name: best_row(rs) for name, rs in by_opt.items()}


EQUAL_WALL_TIME = (
    "Equal wall time: per task, each optimizer's training loss (median over its best lr's seeds) at one cut, the "
    "smallest solo-equivalent time any of the task's optimizers without a diverged seed took (the budgets equal gradient evaluations, not "
    "time). Solo-equivalent: an ensemble member's share of its ensemble's time times a member's whole run alone over "
    "that share (the planner's long probes), timed for Adam (every rule but SOAP) and SOAP (L-BFGS, Newton-CG and "
    "recipes run alone: their own time). "
    "The loss at the cut is the mean over the last of a run's 32 trace windows ending by then (a minibatch task's is "
    "a mean of minibatch losses); a run with no window by then counts as not reached.")


LEARNT_BELOW = 0.5  # a default must at least halve the error of predicting zero (rel. L2 1)
TIED_WITHIN = 1.1  # medians within 10 % of the leader's tie (2-3 seeds cannot order them closer)
DEFAULTS_RULE = (
    "Default optimizer per task (a rule on the rows above, for the task configs; not applied by the benchmark): "
    "each optimizer at its best lr; among those with no diverged seed (and no error), the lowest median final "
    f"rel. L2 leads, and must be below {LEARNT_BELOW} (half the error of predicting zero) to be a default at all; "
    f"any whose median is within {TIED_WITHIN:g}x the leader's ties with it, and the tie goes to the least "
    "solo-equivalent wall time per run. No default where every optimizer lost a seed or none learnt the task.")


def task_defaults(rows: list[dict]) -> list[dict]:
    """Each task's default optimizer by `DEFAULTS_RULE`, with the reason."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        best = list(best_per_optimizer(rows, task).values())
        clean = [b for b in best if b["diverged"] == 0 and "error" not in b and math.isfinite(b["rel_l2_median"])]
        if not clean:
            out.append({"task": task, "optimizer": None, "reason": f"every one of {len(best)} optimizers lost a seed"})
            continue
        lead = min(clean, key=lambda b: b["rel_l2_median"])
        if not lead["rel_l2_median"] < LEARNT_BELOW:
            out.append({"task": task, "optimizer": None, "reason": f"none learnt it: the lowest median rel. L2, "
                        f"{lead['optimizer']}'s {lead['rel_l2_median']:.3g}, is not below {LEARNT_BELOW}"})
            continue
        tied = [b for b in clean if b["rel_l2_median"] <= TIED_WITHIN * lead["rel_l2_median"]]
        wall = lambda b: b.get("wall_s_solo", b["wall_s_per_run"])  # noqa: E731 - rows written before wall_s_solo
        pick = min(tied, key=wall)
        reason = (f"lowest median rel. L2 of the {len(clean)} optimizers of {len(best)} with no diverged seed"
                  if pick is lead else
                  f"median {pick['rel_l2_median']:.3g} within {TIED_WITHIN:g}x {lead['optimizer']}'s (lowest, "
                  f"{lead['rel_l2_median']:.3g}) and faster: {wall(pick):.3g} s a run against {wall(lead):.3g} s")
        if len(tied) > 1:
            reason += f"; tied with {', '.join(sorted(b['optimizer'] for b in tied if b is not pick))}, the fastest"
        out.append({"task": task, "optimizer": pick["optimizer"], "lr": pick["lr"],
                    "rel_l2_median": pick["rel_l2_median"], "wall_s_solo": wall(pick), "reason": reason})
    return out


def equal_wall_time(rows: list[dict]) -> list[dict]:
    """Rows of the equal-wall-time comparison (`EQUAL_WALL_TIME`) from the summary rows' per-run traces."""
    out = []
    for task in sorted({r["task"] for r in rows}):
        best = best_per_optimizer(rows, task, keep=lambda r: any(run.get("trace") for run in r.get("runs", [])))
        if not best:
            continue
        # a run that diverged may stop early (its later phases skipped): its short time sets no cut
        clean = [b for b in best.values() if b["diverged"] == 0] or list(best.values())
        cut = min(b["wall_s_solo"] for b in clean)
        found = []
        for name, b in best.items():
            at = [next((v for t, v in reversed(run["trace"]) if t <= cut), None) for run in b["runs"]]
            finite = [v for v in at if v is not None and math.isfinite(v)]
            found.append({"task": task, "cut_s": round(cut, 3), "optimizer": name, "lr": b["lr"],
                          "train_loss_at_cut": statistics.median(finite) if finite else float("nan"),
                          "finite_at_cut": f"{len(finite)}/{len(at)}", "wall_s_solo": b["wall_s_solo"]})
        out += sorted(found, key=lambda r: r["train_loss_at_cut"] if math.isfinite(r["train_loss_at_cut"]) else math.inf)
    return out


def plot_task(task: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = list(best_per_optimizer(rows, task).values())
    items = sorted((r for r in best if math.isfinite(r["rel_l2_median"])), key=lambda r: r["rel_l2_median"])
    fig, ax = plt.subplots(figsize=(7, 0.32 * max(len(items), 4) + 1.2))
    ys = range(len(items))
    med = [r["rel_l2_median"] for r in items]
    lo = [r["rel_l2_median"] - r["rel_l2_min"] for r in items]
    hi = [r["rel_l2_max"] - r["rel_l2_median"] for r in items]
    ax.errorbar(med, list(ys), xerr=[lo, hi], fmt="o", capsize=3)
    # the median is over the seeds that stayed finite: the divergence count says how many that was
    ax.set_yticks(list(ys), [f"{r['optimizer']} (lr {r['lr']:.2g}" + (f", {r['diverged']}/{r['seeds']} div" if r["diverged"] else "")
                             + ")" for r in items])
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("final relative L2 (median, min-max over the finite seeds)")
    lost = sorted(r["optimizer"] for r in best if not math.isfinite(r["rel_l2_median"]))
    # the figure is narrow: the selection rule and any optimizer left out go on lines of their own
    ax.set_title(f"{task}\nbest LR each: fewest diverged seeds, then lowest median"
                 + (f"\nevery seed diverged: {', '.join(lost)}" if lost else ""), fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def runs_on(task: TaskSpec, name: str) -> bool:
    """L-BFGS, Newton-CG and the recipes need a fixed loss: not on minibatch tasks."""
    return task.deterministic or not (name in RECIPES or name in SECOND_ORDER)


PROBE_STEPS = (5, 25)  # two probe lengths: their difference separates the per-step and per-pair costs
# Newton-CG probe budgets (evaluations + HVPs): its first step alone (Nystrom sketch + CG) takes ~20-30
NEWTON_PROBE_EVALS = (30, 90)
# with graphs on, rules that cannot be captured run eagerly: one probe per kind of step. torch's rules take
# a few multi-tensor (foreach) kernels per step, pytorch-optimizer's loop over every member's tensors
EAGER_PROBES = {"eager_torch": "nadam", "eager_lib": "gravity"}


def _fit_probe(run: Callable[[int], int], budgets: tuple[int, int]) -> tuple[float, float]:
    """(seconds per unit, seconds besides) from `run(budget)` (it returns the units done: steps, or a
    Newton-CG member's evaluations, taken whole) timed at two budgets after a warm-up at the first."""
    def timed(budget: int) -> tuple[float, int]:
        start = time.perf_counter()
        done = run(budget)
        return time.perf_counter() - start, done

    timed(budgets[0])  # first use: tracing, allocator and kernel caches warm up
    (short, n_short), (long, n_long) = timed(budgets[0]), timed(budgets[1])
    # timing noise can make the difference small or negative: not below a quarter of the long probe's mean
    per = max((long - short) / max(n_long - n_short, 1), long / (4 * n_long))
    return per, max(short - n_short * per, 0.0)


def _probe(task: TaskSpec, name: str, n_lrs: int, n_seeds: int, cfg) -> tuple[float, float]:
    """(seconds per budget step, seconds per run besides its steps) of `name` on `task` with
    n_lrs x n_seeds members, as the grid runs it (ensemble set-up, capture and evaluations are
    the per-run part)."""
    def run(steps: int) -> int:
        run_first_order(replace(task, steps=steps), name, [default_lr(name)] * n_lrs, list(range(n_seeds)), cfg)
        return steps

    return _fit_probe(run, PROBE_STEPS)


def member_probes(task: TaskSpec, factors, seeds, cfg) -> dict[str, tuple[float, float]]:
    """`_probe` of an Adam and a SOAP ensemble of the grid's size, and of one member of each."""
    return {"adam": _probe(task, "adam", len(factors), len(seeds), cfg),
            "soap": _probe(task, "soap", len(factors), len(seeds), cfg),
            "one": _probe(task, "adam", 1, 1, cfg),
            "soap_one": _probe(task, "soap", 1, 1, cfg)}


def solo_factors(probe: dict[str, tuple[float, float]], members: int) -> dict[str, float]:
    """A run of one member made alone over its share of an ensemble's run (ensemble run / members), from
    `member_probes`' long probes: SOAP's own, Adam's for every other first-order rule (a rule's solo cost is
    not timed). Whole runs, as the wall times it scales: a ratio of the fitted per-step slopes (each the
    difference of two short timings) scattered 1.3-3.6 over repeats where the runs' ratio held at 2.2-2.3."""
    total = lambda p: p[1] + PROBE_STEPS[1] * p[0]  # noqa: E731 - the long probe's time, as fitted
    return {k: round(total(probe[one]) / (total(probe[k]) / members), 3)
            for k, one in (("adam", "one"), ("soap", "soap_one"))}


def solo_equivalent(runs: list[dict], factor: float) -> None:
    """Each run's ``wall_s_solo`` and its trace's times: an ensemble member's time share scaled by `factor`
    (`solo_factors`); 1 for runs already made alone (L-BFGS, Newton-CG, recipes)."""
    for r in runs:
        r["wall_s_solo"] = r["wall_s"] * factor
        r["trace"] = [[float(f"{t * factor:.4g}"), v] for t, v in r.get("trace", [])]


def _probe_newton(task: TaskSpec, cfg) -> tuple[float, float]:
    """(seconds per budget evaluation, seconds besides) of one NysNewton-CG member, run as the grid runs
    it (second-order dtype, HVPs, always eager): an evaluation is a loss or an HVP, as its budget counts."""
    def run(budget: int) -> int:  # a step is taken whole: the evaluations done
        return run_second_order(replace(task, steps=budget), "nys_newton_cg", [default_lr("nys_newton_cg")], [0],
                                cfg)[0]["evals"]

    return _fit_probe(run, NEWTON_PROBE_EVALS)


def eager_probe(name: str, cfg) -> str | None:
    """The probe that prices first-order rule `name` where it runs eagerly while graphs are on (it
    cannot be captured); None where its step replays as the Adam ensemble's, or nothing replays (CPU)."""
    if not _replays(cfg) or name == "soap" or graph_safe(name, _opt_kwargs(name)):
        return None  # soap: its own (eager) probe
    spec = optimizer_spec(name)
    cls = spec.resolve() if spec is not None else None
    return "eager_torch" if cls is not None and cls.__module__.startswith("torch.") else "eager_lib"


def pair_cost(name: str, probe: dict[str, tuple[float, float]], n_seeds: int, cfg=None) -> tuple[float, float]:
    """(seconds per budget step, seconds besides) of pair `name`, from the task's probe: first-order
    rules cost an Adam ensemble, SOAP its own (preconditioner refreshes); with graphs on, a rule that
    cannot be captured costs an eager ensemble of its kind (`eager_probe`). L-BFGS, Newton-CG and the
    recipes run member by member, each step about one single-member evaluation, a SOAP phase's step
    one single-member SOAP step (timed itself: an eager SOAP step is launch-bound, so one member costs
    far more than 1/members of an ensemble's step), a Newton-CG phase's evaluation one of a Newton-CG
    member where it was probed (graphs on: the Adam member replays, Newton-CG's HVPs never do)."""
    (one, one_fixed), (soap, soap_fixed) = probe["one"], probe["soap"]
    newton = probe.get("newton", probe["one"])

    def member(ph: str) -> tuple[float, float]:
        return probe["soap_one"] if ph == "soap" else newton if ph == "nys_newton_cg" else (one, one_fixed)

    if name in RECIPES:
        phases = RECIPES[name][1]
        return (n_seeds * sum(frac * member(ph)[0] for ph, frac in phases),
                n_seeds * sum(member(ph)[1] for ph, _ in phases))
    if name in SECOND_ORDER:
        per, fixed = member(name)
        return n_seeds * per, n_seeds * fixed
    if name == "soap":
        return soap, soap_fixed
    kind = eager_probe(name, cfg) if cfg is not None else None
    return probe[kind] if kind in probe else probe["adam"]


def share_time(need: dict[str, float], total: float, weights: dict[str, float] | None = None) -> dict[str, float]:
    """Split `total` seconds among tasks, each at most what it `need`s: shares in proportion to
    `weights` (default equal), with what the cheaper tasks leave going to the others."""
    weight = {t: (weights or {}).get(t, 1.0) for t in need}
    share, left, open_ = {}, total, dict(need)
    while open_:
        unit = left / sum(weight[t] for t in open_)
        fits = {t: n for t, n in open_.items() if n <= unit * weight[t]}
        if not fits:
            share.update({t: unit * weight[t] for t in open_})
            break
        for t, n in fits.items():
            share[t] = n
            left -= n
            del open_[t]
    return share


def parse_task_weights(text: str, tasks: list[str], error: Callable[[str], Any]) -> dict[str, float]:
    """``task=w,...`` as {task: w}; an unknown task, a missing ``=`` or a weight that is not positive is an error."""
    weights = {}
    for item in filter(None, text.split(",")):
        task, _, value = item.partition("=")
        try:
            weights[task] = float(value)
        except ValueError:
            weights[task] = 0.0  # refused below with the rest
        if task not in tasks or not weights[task] > 0:
            error(f"--task-weights {item!r}: expected task=w with w > 0 and task one of {tasks}")
    return weights


def plan_budgets(tasks: dict[str, TaskSpec], names: list[str], factors, seeds, cfg, minutes: float,
                 weights: dict[str, float] | None = None, start: float | None = None) -> dict[str, dict]:
    """Per task, the gradient-evaluation budget at which the whole grid (every pair, every LR and
    seed) takes about `minutes` on this device; never above the task's own budget. Every optimizer
    of a task keeps one budget. Measured: Adam and SOAP ensembles, one Adam member and one SOAP member;
    with graphs on (CUDA), also what runs eagerly there: an ensemble of each kind of uncapturable rule
    (`EAGER_PROBES`) and one Newton-CG member, where the grid has them. The minutes count from `start`
    (``time.perf_counter()``; default now), e.g. from before the tasks were built. Each pair's planned
    seconds go in ``pair_s``."""
    start = time.perf_counter() if start is None else start
    costs = {}
    for tname, task in tasks.items():
        probe = member_probes(task, factors, seeds, cfg)
        todo = [n for n in names if runs_on(task, n)]
        # graphs on: what the grid runs eagerly is timed eagerly (on CPU every path is eager: the probes above)
        for kind in sorted({eager_probe(n, cfg) for n in todo if n not in RECIPES and n not in SECOND_ORDER} - {None}):
            probe[kind] = _probe(task, EAGER_PROBES[kind], len(factors), len(seeds), cfg)
        phases = [ph for n in todo for ph, _ in (RECIPES[n][1] if n in RECIPES else [(n, 1.0)])]
        if _replays(cfg) and "nys_newton_cg" in phases:
            probe["newton"] = _probe_newton(task, cfg)
        pairs = {n: pair_cost(n, probe, len(seeds), cfg) for n in todo}
        costs[tname] = (sum(c for c, _ in pairs.values()), sum(f for _, f in pairs.values()), probe, pairs)
    left = 60 * minutes - (time.perf_counter() - start)
    shares = share_time({t: fixed + per * tasks[t].steps for t, (per, fixed, *_) in costs.items()}, max(left, 0.0),
                        weights)
    plan = {}
    for tname, (per, fixed, probe, pairs) in costs.items():
        steps = max(1, min(tasks[tname].steps, int((shares[tname] - fixed) / per)))
        plan[tname] = {"steps": steps, "default_steps": tasks[tname].steps, "planned_s": round(fixed + steps * per, 1),
                       "probe_ms": {k: round(1e3 * v[0], 3) for k, v in probe.items()},
                       "pair_s": {n: round(f + steps * c, 1) for n, (c, f) in pairs.items()},
                       "solo_factor": solo_factors(probe, len(factors) * len(seeds))}
        print(f"budget {tname:18s} {steps:6d} of {tasks[tname].steps} evaluations, ~{(fixed + steps * per) / 60:.1f} min "
              f"({fixed:.0f} s of set-up; a step: Adam ensemble {1e3 * probe['adam'][0]:.2f} ms, "
              f"SOAP {1e3 * probe['soap'][0]:.2f} ms, one member {1e3 * probe['one'][0]:.2f} ms, "
              f"one SOAP member {1e3 * probe['soap_one'][0]:.2f} ms"
              + "".join(f", {k.replace('_', ' ')} {1e3 * probe[k][0]:.2f} ms" for k in ("eager_torch", "eager_lib", "newton")
                        if k in probe) + ")", flush=True)
    print(f"budget plan took {time.perf_counter() - start:.0f} s of the {minutes:g} minutes", flush=True)
    return plan


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="reduced scale for a CPU")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--optimizers", default="all", help="comma list, 'all' (registry + recipes)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="override every task's budget")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (small tasks: 1 is fastest)")
    ap.add_argument("--name", default=None, help="results/<name>.json (default: optimizers, or optimizers_small with --small)")
    ap.add_argument("--merge", action="store_true", help="keep the rows of other (task, optimizer) pairs already in results/<name>.json")
    ap.add_argument("--skip-done", action="store_true",
                    help="with --merge: skip (task, optimizer) pairs results/<name>.json already holds from this device and scale")
    ap.add_argument("--graph", action=argparse.BooleanOptionalAction, default=None,
                    help="replay each step as a CUDA graph where the optimizer allows it (default: on CUDA)")
    ap.add_argument("--second-order-dtype", choices=("float64", "float32"), default="float64",
                    help="dtype of the L-BFGS and Newton-CG phases (first-order ones run in float32)")
    ap.add_argument("--session-minutes", type=float, default=None,
                    help="size every task's budget so the whole grid takes about this long here (timed probes "
                         "first); the plan is saved with the results and reused by later --skip-done parts")
    ap.add_argument("--task-weights", default="",
                    help="with --session-minutes: task=w,... shares of the session in proportion to w (default 1 each), "
                         "e.g. pinn_convection=2, where issue 8's bar rests on that task's budget")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="start no new (task, optimizer) pair after this; results are written after every pair, "
                         "so a rerun with --merge --skip-done continues the grid")
    ap.add_argument("--plots-only", action="store_true",
                    help="run nothing: draw the plots and print the defaults from results/<name>.json")
    add_dry_run(ap)
    cfg = ap.parse_args(argv)
    cfg.name = cfg.name or ("optimizers_small" if cfg.small else "optimizers")  # a CPU run never replaces the GPU table
    if cfg.skip_done and not cfg.merge:
        ap.error("--skip-done needs --merge (it continues the grid in results/<name>.json)")
    if cfg.session_minutes is not None and cfg.steps is not None:
        ap.error("--session-minutes sizes the budgets itself: leave out --steps")
    known = {"tasks": list(TASKS), "optimizers": OPTIMIZERS.names() + list(RECIPES) + ["all"]}
    for what, given in (("tasks", cfg.tasks), ("optimizers", cfg.optimizers)):
        if set(given.split(",")) - set(known[what]):
            ap.error(f"unknown {what} {sorted(set(given.split(',')) - set(known[what]))}; known: {known[what]}")
    cfg.task_weights = parse_task_weights(cfg.task_weights, known["tasks"], ap.error)
    if dry_run_done(cfg):
        return
    if cfg.plots_only:
        if not (RESULTS_DIR / f"{cfg.name}.json").exists():
            ap.error(f"--plots-only: no results/{cfg.name}.json to draw; run the grid first, or name its file with --name")
        finish(cfg.name)
        return
    cfg.device = torch.device(cfg.device)
    cfg.graph = cfg.device.type == "cuda" if cfg.graph is None else cfg.graph
    cfg.dtype = torch.float32
    cfg.second_order_dtype = getattr(torch, cfg.second_order_dtype)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    names = (OPTIMIZERS.names() + list(RECIPES)) if cfg.optimizers == "all" else cfg.optimizers.split(",")
    factors = LR_FACTORS["small" if cfg.small else "full"]
    seeds = list(range(cfg.seeds))
    scale = "small" if cfg.small else "full"
    rows, skipped, notes, budgets, not_applicable, solo = [], {}, {}, {}, {}, {}
    # the grid so far (--merge, this device and scale): its finished pairs (--skip-done) and its budget plan
    earlier = previous_result(cfg.name, cfg.device) if cfg.merge else None
    earlier = earlier if earlier is not None and earlier.get("scale") == scale else {}
    done = ({(r["task"], r["optimizer"]) for r in earlier.get("rows", [])}
            | {(t, n) for t, ns in earlier.get("not_applicable", {}).items() for n in ns}) if cfg.skip_done else set()
    # between pairs; a pair cut by the device call's end is lost, so the call's deadline counts too
    minutes = minutes_left_in_session(math.inf if cfg.max_minutes is None else cfg.max_minutes, reserve_s=60)
    deadline = None if math.isinf(minutes) else time.perf_counter() + 60 * minutes
    stopped = False

    def save() -> None:
        # --merge: replace only the (task, optimizer) rows rerun, and only rows from this machine
        write_result(cfg.name, title="Optimizers x PDE tasks" + (" (reduced CPU scale)" if cfg.small else ""),
                     rows=rows, device=cfg.device, merge_key=(lambda r: (r["task"], r["optimizer"])) if cfg.merge else None,
                     notes=("Median/min/max/IQR of final rel. L2 over the finite seeds per (task, optimizer, lr), "
                            "'diverged' counting the rest; an optimizer's best lr (log, plot) has the fewest "
                            "diverged seeds, then the lowest median, chosen on this same test / reference rel. L2 "
                            "(no validation split); no guard, "
                            "no schedule, weight decay 0; first-order seeds x LRs trained as one vmap ensemble; "
                            "L-BFGS / NysNewton-CG rows member by member, their phases in "
                            f"{str(cfg.second_order_dtype).replace('torch.', '')} (first-order ones in float32); "
                            "wall_s_solo: the time of a run made alone (module docstring); every run's numbers "
                            "and training-loss trace are in the JSON (runs)."),
                     extra={"tasks": notes, "skipped": skipped, "lr_factors": list(factors), "seeds": seeds,
                            "scale": scale, "not_applicable": not_applicable,
                            "tables": {"defaults": DEFAULTS_RULE, "equal_wall_time": EQUAL_WALL_TIME},
                            **({"budgets": budgets} if budgets else {})},
                     derived=lambda all_rows: {"defaults": task_defaults(all_rows),
                                               "equal_wall_time": equal_wall_time(all_rows)})

    try:
        eager = _eager(cfg)
        tasks, build_start = {}, time.perf_counter()  # building counts in the plan's minutes (Darcy: 1200 solves)
        for tname in cfg.tasks.split(","):
            left = [n for n in names if (tname, n) not in done]
            if not left:
                print(f"{tname:18s} every pair already in results/{cfg.name}.json (--skip-done): not built", flush=True)
                continue
            try:
                tasks[tname] = TASKS[tname](cfg)
            except (ImportError, ModuleNotFoundError, AttributeError) as err:
                skipped[tname] = f"{type(err).__name__}: {err}"
                print(f"[skip] {tname}: {skipped[tname]}", flush=True)
                continue
            if tasks[tname].deterministic and any(n in SECOND_ORDER or n in RECIPES for n in left):
                _with_dtype(tasks[tname], cfg, cfg.second_order_dtype)  # its float64 copy, built now: in the clock too
        if cfg.session_minutes is not None:
            # one plan for the whole grid: later parts (--skip-done) reuse it, so a task's pairs share one budget
            kept = earlier.get("budgets", {})
            todo = {t: task for t, task in tasks.items() if t not in kept}
            budgets.update({t: kept[t] for t in tasks if t in kept})
            if todo:
                w = {t: cfg.task_weights.get(t, 1.0) for t in tasks}
                budgets.update(plan_budgets(todo, names, factors, seeds, cfg,
                                            cfg.session_minutes * sum(w[t] for t in todo) / sum(w.values()), cfg.task_weights,
                                            start=build_start))
            for t, task in tasks.items():
                task.steps = budgets[t]["steps"]
        for tname, task in tasks.items():
            if stopped:
                break
            notes[tname] = task.notes + f"; budget {task.steps} gradient evaluations (an L-BFGS phase may end one line " \
                "search over, a Newton-CG phase one step: grad_evals)" + (
                f" (sized by --session-minutes from {budgets[tname]['default_steps']})" if tname in budgets else "") + (
                "" if task.deterministic else "; minibatch training, so no L-BFGS / Newton-CG rows")
            for name in names:
                if (tname, name) in done:
                    print(f"{tname:18s} {name:26s} already in results/{cfg.name}.json (--skip-done)", flush=True)
                    continue
                if deadline is not None and time.perf_counter() > deadline:
                    print(f"stopped by --max-minutes before {tname} / {name}; rerun with --merge --skip-done to go on",
                          flush=True)
                    stopped = True
                    break
                t0 = time.perf_counter()
                if not runs_on(task, name):
                    print(f"{tname:18s} {name:26s} n/a: minibatch loss (L-BFGS / Newton-CG need a fixed loss)", flush=True)
                    not_applicable.setdefault(tname, []).append(name)  # --skip-done: nothing left to build the task for
                    continue
                planned = budgets.get(tname, {}).get("pair_s", {}).get(name)
                if deadline is not None and planned is not None and t0 + planned > deadline:
                    # a pair cut at the call's end is lost: leave it whole to the next call
                    print(f"{tname:18s} {name:26s} not started: planned {planned:.0f} s, {deadline - t0:.0f} s left before "
                          "the deadline; rerun with --merge --skip-done to run it", flush=True)
                    continue
                runs = run_pair_or_record(task, name, factors, seeds, cfg)
                factor = 1.0  # L-BFGS, Newton-CG and recipes run alone
                if name not in RECIPES and name not in SECOND_ORDER:  # an ensemble's runs: their time alone
                    if tname not in solo:  # the plan's probes, else timed once now (eagerly where a capture fails)
                        try:
                            solo[tname] = budgets.get(tname, {}).get("solo_factor") or solo_factors(
                                member_probes(task, factors, seeds, cfg), len(factors) * len(seeds))
                        except Exception:  # noqa: BLE001
                            solo[tname] = solo_factors(member_probes(task, factors, seeds, eager), len(factors) * len(seeds))
                    factor = solo[tname]["soap" if name == "soap" else "adam"]
                solo_equivalent(runs, factor)
                new = summarise(tname, name, runs)
                rows += new
                best = best_row(new)
                print(f"{tname:18s} {name:26s} best lr {best['lr']:.3g}: rel L2 {best['rel_l2_median']:.3e} "
                      f"[{best['rel_l2_min']:.2e}-{best['rel_l2_max']:.2e}] div {best['diverged']} "
                      f"spikes {best['spikes_median']} ({time.perf_counter() - t0:.1f}s)", flush=True)
                save()  # a command stopped by its time limit keeps every finished pair
        save()
    finally:
        # at every exit, a deadline's SIGINT (KeyboardInterrupt) too: the pairs saved so far keep their plots
        if (RESULTS_DIR / f"{cfg.name}.json").exists():
            finish(cfg.name)


def pair_lrs(name: str, factors) -> list[float]:
    """The LRs pair `name` runs: the grid for a first-order rule, one LR for the rest (module docstring)."""
    if name in RECIPES:
        return [default_lr(RECIPES[name][0])]
    if name in SECOND_ORDER:
        return [default_lr(name)]
    return [default_lr(name) * f for f in factors]


def finish(name: str) -> None:
    """Plots of every task in results/<name>.json (copied under $OUT), and each task's default printed."""
    result = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    rows = result["rows"]  # after the merge: plots show every row
    for tname in sorted({r["task"] for r in rows}):
        plot = RESULTS_DIR / f"{name}_{tname}.png"
        plot_task(tname, rows, plot)
        if os.environ.get("OUT"):  # the device machine returns only what is under $OUT
            (Path(os.environ["OUT"]) / "results").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, Path(os.environ["OUT"]) / "results" / plot.name)
    for d in result.get("defaults") or task_defaults(rows):  # a file from before defaults were saved: its rows'
        pick = f"{d['optimizer']} (lr {d['lr']:.3g}, rel L2 {d['rel_l2_median']:.3e})" if d["optimizer"] else "none"
        print(f"default {d['task']:18s} {pick}: {d['reason']}", flush=True)


def run_pair(task: TaskSpec, name: str, factors, seeds, cfg) -> list[dict]:
    """Every run of one (task, optimizer or recipe) pair."""
    lrs = pair_lrs(name, factors)
    if name in RECIPES:
        opt_name, phases = RECIPES[name]
        return run_second_order(task, opt_name, lrs, seeds, cfg, phases)
    if name in SECOND_ORDER:
        return run_second_order(task, name, lrs, seeds, cfg)
    return run_first_order(task, name, lrs, seeds, cfg)


def run_pair_or_record(task: TaskSpec, name: str, factors, seeds, cfg) -> list[dict]:
    """`run_pair`, eagerly again where its CUDA-graph run failed; a pair that still raises is recorded with its
    error and every seed diverged, so the grid goes on and a later --skip-done part does not rerun it."""
    if cfg.graph:
        try:
            return run_pair(task, name, factors, seeds, cfg)
        except Exception as err:  # noqa: BLE001 - a failed capture must not cost the rest of the grid
            print(f"{task.name:18s} {name:26s} CUDA-graph run failed ({type(err).__name__}: {str(err)[:200]}); "
                  "running it eagerly", flush=True)
    try:
        return run_pair(task, name, factors, seeds, _eager(cfg))
    except Exception as err:  # noqa: BLE001 - nor a pair that fails eagerly too
        error = f"{type(err).__name__}: {str(err)[:300]}"
        print(f"{task.name:18s} {name:26s} failed ({error}); recorded with every seed diverged", flush=True)
        nan = float("nan")
        return [{"seed": s, "lr": lr, "rel_l2": nan, "loss": nan, "diverged": True, "spikes": 0, "wall_s": nan,
                 "evals": 0, "error": error} for lr in pair_lrs(name, factors) for s in seeds]


if __name__ == "__main__":
    main()
