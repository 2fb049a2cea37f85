"""Deep equilibrium models: the output is a fixed point z* = f(z*, x; theta) of a cell.

Bai, Kolter & Koltun, "Deep Equilibrium Models", NeurIPS 2019.  The forward finds z* with any
fixed-point solver (Anderson by default) without storing the iterations; the backward is chosen
by ``backward``:

  "implicit"   exact IFT gradient: solve (I - df/dz)^T u = dL/dz* (memory independent of the
               number of forward iterations; `solvers.implicit.Implicit`)
  "phantom"    backprop through ``phantom_steps`` damped steps from z* (Geng et al. 2021)
  "one_step"   Jacobian-free backprop: one step, (I - df/dz)^{-1} ~ I (Fung et al. 2022)
  "unrolled"   backprop through every forward iteration (reference; memory grows with them)

`DEQ` wraps any cell ``cell(z, x) -> z``; `DEQNet` is a registrable operator
``(batch, C_in, *grid) -> (batch, C_out, *grid)``: a pointwise lift, a convolutional DEQ cell
z <- tanh(conv(z) + lift(x)), and a pointwise head.
"""

from __future__ import annotations

from typing import Any, Optional

import math

import torch
from torch import Tensor, nn

from sciml.models._validate import check_dtypes, check_input
from solvers.implicit import Implicit, OneStep, Phantom, Unrolled, default_rtol, fixed_point
from solvers.linear import GMRES
from solvers.nonlinear import Anderson

__all__ = ["DEQ", "DEQNet"]

BACKWARDS = ("implicit", "phantom", "one_step", "unrolled")


class _AdjointGMRES:
    """DEQ's default adjoint solve: GMRES at `Implicit`'s default rtol for the system's dtype, known only at the
    backward (a fixed 1e-5 left float64 gradients 4e-6 off), and at most 90 steps, which bound a training step's
    cost when the cell is near non-contractive."""

    name = "gmres"

    def __call__(self, matvec, b: Tensor, *, throw: bool = True):
        return GMRES(rtol=default_rtol(b.dtype), restart=30, max_steps=90)(matvec, b, throw=throw)

    def __repr__(self) -> str:
        return "GMRES(rtol=default_rtol(dtype), restart=30, max_steps=90)"


class DEQ(nn.Module):
    """z* = cell(z*, x): a fixed-point layer with a selectable backward.

    cell: nn.Module with ``cell(z, x) -> z`` (same shape as z); its parameters are passed to the
      solver explicitly, so they all receive gradients.
    solver: a fixed-point solver ``solver(T, z0, *args, throw=False) -> Solution``
      (default ``Anderson(memory=5, rtol=1e-6, max_steps=50)``).
    backward: one of "implicit", "phantom", "one_step", "unrolled" (see the module docstring).
    backward_solve: the adjoint linear solver for "implicit" (default GMRES, at most 90 steps, with
      `Implicit`'s tolerance for the dtype: rtol 1e-10 in float64, 50 ulp = 6e-6 in float32).
    phantom_steps, phantom_damping: for "phantom".
    on_failure: "warn" (default: a non-converged forward or backward solve warns and goes on) or
      "raise" (`solvers.SolveError`).  Never silently zero.
    After each call ``last_solution`` holds the forward `Solution` (status, num_steps, residual).

    forward(x, z0=None): x is whatever the cell takes as injection; z0 defaults to zeros_like(x)
    (give it when z and x differ in shape).  Returns z* with the shape of z0.
    """

    def __init__(self, cell: nn.Module, *, solver: Any = None, backward: str = "implicit",
                 backward_solve: Any = None, phantom_steps: int = 5, phantom_damping: float = 0.5,
                 on_failure: str = "warn"):
        super().__init__()
        if not isinstance(cell, nn.Module):
            raise TypeError(f"DEQ: cell must be an nn.Module cell(z, x) -> z, got {type(cell).__name__}")
        if backward not in BACKWARDS:
            raise ValueError(f"DEQ: backward={backward!r} is not valid; use one of {list(BACKWARDS)}")
        self.cell = cell
        self.solver = solver if solver is not None else Anderson(memory=5, rtol=1e-6, max_steps=50)
        self.backward = backward
        if backward == "implicit":
            bs = backward_solve if backward_solve is not None else _AdjointGMRES()
            self.adjoint = Implicit(bs, on_failure=on_failure)
        elif backward == "phantom":
            self.adjoint = Phantom(phantom_steps, phantom_damping, on_failure=on_failure)
        elif backward == "one_step":
            self.adjoint = OneStep(on_failure=on_failure)
        else:
            self.adjoint = Unrolled(on_failure=on_failure)
        self.last_solution = None

    def forward(self, x: Tensor, z0: Optional[Tensor] = None) -> Tensor:
        names = [n for n, _ in self.cell.named_parameters()]
        params = [p for _, p in self.cell.named_parameters()]
        cell = self.cell
        check_dtypes("DEQ", {"x": x, "z0": z0}, params)
        guessed = z0 is None

        def T(z, x, *ps):
            try:
                out = torch.func.functional_call(cell, dict(zip(names, ps)), (z, x))
            except RuntimeError as e:
                if not guessed or type(e) is not RuntimeError:  # torch's shape errors; not a SolveError, not OOM
                    raise
                # the usual cause: z* has another shape than x, and the zeros_like(x) start does not fit the cell
                raise RuntimeError(f"DEQ: the cell failed on z0 = zeros_like(x), shape {tuple(z.shape)}; if z does "
                                   f"not have x's shape, pass z0: deq(x, z0=torch.zeros(batch, *z_shape)) "
                                   f"(the cell's error: {e})") from e
            if out.shape != z.shape:
                raise ValueError(f"DEQ: the cell returned shape {tuple(out.shape)} for z of shape {tuple(z.shape)}; "
                                 f"a fixed point needs cell(z, x) shaped like z" + ("; z0 defaults to zeros_like(x): "
                                 "if z does not have x's shape, pass z0" if guessed else ""))
            return out

        z0 = torch.zeros_like(x) if z0 is None else z0
        sol = fixed_point(T, z0, x, *params, solver=self.solver, adjoint=self.adjoint)
        self.last_solution = type(sol)(sol.value.detach(), sol.status, sol.stats)
        return sol.value

    def extra_repr(self) -> str:
        return f"backward={self.backward!r}, adjoint={self.adjoint!r}"


class _ConvCell(nn.Module):
    """z <- tanh(conv(z) + u); small initial weights keep the map contractive at start."""

    def __init__(self, conv: type, width: int, kernel_size: int, init_scale: float):
        super().__init__()
        self.conv = conv(width, width, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.conv.weight.mul_(init_scale)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return torch.tanh(self.conv(z) + u)


class DEQNet(nn.Module):
    """Convolutional deep-equilibrium operator (batch, C_in, *grid) -> (batch, C_out, *grid).

    u = lift(x) (1x1 conv to ``width``), z* = tanh(conv_k(z*) + u) by `DEQ`, y = head(z*).
    Options: width, kernel_size (odd), n_dims in {1, 2, 3}, backward ("implicit" | "phantom" |
    "one_step" | "unrolled"), max_steps and rtol of the Anderson forward solver, init_scale of
    the cell's conv weights (< 1 keeps the cell contractive at initialisation), on_failure.
    """

    def __init__(self, *, in_channels: int, out_channels: int, n_dims: int, width: int = 32, kernel_size: int = 3,
                 backward: str = "implicit", max_steps: int = 30, rtol: float = 1e-4, init_scale: float = 0.5,
                 on_failure: str = "warn"):
        super().__init__()
        convs = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
        if n_dims not in convs:
            raise ValueError(f"DEQNet: n_dims={n_dims!r} is not supported; use 1, 2 or 3")
        if kernel_size % 2 != 1:
            raise ValueError(f"DEQNet: kernel_size={kernel_size!r} must be odd (same-size padding)")
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"DEQNet: init_scale={init_scale!r} must be a positive number (it scales the cell's conv "
                             f"weights; below 1 keeps the cell contractive at initialisation)")
        conv = convs[n_dims]
        self.in_channels, self.n_dims = in_channels, n_dims
        self.lift = conv(in_channels, width, 1)
        self.deq = DEQ(_ConvCell(conv, width, kernel_size, init_scale),
                       solver=Anderson(memory=5, rtol=rtol, max_steps=max_steps),
                       backward=backward, on_failure=on_failure)
        self.head = conv(width, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, in_channels, *grid) -> (batch, out_channels, *grid)."""
        check_input("DEQNet", x, self.in_channels, self.n_dims)
        check_dtypes("DEQNet", {"x": x}, self.lift.parameters())
        return self.head(self.deq(self.lift(x)))

