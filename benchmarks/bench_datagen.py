"""Data-generation speed and accuracy of the reference PDE solvers (solvers/pde).

Run from the repository root:
    PYTHONPATH=. python benchmarks/bench_datagen.py            # full sizes (GPU)
    PYTHONPATH=. python benchmarks/bench_datagen.py --small    # reduced sizes, CPU smoke run

Writes benchmarks/results/datagen.json (and $OUT/results/datagen.json when $OUT is set).

Rows:
* darcy: FNO's set, coefficient sampling (Neumann GRF 12/3) + DST-PCG solve (fp64,
  rtol 1e-10) + writing coefficient and solution as float32 to a plain h5py file, end to end.
  Full: 1024 x 421^2 (target <= 10 s on one GPU).
* ns_step / ns_fft_floor: ETDRK4 vorticity step (float32) at 256^2 for a batch, ms per step, and
  the time of its FFTs alone (4 stages x (one stacked irfft2 of 4 fields + one rfft2)).
* ns_total_estimate: 1200 trajectories, nu = 1e-3, T = 50 at 256^2 (target <= 15 min), from the
  measured ms/step and the number of CFL-adaptive steps a T = 50 trajectory took
  (ns_accuracy run), i.e. ceil(1200/B) x steps x ms/step; likewise the FFT-only floor.
* ns_accuracy: relative L2 at T between ETDRK4 (adaptive, cfl 0.5) and FNO's cn_euler at
  dt = 1e-4, same ICs (FNO GRF), FNO forcing, float64, at full and at 64^2 (stride) resolution.
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
from benchmarks.common import sync, write_result  # noqa: E402
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
    return [dict(task="darcy", size=f"{n} x {s}^2 (batch {batch})", metric="total time incl. GRF + HDF5 write",
                 value=seconds, unit="s", target="<= 10 s (1024 x 421^2)",
                 note=f"PCG max {iters} iterations, fp64 rtol 1e-10; file {size / 2**20:.0f} MiB")]


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="reduced sizes for a CPU smoke run")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.small:
        cfg = dict(darcy=(32, 65, 32), ns_step=(64, 4, 20), ns_acc=(32, 2, 1.0, 16), burgers=(64, 1024, 64))
    else:
        cfg = dict(darcy=(1024, 421, 256), ns_step=(256, 64, 200), ns_acc=(256, 4, 50.0, 64), burgers=(2048, 8192, 1024))
    rows = []
    rows += darcy_rows(device, *cfg["darcy"])
    s_step, b_step, n_step = cfg["ns_step"]
    ms, ms_fft, step_rows = ns_step_rows(device, s_step, b_step, n_step)
    rows += step_rows
    steps, acc_rows = ns_accuracy_rows(device, *cfg["ns_acc"])
    rows += acc_rows
    s_acc, _, T, _ = cfg["ns_acc"]
    # steps for T = 50 at the step-timing grid: CFL steps scale with s (and T)
    steps_50 = steps * (50.0 / T) * (s_step / s_acc)
    batches = math.ceil(1200 / b_step)
    total, floor = batches * steps_50 * ms / 1e3, batches * steps_50 * ms_fft / 1e3
    rows.append(dict(task="ns_total_estimate", size=f"1200 x T=50 at {s_step}^2 (batch {b_step})",
                     metric="extrapolated total", value=total, unit="s", target="<= 900 s (256^2)",
                     note=f"{steps_50:.0f} steps/trajectory (from ns_accuracy, scaled by grid and T); "
                          f"FFT floor {floor:.0f} s"))
    rows += burgers_rows(device, *cfg["burgers"])
    mode = "small (CPU smoke sizes)" if args.small else "full"
    path = write_result("datagen", title=f"Data generation: reference PDE solvers ({mode})", rows=rows,
                        device=device,
                        notes="Darcy includes coefficient sampling and the HDF5 write; NS total is extrapolated "
                              "from timed steps; the accuracy row compares against FNO's own scheme.")
    for row in rows:
        print(f"{row['task']:>18} | {row['size']:>36} | {row['metric']:>32} | {row['value']:.4g} {row['unit']} "
              f"| {row['target']} | {row['note']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
