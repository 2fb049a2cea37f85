"""A PDE problem: R[u](x; p) = 0 in Ω (× time), its conditions, parameters and reference solution.

    problem = Problem(
        domain=Interval(-1, 1).with_time(0, 1),
        residual=lambda d, p: d.u_t + d.u * d.u_x - p.nu * d.u_xx,
        conditions=[Dirichlet(0.0), Initial(lambda x: -torch.sin(math.pi * x[:, 0]))],
        params={"nu": 0.01 / math.pi},
    )

`PINNModel` wraps a pointwise network with the output transform (hard constraints) and the
problem's unknown parameters, so one ``model.parameters()`` trains both (inverse problems).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sciml.pde.conditions import (Condition, Data, Dirichlet, Initial, Periodic, check_value_differentiable,
                                  check_value_finite, evaluate_value, face_predicate, parse_face)
from sciml.pde.derivatives import (Derivatives, ForwardDerivatives, Params, ReverseDerivatives, default_coords,
                                   named_residual_terms, residual_terms, takes_params)
from sciml.pde.geometry import Box, Geometry, SpaceTime, unit_samples

Tensor = torch.Tensor


@dataclass(frozen=True)
class Unknown:
    """An unknown PDE parameter, learned with the network (inverse problem).

    Args: init: starting value; true: the value used to make synthetic data, if known (reported);
        positive: keep it > 0 by training its log (``p.D`` is then exp of the trained number; logs, metrics and
        reports show the value itself, the checkpoint holds the log the optimizer moves).
    """

    init: float = 0.0
    true: float | None = None
    positive: bool = False

    def __post_init__(self):
        for what in ("init", "true"):
            value = getattr(self, what)
            if value is None and what == "true":
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"Unknown({what}={value!r}): {what} must be a real number") from None
            if not math.isfinite(number):
                raise ValueError(f"Unknown({what}={value!r}): {what} must be finite (a NaN or inf start poisons every "
                                 f"step, and the guard then blames the learning rate)")
        if self.positive and not float(self.init) > 0:
            raise ValueError(f"Unknown(init={self.init!r}, positive=True): a positive unknown starts above 0 (its log is "
                             f"trained)")


@dataclass(frozen=True)
class Problem:
    """R[u](x; p) = 0 in the domain, with conditions.

    Args:
        domain: a `Geometry` (steady) or `SpaceTime` (time last); an ODE's time interval is
            ``Interval(t0, t1)`` with ``coords=("t",)`` (Initial conditions then hold at t0).
        residual: ``f(d, p) -> Tensor | tuple | dict`` of residual terms (or ``f(d)``), where d is
            a `Derivatives` and p a `Params`.
        conditions: `Condition` objects (Dirichlet, Neumann, Robin, Periodic, Initial, Data).
        outputs: output field names (network output columns in order).
        coords: coordinate names (default x, y, z[:d] then t).
        params: ``{name: float | Unknown}``.
        reference: exact or reference solution, ``x (n, d) float64 -> (n, m)`` or ``(n,)``.
        eval_points: points ``(n, d)`` where the relative L2 error is measured.
        output_transform: a user hard constraint ``(x, y) -> y`` (net output to solution);
            when given, the trainer does not build the automatic one. Dirichlet and Initial
            conditions it meets (checked on the fresh net) leave the loss; the others stay in it.
        network: a builder ``(**net options) -> nn.Module`` replacing the default MLP (e.g. the
            two-branch Lagrangian PINN); it then owns its hard constraints.
        eval_outputs: outputs compared with the reference for ``rel_l2`` (default: all).
        eval_error: ``(x, prediction) -> relative error`` reported as ``rel_l2`` instead, for a
            solution whose frame depends on the prediction (the Lagrangian PINN's u along its own
            characteristics); the per-output errors against the reference are still reported.
        name: label used in logs.
    """

    domain: Geometry | SpaceTime
    residual: Callable[..., Any]
    conditions: Sequence[Condition] = ()
    outputs: tuple[str, ...] = ("u",)
    coords: tuple[str, ...] | None = None
    params: Mapping[str, float | Unknown] = field(default_factory=dict)
    reference: Callable[[Tensor], Tensor] | None = None
    eval_points: Tensor | None = None
    output_transform: Callable[[Tensor, Tensor], Tensor] | None = None
    network: Callable[..., nn.Module] | None = None
    eval_outputs: tuple[str, ...] | None = None
    eval_error: Callable[[Tensor, Tensor], Tensor] | None = None
    name: str = "custom"

    def __post_init__(self):
        if not isinstance(self.domain, (Geometry, SpaceTime)):
            raise TypeError(f"domain must be a Geometry or SpaceTime, got {type(self.domain).__name__}")
        if not callable(self.residual):
            raise TypeError("residual must be a function f(d, p) of a Derivatives object and the parameters")
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "conditions", tuple(self.conditions))
        for key, value in dict(self.params).items():  # a nan or inf parameter made every residual NaN: fit ran on
            if isinstance(value, Unknown) or isinstance(value, bool):
                continue
            try:
                finite = bool(torch.isfinite(torch.as_tensor(value)).all())
            except (TypeError, ValueError, RuntimeError):
                continue  # not a number: the residual says what it makes of it
            if not finite:
                raise ValueError(f"params[{key!r}]={value!r} must be finite (a NaN or inf parameter makes every "
                                 f"residual non-finite); give a finite value")
        coords = self.coords or default_coords(self.space_dim, self.is_time_dependent)
        if len(coords) != self.domain.dim:
            raise ValueError(f"coords {tuple(coords)} must name all {self.domain.dim} domain columns")
        if self.is_time_dependent and coords[-1] != "t":
            raise ValueError(f"time must be the last coordinate and named 't', got coords {tuple(coords)}")
        object.__setattr__(self, "coords", tuple(coords))
        clash = sorted(set(self.outputs) & set(self.coords))
        if clash:
            hint = (" (an ODE system on a time interval: set coords=('t',))" if self.domain.dim == 1 and not self.is_time_dependent
                    else "")
            raise ValueError(f"names {clash} are both outputs {self.outputs} and coordinates {self.coords}; rename the outputs, "
                             f"or name the coordinates with Problem(coords=...){hint}")
        for c in self.conditions:
            if not isinstance(c, Condition):
                raise TypeError(f"conditions must be Condition objects (Dirichlet, Initial, ...), got {c!r}")
            if c.component not in self.outputs:
                raise ValueError(f"{type(c).__name__} is on component {c.component!r}, but outputs are {self.outputs}")
            if isinstance(c, Initial) and self.time_column is None:
                raise ValueError(f"an Initial condition needs a time coordinate, but coords are {self.coords}: for a PDE "
                                 f"use a SpaceTime domain (e.g. Interval(-1, 1).with_time(0, 1)); for an ODE a time "
                                 f"interval, Problem(Interval(t0, t1), coords=('t',), ...)")
            if isinstance(c, Periodic) and c.coord not in self.coords:
                raise ValueError(f"Periodic coord {c.coord!r} is not among {self.coords}")
            if isinstance(c, Periodic) and not isinstance(self.domain.space if self.is_time_dependent else self.domain, Box):
                # its point pairs and the hard embedding's period come from the bounding box
                raise ValueError(f"Periodic({c.coord!r}) needs a box domain (Box, Rectangle or Interval, optionally "
                                 f".with_time), got {self.domain!r}; use a box, or give the matching faces Dirichlet/Neumann "
                                 "conditions instead")
            where = getattr(c, "where", None)
            if isinstance(where, str):  # checked here so a typo fails the same way with soft or hard constraints
                try:
                    parse_face(where, self.spatial_coords)
                except ValueError as e:
                    if not (self.is_time_dependent and where.partition("=")[0] == self.coords[-1]):
                        raise
                    raise ValueError(f"{type(c).__name__}(where={where!r}): {e}. Time is no boundary face of a space-time "
                                     f"domain: a condition at t0 is Initial(g) for the value, Initial(g, derivative=k) "
                                     f"for ∂_t^k u") from None
            elif where is not None and not callable(where):
                raise TypeError(f"{type(c).__name__} where must be None, a face such as 'x=lo' or a predicate x -> (n,) bool, "
                                f"got {where!r}")
        for i, c in enumerate(self.conditions):
            if isinstance(c, Data):
                self._check_points(c.points, f"Data (conditions[{i}])", f"Data (conditions[{i}]) points")
        if self.eval_points is not None:  # checked as Data points are: a wrong width failed only at fit, in the net
            self._check_points(self.eval_points, "eval_points", "eval_points")
        object.__setattr__(self, "_residual_takes_params", takes_params(self.residual))

    def _check_points(self, points, owner: str, label: str) -> None:
        """Points (observations, evaluation points) have one column per coordinate, are finite and lie in the domain (a
        box's bounds with a small tolerance; another shape's inside test, near-boundary points allowed): (t, x) columns
        for (x, t) fitted the wrong points without a word. `owner` and `label` name them in the errors."""
        given = torch.as_tensor(points)
        x = given.to(torch.float64)
        order = f"({', '.join(self.coords)})"
        if x.ndim != 2 or x.shape[1] != self.domain.dim:
            got = f"{x.shape[1]} column(s)" if x.ndim == 2 else f"shape {tuple(x.shape)}"
            raise ValueError(f"{label} have {got}, but the domain has {self.domain.dim} "
                             f"coordinates {order}: give points (n, {self.domain.dim}), columns in that order")
        lo, hi = self.box()
        # a width's 1e-6, and the points' own rounding at the bounds' magnitude: 273.15 in float32 is 273.149994
        eps = torch.finfo(given.dtype).eps if given.is_floating_point() else 0.0
        tol = 1e-6 * torch.clamp(hi - lo, min=1.0) + 4 * eps * torch.maximum(lo.abs(), hi.abs())
        bad_cols = ~((x >= lo - tol) & (x <= hi + tol))  # NaN is out of range too
        space = self.domain.space if self.is_time_dependent else self.domain
        outside = bad_cols.any(1)
        if not isinstance(space, Box) and not bool(outside.all()):  # the bounding box, then the shape itself
            try:
                within = self.domain.inside(x)
                if not bool(within.all()):
                    near = space.distance_to_boundary(x[:, :space.dim]) <= float(tol.max())
                    t_ok = ~bad_cols[:, -1] if self.is_time_dependent else True
                    outside = outside | (~within & ~(near & t_ok))
            except NotImplementedError:  # a shape without a cheap inside test: the bounding box only
                pass
        n_out = int(outside.sum())
        if n_out:
            first = int(outside.nonzero()[0, 0])
            by_coord = ", ".join(f"{name} in [{float(lo[j]):.6g}, {float(hi[j]):.6g}]" for j, name in enumerate(self.coords))
            per = ", ".join(f"{int(bad_cols[:, j].sum())} with {name} out of range" for j, name in enumerate(self.coords)
                            if bool(bad_cols[:, j].any()))
            shape = "" if isinstance(space, Box) else f" ({type(space).__name__}: its inside test)"
            raise ValueError(f"{owner}: {n_out} of {len(x)} points lie outside the domain {by_coord}{shape}"
                             f"{f' ({per})' if per else ''}; the first is point {first}: "
                             f"{tuple(round(v, 6) for v in x[first].tolist())}. Points are (n, {self.domain.dim}) with "
                             f"columns in coordinate order {order}{', time last' if self.is_time_dependent else ''}: check the "
                             f"column order (e.g. (x, t), not (t, x)) and the units")

    @property
    def is_time_dependent(self) -> bool:
        return isinstance(self.domain, SpaceTime)

    @property
    def time_column(self) -> int | None:
        """The column of time: the last of a SpaceTime domain, 0 of an ODE's time interval (``Interval(t0, t1)``
        with ``coords=("t",)``), None for a steady problem."""
        if self.is_time_dependent:
            return self.domain.dim - 1
        return 0 if self.coords == ("t",) else None

    @property
    def space_dim(self) -> int:
        return self.domain.dim - (1 if self.is_time_dependent else 0)

    @property
    def spatial_coords(self) -> tuple[str, ...]:
        """The coordinates of Ω (all but time): the ones a boundary face ``where="x=lo"`` may name."""
        return self.coords[:-1] if self.is_time_dependent else self.coords

    @property
    def unknowns(self) -> dict[str, Unknown]:
        return {k: v for k, v in self.params.items() if isinstance(v, Unknown)}

    def with_params(self, **params) -> "Problem":
        """A copy with some parameters replaced."""
        return replace(self, params={**self.params, **params})

    # --- residual ---------------------------------------------------------------------------
    def residual_terms(self, d: Derivatives, p: Params) -> list[Tensor]:
        return residual_terms(self.residual, d, p, self._residual_takes_params)

    def named_residual_terms(self, d: Derivatives, p: Params) -> dict[str, Tensor]:
        """The residual's terms by their loss names (`sciml.pde.derivatives.named_residual_terms`)."""
        return named_residual_terms(self.residual, d, p, self._residual_takes_params)

    def derivatives(self, fn: Callable[[Tensor], Tensor], x: Tensor, mode: str = "reverse") -> Derivatives:
        """A pointwise `Derivatives` of ``fn`` at x, by ``mode`` ∈ {"reverse", "forward"}."""
        if mode == "reverse":
            return ReverseDerivatives(fn, x, self.outputs, self.coords)
        if mode == "forward":
            return ForwardDerivatives(fn, x, self.outputs, self.coords)
        raise ValueError(f"derivative mode {mode!r} is unknown; use 'reverse' or 'forward'")

    # --- points -------------------------------------------------------------------------------
    def box(self) -> tuple[Tensor, Tensor]:
        return self.domain.lo, self.domain.hi

    def sample_interior(self, n: int, method: str = "sobol", seed: int | None = 0) -> Tensor:
        return self.domain.sample_interior(n, method, seed)

    def sample_condition(self, c: Condition, n: int, method: str = "sobol", seed: int | None = 0) -> dict[str, Tensor]:
        """Points (and normals / values) for one condition: a dict with at least ``"x"``. Its target value is checked
        finite there (the points are drawn before training; resampling redraws only the interior)."""
        batch = self._sample_condition(c, n, method, seed)
        check_value_finite(c, batch["x"], self._condition_label(c))
        return batch

    def _condition_label(self, c: Condition) -> str:
        i = next((i for i, k in enumerate(self.conditions) if k is c), None)
        return f"{type(c).__name__} (conditions[{i}], component {c.component!r})" if i is not None else type(c).__name__

    def _sample_condition(self, c: Condition, n: int, method: str, seed: int | None) -> dict[str, Tensor]:
        if isinstance(c, Data):
            return {"x": torch.as_tensor(c.points, dtype=torch.float64), "values": torch.as_tensor(c.values, dtype=torch.float64).reshape(-1)}
        if isinstance(c, Initial):
            if not self.is_time_dependent:  # an ODE: the one point t0 (copies of it would weigh the same)
                return {"x": self.domain.lo[None].clone()}
            return {"x": self.domain.sample_initial(n, method, seed)}
        lo, hi = self.box()
        if isinstance(c, Periodic):
            j = self.coords.index(c.coord)
            x = self._box_points(n, method, seed)
            x_lo, x_hi = x.clone(), x.clone()
            x_lo[:, j], x_hi[:, j] = lo[j], hi[j]
            return {"x": torch.cat([x_lo, x_hi])}
        where = getattr(c, "where", None)
        if where is None and c.kind == "boundary":
            where = self._open_faces(c)
        pred = face_predicate(where, self.coords, lo, hi) if isinstance(where, str) else where
        if pred is not None and method == "uniform":
            return self._uniform_selection(c, pred, n, seed)
        # each round is sized by the share of points the part kept so far (a small inlet keeps a few
        # per mille), up to `cap` points a round
        got_x, got_n, k, have, drawn = [], [], 0, 0, 0
        m, cap = (n if pred is None else 4 * n + 32), max(4 * n + 32, 1 << 20)
        while have < n:
            if k == 20 or (have == 0 and drawn >= cap):
                raise ValueError(f"{type(c).__name__}(where={where!r}) selects (almost) no boundary points: {have} of "
                                 f"{drawn} sampled ({have / drawn:.2g} of the boundary), {n} needed; check the predicate"
                                 f"{self._time_face_hint()}")
            x, nrm = self.domain.sample_boundary(m, method, None if seed is None else seed + 1009 * k)
            drawn += m
            if pred is not None:
                keep = _selection(pred, x, c)
                x, nrm = x[keep], nrm[keep]
            got_x.append(x)
            got_n.append(nrm)
            have += len(x)
            k += 1
            m = min(cap, 8 * m if have == 0 else int(math.ceil((n - have) * drawn / have * 1.2)) + 16)
        return {"x": torch.cat(got_x)[:n], "normal": torch.cat(got_n)[:n]}

    def periodic_coords_of(self, component: str) -> set[str]:
        """The coordinates `component` has a Periodic condition in: its faces there are no boundary for it, so a
        boundary condition without ``where`` holds on the other faces (in soft and hard mode alike)."""
        return {c.coord for c in self.conditions if isinstance(c, Periodic) and c.component == component}

    def open_faces(self, c: Condition) -> list[str]:
        """The box faces ("x=lo", ...) a boundary condition without ``where`` holds on: those of the coordinates its
        output is not periodic in (all of them where it is periodic in none)."""
        periodic = self.periodic_coords_of(c.component)
        faces = [f"{s}={side}" for s in self.spatial_coords if s not in periodic for side in ("lo", "hi")]
        if not faces:
            raise ValueError(f"{type(c).__name__} on {c.component!r} has no boundary to hold on: the output is periodic in "
                             f"every spatial coordinate; drop it, or give it a where")
        return faces

    def _open_faces(self, c: Condition):
        """None (the whole boundary), or a predicate for `open_faces` where the output is periodic somewhere."""
        if not self.periodic_coords_of(c.component):
            return None
        lo, hi = self.box()
        on = [face_predicate(f, self.coords, lo, hi) for f in self.open_faces(c)]
        return lambda x: torch.stack([p(x) for p in on]).any(0)

    def _uniform_selection(self, c: Condition, pred, n: int, seed) -> dict[str, Tensor]:
        """n lattice points on the part of the boundary `pred` keeps: the lattice's size is grown
        until the part holds n of them, then the surplus thinned evenly. (Draws with other seeds
        return the same lattice: pooling them repeated points.)"""
        m, best, cap = 4 * n + 32, None, max(4 * n + 32, 1 << 20)  # the cap the other methods' rounds have
        for _ in range(40):
            x, nrm = self.domain.sample_boundary(m, "uniform", seed)
            keep = _selection(pred, x, c)
            kept, sampled = int(keep.sum()), m
            if kept >= n:
                best = (x[keep], nrm[keep])
                if kept <= 1.25 * n + 1:  # a near-fit lattice: thinning it leaves it even
                    break
                m = max(n, int(m * 1.1 * n / kept))
            elif m >= cap:
                break
            else:
                m = min(cap, int(m * min(8.0, 1.1 * n / max(kept, 1))) + 1)
        if best is not None:
            x, nrm = best
            pick = torch.linspace(0, len(x) - 1, n, dtype=torch.float64).round().long()
            return {"x": x[pick], "normal": nrm[pick]}
        raise ValueError(f"{type(c).__name__}(where={c.where!r}) selects (almost) no boundary points: {kept} of {sampled} "
                         f"lattice points ({kept / sampled:.2g} of the boundary), {n} needed; check the predicate"
                         f"{self._time_face_hint()}")

    def _time_face_hint(self) -> str:
        if not self.is_time_dependent:
            return ""
        t0 = self.domain.t0
        return (f". On a space-time domain a boundary condition lives on ∂Ω × [t0, t1] (the spatial boundary at every "
                f"time), not on t = {t0:g}; a condition at t0 is Initial(g) for the value, Initial(g, derivative=k) for "
                f"∂_t^k u")

    def _box_points(self, n, method, seed):
        lo, hi = self.box()
        return lo + unit_samples(n, self.domain.dim, method, seed) * (hi - lo)

    def default_eval_points(self, n_per_axis: int = 101) -> Tensor:
        if self.eval_points is not None:
            return torch.as_tensor(self.eval_points, dtype=torch.float64)
        return self.sample_interior(n_per_axis ** min(self.domain.dim, 2), "sobol", seed=12345)

    def reference_values(self, x: Tensor) -> Tensor:
        """The reference solution at x as ``(n, m)`` float64 (a one-column ``(n, 1)`` for a reference of ``(n,)``).

        The reference must return ``(n,)`` / ``(n, 1)`` (the first output) or ``(n, m)`` with m = len(outputs);
        another shape (such as a transposed ``(m, n)``) is a ValueError, not reshaped.
        """
        if self.reference is None:
            raise ValueError(f"problem {self.name!r} has no reference solution; give Problem(reference=...) to measure errors")
        v = torch.as_tensor(self.reference(x.to(torch.float64)), dtype=torch.float64)
        n, m = x.shape[0], len(self.outputs)
        if v.ndim == 1 and v.shape[0] == n:
            return v[:, None]
        if v.ndim == 2 and v.shape[0] == n and v.shape[1] in (1, m):
            return v
        expected = f"({n},)" + (f" or ({n}, {m})" if m > 1 else f" or ({n}, 1)")
        raise ValueError(f"the reference of problem {self.name!r} returned shape {tuple(v.shape)} for {n} points, but it must be "
                         f"{expected} (points × outputs {self.outputs}); stack the outputs along the last dimension (dim=-1)")

    # --- hard constraints --------------------------------------------------------------------
    def periodic_inputs(self, keep_soft: tuple[int, ...] = ()) -> dict[int, float]:
        """``{column: period}`` of the coordinates the periodic input embedding makes exact: those every
        output has a Periodic condition in (none of them in `keep_soft`). The embedding is shared by
        all outputs, so a coordinate only some outputs are periodic in keeps its conditions soft."""
        lo, hi = self.box()
        out = {}
        for coord in dict.fromkeys(c.coord for c in self.conditions if isinstance(c, Periodic)):
            conds = [(i, c) for i, c in enumerate(self.conditions) if isinstance(c, Periodic) and c.coord == coord]
            if {c.component for _, c in conds} == set(self.outputs) and not any(i in keep_soft for i, _ in conds):
                j = self.coords.index(coord)
                out[j] = float(hi[j] - lo[j])
        return out

    def periodic_covered(self, columns: Mapping[int, float]) -> set[int]:
        """The Periodic conditions a periodic embedding of `columns` makes exact."""
        return {i for i, c in enumerate(self.conditions) if isinstance(c, Periodic) and self.coords.index(c.coord) in columns}

    def conditions_held(self, fn: Callable[[Tensor], Tensor], indices: Sequence[int], *, n: int = 64) -> dict[int, float]:
        """``{condition: max |residual| / (1 + max |u|)}`` of `fn` at `n` points of each condition in
        `indices`: how far a model (e.g. a user's output transform on a fresh net) is from meeting it."""
        ref = next(fn.parameters(), None) if isinstance(fn, nn.Module) else None
        dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float64, torch.device("cpu"))
        out = {}
        for i in indices:
            c = self.conditions[i]
            batch = {k: v.to(device, dtype) for k, v in self.sample_condition(c, n, "sobol", 7919 + i).items()}
            with torch.enable_grad():
                x = batch["x"].detach().requires_grad_(True)
                r = c.residual(self.derivatives(fn, x, "reverse"), {**batch, "x": x})
                u = fn(x)[:, self.outputs.index(c.component)]
            out[i] = float(r.detach().abs().max() / (1 + u.detach().abs().max()))
        return out

    def hard_transform(self, keep_soft: tuple[int, ...] = ()) -> tuple[Callable[[Tensor, Tensor], Tensor] | None, tuple[int, ...]]:
        """The output transform that makes the conditions exact, and which conditions it covers.
        Conditions whose indices are in `keep_soft` are left out (they stay loss terms).

        The user's ``output_transform`` is returned with every Dirichlet/Initial condition as a
        candidate: the trainer keeps those it does not meet (`conditions_held`) as loss terms. Otherwise, on a
        box (× time), for each output u_k with one Dirichlet value g on whole faces
        (``where`` None or "coord=lo|hi") and/or an Initial value u0 (and velocity v0):

            u_k = g + (u0 − g|_{t0}) + (t − t0)(v0 − ∂_t g|_{t0}) + D(x, t) N_k(x, t),
            D = Π_faces ℓ_f(x) · τ^q,  ℓ_f = distance to the face / half the box width,
            τ = (t − t0)/(t1 − t0), q = 1 (value) or 2 (value and velocity),

        which holds for compatible data (u0 = g and v0 = ∂_t g on the faces at t0). Periodic conditions
        are made exact by the periodic input embedding instead (`periodic_inputs`); a Dirichlet value
        without ``where`` holds on the faces of the coordinates its output is not periodic in, as in soft mode. Conditions not covered stay soft, among them
        ``Initial(..., derivative=k)`` with k ≥ 2 (the transform leaves ∂_t^k u free).
        """
        if self.output_transform is not None:
            candidates = [i for i, c in enumerate(self.conditions) if isinstance(c, (Dirichlet, Initial)) and i not in keep_soft]
            return self.output_transform, tuple(candidates)
        space = self.domain.space if self.is_time_dependent else self.domain
        if not isinstance(space, Box):
            return None, ()
        lo, hi = self.box()
        spatial = self.spatial_coords
        plans, covered = {}, []
        for k, name in enumerate(self.outputs):
            dirichlet = [(i, c) for i, c in enumerate(self.conditions)
                         if isinstance(c, Dirichlet) and c.component == name and i not in keep_soft]
            # the transform fixes only the value (k = 0) and the velocity (k = 1) at t0; ∂_t^k u for k ≥ 2
            # stays a loss term (τ^2 leaves it free)
            init = [(i, c) for i, c in enumerate(self.conditions)
                    if isinstance(c, Initial) and c.component == name and i not in keep_soft and c.derivative <= 1]
            faces, values, ok = [], [], True
            for i, c in dirichlet:
                if c.where is None:  # the faces it holds on in soft mode too
                    faces += self.open_faces(c)
                elif isinstance(c.where, str):
                    faces.append(c.where)
                else:
                    ok = False
                values.append(c.value)
            if not ok or len({_value_key(v) for v in values}) > 1 or len(init) > 2 or \
                    len({c.derivative for _, c in init}) != len(init):
                continue  # not expressible automatically: stays soft
            v0 = next((c.value for _, c in init if c.derivative == 1), None)
            g = values[0] if values else None
            if v0 is not None and g is not None and callable(g):
                continue  # ∂_t g would be needed; keep soft
            plans[k] = ([parse_face(f, spatial) for f in sorted(set(faces))], g,
                        next((c.value for _, c in init if c.derivative == 0), None), v0, any(c.derivative == 0 for _, c in init))
            if v0 is not None and plans[k][2] is None:
                del plans[k]
                continue
            covered += [i for i, _ in dirichlet] + [i for i, _ in init]
        if not plans:
            return None, ()
        lo, hi = lo.tolist(), hi.tolist()  # Python floats: no host syncs or graph breaks inside the transform
        t_col = self.time_column
        t0 = float(lo[-1]) if t_col is not None else 0.0
        t1 = float(hi[-1]) if t_col is not None else 1.0

        def affine_parts(x: Tensor, m: int) -> tuple[Tensor, Tensor]:
            """(A, D), each ``(n, m)``, with T(x, y) = A(x) + D(x) y: functions of the points alone, which the
            jet backend differentiates once per point set (sciml.pde.jet.transform_jets)."""
            one = x[:, 0] * 0.0 + 1.0  # from x, not torch.ones: keeps jvp tangents dense under torch.compile
            As, Ds = [], []
            for k in range(m):
                if k not in plans:
                    As.append(one * 0.0)
                    Ds.append(one)
                    continue
                faces, g, u0, v0, has_u0 = plans[k]
                D = one
                for j, side in faces:
                    half = (hi[j] - lo[j]) / 2
                    D = D * ((x[:, j] - lo[j]) if side == "lo" else (hi[j] - x[:, j])) / half
                A = (evaluate_value(g, x) if callable(g) else one * float(g)) if g is not None else one * 0.0
                if has_u0:
                    xt0 = torch.cat([x[:, :t_col], torch.full_like(x[:, t_col:t_col + 1], t0), x[:, t_col + 1:]], -1)
                    A = A + evaluate_value(u0, xt0) - ((evaluate_value(g, xt0) if callable(g) else float(g)) if g is not None else 0.0)
                    tau = (x[:, t_col] - t0) / (t1 - t0)
                    D = D * tau
                    if v0 is not None:
                        A = A + (x[:, t_col] - t0) * (evaluate_value(v0, xt0) if callable(v0) else float(v0))
                        D = D * tau
                As.append(A)
                Ds.append(D)
            return torch.stack(As, -1), torch.stack(Ds, -1)

        def transform(x: Tensor, y: Tensor) -> Tensor:
            A, D = affine_parts(x, y.shape[1])
            return A + D * y

        transform.affine_parts = affine_parts
        for i in sorted(set(covered)):  # the trainer draws no points for them: check their values here, once
            c = self.conditions[i]
            check_value_differentiable(c.value, self.sample_condition(c, 64, "sobol", 7919 + i)["x"],
                                       self._condition_label(c))
        self._check_compatible(plans)
        return transform, tuple(sorted(set(covered)))

    def _check_compatible(self, plans):
        if not self.is_time_dependent:
            return
        for k, (faces, g, u0, v0, has_u0) in plans.items():
            if not (faces and has_u0):
                continue
            lo, hi = self.box()
            for j, side in faces:
                f = f"{self.coords[j]}={side}"
                x = self._box_points(16, "sobol", 3)
                x[:, j] = lo[j] if side == "lo" else hi[j]
                x[:, -1] = lo[-1]
                gap = (evaluate_value(u0, x) - evaluate_value(g if g is not None else 0.0, x)).abs().max()
                if gap > 1e-6:
                    warnings.warn(f"initial value and Dirichlet value of {self.outputs[k]!r} differ by {float(gap):.2e} on face {f} "
                                  "at t0; the automatic hard constraint then satisfies the Dirichlet condition only approximately",
                                  stacklevel=3)
                # g is constant here (a callable g with a velocity stays soft): ∂_t g = 0 on the face
                speed = (evaluate_value(v0, x).abs().max() if callable(v0) else abs(float(v0))) if v0 is not None else 0.0
                if speed > 1e-6:
                    warnings.warn(f"the initial velocity of {self.outputs[k]!r} is {float(speed):.2e} on face {f}, where its "
                                  "Dirichlet value does not change in time; the automatic hard constraint then moves u off "
                                  "the Dirichlet value there as (t − t0)·v0", stacklevel=3)


def _selection(pred, x: Tensor, c: Condition) -> Tensor:
    """pred(x) as an ``(n,)`` bool mask. Other values are refused, not cast: a float predicate such as
    ``x[:, 0] - 0.5`` would otherwise keep every point where it is nonzero."""
    keep = pred(x)
    if isinstance(keep, np.ndarray) and keep.dtype == np.bool_:
        keep = torch.from_numpy(keep)
    if not isinstance(keep, Tensor) or keep.dtype != torch.bool:
        got = f"dtype {keep.dtype}" if hasattr(keep, "dtype") else type(keep).__name__
        raise TypeError(f"{type(c).__name__} where must return a bool tensor (one entry per point), got {got}; "
                        "compare instead, e.g. where=lambda x: x[:, 0] < 0.5")
    if keep.shape != (len(x),):
        raise ValueError(f"{type(c).__name__} where must return shape ({len(x)},) for {len(x)} points, got {tuple(keep.shape)}")
    return keep


def _value_key(v):
    return ("f", id(v)) if callable(v) else ("c", float(v))


class PINNModel(nn.Module):
    """u(x) = T(x, N(x)): a pointwise net N, an optional output transform T, unknown parameters.

    Args:
        net: ``(n, d) -> (n, m)`` module.
        transform: hard-constraint transform ``(x, y) -> y`` or None.
        unknowns: ``{name: Unknown}`` learned alongside the weights.
    """

    def __init__(self, net: nn.Module, transform: Callable[[Tensor, Tensor], Tensor] | None = None,
                 unknowns: Mapping[str, Unknown] | None = None):
        super().__init__()
        self.net, self.transform = net, transform
        dtype = next(net.parameters()).dtype
        unknowns = dict(unknowns or {})
        self.positive = frozenset(k for k, u in unknowns.items() if u.positive)  # trained as their log
        self.unknowns = nn.ParameterDict({k: nn.Parameter(torch.tensor(math.log(float(u.init)) if u.positive else float(u.init),
                                                                        dtype=dtype)) for k, u in unknowns.items()})

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        return self.transform(x, y) if self.transform is not None else y

    def params(self, problem: Problem) -> Params:
        """Known values from the problem, unknowns from this model."""
        values = {k: v for k, v in problem.params.items() if not isinstance(v, Unknown)}
        values.update(self.unknown_values())
        return Params(values)

    def unknown_values(self) -> dict[str, Tensor]:
        """The unknowns' values (exp of the trained log for a positive one), differentiable."""
        return {k: p.exp() if k in self.positive else p for k, p in self.unknowns.items()}
