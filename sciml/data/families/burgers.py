"""Burgers 1D: u0 ~ GRF on the periodic unit interval  ->  u(., t) of u_t + u u_x = nu u_xx."""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt, model_validator

from sciml.config import StrictModel
from sciml.data.h5 import FieldSpec
from sciml.data.recipes import FAMILIES, Layout, too_coarse


# Refuse solutions whose energy in the top third of the kept modes (solvers.pde._spectral.spectral_tail)
# exceeds this. Measured on the GRF data (4 samples, t <= 1, against 2048 points): the grid error is 3-10x
# this fraction (nu 1e-3..1e-2, 64..256 points), so 1e-3 bounds it near 1e-2; params.nu=0.001 at 64 points
# reads 4.4e-2 (error 0.2). The recipes and presets read at most 5.5e-5 (burgers_spacetime, 1200 samples;
# burgers at 256 and 8192 points ~1e-31): an 18x margin.
MAX_SPECTRAL_TAIL = 1e-3


def resolution_for(nu: float, u_max: float, tail: float = MAX_SPECTRAL_TAIL / 10) -> int:
    """Points that resolve a viscous front of jump <= 2 u_max to an energy `tail`: the tanh front of width
    2 nu / u_max has |c_k| ~ exp(-2 pi^2 nu k / u_max), whose energy past k = 2n/9 is exp(-16 pi^2 n nu / (9 u_max))
    (this predicts the measured 5e-4 at n nu = 0.64, u_max 1.5)."""
    return math.ceil(9 * math.log(1 / tail) * u_max / (16 * math.pi ** 2 * nu))


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
        from solvers.pde._spectral import spectral_tail
        from solvers.pde.burgers import BurgersSolver, solve_burgers
        from solvers.pde.grf import GaussianRandomField

        grf = GaussianRandomField((p.resolution,), alpha=p.alpha, tau=p.tau, sigma=p.sigma, boundary="periodic",
                                  device=device, dtype=torch.float64)
        u0 = grf.sample(n, generator=generator)
        # params.dt is a cap: params.dt=0.5 at the automatic ~1e-3 left u(., 1) 2.7e-2 off (rel. L2)
        dt = None if p.dt is None else min(p.dt, BurgersSolver(nu=p.nu).step_size(u0))
        u = solve_burgers(u0, nu=p.nu, times=self.times(p).tolist(), dt=dt)
        tail = float(spectral_tail(u).max())  # one sync per batch
        if tail > MAX_SPECTRAL_TAIL:
            u_max = float(u0.abs().max())
            need = max(2 * p.resolution, 2 ** math.ceil(math.log2(resolution_for(p.nu, u_max))))
            raise ValueError(
                f"params.resolution={p.resolution} does not resolve Burgers at params.nu={p.nu}: "
                f"{tail:.1e} of the energy sits in the top third of the kept modes (limit {MAX_SPECTRAL_TAIL:g}; "
                f"the fronts are under-resolved and ring). Set params.resolution={need} or more, or params.nu >= "
                f"{p.nu * resolution_for(p.nu, u_max) / p.resolution:.2g}")
        diagnostics = {
            "mean_drift": (u[:, -1].mean(-1) - u0.mean(-1)).abs(),  # the mean is conserved exactly
            "max_abs": u.abs().amax(dim=(1, 2)),
        }
        return {"inputs/u0": u0, "outputs/u": u}, diagnostics
