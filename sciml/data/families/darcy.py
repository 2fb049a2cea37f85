"""Darcy 2D: piecewise-constant coefficient a (12 / 3 from a thresholded GRF) -> u of -div(a grad u) = 1."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import PositiveFloat, PositiveInt, model_validator

from sciml.config import StrictModel
from sciml.data.h5 import FieldSpec
from sciml.data.recipes import FAMILIES, Layout, too_coarse


class DarcyParams(StrictModel):
    resolution: PositiveInt = 421  # nodes per axis, boundary included
    alpha: PositiveFloat = 2.0
    tau: PositiveFloat = 3.0
    high: PositiveFloat = 12.0
    low: PositiveFloat = 3.0
    forcing: float = 1.0
    rtol: PositiveFloat = 1e-10

    @model_validator(mode="after")
    def _grid(self) -> "DarcyParams":
        if self.resolution < 3:
            raise too_coarse("resolution", self.resolution, 3, "the Darcy solver needs at least 3 nodes per axis "
                             "(the boundary's and one inside)")
        return self


@FAMILIES.register("darcy2d", description="2D Darcy flow, u = 0 on the boundary; thresholded-GRF coefficient -> pressure",
                   source="Li et al. 2021 (FNO) benchmark")
class Darcy2D:
    Params = DarcyParams

    def layout(self, p: DarcyParams) -> Layout:
        s = p.resolution
        x = np.linspace(0.0, 1.0, s)
        return Layout(
            spatial_shape=(s, s), grid_kind="nodes", grid={"x": x, "y": x},
            fields=[FieldSpec("inputs", "a", ("x", "y"), (s, s), "coefficient a(x, y)"),
                    FieldSpec("outputs", "u", ("x", "y"), (s, s), "solution u(x, y), zero on the boundary")],
            attrs={
                "equation": "-div(a grad u) = f, u = 0 on the boundary of (0,1)^2",
                "domain": {"x": [0.0, 1.0], "y": [0.0, 1.0]},
                "boundary_conditions": {"all": {"type": "dirichlet", "value": 0.0}},
                "ic_sampler": {"type": "thresholded_grf", "alpha": p.alpha, "tau": p.tau, "boundary": "neumann",
                               "high": p.high, "low": p.low, "covariance": "tau^(2 alpha - 2) (-Laplacian + tau^2 I)^(-alpha)"},
                "solver": "solvers.pde.darcy (5-point FD, arithmetic face means, DST-preconditioned CG), float64",
                "solver_options": {"rtol": p.rtol, "forcing": p.forcing},
            })

    def generate(self, p: DarcyParams, n: int, *, generator: torch.Generator, device: torch.device):
        from solvers.pde.darcy import DarcySolver, darcy_coefficient

        a = darcy_coefficient(n, p.resolution, generator=generator, alpha=p.alpha, tau=p.tau, high=p.high,
                              low=p.low, device=device, dtype=torch.float64)
        sol = DarcySolver(rtol=p.rtol).solve(a, p.forcing)  # raises if a sample does not converge
        return {"inputs/a": a, "outputs/u": sol.value}, {
            "cg_steps": torch.as_tensor(sol.stats["num_steps"], dtype=torch.float64).expand(n),
            "residual": sol.stats["residual_norm"].double()}
