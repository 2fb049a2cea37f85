"""Diffusion-sorption 1D (PDEBench): constant u0 ~ U(0, 0.2) -> trajectory u(x, t) on 1024 cells, t in [0, 500]."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt, model_validator

from sciml.config import StrictModel
from sciml.data.h5 import FieldSpec
from sciml.data.recipes import FAMILIES, Layout, too_coarse


class DiffusionSorptionParams(StrictModel):
    resolution: PositiveInt = 1024  # cells
    t_end: PositiveFloat = 500.0
    n_times: PositiveInt = 101  # saved times, t_end * k / (n_times - 1), k = 0..n_times-1
    u0_low: float = 0.0
    u0_high: float = 0.2
    D: PositiveFloat = 5e-4
    porosity: PositiveFloat = 0.29
    rho_s: PositiveFloat = 2880.0
    k_f: PositiveFloat = 3.5e-4
    n_f: PositiveFloat = 0.874
    dt: PositiveFloat = 0.5

    @model_validator(mode="after")
    def _physical(self) -> "DiffusionSorptionParams":
        if not 0 <= self.u0_low <= self.u0_high:  # the isotherm reads max(u, 0): negative values went unnoticed
            raise ValueError(f"need 0 <= u0_low <= u0_high (concentrations), got u0_low={self.u0_low}, "
                             f"u0_high={self.u0_high}")
        if self.resolution < 3:
            raise too_coarse("resolution", self.resolution, 3, "the finite-volume solver needs at least 3 cells")
        if self.n_times < 2:  # linspace(0, t_end, 1) is [0]: the "solution" was u0 itself, a target equal to the input
            raise ValueError(f"n_times={self.n_times} would save only t = 0 (the saved times are t_end * k / (n_times - 1), "
                             f"k = 0..n_times-1, t = 0 included): set params.n_times to 2 or more (the recipe's 101: "
                             f"every t_end / 100)")
        if self.porosity >= 1:
            raise ValueError(f"porosity is a volume fraction below 1, got {self.porosity}")
        return self


@FAMILIES.register("diffusion_sorption1d", description="1D diffusion-sorption with Freundlich retardation (PDEBench)",
                   source="Takamoto et al. 2022 (PDEBench)")
class DiffusionSorption1D:
    Params = DiffusionSorptionParams
    layout_version = 2  # 2: /inputs/u0 added (files made before lack it)

    def times(self, p: DiffusionSorptionParams) -> np.ndarray:
        return np.linspace(0.0, p.t_end, p.n_times)

    def layout(self, p: DiffusionSorptionParams) -> Layout:
        s = p.resolution
        return Layout(
            spatial_shape=(s,), grid_kind="cells", grid={"x": (np.arange(s) + 0.5) / s, "t": self.times(p)},
            fields=[FieldSpec("inputs", "u0", ("x",), (s,), "initial concentration u(x, 0) (a constant per sample)"),
                    FieldSpec("outputs", "u", ("t", "x"), (p.n_times, s), "concentration u(x, t) at /grid/t")],
            attrs={
                "equation": "u_t = D / R(u) u_xx, R = 1 + (1 - phi)/phi rho_s k n_f u^(n_f - 1)",
                "domain": {"x": [0.0, 1.0], "t": [0.0, p.t_end]},
                "boundary_conditions": {"x0": "u = 1", "x1": "u = -D u_x (PDEBench Cauchy outflow)"},
                "ic_sampler": {"type": "uniform_constant", "low": p.u0_low, "high": p.u0_high},
                "solver": "solvers.pde.diffusion_sorption (finite volume, ROS2, batched tridiagonal solves)",
                "solver_options": {"dt": p.dt, "D": p.D, "porosity": p.porosity, "rho_s": p.rho_s, "k_f": p.k_f, "n_f": p.n_f},
            })

    def generate(self, p: DiffusionSorptionParams, n: int, *, generator: torch.Generator, device: torch.device):
        from solvers.pde.diffusion_sorption import solve_diffusion_sorption

        u0 = p.u0_low + (p.u0_high - p.u0_low) * torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        u = solve_diffusion_sorption(u0, times=self.times(p).tolist(), n_cells=p.resolution, D=p.D,
                                     porosity=p.porosity, rho_s=p.rho_s, k_f=p.k_f, n_f=p.n_f, dt=p.dt)
        return {"inputs/u0": u0[:, None].expand(n, p.resolution).to(u.dtype), "outputs/u": u}, {
            "u0": u0, "u_max": u.abs().amax((1, 2))}
