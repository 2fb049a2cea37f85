"""Burgers 1D: u0 ~ GRF on the periodic unit interval  ->  u(., t) of u_t + u u_x = nu u_xx."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt, model_validator

from sciml.config import StrictModel
from sciml.data.h5 import FieldSpec
from sciml.data.recipes import FAMILIES, Layout, too_coarse


class BurgersParams(StrictModel):
    nu: PositiveFloat = 0.1
    t_end: PositiveFloat = 1.0
    n_times: PositiveInt = 1  # snapshots saved at t_end * k / n_times, k = 1..n_times
    resolution: PositiveInt = 8192
    alpha: PositiveFloat = 2.0
    tau: PositiveFloat = 5.0
    sigma: PositiveFloat = 25.0
    # an upper bound on the step (None: the solver's own stable, accurate choice); a larger value than
    # that choice gives way to it, since ETDRK4's explicit advection is then inaccurate or unstable
    dt: PositiveFloat | None = None

    @model_validator(mode="after")
    def _grid(self) -> "BurgersParams":
        if self.resolution < 4:
            raise too_coarse("resolution", self.resolution, 4, "the pseudo-spectral Burgers solver needs at least 4 points")
        return self


@FAMILIES.register("burgers1d", description="1D viscous Burgers, periodic; GRF initial condition -> u(x, t)",
                   source="Li et al. 2021 (FNO) benchmark")
class Burgers1D:
    Params = BurgersParams

    def times(self, p: BurgersParams) -> np.ndarray:
        return p.t_end * np.arange(1, p.n_times + 1) / p.n_times

    def layout(self, p: BurgersParams) -> Layout:
        s = p.resolution
        return Layout(
            spatial_shape=(s,),
            grid_kind="periodic",
            grid={"x": np.arange(s) / s, "t": self.times(p)},
            fields=[FieldSpec("inputs", "u0", ("x",), (s,), "initial condition u(x, 0)"),
                    FieldSpec("outputs", "u", ("t", "x"), (p.n_times, s), "solution u(x, t) at /grid/t")],
            attrs={
                "equation": "u_t + u u_x = nu u_xx",
                "domain": {"x": [0.0, 1.0]},
                "boundary_conditions": {"x": "periodic"},
                "ic_sampler": {"type": "grf", "alpha": p.alpha, "tau": p.tau, "sigma": p.sigma, "boundary": "periodic",
                               "covariance": "sigma^2 (-Laplacian + tau^2 I)^(-alpha)"},
                "solver": "solvers.pde.burgers.solve_burgers (pseudo-spectral, 2/3 dealiasing, ETDRK4), float64",
                "solver_options": {"dt": p.dt},
            },
        )

    def generate(self, p: BurgersParams, n: int, *, generator: torch.Generator, device: torch.device):
        from solvers.pde.burgers import BurgersSolver, solve_burgers
        from solvers.pde.grf import GaussianRandomField

        grf = GaussianRandomField((p.resolution,), alpha=p.alpha, tau=p.tau, sigma=p.sigma, boundary="periodic",
                                  device=device, dtype=torch.float64)
        u0 = grf.sample(n, generator=generator)
        # params.dt is a cap: params.dt=0.5 at the automatic ~1e-3 left u(., 1) 2.7e-2 off (rel. L2)
        dt = None if p.dt is None else min(p.dt, BurgersSolver(nu=p.nu).step_size(u0))
        u = solve_burgers(u0, nu=p.nu, times=self.times(p).tolist(), dt=dt)
        diagnostics = {
            "mean_drift": (u[:, -1].mean(-1) - u0.mean(-1)).abs(),  # the mean is conserved exactly
            "max_abs": u.abs().amax(dim=(1, 2)),
        }
        return {"inputs/u0": u0, "outputs/u": u}, diagnostics
