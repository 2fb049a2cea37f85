"""Lagrangian PINN for convection–diffusion (Mojgani, Balajewicz & Hassanzadeh, CMAME 2023).

Eulerian:   u_t + β u_x − ν u_xx = 0,  x ∈ [0, 2π) periodic, u(x, 0) = sin x.
Lagrangian: along characteristics X(ξ, t) with X(ξ, 0) = ξ,

    X_t − β = 0,                 u_t − ν u_XX = 0,
    u_X = u_ξ / X_ξ,  u_XX = (u_ξξ X_ξ − u_ξ X_ξξ) / X_ξ³   (chain rule, any X(ξ, t)),

so the advection that makes the Eulerian PINN fail at large β (Krishnapriyan et al. 2021)
disappears from the solution branch. Two branches (`LagrangianPINN`): one net for the
characteristic X(ξ, t) = ξ + t N_X(ξ, t), one for the solution u(ξ, t) = u0(ξ) + t N_u(ξ, t),
both periodic in ξ. Exact: X = ξ + βt, u = e^{−νt} sin ξ; Eulerian u = e^{−νt} sin(x − βt).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from sciml.pde.conditions import Initial, Periodic
from sciml.pde.geometry import Interval
from sciml.pde.nets import MLP
from sciml.pde.problem import Problem
from sciml.pde.problems import _grid_xt

TWO_PI = 2 * math.pi


class LagrangianPINN(nn.Module):
    """Two branches ``(n, 2) -> (n, 2)``: columns (X, u) at inputs (ξ, t).

    Args: period: ξ-period L (2π); u0: initial value function of ξ ``(n,) -> (n,)``;
    remaining keywords go to both `MLP` branches (width, depth, activation, harmonics, ...).
    """

    def __init__(self, *, period: float = TWO_PI, u0=torch.sin, seed: int | None = 0, **mlp):
        super().__init__()
        mlp.setdefault("harmonics", 1)
        self.char = MLP(2, 1, periodic={0: period}, seed=seed, **mlp)
        self.sol = MLP(2, 1, periodic={0: period}, seed=None if seed is None else seed + 1, **mlp)
        self.u0 = u0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        xi, t = z[:, 0], z[:, 1]
        X = xi + t * self.char(z)[:, 0]
        u = self.u0(xi) + t * self.sol(z)[:, 0]
        return torch.stack([X, u], -1)


def _lagrangian_residual(d, p):
    X_xi, X_xixi = d("X", "xi"), d("X", "xi", "xi")
    u_xi, u_xixi = d("u", "xi"), d("u", "xi", "xi")
    u_XX = (u_xixi * X_xi - u_xi * X_xixi) / X_xi**3
    return {"characteristic": d("X", "t") - p.beta, "transport": d("u", "t") - p.nu * u_XX}


def convection_diffusion(beta: float = 30.0, nu: float = 0.0, frame: str = "lagrangian") -> Problem:
    """u_t + β u_x = ν u_xx on [0, 2π) periodic, t ∈ [0, 1], u0 = sin x, in either frame.

    Args: frame: "lagrangian" (two-branch `LagrangianPINN`, outputs X and u at (ξ, t); its
    network is built by the problem) or "eulerian" (one MLP for u at (x, t)).
    ``rel_l2`` is the error of the physical solution in both frames: for the Lagrangian one, u(ξ, t)
    against the exact solution where the net puts the characteristic, e^{−νt} sin(X(ξ, t) − βt).
    (u against e^{−νt} sin ξ alone, ``rel_l2_u``, cannot see a wrong X: with ν = 0 any X fits it.)
    """
    grid = _grid_xt(0, TWO_PI, 256, 0, 1, 101, periodic=True)
    if frame == "eulerian":
        return Problem(
            domain=Interval(0, TWO_PI).with_time(0, 1),
            residual=lambda d, p: d.u_t + p.beta * d.u_x - p.nu * d.u_xx,
            conditions=[Periodic("x", order=1), Initial(lambda x: torch.sin(x[:, 0]))],
            params={"beta": beta, "nu": nu}, eval_points=grid, name=f"convection_diffusion(eulerian, beta={beta:g})",
            reference=lambda x: torch.exp(-nu * x[:, 1]) * torch.sin(x[:, 0] - beta * x[:, 1]))
    if frame != "lagrangian":
        raise ValueError(f"frame must be 'lagrangian' or 'eulerian', got {frame!r}")
    return Problem(
        domain=Interval(0, TWO_PI).with_time(0, 1), residual=_lagrangian_residual, outputs=("X", "u"), coords=("xi", "t"),
        params={"beta": beta, "nu": nu}, eval_points=grid, name=f"convection_diffusion(lagrangian, beta={beta:g})",
        reference=lambda z: torch.stack([z[:, 0] + beta * z[:, 1], torch.exp(-nu * z[:, 1]) * torch.sin(z[:, 0])], -1),
        network=lambda **net: LagrangianPINN(**net), eval_error=functools.partial(_eulerian_frame_error, beta, nu))


def _eulerian_frame_error(beta: float, nu: float, z: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """||u(ξ, t) − u_exact(X(ξ, t), t)|| / ||u_exact(X(ξ, t), t)|| at the points z = (ξ, t)."""
    exact = torch.exp(-nu * z[:, 1]) * torch.sin(pred[:, 0] - beta * z[:, 1])
    return (pred[:, 1] - exact).norm() / exact.norm().clamp_min(1e-300)
