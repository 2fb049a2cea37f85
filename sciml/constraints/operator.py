"""Operator learning from the PDE alone, on a grid: the problem, its loss, the model.

A `GridProblem` is a PDE on a tensor-product grid (space and time axes) with its conditions and
the data fields the operator takes as input (e.g. the initial value ``u0``). `PhysicsOperator`
maps those inputs to the solution on the whole grid: a backbone (an FNO) outputs u itself
("soft": the PDE is only the loss) or N basis fields that a `HardConstraint` combines by the
coefficients minimising the PDE's residual at collocation nodes and the conditions in least squares
(exact only where the basis can meet every row; with the built-in problems' many more rows than
fields, a compromise) ("hard"; with ``experts`` one set of coefficients
per block, PI-HC-MoE). `physics_loss` is the training loss of both: residual and condition norms on
the grid, no solution data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Callable, Mapping, Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from sciml.config import FiniteFloat, PositiveFiniteFloat
from sciml.constraints.hard import GridCondition, HardConstraint, derive
from sciml.pde.derivatives import Derivatives, GridDerivatives, Params, residual_terms, takes_params
from sciml.registry import Registry


@dataclass(frozen=True)
class GridProblem:
    """A PDE on a grid, for operator learning from its residual.

    residual: ``f(d, p)`` (or ``f(d)``) against `sciml.pde.Derivatives`: ``d.u_t + d.u * d.u_x
        - p.nu * d.u_xx``; the inputs are readable as data fields (``d.u0``).
    coords: the grid's axes in the order of the tensor's trailing dimensions, e.g. ``("x", "t")``.
    conditions: `GridCondition`s, e.g. ``GridCondition(lambda d: d.u - d.u0, at={"t": 0})``.
    params: PDE parameters; a dataset's recipe parameters of the same names replace them
        (`with_params`), so the problem always matches the data it is evaluated on.
    periodic: periodic axes (the grid excludes their right end).
    inputs: the names of the model's input channels, in order; each is a data field.
    output: the name of the solution field.
    derived: fields the residuals read like the solution that are linear maps of it on the whole
        grid, name (or a tuple of names) -> ``f({output: field}, spacing)`` (see `HardConstraint`),
        e.g. ``("u", "v")``, the velocity of a vorticity (`periodic_velocity`).
    families: the dataset families (a file's ``family``, e.g. "burgers1d") whose equation this is; an
        operator config refuses a file of another family. Empty: not declared (not checked; the
        parameters the file lacks are then warned of).
    initial: the input (data field) holding the solution at the first time node, for the layer's
        ``initial="exact"``; None: the input that the problem's condition at ``{"t": 0}`` compares the
        solution with (``d.u - d.u0``), found by evaluating it (`initial_field`).
    """

    residual: Callable[..., Any]
    coords: tuple[str, ...]
    conditions: tuple[GridCondition, ...] = ()
    params: Mapping[str, float] = field(default_factory=dict)
    periodic: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ("u0",)
    output: str = "u"
    derived: Mapping[str | tuple[str, ...], Callable] = field(default_factory=dict)
    families: tuple[str, ...] = ()
    initial: str | None = None

    def __post_init__(self):
        # each residual's calling convention, found once: the loss evaluates them every step
        object.__setattr__(self, "_with_params", tuple(takes_params(f) for f in
                                                       [self.residual, *(c.residual for c in self.conditions)]))

    def with_params(self, values: Mapping[str, Any]) -> "GridProblem":
        """The problem with those of `values` it has as parameters replaced (others ignored)."""
        return replace(self, params={k: float(values.get(k, v)) for k, v in self.params.items()})

    def data(self, x: Tensor) -> dict[str, Tensor]:
        """The input channels ``(batch, len(inputs), *grid)`` as the residuals' data fields."""
        if x.shape[1] != len(self.inputs):
            raise ValueError(f"the problem reads {len(self.inputs)} input field(s) {self.inputs}, the input has "
                             f"{x.shape[1]} channel(s)")
        return {name: x[:, i] for i, name in enumerate(self.inputs)}

    def layer(self, spacing: Sequence[float], origin: Sequence[float] | None = None, *, initial: str = "rows",
              **options: Any) -> HardConstraint:
        """The hard-constraint layer for this problem on a grid of `spacing` whose first node is at `origin`
        (default 0 on every axis; `options`: the layer's).

        initial: "rows" (default): the initial condition is least-squares rows like any condition, met only as
        well as the basis allows. "exact": the solution is ``u0 + m(t) sum_i w_i b_i`` with m(0) = 0
        (`HardConstraint`'s ``initial``), so u = u0 on the first time level by construction, and the
        initial-condition rows are dropped (`initial_field` says which problems allow it)."""
        if initial not in INITIAL_MODES:
            raise ValueError(f"initial must be one of {INITIAL_MODES}, got {initial!r}")
        conditions, exact = self.conditions, {}
        if initial == "exact":
            field, at_start = self.initial_field()
            conditions = tuple(c for i, c in enumerate(self.conditions) if i not in at_start)
            exact = {"initial": {self.output: field}, "initial_axis": "t"}
        return HardConstraint(self.residual, coords=self.coords, spacing=spacing, origin=origin, periodic=self.periodic,
                              params=dict(self.params), outputs=(self.output,), data_fields=self.inputs,
                              derived=dict(self.derived), conditions=conditions, **exact, **options)

    def initial_field(self) -> tuple[str, list[int]]:
        """The input holding the solution at t = 0 and the indices of the conditions on that level, which
        ``initial="exact"`` replaces; a ValueError where it cannot apply: no non-periodic "t" axis, no condition
        at ``{"t": 0}``, one there that is not ``c * (u - field)`` for an input (`initial`, else any), or one
        fixing t = 0 together with another axis (a corner: u is u0 there already)."""
        fix = "use initial='rows' (the initial condition as least-squares rows)"
        if "t" not in self.coords or "t" in self.periodic:
            raise ValueError(f"initial='exact' holds the solution's value on the first node of a non-periodic 't' axis; "
                             f"the problem's coordinates are {self.coords} (periodic {self.periodic}); {fix}")
        if self.initial is not None and self.initial not in self.inputs:
            raise ValueError(f"GridProblem.initial {self.initial!r} is not one of its inputs {self.inputs}")
        at_start = [i for i, c in enumerate(self.conditions) if c.at.get("t") == 0]
        corner = [dict(self.conditions[i].at) for i in at_start if set(self.conditions[i].at) != {"t"}]
        if corner:
            raise ValueError(f"initial='exact' fixes the solution on the whole t = 0 level, and condition(s) at {corner} "
                             f"constrain part of it too: drop them, or {fix}")
        if not at_start and self.initial is not None:  # declared, with no rows to drop
            return self.initial, []
        if not at_start:
            raise ValueError(f"initial='exact' replaces the initial condition, a GridCondition(lambda d: d.{self.output} - "
                             f"d.<input>, at={{'t': 0}}), and the problem has none at {{'t': 0}}; add it (or set "
                             f"GridProblem.initial to the input holding the initial value), or {fix}")
        fields = None
        for i in at_start:
            matches = [f for f in ((self.initial,) if self.initial else self.inputs) if self._compares(self.conditions[i], f)]
            if not matches:
                raise ValueError(f"initial='exact' needs the condition at {{'t': 0}} to be c * (d.{self.output} - d.<input>) "
                                 f"for an input among {(self.initial,) if self.initial else self.inputs}; condition {i} is "
                                 f"not (a derivative or another combination cannot be built into the field); {fix}")
            fields = matches if fields is None else [f for f in fields if f in matches]
        if fields is None or len(fields) != 1:
            raise ValueError(f"initial='exact': the conditions at {{'t': 0}} do not name one input as the initial value "
                             f"({fields}); set GridProblem.initial, or {fix}")
        return fields[0], at_start

    def _compares(self, condition: GridCondition, name: str) -> bool:
        """Whether `condition` is a nonzero multiple of (output - `name`), on random fields of a small grid."""
        g = torch.Generator().manual_seed(0)
        grid = tuple(8 for _ in self.coords)
        out = torch.randn(grid, generator=g, dtype=torch.float64)
        fields = {self.output: out, **derive(self.derived, {self.output: out}, (0.125,) * len(grid)),
                  **{f: torch.randn(grid, generator=g, dtype=torch.float64) for f in self.inputs}}
        d = GridDerivatives(fields, self.coords, (0.125,) * len(grid), periodic=self.periodic, method="fd")
        try:
            terms = residual_terms(condition.residual, d, Params(dict(self.params)))
        except Exception:  # noqa: BLE001 -- a residual that cannot run on these fields is not of the form
            return False
        if len(terms) != 1 or terms[0].shape != out.shape:
            return False
        diff = out - fields[name]
        scale = float((terms[0] * diff).sum() / (diff * diff).sum())
        return abs(scale) > 1e-12 and torch.allclose(terms[0], scale * diff, rtol=1e-10, atol=1e-10 * abs(scale))

    def fields(self, u: Tensor, x: Tensor, spacing: Sequence[float]) -> dict[str, Tensor]:
        """The solution ``(batch, *grid)``, its derived fields and the inputs' data fields, by name."""
        derived = derive(self.derived, {self.output: u}, tuple(float(h) for h in spacing))
        return {self.output: u, **derived, **self.data(x)}

    def terms(self, d: Derivatives, p: Params) -> tuple[list[Tensor], list[list[Tensor]]]:
        """The residual's terms and each condition's, on the fields `d` holds."""
        fns = [self.residual, *(c.residual for c in self.conditions)]
        out = [residual_terms(f, d, p, w) for f, w in zip(fns, self._with_params)]
        return out[0], out[1:]


INITIAL_MODES = ("rows", "exact")  # how the hard layer meets the initial condition (GridProblem.layer)
GRID_PROBLEMS: Registry = Registry("grid problem")


@GRID_PROBLEMS.register("burgers", description="viscous Burgers u_t + u u_x = nu u_xx, periodic x, from u0",
                        source="Chalapathi et al. 2024 (PI-HC-MoE)")
def burgers(nu: PositiveFiniteFloat = 0.02) -> GridProblem:
    return GridProblem(lambda d, p: d.u_t + d.u * d.u_x - p.nu * d.u_xx, ("x", "t"),
                       (GridCondition(lambda d: d.u - d.u0, at={"t": 0}),), {"nu": nu}, periodic=("x",),
                       families=("burgers1d",), initial="u0")


def periodic_velocity(w: Tensor, spacing: Sequence[float], axes: tuple[int, int] = (-3, -2)) -> tuple[Tensor, Tensor]:
    """The velocity (u, v) = (psi_y, -psi_x) of the vorticity `w` on a periodic grid, -Lap psi = w with
    psi of zero mean, spectrally (Nyquist modes' derivatives dropped, as `GridDerivatives`).

    w: ``(..., *grid)`` with x and y on `axes` (negative); spacing: the steps along those two axes.
    """
    ax, ay = axes
    nx, ny, (hx, hy) = w.shape[ax], w.shape[ay], spacing
    kx = torch.fft.fftfreq(nx, d=hx / (2 * math.pi), device=w.device, dtype=w.dtype).reshape(nx, *[1] * (-ax - 1))
    ky = torch.fft.rfftfreq(ny, d=hy / (2 * math.pi), device=w.device, dtype=w.dtype).reshape(-1, *[1] * (-ay - 1))
    lap = kx ** 2 + ky ** 2
    inv_lap = torch.where(lap > 0, 1 / torch.where(lap > 0, lap, 1.0), 0.0)
    if nx % 2 == 0:
        kx[nx // 2] = 0  # the Nyquist modes' derivatives (after the Laplacian, which keeps them)
    if ny % 2 == 0:
        ky[-1] = 0
    psi_hat = torch.fft.rfftn(w, dim=(ax, ay)) * inv_lap
    u = torch.fft.irfftn(1j * ky * psi_hat, s=(nx, ny), dim=(ax, ay))
    v = torch.fft.irfftn(-1j * kx * psi_hat, s=(nx, ny), dim=(ax, ay))
    return u, v


@GRID_PROBLEMS.register("navier_stokes", description="2D incompressible Navier-Stokes, vorticity form on the unit "
                        "torus: w_t + (u, v).grad w = nu Lap w + forcing (sin 2pi(x+y) + cos 2pi(x+y)), from w0",
                        source="Chalapathi et al. 2024 (PI-HC-MoE; unforced, nu = 1e-4); Li et al. 2021 (forcing)")
def navier_stokes(nu: PositiveFiniteFloat = 1e-4, forcing: FiniteFloat = 0.0) -> GridProblem:
    def residual(d, p):
        phase = 2 * math.pi * (d.x + d.y)
        return (d.w_t + d.u * d.w_x + d.v * d.w_y - p.nu * (d.w_xx + d.w_yy)
                - p.forcing * (torch.sin(phase) + torch.cos(phase)))

    # the velocity is a linear, non-local map of w: taken per basis field on the whole grid
    return GridProblem(residual, ("x", "y", "t"), (GridCondition(lambda d: d.w - d.w0, at={"t": 0}),),
                       {"nu": nu, "forcing": forcing}, periodic=("x", "y"), inputs=("w0",), output="w",
                       derived={("u", "v"): lambda f, h: periodic_velocity(f["w"], h[:2])},
                       families=("navier_stokes2d",), initial="w0")


@GRID_PROBLEMS.register("diffusion_sorption", description="1D diffusion-sorption u_t = D / R(u) u_xx with Freundlich "
                        "retardation R, u = 1 at the inflow, u = -D u_x at the outflow, both in the data solver's ghost "
                        "cells (half a cell of its grid outside x = 0, 1), from u0", source="Takamoto et al. 2022 "
                        "(PDEBench); Chalapathi et al. 2024 (PI-HC-MoE)")
def diffusion_sorption(D: PositiveFiniteFloat = 5e-4, porosity: PositiveFiniteFloat = 0.29,
                       rho_s: PositiveFiniteFloat = 2880.0, k_f: PositiveFiniteFloat = 3.5e-4,
                       n_f: PositiveFiniteFloat = 0.874, resolution: Annotated[float, Field(gt=0)] = 1024) -> GridProblem:
    """`resolution`: the cell count of the solver that made the data (the dataset's recipe value replaces
    it, as the other parameters): its boundary values sit in ghost cells half such a cell outside the
    faces; ``float("inf")`` puts the conditions at the faces x = 0, 1 (the continuum problem)."""
    def residual(d, p):
        # R's power is singular at u = 0 (n_f < 1): evaluated at max(u, 0) + 1e-6, as PDEBench's solver
        retardation = 1 + (1 - p.porosity) / p.porosity * p.rho_s * p.k_f * p.n_f * (d.u.clamp_min(0) + 1e-6) ** (p.n_f - 1)
        return d.u_t - p.D / retardation * d.u_xx

    # Where and as the data's solver (solvers/pde/diffusion_sorption.py, PDEBench's scheme) imposes them:
    # the left ghost cell, centred at -dx/2 (dx = 1 / resolution, its own grid's, whatever grid the loss
    # runs on), holds 1; the right one, at 1 + dx/2, holds -D times the slope across the last inner face.
    # Values there come by linear extrapolation from the end node (d.x: its coordinate, so the grid's origin
    # must be the data's), which the solver's solution meets to 6e-6 at 256 cells; u = 1 at the first cell
    # centre was off by 0.08. Not to second order: the u_xx term (4e-4 on the data) made a 4-node row of
    # gain 4.5 that sent two of three PI-HC seeds to rel. L2 0.63 (0.2 with these rows, CPU, 2026-11-27).
    def inflow(d, p):
        return d.u - (d.x + 0.5 / p.resolution) * d.u_x - 1  # back from the node to the ghost centre

    def outflow(d, p):
        return d.u + (1 + 0.5 / p.resolution - d.x + p.D) * d.u_x  # on to the ghost centre, plus D u_x

    after_start = slice(1, None)  # at t = 0 the initial value holds (u0 != 1 at the inflow)
    conditions = (GridCondition(lambda d: d.u - d.u0, at={"t": 0}),
                  GridCondition(inflow, at={"x": 0, "t": after_start}),
                  # the outflow's sign as PDEBench's code and our solver (its paper writes u = D u_x)
                  GridCondition(outflow, at={"x": -1, "t": after_start}))
    return GridProblem(residual, ("x", "t"), conditions, {"D": D, "porosity": porosity, "rho_s": rho_s, "k_f": k_f,
                                                          "n_f": n_f, "resolution": resolution},
                       families=("diffusion_sorption1d",), initial="u0")


def get_grid_problem(name: str, **args: Any) -> GridProblem:
    """The problem registered as `name` (or ``"module:attr"``: a GridProblem or a factory of one)."""
    return GRID_PROBLEMS.instance(name, GridProblem, **args)


def problems_for_family(family: str) -> list[str]:
    """The registered grid problems whose declared `GridProblem.families` hold `family`."""
    return [name for name in GRID_PROBLEMS if family in get_grid_problem(name).families]


LAYER_OPTIONS = ("experts", "points", "shared_conditions", "overlap", "ridge", "max_steps", "rtol", "atol", "on_failure",
                 "initial")


def check_soft_options(constraint: str, options: Sequence[str]) -> None:
    """The soft constraint has no layer: layer options given to `PhysicsOperator` with it would be ignored, so they
    are refused (a config's are warned of when it trains: `PhysicsConfig.ignored_layer_options`)."""
    if constraint == "soft" and options:
        raise ValueError(f"the soft constraint has no layer; drop {sorted(options)} or use constraint 'hard'")


def physics_loss(u: Tensor, x: Tensor, problem: GridProblem, spacing: Sequence[float],
                 origin: Sequence[float] | None = None) -> Tensor:
    """Mean over samples of the residual's L2 norm on the grid plus each condition's on its nodes
    (norms, not squares, as Chalapathi et al.), both scaled by the cell size so that refining the
    grid keeps the value. Second-order finite differences on every axis, so that a jump between two
    experts' blocks only touches its neighbours.

    u: (batch, 1, *grid) the solution; x: (batch, len(problem.inputs), *grid) the inputs; origin: the
    coordinates of the first node (default 0; a cell-centred grid starts half a cell in), which a residual
    or condition reading ``d.x`` sees.
    """
    d = GridDerivatives(problem.fields(u[:, 0], x, spacing), problem.coords, spacing, origin=origin,
                        periodic=problem.periodic, method="fd")
    pde, conditions = problem.terms(d, Params(dict(problem.params)))
    cell = math.sqrt(math.prod(spacing))
    total = sum((r * cell).flatten(1).norm(dim=1) for r in pde)
    for c, rows in zip(problem.conditions, conditions):
        nodes = (slice(None),) + tuple(c.at.get(name, slice(None)) for name in problem.coords)
        face = math.sqrt(math.prod(h for name, h in zip(problem.coords, spacing) if not isinstance(c.at.get(name), int)))
        total = total + c.weight * face * sum(r[nodes].flatten(1).norm(dim=1) for r in rows)
    return total.mean()


class PhysicsOperator(nn.Module):
    """Inputs ``(batch, len(problem.inputs), *grid)`` in physical units -> u ``(batch, 1, *grid)``.

    constraint "soft": the backbone outputs u (one channel). "hard": it outputs `n_basis` fields
    and a `HardConstraint` fits u to the problem at sampled nodes in least squares; `layer` options
    (``experts``, ``points``, ``overlap``, ``ridge``, ``max_steps``, ...) go to that layer, and
    ``initial="exact"`` builds the initial value into the field (`GridProblem.layer`).
    `backbone` is built by the caller with ``out_channels = 1`` (soft) or ``n_basis`` (hard). `origin`: the
    grid's first coordinate per axis (default 0), for the loss and the layer alike.
    """

    def __init__(self, backbone: nn.Module, problem: GridProblem, spacing: Sequence[float], *,
                 origin: Sequence[float] | None = None, constraint: str = "hard", **layer: Any):
        super().__init__()
        if constraint not in ("soft", "hard"):
            raise ValueError(f"constraint must be 'soft' or 'hard', got {constraint!r}")
        check_soft_options(constraint, list(layer))
        self.backbone, self.problem, self.spacing = backbone, problem, tuple(float(h) for h in spacing)
        self.origin = (0.0,) * len(self.spacing) if origin is None else tuple(float(o) for o in origin)
        if len(self.origin) != len(self.spacing):
            raise ValueError(f"origin needs one value per grid axis {problem.coords}, got {list(origin)}")
        self.layer = None if constraint == "soft" else problem.layer(self.spacing, self.origin, **layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.backbone(x)
        if self.layer is None:
            return out
        return self.layer(out, self.problem.data(x))[:, None]

    def loss(self, u: Tensor, x: Tensor) -> Tensor:
        """`physics_loss` of this model's problem on its grid."""
        return physics_loss(u, x, self.problem, self.spacing, self.origin)
