"""Physics-informed operator learning with and without hard constraints (PI-SC, PI-HC, PI-HC-MoE).

Learns the map u0 -> u(x, t) from the PDE alone: no solution data, only the residual on the grid
and the initial / boundary values. An FNO over (x, t) either outputs u itself (PI-SC: the PDE is
only a loss) or N basis fields that a `HardConstraint` layer combines so that the PDE and the
conditions hold at sampled nodes, with one set of coefficients for the whole grid (PI-HC) or one
per x-block (PI-HC-MoE, 4 experts): the setting of Chalapathi et al. (ICLR 2024) at a size one CPU
trains in minutes. Test error against our own solvers.

  burgers   u_t + u u_x = nu u_xx, periodic x, u0 a random field (nu = 0.02, T = 0.5)

(`Case` holds what a PDE needs: write one like `burgers()` for yours and pass it to `train`.)

    python examples/hard_constraint_moe.py                       # the three side by side
    python examples/hard_constraint_moe.py --kinds moe --overlap 4

Measured (CPU, one thread, torch 2.13.0+cpu, 2026-11-27, at 7471d7b; test rel. L2 after 400 steps, the hard
layers evaluated in eval mode; times on a shared machine under heavy load): soft 0.0094 (102 s), hard 0.0283
(290 s), moe 0.452 (171 s), moe with --overlap 4 0.0460 (132 s). On this mild problem the soft constraint wins;
the disjoint experts' fields jump at the block interfaces, which overlapping blocks remove. Earlier figures (2
cores, 2026-11-26, commit 1aa754f: 0.0094, 0.0240, 0.587, 0.0460; before the compact u_xx stencil, 5bfccc0:
0.0105, 0.0284, 0.247, 0.0573: the disjoint variant lost most, likely because a jump's squared u_xx residual is
8x larger under the compact stencil than under the wide one) show how much they depend on the number of threads,
the torch build (summation order) and the hard layer's code: one thread, hard 0.0305, moe 0.513, overlap 0.0456
recorded in c028891; hard 0.0268 before 7442abc (the Hessian from per-node curvature, gradients equal to 1e-10
rel.) and 0.0283 from it on. The one-thread figures once given for d59db97 (hard 0.0236, moe 0.531, overlap
0.0519) do not reproduce there: a fresh run at d59db97 gives hard 0.0283 on one thread, as here (0.0259 on two).
The same from a config, on generated data:
`sciml train configs/burgers/pi_hc.yaml` (benchmarks/bench_hard_constraint.py --parts accuracy).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from sciml.constraints import GridProblem, PhysicsOperator, get_grid_problem
from sciml.data.families.burgers import Burgers1D, BurgersParams
from sciml.data.loading import Split
from sciml.models import FNO
from sciml.train.losses import relative_l2_per_sample
from sciml.train.physics import spacetime_split


@dataclass
class Case:
    """One PDE on an (x, t) grid: the problem (`sciml.constraints.GridProblem`), grid and data."""

    problem: GridProblem
    make_data: Callable  # (n, seed) -> Split: inputs and solutions, each (n, 1, nx, nt)
    nx: int
    nt: int
    t_end: float
    fno: dict = field(default_factory=dict)

    @property
    def spacing(self):
        return (1.0 / self.nx, self.t_end / (self.nt - 1))


def burgers(nx=64, nt=26, t_end=0.5, nu=0.02) -> Case:
    # the burgers_spacetime recipe's data (rms ~0.37: steepens, no shock by T), made by the dataset family
    params = BurgersParams(nu=nu, t_end=t_end, n_times=nt - 1, resolution=nx, alpha=3.5, tau=5.0, sigma=400.0)

    def data(n, seed):
        out, _ = Burgers1D().generate(params, n, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"))
        return spacetime_split(Split(out["inputs/u0"][:, None].float(), out["outputs/u"].float()))

    return Case(get_grid_problem("burgers", nu=nu), data, nx, nt, t_end, fno={"padding": (0, 0.25)})


def physics_operator(kind: str, case: Case, *, n_basis: int = 16, experts: int = 4, points: int = 200,
                     overlap: int = 0, width: int = 24, modes=(12, 8)) -> PhysicsOperator:
    """u0 (batch, 1, nx, nt), broadcast in t -> u (batch, 1, nx, nt); kind: "soft", "hard" or "moe"."""
    backbone = FNO(1, 1 if kind == "soft" else n_basis, n_dims=2, modes=modes, width=width, **case.fno)
    if kind == "soft":
        return PhysicsOperator(backbone, case.problem, case.spacing, constraint="soft")
    moe = kind == "moe"
    return PhysicsOperator(backbone, case.problem, case.spacing, experts=(experts if moe else 1, 1),
                           points=points * (1 if moe else experts), overlap=(overlap if moe else 0, 0))


def train(kind: str, case: Case | None = None, *, steps: int = 300, n_train: int = 64, n_test: int = 16, batch: int = 8,
          lr: float = 2e-3, seed: int = 0, grid: dict | None = None, **model_kw) -> dict:
    """Train one kind from the PDE alone (`case`, default `burgers(**grid)`); test rel. L2 against the
    solver, the test physics loss, time, solves."""
    torch.manual_seed(seed)
    case = case or burgers(**(grid or {}))
    data = case.make_data(n_train + n_test, seed)
    u0 = data.x  # the input: u(x, 0) at every t
    model = physics_operator(kind, case, **model_kw)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(n_train, (batch,), generator=gen)
        loss = model.loss(model(u0[idx]), u0[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    model.eval()  # the hard layer draws the same nodes on every call (deterministic predictions)
    with torch.no_grad():
        u = model(u0[n_train:])
        test_loss = model.loss(u, u0[n_train:])
    stats = model.layer.last_stats if model.layer is not None else {}
    return {"kind": kind, "test_rel_l2": float(relative_l2_per_sample(u, data.y[n_train:]).mean()),
            "test_physics_loss": float(test_loss), "train_seconds": seconds, "final_loss": float(loss.detach()),
            "solve_failures": int((stats["status"] != 0).sum()) if stats else 0,
            "mean_solver_steps": float(stats["num_steps"].double().mean()) if stats else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="soft,hard,moe")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlap", type=int, default=0, help="nodes by which the experts' x-blocks overlap")
    args = parser.parse_args()
    for kind in args.kinds.split(","):
        r = train(kind, steps=args.steps, seed=args.seed, overlap=args.overlap)
        print(f"{r['kind']:5s}  test rel. L2 {r['test_rel_l2']:.4f}, physics loss {r['test_physics_loss']:.2e}  "
              f"({r['train_seconds']:.0f} s, final training loss {r['final_loss']:.3e}, LM steps "
              f"{r['mean_solver_steps']:.1f}, unconverged {r['solve_failures']})")


if __name__ == "__main__":
    main()
