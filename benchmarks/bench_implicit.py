"""Implicit vs unrolled backward of a fixed-point layer, and batched Levenberg-Marquardt throughput.

Run:  PYTHONPATH=. python benchmarks/bench_implicit.py            # full sizes (GPU)
      PYTHONPATH=. python benchmarks/bench_implicit.py --small    # CPU-sized smoke run

Part 1 (fixed-point layer z = tanh(W z + U x + b), forced to exactly K in {25, 50, 100}
iterations): forward time, backward time, backward / forward, and on CUDA the peak memory of
forward + backward above the resident tensors (torch.cuda.max_memory_allocated).  "implicit"
runs the forward under no_grad and solves the adjoint with GMRES; "unrolled" keeps the graph of
all K iterations.  saved_for_backward_MiB (every device) sums the storages autograd keeps
for the backward (torch.autograd.graph.saved_tensors_hooks) -- the part that grows with K
when unrolling; it excludes the implicit backward's own workspace (the Krylov basis).  On CPU
peak_mem_MiB is null: tracemalloc does not see torch's allocator, so peak memory is GPU-only.

Part 2: LM on the hard-constraint shape -- batch*experts problems of N unknowns and m residuals
r(w) = [u + 0.3 u^3 - y; 1e-2 w], u = B w, B: (batch, m, N), float64, rtol = atol = 1e-4,
max_steps 50 (PI-HC-MoE settings) -- solve time, LM steps, problems per second, for the
Jacobian routes: "fwd" (vmap over N JVPs; copies B per tangent), "loop" (N JVPs),
"analytic" (a callable jac: J = diag(1 + 0.9 u^2) B), "loop+columns" (J^T J column by column).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import add_threads, median_range, round_robin, sync, time_call, use_threads, write_result  # noqa: E402
from solvers.implicit import Implicit, Unrolled, fixed_point  # noqa: E402
from solvers.linear import GMRES  # noqa: E402
from solvers.nonlinear import FixedPointIteration, LevenbergMarquardt  # noqa: E402


def cell(z, W, U, x, b):
    return torch.tanh(z @ W.T + x @ U.T + b)


def saved_for_backward_bytes(fn):
    """Bytes of distinct storages autograd saves for backward while running fn() (any device)."""
    seen = {}

    def pack(t):
        seen[(t.device, t.untyped_storage().data_ptr())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def fwd_bwd_times(fwd, params, device, repeat):
    """Median wall times (s) of the forward and of the backward alone: each repeat times a forward, then the
    backward on that same output (the loss built from it untimed)."""
    f_times, b_times = [], []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        out = fwd()
        sync(device)
        f_times.append(time.perf_counter() - start)
        loss = out.square().sum()
        sync(device)
        start = time.perf_counter()
        torch.autograd.grad(loss, params)
        sync(device)
        b_times.append(time.perf_counter() - start)
        del out, loss
    return sorted(f_times)[repeat // 2], sorted(b_times)[repeat // 2]


def fixed_point_rows(device, batch, width, iters, repeat, rounds=3):
    """Forward and backward timed apart (the backward on the output of the forward just timed), every (K, mode)
    once per round, round-robin against drift; the median over rounds, with the range."""
    g = torch.Generator(device="cpu").manual_seed(0)
    W = (torch.randn(width, width, generator=g) * 0.9 / width ** 0.5).to(device).requires_grad_()
    U = (torch.randn(width, width, generator=g) / width ** 0.5).to(device).requires_grad_()
    b = torch.zeros(width, device=device, requires_grad=True)
    x = torch.randn(batch, width, generator=g).to(device)
    fwds = {}

    def forward(z0, solver, adjoint):
        return lambda: fixed_point(cell, z0, W, U, x, b, solver=solver, adjoint=adjoint).value

    for K in iters:
        # rtol far below reachable: the forward always runs exactly K iterations.
        solver = FixedPointIteration(rtol=1e-30, atol=1e-30, max_steps=K, check_every=K)
        for mode, adjoint in (("implicit", Implicit(GMRES(rtol=1e-6, restart=30, max_steps=60), on_failure="warn")),
                              ("unrolled", Unrolled(on_failure="warn"))):
            z0 = torch.zeros(batch, width, device=device)
            fwds[K, mode] = forward(z0, solver, adjoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # MAX_STEPS is intended here
        for fwd in fwds.values():  # warm-up
            fwd_bwd_times(fwd, (W, U, b), device, 1)
        runs = round_robin({k: (lambda fwd=fwd: fwd_bwd_times(fwd, (W, U, b), device, repeat))
                            for k, fwd in fwds.items()}, rounds)
    rows = []
    for (K, mode), fwd in fwds.items():
        forward_ms, forward_range = median_range([1e3 * t_f for t_f, _ in runs[K, mode]])
        backward_ms, backward_range = median_range([1e3 * t_b for _, t_b in runs[K, mode]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            saved = saved_for_backward_bytes(fwd) / 2 ** 20
            peak = None
            if device.type == "cuda":
                sync(device)
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                torch.autograd.grad(fwd().square().sum(), (W, U, b))
                sync(device)
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
        rows.append({"part": "fixed_point", "mode": mode, "iterations": K, "batch": batch, "width": width,
                     "forward_ms": forward_ms, "backward_ms": backward_ms,
                     "backward_over_forward": backward_ms / forward_ms,
                     "forward_ms_range": forward_range, "backward_ms_range": backward_range,
                     "rounds": rounds, "saved_for_backward_MiB": saved, "peak_mem_MiB": peak})
        print(rows[-1], flush=True)
    return rows


def lm_rows(device, sizes, repeat, on_row=lambda rows: None):
    """sizes: (problems, N, m, variants); variants from "fwd", "loop", "analytic", "loop+columns".

    on_row(rows) runs after each row, so a run stopped by a time limit keeps what it measured."""
    rows = []
    for batch, N, m, variants in sizes:
        g = torch.Generator(device="cpu").manual_seed(1)
        basis = (torch.randn(batch, m, N, generator=g, dtype=torch.float64) / N ** 0.5).to(device)
        w_true = (0.3 * torch.randn(batch, N, generator=g, dtype=torch.float64)).to(device)
        u = (basis @ w_true[..., None])[..., 0]
        y = u + 0.3 * u ** 3 + 0.1 * torch.randn(batch, m, generator=g, dtype=torch.float64).to(device)

        def residual(w, basis, y):
            u = (basis @ w[..., None])[..., 0]
            return torch.cat([u + 0.3 * u ** 3 - y, 1e-2 * w], dim=1)

        def analytic_jac(w, basis, y):
            u = (basis @ w[..., None])[..., 0]
            ridge = 1e-2 * torch.eye(N, dtype=w.dtype, device=w.device).expand(w.shape[0], N, N)
            return torch.cat([(1 + 0.9 * u ** 2)[..., None] * basis, ridge], dim=1)

        w0 = torch.zeros(batch, N, dtype=torch.float64, device=device)
        for variant in variants:
            jac = analytic_jac if variant == "analytic" else variant.split("+")[0]
            normal = "columns" if variant.endswith("+columns") else "materialize"
            lm = LevenbergMarquardt(rtol=1e-4, atol=1e-4, max_steps=50, check_every=5, jac=jac, normal=normal)
            sol = lm(residual, w0, basis, y, throw=False)
            t = time_call(lambda: lm(residual, w0, basis, y, throw=False), device=device, warmup=0, repeat=repeat)
            steps = sol.stats["num_steps"].double()
            rows.append({"part": "lm", "jacobian": variant, "problems": batch, "N": N, "m": m, "solve_ms": 1e3 * t,
                         "problems_per_s": batch / t, "steps_mean": steps.mean().item(),
                         "steps_max": steps.max().item(), "ms_per_step": 1e3 * t / max(steps.max().item(), 1.0),
                         "converged_fraction": (sol.status == 0).double().mean().item()})
            print(rows[-1], flush=True)
            on_row(rows)
    return rows


def merge_key(row: dict) -> tuple:
    """A row's identity in results/implicit*.json: a run cut short replaces only the rows it measured."""
    if row["part"] == "fixed_point":
        return (row["part"], row["mode"], row["iterations"], row["batch"], row["width"])
    return (row["part"], row["jacobian"], row["problems"], row["N"], row["m"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="CPU-sized problems")
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    add_threads(ap)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_threads(args, device)
    mem_note = ("peak_mem_MiB: torch.cuda.max_memory_allocated above resident tensors" if device.type == "cuda"
                else "peak_mem_MiB is null on CPU (GPU-only figure: tracemalloc does not see torch's allocator)")
    mem_note += "; saved_for_backward_MiB: storages saved by autograd during the forward (saved_tensors_hooks)"

    def write(rows):
        return write_result("implicit_small" if args.small else "implicit", title="Implicit vs unrolled backward; batched LM throughput",
                            rows=rows, device=device, merge_key=merge_key,
                            notes=f"{'--small (CPU sizes); ' if args.small else ''}{mem_note}. Fixed point: forced to "
                                  f"exactly K iterations; implicit backward = GMRES(rtol 1e-6, restart 30); "
                                  f"forward and backward timed apart (the backward on the output of the forward just "
                                  f"timed), all (K, mode) round-robin, median over rounds (range: min, max). "
                                  f"LM: float64, rtol=atol=1e-4, max_steps 50, residual [u + 0.3u^3 - y; 1e-2 w].")

    if args.small:
        fp = fixed_point_rows(device, batch=32, width=128, iters=(25, 50, 100), repeat=3)
        sizes = [(16, 16, 2000, ("fwd", "loop", "analytic")), (64, 16, 2000, ("analytic",)),
                 (16, 64, 2000, ("analytic", "loop+columns"))]
        repeat = 2
    else:
        fp = fixed_point_rows(device, batch=256, width=1024, iters=(25, 50, 100), repeat=2)
        # the hard-constraint layer's largest shape first: a run cut short by a time limit still has it
        sizes = [(1024, 64, 20000, ("analytic",)), (1024, 16, 20000, ("analytic",)),
                 (256, 64, 20000, ("analytic", "loop")), (64, 16, 20000, ("fwd", "loop", "analytic"))]
        repeat = 3
    path = write(fp)
    lm_rows(device, sizes, repeat=repeat, on_row=lambda lm: write(fp + lm))  # writes after every row itself
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
