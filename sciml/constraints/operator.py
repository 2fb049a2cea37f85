"""Operator learning from the PDE alone, on a grid: the problem, its loss, the model.

A `GridProblem` is a PDE on a tensor-product grid (space and time axes) with its conditions and
the data fields the operator takes as input (e.g. the initial value ``u0``). `PhysicsOperator`
maps those inputs to the solution on the whole grid: a backbone (an FNO) outputs u itself
("soft": the PDE is only the loss) or N basis fields that a `HardConstraint` combines so that the
PDE and the conditions hold at collocation nodes ("hard"; with ``experts`` one set of coefficients
per block, PI-HC-MoE). `physics_loss` is the training loss of both: residual and condition norms on
the grid, no solution data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from sciml.constraints.hard import GridCondition, HardConstraint
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
    """

    residual: Callable[..., Any]
    coords: tuple[str, ...]
    conditions: tuple[GridCondition, ...] = ()
    params: Mapping[str, float] = field(default_factory=dict)
    periodic: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ("u0",)
    output: str = "u"

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

    def layer(self, spacing: Sequence[float], **options: Any) -> HardConstraint:
        """The hard-constraint layer for this problem on a grid of `spacing` (`options`: the layer's)."""
        return HardConstraint(self.residual, coords=self.coords, spacing=spacing, periodic=self.periodic,
                              params=dict(self.params), outputs=(self.output,), data_fields=self.inputs,
                              conditions=self.conditions, **options)

    def terms(self, d: Derivatives, p: Params) -> tuple[list[Tensor], list[list[Tensor]]]:
        """The residual's terms and each condition's, on the fields `d` holds."""
        fns = [self.residual, *(c.residual for c in self.conditions)]
        out = [residual_terms(f, d, p, w) for f, w in zip(fns, self._with_params)]
        return out[0], out[1:]


GRID_PROBLEMS: Registry = Registry("grid problem")


@GRID_PROBLEMS.register("burgers", description="viscous Burgers u_t + u u_x = nu u_xx, periodic x, from u0",
                        source="Chalapathi et al. 2024 (PI-HC-MoE)")
def burgers(nu: float = 0.02) -> GridProblem:
    return GridProblem(lambda d, p: d.u_t + d.u * d.u_x - p.nu * d.u_xx, ("x", "t"),
                       (GridCondition(lambda d: d.u - d.u0, at={"t": 0}),), {"nu": nu}, periodic=("x",))


def get_grid_problem(name: str, **args: Any) -> GridProblem:
    """The problem registered as `name` (or ``"module:attr"``: a GridProblem or a factory of one)."""
    return GRID_PROBLEMS.instance(name, GridProblem, **args)


def physics_loss(u: Tensor, x: Tensor, problem: GridProblem, spacing: Sequence[float]) -> Tensor:
    """Mean over samples of the residual's L2 norm on the grid plus each condition's on its nodes
    (norms, not squares, as Chalapathi et al.), both scaled by the cell size so that refining the
    grid keeps the value. Second-order finite differences on every axis, so that a jump between two
    experts' blocks only touches its neighbours.

    u: (batch, 1, *grid) the solution; x: (batch, len(problem.inputs), *grid) the inputs.
    """
    d = GridDerivatives({problem.output: u[:, 0], **problem.data(x)}, problem.coords, spacing, periodic=problem.periodic,
                        method="fd")
    pde, conditions = problem.terms(d, Params(dict(problem.params)))
    cell = math.sqrt(math.prod(spacing))
    total = sum((r * cell).flatten(1).norm(dim=1) for r in pde)
    for c, rows in zip(problem.conditions, conditions):
        nodes = (slice(None),) + tuple(c.at.get(name, slice(None)) for name in problem.coords)
        face = math.sqrt(math.prod(h for name, h in zip(problem.coords, spacing) if name not in c.at))
        total = total + c.weight * face * sum(r[nodes].flatten(1).norm(dim=1) for r in rows)
    return total.mean()


class PhysicsOperator(nn.Module):
    """Inputs ``(batch, len(problem.inputs), *grid)`` in physical units -> u ``(batch, 1, *grid)``.

    constraint "soft": the backbone outputs u (one channel). "hard": it outputs `n_basis` fields
    and a `HardConstraint` makes u satisfy the problem at sampled nodes; `layer` options
    (``experts``, ``points``, ``overlap``, ``ridge``, ``max_steps``, ...) go to that layer.
    `backbone` is built by the caller with ``out_channels = 1`` (soft) or ``n_basis`` (hard).
    """

    def __init__(self, backbone: nn.Module, problem: GridProblem, spacing: Sequence[float], *,
                 constraint: str = "hard", **layer: Any):
        super().__init__()
        if constraint not in ("soft", "hard"):
            raise ValueError(f"constraint must be 'soft' or 'hard', got {constraint!r}")
        if constraint == "soft" and layer:
            raise ValueError(f"the soft constraint has no layer; drop {sorted(layer)} or use constraint 'hard'")
        self.backbone, self.problem, self.spacing = backbone, problem, tuple(float(h) for h in spacing)
        self.layer = None if constraint == "soft" else problem.layer(self.spacing, **layer)

    def forward(self, x: Tensor) -> Tensor:
        out = self.backbone(x)
        if self.layer is None:
            return out
        return self.layer(out, self.problem.data(x))[:, None]

    def loss(self, u: Tensor, x: Tensor) -> Tensor:
        """`physics_loss` of this model's problem on its grid."""
        return physics_loss(u, x, self.problem, self.spacing)
