"""Data-generation speed and accuracy of the reference PDE solvers (solvers/pde).

Run from the repository root, in parts that each fit one 10-minute device command:
    PYTHONPATH=. python benchmarks/bench_datagen.py --parts darcy,ns_step,burgers,ns_accuracy
    PYTHONPATH=. python benchmarks/bench_datagen.py --parts ns_generate   # repeat until "complete"
    PYTHONPATH=. python benchmarks/bench_datagen.py --small               # every part, CPU sizes

Writes benchmarks/results/datagen.json (and $OUT/results/datagen.json when $OUT is set); a run
of some parts keeps the other parts' rows measured on the same device.

Rows:
* darcy: FNO's set, coefficient sampling (Neumann GRF 12/3) + DST-PCG solve (fp64,
  rtol 1e-10) + writing coefficient and solution as float32 to a plain h5py file, end to end.
  Full: 1024 x 421^2 (target <= 10 s on one GPU).
* ns_step / ns_fft_floor: ETDRK4 vorticity step (float32) at 256^2 for a batch, ms per step, and
  the time of its FFTs alone (4 stages x (one stacked irfft2 of 4 fields + one rfft2)).
* ns_accuracy: relative L2 at T between ETDRK4 (adaptive, cfl 0.5) and FNO's cn_euler at
  dt = 1e-4, same ICs (FNO GRF), FNO forcing, float64, at full and at 64^2 (stride) resolution.
* ns_generate: the real thing, `sciml generate navier_stokes` (1200 trajectories, nu = 1e-3,
  T = 50, 256^2 simulated, 64^2 stored, HDF5 included; target <= 15 min), with a wall-time
  budget per command (--max-minutes); the partial file resumes and the row sums every command's
  time (the file's wall_time_s). ns_generate_floor: the CFL steps the batches took (the file's
  diagnostics/time_steps) x the FFT time of one step at the generation's batch and grid.
  --small: the extrapolation ceil(1200/B) x steps x ms/step from a measured T = 50 trajectory
  instead.
* burgers: FNO's Burgers set (GRF sigma 25, tau 5, alpha 2; nu = 0.1; T = 1), fp64,
  automatic step; full: 2048 x 8192.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import add_dry_run, dry_run_done, minutes_left_in_session, sync, time_call, write_result  # noqa: E402
from solvers.pde._spectral import etdrk4_coefficients, etdrk4_step  # noqa: E402
from solvers.pde.burgers import burgers_step_size, solve_burgers  # noqa: E402
from solvers.pde.darcy import DarcySolver, darcy_coefficient  # noqa: E402
from solvers.pde.grf import GaussianRandomField  # noqa: E402
from solvers.pde.navier_stokes import NavierStokes2D  # noqa: E402


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def darcy_rows(device, n, s, batch):
    import h5py

    def run():
        gen = torch.Generator(device=device).manual_seed(0)
        solver = DarcySolver(rtol=1e-10)
        iters, worst = 0, 0.0
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "darcy.h5")
            with h5py.File(path, "w") as f:
                coeff = f.create_dataset("coeff", (n, s, s), dtype="f4")
                sol = f.create_dataset("sol", (n, s, s), dtype="f4")
                for start in range(0, n, batch):
                    m = min(batch, n - start)
                    a = darcy_coefficient(m, s, generator=gen, device=device)
                    out = solver.solve(a, 1.0)
                    coeff[start:start + m] = a.float().cpu().numpy()
                    sol[start:start + m] = out.value.float().cpu().numpy()
                    iters = max(iters, int(out.stats["num_steps"].max()))
                    worst = max(worst, float(out.stats["residual_norm"].max()))
            size = os.path.getsize(path)
        return iters, worst, size

    (iters, worst, size), seconds = timed(run, device)
    # floor: the PCG iterations' dominant kernels alone (stencil matvec + DST preconditioner)
    a = darcy_coefficient(batch, s, generator=torch.Generator(device=device).manual_seed(1), device=device)
    apply_pc, matvec = DarcySolver.preconditioner(a), DarcySolver.operator(a)
    r = torch.randn(batch, s - 2, s - 2, device=device, dtype=a.dtype)
    per_iter = time_call(lambda: apply_pc(matvec(r)), device=device, warmup=2, repeat=5)
    floor = per_iter * iters * math.ceil(n / batch)
    return [dict(task="darcy", size=f"{n} x {s}^2 (batch {batch})", metric="total time incl. GRF + HDF5 write",
                 value=seconds, unit="s", target="<= 10 s (1024 x 421^2)",
                 note=f"PCG max {iters} iterations, fp64 rtol 1e-10; file {size / 2**20:.0f} MiB"),
            dict(task="darcy_floor", size=f"{n} x {s}^2 (batch {batch})", metric="iterations x (matvec + preconditioner)",
                 value=floor, unit="s", target="", note=f"{1e3 * per_iter:.2f} ms per iteration per batch of {batch}")]


def ns_step_rows(device, s, batch, steps):
    w0 = GaussianRandomField((s, s), alpha=2.5, tau=7.0, device=device, dtype=torch.float32).sample(
        batch, generator=torch.Generator(device=device).manual_seed(0))
    solver = NavierStokes2D(nu=1e-3)
    ops = solver._setup(w0)
    N = solver._nonlinear(ops)
    dt = 0.5 / s / 1.0  # CFL 0.5 at max(|u|+|v|) = 1 (typical of the forced nu = 1e-3 flow)
    c = etdrk4_coefficients(-solver.nu * ops["lap"], dt, dtype=torch.complex64)
    w_hat = torch.fft.rfft2(w0)

    def run_steps():
        v = w_hat
        for _ in range(steps):
            v = etdrk4_step(v, N, c)
        return v

    stacked = torch.stack((w_hat, w_hat, w_hat, w_hat))

    def run_ffts():
        for _ in range(steps):
            for _ in range(4):
                torch.fft.irfft2(stacked, s=(s, s))
                torch.fft.rfft2(w0)

    timed(lambda: [etdrk4_step(w_hat, N, c) for _ in range(3)], device)  # warm-up
    _, t_step = timed(run_steps, device)
    _, t_fft = timed(run_ffts, device)
    ms, ms_fft = 1e3 * t_step / steps, 1e3 * t_fft / steps
    return ms, ms_fft, [
        dict(task="ns_step", size=f"{batch} x {s}^2 fp32", metric="ETDRK4 step", value=ms, unit="ms",
             target="", note=f"{steps} steps; {batch * steps / t_step:.0f} sample-steps/s"),
        dict(task="ns_fft_floor", size=f"{batch} x {s}^2 fp32", metric="FFTs of one ETDRK4 step", value=ms_fft,
             unit="ms", target="", note="4 x (irfft2 of 4 stacked fields + rfft2)"),
    ]


def ns_accuracy_rows(device, s, n_ic, T, out_res):
    w0 = GaussianRandomField((s, s), alpha=2.5, tau=7.0, device=device).sample(
        n_ic, generator=torch.Generator(device=device).manual_seed(1))
    fast = NavierStokes2D(nu=1e-3)
    w_fast, t_fast = timed(lambda: fast.solve(w0, [T]), device)
    w_fno, t_fno = timed(lambda: NavierStokes2D(nu=1e-3, integrator="cn_euler", dt=1e-4).solve(w0, [T]), device)

    def rel(a, b):
        return ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).max().item()
    k = s // out_res
    err_full = rel(w_fast[:, -1], w_fno[:, -1])
    err_out = rel(w_fast[:, -1, ::k, ::k], w_fno[:, -1, ::k, ::k])
    steps = fast.last_steps
    rows = [dict(task="ns_accuracy", size=f"{n_ic} ICs, {s}^2, T={T:g}, fp64", metric="rel. L2 vs cn_euler dt=1e-4",
                 value=err_full, unit="", target="<= 1e-3 (T=50, 256^2)",
                 note=f"at {out_res}^2 (stride): {err_out:.2e}; ETDRK4 {steps} adaptive steps in {t_fast:.1f} s "
                      f"vs cn_euler {round(T / 1e-4)} steps in {t_fno:.1f} s")]
    return steps, rows


def burgers_rows(device, n_samples, n, batch):
    grf = GaussianRandomField((n,), alpha=2, tau=5, sigma=25, device=device)
    gen = torch.Generator(device=device).manual_seed(0)

    def run():
        for start in range(0, n_samples, batch):
            u0 = grf.sample(min(batch, n_samples - start), generator=gen)
            solve_burgers(u0, nu=0.1, times=[1.0])
        return float(u0.abs().max())

    solve_burgers(grf.sample(2, generator=gen), nu=0.1, times=[0.01])  # warm-up
    u_max, seconds = timed(run, device)
    dt = burgers_step_size(u_max, n, 0.1)
    return [dict(task="burgers", size=f"{n_samples} x {n}, T=1, fp64 (batch {batch})",
                 metric="total time incl. GRF", value=seconds, unit="s", target="",
                 note=f"ETDRK4, automatic dt ~ {dt:.2e} ({math.ceil(1 / dt)} steps)")]


def ns_generate_rows(device, root: str | None, max_minutes: float, preset: str | None = None,
                     overrides: tuple[str, ...] = ()) -> list[dict]:
    import h5py

    from sciml.data.generate import generate
    from sciml.data.recipes import load_recipe

    recipe = load_recipe("navier_stokes", preset=preset, overrides=list(overrides))
    # stopped in time, the partial file resumes; killed by the call's end, its last batch is lost
    max_minutes = minutes_left_in_session(max_minutes, reserve_s=30)
    path = generate(recipe, root=root, device=device, progress=True, max_minutes=max_minutes)
    with h5py.File(path, "r") as f:
        done, seconds = int(f.attrs["batches_done"]), float(f.attrs["generation_seconds"])
        size = path.stat().st_size
        # one count per batch (every sample of a batch records its batch's); absent in files made before it was kept
        steps = f["diagnostics/time_steps"][: done * recipe.batch_size: recipe.batch_size] \
            if "diagnostics/time_steps" in f else None
    n_batches = -(-recipe.n_samples // recipe.batch_size)
    complete = done == n_batches
    p = recipe.typed_params()
    size_text = f"{recipe.n_samples} x T={p.t_end} at {p.sim_resolution}^2 -> {p.resolution}^2 (batch {recipe.batch_size}, {p.precision})"
    rows = [dict(task="ns_generate", size=size_text,
                 metric="sciml generate, incl. GRF + HDF5" + ("" if complete else f" (partial: {done}/{n_batches} batches)"),
                 value=seconds, unit="s", target="<= 900 s (stretch 600 s)",
                 note=("complete" if complete else "rerun --parts ns_generate to resume") +
                      f"; file {size / 2**20:.0f} MiB; {path.name}")]
    if steps is not None and p.precision == "float32" and p.integrator == "etdrk4":
        # floor: the FFTs of every step the generation took, timed at the generation's batch and grid
        _, ms_fft, _ = ns_step_rows(device, p.sim_resolution, recipe.batch_size, steps=5)
        rows.append(dict(task="ns_generate_floor", size=size_text, metric="ETDRK4 steps taken x FFTs of one step",
                         value=float(steps.sum()) * ms_fft / 1e3, unit="s", target="",
                         note=f"{steps.mean():.0f} CFL steps per batch (mean of {len(steps)}); "
                              f"{ms_fft:.2f} ms of FFTs per step at batch {recipe.batch_size}"))
    return rows


def ns_estimate_rows(device, s, batch, ms, ms_fft) -> list[dict]:
    """CPU stand-in for ns_generate: a real T = 50 trajectory's CFL step count x the timed step."""
    w0 = GaussianRandomField((s, s), alpha=2.5, tau=7.0, device=device).sample(
        2, generator=torch.Generator(device=device).manual_seed(0)).float()
    solver = NavierStokes2D(nu=1e-3)
    _, seconds = timed(lambda: solver.solve(w0, list(range(1, 51))), device)
    steps = solver.last_steps
    batches = math.ceil(1200 / batch)
    return [dict(task="ns_total_estimate", size=f"1200 x T=50 at {s}^2 (batch {batch})",
                 metric="extrapolated total", value=batches * steps * ms / 1e3, unit="s",
                 target="<= 900 s (256^2, GPU)",
                 note=f"{steps} CFL steps in a measured T=50 trajectory ({seconds:.0f} s, batch 2); at 256^2 "
                      f"expect {steps * 256 // s} steps; FFT floor {batches * steps * ms_fft / 1e3:.0f} s")]


PARTS = ("darcy", "ns_step", "ns_accuracy", "burgers", "ns_generate")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="reduced sizes for a CPU smoke run")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--max-minutes", type=float, default=9.0, help="ns_generate: stop (resumably) after this")
    parser.add_argument("--root", default=None,
                        help="ns_generate: where the dataset goes (default datasets/, where the NS operator rows look)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a loaded 2-core machine, 2 threads ran the NS step 70x slower)")
    add_dry_run(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {list(PARTS)}")
    if dry_run_done(args):
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.small:
        cfg = dict(darcy=(32, 65, 32), ns_step=(64, 4, 20), ns_acc=(32, 2, 1.0, 16), burgers=(64, 1024, 64))
    else:
        cfg = dict(darcy=(1024, 421, 256), ns_step=(256, 64, 200), ns_acc=(256, 4, 50.0, 64), burgers=(2048, 8192, 1024))
    mode = "small (CPU smoke sizes)" if args.small else "full"
    name = "datagen_small" if args.small else "datagen"  # a CPU smoke run never replaces the GPU table
    rows = []

    def save(new_rows):  # after every part: a command stopped by its time limit keeps the finished parts
        rows.extend(new_rows)
        for row in new_rows:
            print(f"{row['task']:>18} | {row['size']:>36} | {row['metric']:>32} | {row['value']:.4g} {row['unit']} "
                  f"| {row['target']} | {row['note']}", flush=True)
        return write_result(name, title=f"Data generation: reference PDE solvers ({mode})",
                            rows=rows, merge_key=lambda r: r["task"], device=device,
                            notes="Darcy includes coefficient sampling and the HDF5 write; ns_generate is the recipe's "
                                  "own generation (CPU: extrapolated from timed steps); the accuracy row compares "
                                  "against FNO's own scheme.")

    if "darcy" in parts:
        save(darcy_rows(device, *cfg["darcy"]))
    if "ns_step" in parts or ("ns_generate" in parts and args.small):
        ms, ms_fft, step_rows = ns_step_rows(device, *cfg["ns_step"])
        save(step_rows)
    if "ns_accuracy" in parts:
        save(ns_accuracy_rows(device, *cfg["ns_acc"])[1])
    if "burgers" in parts:
        save(burgers_rows(device, *cfg["burgers"]))
    if "ns_generate" in parts:
        save(ns_estimate_rows(device, cfg["ns_step"][0], cfg["ns_step"][1], ms, ms_fft) if args.small
             else ns_generate_rows(device, args.root, args.max_minutes))
    print(f"wrote results/{name}.json")


if __name__ == "__main__":
    main()
