"""Navier-Stokes 2D (vorticity, unit torus): GRF initial vorticity -> trajectory w(x, y, t) at n_times uniform times to T."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from sciml.config import StrictModel
from sciml.data.h5 import FieldSpec
from sciml.data.recipes import FAMILIES, Layout, too_coarse
from solvers.pde.navier_stokes import DEFAULT_SPEED_CHECKS


class NavierStokesParams(StrictModel):
    nu: PositiveFloat = 1e-3
    t_end: PositiveFloat = 50.0
    n_times: PositiveInt | None = None  # snapshots at t_end * k / n_times, k = 1..n_times; default one per time unit
    forcing: NonNegativeFloat = 0.1  # f = forcing * (sin 2pi(x+y) + cos 2pi(x+y)): FNO's 0.1; 0 unforced (PI-HC-MoE)
    sim_resolution: PositiveInt = 256
    resolution: PositiveInt = 64  # stored (stride subsampling of the simulation grid, as FNO)
    alpha: PositiveFloat = 2.5
    tau: PositiveFloat = 7.0
    sigma: PositiveFloat | None = None  # the GRF's amplitude; default FNO's tau^(alpha - 1)
    integrator: str = "etdrk4"
    dt: PositiveFloat | None = None
    cfl: PositiveFloat = 1.0  # adaptive step's Courant number when dt is None (see solvers.pde.navier_stokes)
    # Solver arithmetic. float32 halves the bytes an FFT moves (the GPU step is bandwidth-bound);
    # measured vs float64 at 64^2, T = 50: rel. L2 2.4e-5, far below the CN comparison's 1e-3.
    precision: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _snapshots_are_defined(self) -> "NavierStokesParams":
        if self.sim_resolution < 4:  # the stored grid (params.resolution) divides it
            raise too_coarse("sim_resolution", self.sim_resolution, 4, "the pseudo-spectral solver needs at least 4 "
                             "points per axis (params.resolution, the stored grid, divides it)")
        if self.n_times is None and self.t_end != round(self.t_end):
            raise ValueError(f"t_end={self.t_end} is not a whole number of time units, which the default snapshots "
                             f"(one per unit) need; set n_times (e.g. n_times: {max(1, round(10 * self.t_end))})")
        return self

    @property
    def snapshots(self) -> int:
        return self.n_times or round(self.t_end)


@FAMILIES.register("navier_stokes2d", description="2D incompressible Navier-Stokes, vorticity form on the torus, "
                   "FNO's forcing (scaled, or none); GRF w0 -> w(t), t = 1..T or n_times steps to T",
                   source="Li et al. 2021 (FNO) benchmark")
class NavierStokes2DFamily:
    Params = NavierStokesParams

    def times(self, p: NavierStokesParams) -> np.ndarray:
        return p.t_end * np.arange(1, p.snapshots + 1, dtype=float) / p.snapshots

    def layout(self, p: NavierStokesParams) -> Layout:
        s, n_times = p.resolution, p.snapshots
        if p.sim_resolution % s:
            raise ValueError(f"resolution={s} must divide sim_resolution={p.sim_resolution} (stride subsampling)")
        x = np.arange(s) / s
        return Layout(
            spatial_shape=(s, s), grid_kind="periodic", grid={"x": x, "y": x, "t": self.times(p)},
            fields=[FieldSpec("inputs", "w0", ("x", "y"), (s, s), "initial vorticity"),
                    FieldSpec("outputs", "w", ("t", "x", "y"), (n_times, s, s), "vorticity at /grid/t")],
            attrs={
                "equation": "w_t + u.grad w = nu Lap w + f, u = (psi_y, -psi_x), -Lap psi = w; "
                            f"f = {p.forcing} (sin 2pi(x+y) + cos 2pi(x+y))",
                "domain": {"x": [0.0, 1.0], "y": [0.0, 1.0]},
                "boundary_conditions": {"x": "periodic", "y": "periodic"},
                "ic_sampler": {"type": "grf", "alpha": p.alpha, "tau": p.tau, "boundary": "periodic",
                               "sigma": p.sigma or "tau^(alpha - 1)", "resolution": p.sim_resolution},
                "solver": f"solvers.pde.navier_stokes (pseudo-spectral, 2/3 dealiasing, {p.integrator}), "
                          f"simulated at {p.sim_resolution}^2, stored by stride",
                "solver_options": {"integrator": p.integrator, "dt": p.dt, "cfl": p.cfl,
                                   "speed_checks_per_interval": DEFAULT_SPEED_CHECKS, "precision": p.precision},
            })

    def generate(self, p: NavierStokesParams, n: int, *, generator: torch.Generator, device: torch.device):
        from solvers.pde.grf import GaussianRandomField
        from solvers.pde.navier_stokes import NavierStokes2D, fno_forcing

        s, dtype = p.sim_resolution, getattr(torch, p.precision)
        # FNO's sigma = tau^(alpha - d/2) with d = 2
        grf = GaussianRandomField((s, s), alpha=p.alpha, tau=p.tau, sigma=p.sigma, boundary="periodic", device=device,
                                  dtype=torch.float64)
        w0 = grf.sample(n, generator=generator).to(dtype)  # drawn in float64 either way
        # FNO's forcing (amplitude 0.1) scaled, in the solver's dtype: at 0.1 the factor is exactly 1 (FNO's data)
        forcing = None if p.forcing == 0 else fno_forcing(s, device=device, dtype=dtype) * (p.forcing / 0.1)
        solver = NavierStokes2D(nu=p.nu, forcing=forcing, integrator=p.integrator, dt=p.dt, cfl=p.cfl,
                                out_resolution=p.resolution)
        w = solver.solve(w0, self.times(p).tolist())
        stride = s // p.resolution
        return {"inputs/w0": w0[:, ::stride, ::stride], "outputs/w": w}, {
            "mean_vorticity": w[:, -1].mean((-1, -2)).abs(),
            "enstrophy_final": w[:, -1].square().mean((-1, -2)),
            # the batch steps together (one CFL step for all): each sample records its batch's count
            "time_steps": torch.full((n,), float(solver.last_steps), device=w.device)}
