"""The hard-constraint layer: a PDE solved at collocation points inside the network.

A backbone (an FNO, say) outputs N basis fields b_1..b_N on a grid. The layer finds, per sample,
coefficients w minimising

    || R[u](x_j) ||^2 over collocation nodes x_j  +  || C[u](y_l) ||^2 over condition nodes  +  ||ridge w||^2,
    u = sum_i w_i b_i,

by a batched Levenberg-Marquardt solve, and returns u (Negiar et al. 2023, "PI-HC"). Where the basis
can meet every row, the PDE and the conditions hold at the nodes to the solver's tolerance, whatever
the backbone's weights; with more rows than the basis can meet, u is the least-squares compromise
(the solve still succeeds: ``last_stats["residual_norm"]`` says how far it is). Gradients reach the basis
directly through u and through w* by the implicit function theorem (`solvers.implicit`), at the
memory of one solve. With ``experts`` the grid is cut into blocks, each with its own w_k and its
own nodes; all blocks of all samples are one batched solve (Chalapathi et al. 2024, "PI-HC-MoE"),
and ``overlap`` blends neighbouring blocks so that u has no jump at their interfaces.

The residual is the one a PINN uses (`sciml.pde`): a function of a `Derivatives` object ``d`` and
the parameters ``p``. Derivatives are linear, so every partial the residual asks for is taken
once per basis field on the whole grid (`GridDerivatives`: spectral on periodic axes, finite
differences elsewhere), before the grid is split: experts see no artificial block edges. Inside
the solve a partial of u is one product of those fields with w. So each expert's field meets the
PDE at its own nodes; the returned u, stitched from the experts, jumps at the interfaces (unless
blended by ``overlap``), and a global (spectral) derivative of it sees those jumps at every node.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from sciml.pde.derivatives import Derivatives, GridDerivatives, Params, Recorder, as_terms, residual_terms, takes_params
from sciml.utils import tracing
from solvers.implicit import Implicit, closure_tensors, custom_least_squares
from solvers.nonlinear import LevenbergMarquardt, jacobian
from solvers.solution import SolveError, Status, describe

Key = tuple[int, tuple[int, ...]]  # (field index, sorted coordinate indices of the partial)
FAILURE_POLICIES = ("record", "warn", "raise")
METHODS = ("spectral", "fd")  # GridDerivatives' methods


@dataclass(frozen=True)
class GridCondition:
    """A condition imposed inside the solve on the grid nodes of one face (or edge, corner).

    residual: ``f(d, p) -> tensor`` like the PDE's, e.g. ``lambda d, p: d.u - d.u0`` for an
        initial value given as the data field ``u0``.
    at: coordinate name -> node index fixing that axis, e.g. ``{"t": 0}`` (the first time
        level) or ``{"x": -1}`` (the last x node), or a slice keeping part of a free axis, e.g.
        ``{"x": 0, "t": slice(1, None)}`` (the left boundary after t = 0, where the initial
        value holds instead).
    weight: multiplies the condition's rows in the least-squares objective.
    """

    residual: Callable[..., Any]
    at: Mapping[str, int]
    weight: float = 1.0


class _Nodes(Derivatives):
    """u and its partials at a set of nodes, from fields that are already known (no computation)."""

    def __init__(self, names, coords, spatial, fields: Mapping[Key, Tensor], coordinates: Sequence[Tensor]):
        super().__init__(names, coords, spatial)
        self._cache.update(fields)
        self._coordinates = coordinates

    def coordinate(self, j):
        return self._coordinates[j]

    def _compute(self, k, path):
        raise RuntimeError("the residual asked for a partial it did not ask for on its first call; "
                           "a residual must request the same partials every time")


@dataclass
class _Block:
    """One group of least-squares rows: the PDE at the collocation nodes, or one condition."""

    fn: Callable[..., Any]
    name: str  # "the residual" or "condition i (at {...})", for messages
    takes_params: bool  # f(d, p) or f(d)
    weight: float
    model_keys: list  # keys of basis-combined fields
    data_keys: list  # keys of given data fields
    n_terms: int


class HardConstraint(nn.Module):
    """PI-HC / PI-HC-MoE layer: basis fields in, the field that satisfies the PDE at the nodes out.

    Args:
        residual: ``f(d, p)`` (or ``f(d)``) returning the PDE residual (a tensor or a list of
            them), written against `sciml.pde.Derivatives`: ``d.u_t``, ``d("u", "x", "x")``,
            ``d.x``, ``d.laplacian("u")``; data fields (``data_fields``) are read the same way
            (``d.a``, ``d.a_x``). It must be pointwise: each row depends on its own node only.
        coords: coordinate names, one per grid axis, e.g. ("x", "t").
        spacing: grid step per axis; origin: coordinate of node 0 per axis (default 0).
        outputs: names of the solution's fields (default ("u",)).
        data_fields: names of per-sample fields passed to `forward` (coefficients, initial values).
        derived: fields the residual reads like outputs that are linear maps of the outputs on the
            whole grid, name -> ``f(fields, spacing)`` with ``fields`` the outputs by name, each
            ``(..., *grid)``, returning one field of that shape, or a tuple of names -> ``f``
            returning a tuple of fields (maps that share work): e.g. the velocity of a vorticity on
            a periodic grid, ``("u", "v")``, a non-local map, which a pointwise residual cannot
            express. Being linear, each is taken once per basis field, like a partial (checked on
            the first call).
        params: PDE parameters (``p.nu``), floats.
        periodic: coordinates whose axes are periodic (spectral derivatives); the others use
            2nd-order finite differences (``method="fd"`` for all).
        conditions: `GridCondition`s imposed inside the solve.
        experts: blocks per grid axis, e.g. (4, 1) splits x in 4 and keeps t whole; default one
            expert (PI-HC). Each block gets its own coefficients, its own collocation nodes and
            the condition nodes that lie in it (all of them with ``shared_conditions``). So a block's
            own problem must determine its field: a 2D Poisson block that holds the Dirichlet values of
            two of its sides does not (x y is free there; on 2 x 2 blocks max |u - U| = 0.22, status
            SUCCESS), and the ridge then sets the free part; ``shared_conditions`` is the remedy (6e-15).
            The first solve on a grid warns when the rows leave a direction of the basis free on a
            block (a fixed basis shows it; a generic learnt one may not: no warning proves nothing).
        points: collocation nodes drawn per block and per forward call, uniformly without
            replacement (the paper: 20 000); None uses every node of the block. In eval mode the
            draw is the same on every call (a fixed seed, the global generator untouched), so
            predictions are deterministic; the count stays, since the solution depends on how
            many PDE rows weigh against the condition rows (all nodes would favour u = 0 in Burgers).
        shared_conditions: every expert fits every condition node, not only those in its block, as
            the paper's diffusion-sorption code (the initial and boundary values replicated into
            each expert): an expert whose block touches no boundary still fits it with its own
            coefficients, which steadies a problem whose data enter through the boundary.
        overlap: nodes by which neighbouring blocks overlap, per side of each interface (one value
            or one per axis; default 0, the paper's disjoint blocks). Each expert then also fits
            the nodes within `overlap` of its block, and the output blends neighbours' fields with
            linear weights that sum to 1 across the 2 * overlap nodes around each interface, so u
            has no jump there. Outside those bands u is one expert's field, but a derivative of u at a
            node whose stencil reads a band node is not that expert's: the PDE holds (as each expert
            meets it) only at the nodes whose finite-difference stencils stay clear of every band, i.e.
            beyond the node next to a band (more near a non-periodic end, whose one-sided stencils
            read 4 nodes; higher derivatives read further); a spectral derivative of the blended u is
            global. (2 x 2 Poisson blocks with differing fields: |R| up to 5 at 32 of the 54 nodes
            outside the bands, 2e-13 beyond their stencils' reach.)
        ridge: the rows ``ridge * w`` (paper: 1e-4): keeps the solve well posed when the basis
            is rank deficient.
        max_steps, rtol, atol, gtol, tau: Levenberg-Marquardt options (paper: 50 steps, 1e-4).
        init: initial coefficients, "zeros" or "ones".
        dtype: the solve's dtype (float64 by default: the normal equations square the
            condition number); the output comes back in the basis's dtype.
        backward_solve: dense solve of the implicit backward ("lu", "cholesky", "lstsq").
        on_failure: what a sample whose solve did not converge does: "record" (default: counted
            in `last_stats`, training goes on, as the paper's code does), "warn" or "raise".
        jacobian: "pointwise" (default: J = sum_q diag(dR/df_q) B_q, all partials dR/df_q from one
            reverse pass per residual term; the implicit backward's Hessian likewise from Q + 1 passes
            over the Q fields the rows read) or "autodiff" (one JVP per coefficient in the solve, one
            HVP per coefficient in the backward; for residuals that are not pointwise).
        initial: output name -> data field holding its value on the first node of `initial_axis`, to hold
            there by construction (the paper's code's ``ic_mollifier``): that output is
            ``u = u0 + m(t) sum_i w_i b_i`` with ``m(t) = (t - t_0) / (t_last - t_0)``, so u = u0 exactly on
            the first time level whatever w. The basis fields are multiplied by m before the partials are
            taken, so ``u_t`` holds ``m' b``; u0 (and its derived fields) enter every row as a fixed offset.
            Conditions on that level are then constant rows: leave them out (`GridProblem.layer` does).
        initial_axis: the coordinate whose first node the initial value holds on (default "t"; not periodic).

    Forward: basis ``(batch, N, *grid)`` (one output) or ``(batch, N, C, *grid)``; data
    ``{name: (batch, *grid)}`` -> ``(batch, *grid)`` or ``(batch, C, *grid)``.
    `last_stats` holds the last solve's per-problem status, steps and residual norm (detached,
    problems ordered batch-major, then expert).
    """

    def __init__(self, residual: Callable[..., Any], *, coords: Sequence[str], spacing: Sequence[float],
                 origin: Sequence[float] | None = None, outputs: Sequence[str] = ("u",),
                 data_fields: Sequence[str] = (), derived: Mapping[str | tuple[str, ...], Callable] | None = None,
                 params: Mapping[str, float] | None = None,
                 periodic: Sequence[str] = (), method: str = "spectral", spatial: Sequence[str] | None = None,
                 conditions: Sequence[GridCondition] = (), experts: Sequence[int] | None = None,
                 points: int | None = None, shared_conditions: bool = False, overlap: int | Sequence[int] = 0,
                 ridge: float = 1e-4, max_steps: int = 50, rtol: float = 1e-4,
                 atol: float = 1e-4, gtol: float = 0.0, tau: float = 1e-3, init: str = "zeros",
                 dtype: torch.dtype = torch.float64, backward_solve: str = "lu", on_failure: str = "record",
                 jacobian: str = "pointwise", initial: Mapping[str, str] | None = None, initial_axis: str = "t"):
        super().__init__()
        self.coords, self.outputs, self.data_fields = tuple(coords), tuple(outputs), tuple(data_fields)
        self.derived = dict(derived or {})
        names = derived_names(self.derived)
        clash = set(names) & set(self.outputs + self.data_fields)
        if clash or len(set(names)) < len(names):
            raise ValueError(f"derived fields {list(names)} repeat a name or share one with an output or a data field "
                             f"({self.outputs + self.data_fields}); rename them")
        self.model_fields = self.outputs + names  # combined from the basis by the coefficients
        self.names = self.model_fields + self.data_fields
        self._derived_checked = False
        D = len(self.coords)
        if len(spacing) != D:
            raise ValueError(f"spacing needs one value per coordinate {self.coords}, got {list(spacing)}")
        self.spacing = [float(h) for h in spacing]
        bad = [(c, h) for c, h in zip(self.coords, self.spacing) if not (math.isfinite(h) and h > 0)]
        if bad:  # h = 0 made every derivative non-finite (u = 0, the failure only recorded); h < 0 flips their signs
            raise ValueError(f"spacing must be a positive finite grid step per coordinate {self.coords}, got "
                             f"{list(spacing)} ({', '.join(f'{c}: {h}' for c, h in bad)}); pass the distance between "
                             f"neighbouring nodes, with origin for where node 0 lies")
        self.origin = [0.0] * D if origin is None else [float(o) for o in origin]
        if len(self.origin) != D:
            raise ValueError(f"origin needs one value per coordinate {self.coords}, got {list(origin)}")
        self.spatial = tuple(spatial) if spatial is not None else tuple(c for c in self.coords if c != "t")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} (spectral on periodic axes, finite differences "
                             f"elsewhere; or finite differences on every axis), got {method!r}")
        self.periodic, self.method = tuple(periodic), method
        for name, value in (params or {}).items():
            if isinstance(value, Tensor) and value.requires_grad:
                raise ValueError(f"parameter {name!r} requires grad: the layer's solve does not differentiate its "
                                 f"parameters; pass a float (or a tensor without grad)")
        for what, fn in (("residual", residual), *((f"condition {c.at}", c.residual) for c in conditions
                                                   if isinstance(c, GridCondition))):
            captured = closure_tensors(fn, ())
            if captured:  # the implicit gradient reaches the basis and the data only: these would get none
                raise ValueError(f"the {what} reads tensors that require grad through its closure, a global or an object ({captured}); the "
                                 f"layer's solve gives them no gradient: pass such a coefficient as a float in params, "
                                 f"or as a data field")
        self.params = Params(dict(params or {}))
        self.initial, self.initial_axis = dict(initial or {}), initial_axis
        if self.initial:
            bad = {k: v for k, v in self.initial.items() if k not in self.outputs or v not in self.data_fields}
            if bad:
                raise ValueError(f"initial maps outputs {self.outputs} to data fields {self.data_fields} holding their "
                                 f"values at {initial_axis} = its first node; got {bad}")
            if initial_axis not in self.coords or initial_axis in self.periodic:
                raise ValueError(f"initial_axis must be a non-periodic coordinate of {self.coords} (periodic: "
                                 f"{self.periodic}), got {initial_axis!r}")
        self.experts = tuple(int(e) for e in (experts if experts is not None else (1,) * D))
        if len(self.experts) != D or any(e < 1 for e in self.experts):
            raise ValueError(f"experts needs one positive block count per coordinate {self.coords}, got {experts!r}")
        if points is not None and (not isinstance(points, int) or points < 1):
            raise ValueError(f"points must be a positive int (collocation nodes per block) or None (all), got {points!r}")
        self.points, self.shared_conditions = points, bool(shared_conditions)
        overlaps = overlap if isinstance(overlap, Sequence) else (overlap,) * D
        if len(overlaps) != D or any(not isinstance(o, int) or o < 0 for o in overlaps):
            raise ValueError(f"overlap must be a node count >= 0, one or one per coordinate {self.coords}, got {overlap!r}")
        self.overlap = tuple(overlaps)
        if init not in ("zeros", "ones"):
            raise ValueError(f"init must be 'zeros' or 'ones', got {init!r}")
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}")
        if jacobian not in ("pointwise", "autodiff"):
            raise ValueError(f"jacobian must be 'pointwise' or 'autodiff', got {jacobian!r}")
        for c in conditions:
            if not isinstance(c, GridCondition):
                raise TypeError(f"conditions must be GridCondition objects, got {c!r}")
            unknown = set(c.at) - set(self.coords)
            if unknown or not any(isinstance(i, int) for i in c.at.values()):
                raise ValueError(f"GridCondition.at must fix at least one of the coordinates {self.coords} to a node "
                                 f"index, got {dict(c.at)}")
            if not all(isinstance(i, (int, slice)) for i in c.at.values()):
                raise ValueError(f"GridCondition.at takes node indices (int) or slices, got {dict(c.at)}")
        self.residual, self.conditions = residual, tuple(conditions)
        self.ridge, self.init, self.dtype, self.on_failure = float(ridge), init, dtype, on_failure
        self.solver_options = {"rtol": rtol, "atol": atol, "gtol": gtol, "max_steps": max_steps, "tau": tau}
        LevenbergMarquardt(**self.solver_options)  # validates the options now, not at the first call
        self.jacobian = jacobian
        self.adjoint = Implicit(backward_solve)
        self._blocks: list[_Block] | None = None
        self._layouts: dict = {}
        self.last_stats: dict[str, Tensor] = {}
        # solves, failed ones and their LM steps since `pop_solve_totals`, training [0] and eval [1] apart:
        # summed on the device, read only when popped
        self.register_buffer("_solve_totals", torch.zeros(2, 3, dtype=torch.float64), persistent=False)

    def pop_solve_totals(self, training: bool = True) -> dict[str, float]:
        """Training (or with `training=False` eval-mode) solves since the last call: how many failed, and their
        mean LM steps (one host read)."""
        totals = self._solve_totals[0 if training else 1]
        n, failed, steps = totals.tolist()
        totals.zero_()
        return {} if n == 0 else {"solve_failures": int(failed), "solves": int(n), "solve_steps_mean": steps / n}

    def pending_solve_totals(self) -> Tensor:
        """A copy of the counts not yet popped, (2, 3) on the device (no host read): a checkpoint keeps them, as the
        buffer is not in the state dict (older checkpoints load without it), and `restore_solve_totals` puts them
        back, so a resumed run's next record counts the solves since the last one, as an uninterrupted run's does."""
        return self._solve_totals.clone()

    def restore_solve_totals(self, totals: Tensor) -> None:
        self._solve_totals.copy_(totals)

    @property
    def n_experts(self) -> int:
        return math.prod(self.experts)

    def extra_repr(self) -> str:
        return (f"coords={self.coords}, experts={self.experts}, points={self.points}, "
                f"conditions={len(self.conditions)}, ridge={self.ridge}" + (f", initial={self.initial}" if self.initial else ""))

    # --- what the residuals read (one probe call each) ----------------------------------------
    def _probe(self) -> list[_Block]:
        if self._blocks is None:
            blocks, n_out = [], len(self.model_fields)
            named = [("the residual", self.residual, 1.0)] + [(f"condition {i} (at {dict(c.at)})", c.residual, float(c.weight))
                                                              for i, c in enumerate(self.conditions)]
            for what, fn, weight in named:
                rec, with_params = Recorder(self.names, self.coords, self.spatial, dtype=self.dtype), takes_params(fn)
                try:
                    out = fn(rec, self.params) if with_params else fn(rec)
                except RuntimeError as err:  # the probe's few nodes meet a tensor of the grid's (or another) shape
                    if "size" not in str(err) and "shape" not in str(err):
                        raise
                    raise ValueError(f"{what} failed on the fields at {rec.n} nodes ({err}): it combines them with a "
                                     f"tensor of a fixed shape, such as a source or coefficient given on the grid. Pass "
                                     f"such a field as a data field, HardConstraint(..., data_fields=('f',)) and "
                                     f"layer(basis, {{'f': (batch, *grid)}}), and read it as d.f") from err
                terms = as_terms(out)  # a None term (a missing return) gets the shape message
                keys = [k for k in rec.asked if k[0] < n_out]
                if not keys and None not in terms:  # None (a missing return) gets the shape message
                    raise ValueError(f"{what} reads none of the outputs {self.outputs}; write it against d.u, d.u_x, ...")
                # a reduced value (mean, sum, norm) would be broadcast onto every row: a wrong field, solved "successfully"
                self._check_shapes(what, terms, (rec.n,))
                blocks.append(_Block(fn, what, with_params, weight, keys, [k for k in rec.asked if k[0] >= n_out],
                                     len(terms)))
            self._blocks = blocks
        return self._blocks

    @staticmethod
    def _check_shapes(what: str, terms: Sequence[Tensor | None], nodes: tuple[int, ...]) -> None:
        shapes = [None if t is None else tuple(t.shape) for t in terms]
        if any(s != nodes for s in shapes):
            got = shapes[0] if len(shapes) == 1 else f"terms of shapes {shapes}"
            raise ValueError(f"{what} must return one value per node, a tensor of d.u's shape ({nodes} on these "
                             f"{math.prod(nodes)} nodes); got {got}: return it, without reducing it (mean/sum/norm) or "
                             f"adding axes; the layer solves it at every node")

    # --- which nodes belong to which expert (per grid shape, cached) ---------------------------
    def check_grid(self, grid: tuple[int, ...], device) -> None:
        """The layout's checks for fields on `grid` (experts per axis, points per block, nodes along each axis the
        residuals differentiate, condition indices), before a solve: a trainer calls it before writing its run
        folder. The layout is kept for the solves."""
        self._layout(tuple(grid), torch.empty(0, device=device).device)  # "cuda" as the solves see it: "cuda:0"

    def _layout(self, grid: tuple[int, ...], device) -> dict:
        key = (grid, str(device))
        if key in self._layouts:
            return self._layouts[key]
        for n, e, c in zip(grid, self.experts, self.coords):
            if e > n:
                raise ValueError(f"experts={self.experts} splits {c} into {e} blocks but the grid has {n} nodes on it")
        for blk in self._probe():  # torch.gradient's 2nd-order one-sided ends need 3 nodes; spectral ones need none
            for a in sorted({a for _, path in blk.model_keys + blk.data_keys for a in path}):
                if grid[a] < 3 and self.coords[a] not in self.periodic:
                    raise ValueError(f"{blk.name} differentiates along {self.coords[a]!r}, which is not periodic: its "
                                     f"finite differences need at least 3 nodes on that axis, the grid {grid} has "
                                     f"{grid[a]}; use a grid of 3 or more {self.coords[a]} nodes")
        weights = _expert_weights(grid, self.experts, self.overlap, [c in self.periodic for c in self.coords])
        member = weights > 0  # (K, n_nodes): the nodes each expert fits (its block, widened by the overlap)
        layout = {"weights": weights.to(device, self.dtype), "blocks": _members(member)}
        if self.points is not None and self.points > int(layout["blocks"][1].sum(1).min()):
            raise ValueError(f"points={self.points} exceeds the {int(layout['blocks'][1].sum(1).min())} nodes of the "
                             f"smallest block (grid {grid}, experts {self.experts}); lower points or use fewer experts")
        layout["blocks"] = tuple(t.to(device) for t in layout["blocks"])
        conditions, bare = [], []
        for number, c in enumerate(self.conditions):
            on_face = torch.ones(grid, dtype=torch.bool)
            for name, i in c.at.items():
                a = self.coords.index(name)
                if isinstance(i, int) and not -grid[a] <= i < grid[a]:
                    raise ValueError(f"GridCondition at {dict(c.at)}: index {i} is outside the {grid[a]} nodes of {name}")
                sel = torch.zeros(grid[a], dtype=torch.bool)
                sel[i] = True
                shape = [1] * len(grid)
                shape[a] = grid[a]
                on_face = on_face & sel.reshape(shape)
            if not on_face.any():  # dropped silently, it left only the misleading "no node of any condition" warning
                raise ValueError(f"condition {number} (at {dict(c.at)}) selects no node of the grid {grid}: its slice is "
                                 f"empty on that axis; fix the slice to the nodes it should hold on, or drop the condition")
            fits = torch.ones_like(member) if self.shared_conditions else member
            conditions.append(fits & on_face.reshape(1, -1))
        if conditions:
            bare = (~torch.stack(conditions).any(dim=(0, 2))).nonzero().flatten().tolist()
            if bare:  # only PDE rows and the ridge: right for a forced PDE, zero for a homogeneous one
                warnings.warn(f"expert block(s) {bare} of experts {self.experts} hold no node of any condition (the "
                              f"blocks split an axis the conditions fix, such as t), so their fields follow from the "
                              f"PDE rows alone: zero for a homogeneous PDE. Set shared_conditions=True or do not split "
                              f"that axis, unless the PDE's own data determine the field", stacklevel=_caller_level())
        layout["conditions"] = [tuple(t.to(device) for t in _members(fits)) for fits in conditions]
        layout["bare"], layout["determined_checked"] = set(bare), False
        self._layouts[key] = layout
        return layout

    # --- forward ------------------------------------------------------------------------------
    def forward(self, basis: Tensor, data: Mapping[str, Tensor] | None = None) -> Tensor:
        if torch.is_inference_mode_enabled():  # the rows' Jacobian is taken with autograd, which it switches off
            raise RuntimeError("HardConstraint cannot run under torch.inference_mode(): its solve differentiates the "
                               "PDE rows with autograd; predict under torch.no_grad() instead")
        data = dict(data or {})
        missing = [n for n in self.data_fields if n not in data]
        extra = [n for n in data if n not in self.data_fields]
        if missing or extra:
            raise ValueError(f"data must hold exactly the fields {self.data_fields}; missing {missing}, unexpected {extra}")
        D, C = len(self.coords), len(self.outputs)
        if basis.dim() != 2 + D + (C > 1) or (C > 1 and basis.shape[2] != C):
            want = f"(batch, N, {C}, *grid)" if C > 1 else "(batch, N, *grid)"
            raise ValueError(f"basis must be {want} with {D} grid axes for coordinates {self.coords}; "
                             f"got shape {tuple(basis.shape)}")
        basis_c = basis if C > 1 else basis[:, :, None]
        B, N, grid = basis.shape[0], basis.shape[1], tuple(basis_c.shape[3:])
        for name, v in data.items():
            if tuple(v.shape) != (B, *grid):
                raise ValueError(f"data field {name!r} must have shape (batch, *grid) = {(B, *grid)}, got {tuple(v.shape)}")
        blocks, layout = self._probe(), self._layout(grid, basis.device)
        K, S = self.n_experts, B * self.n_experts
        work = basis_c.to(self.dtype)
        on_grid = dict(origin=self.origin, periodic=self.periodic, method=self.method, spatial=self.spatial)
        offset = of_offset = None
        if self.initial:  # u = u0 + m(t) b . w: the basis is m b from here on, partials included (u_t holds m' b)
            work = work * self._mollifier(grid, work.device)
            offset = {name: (data[self.initial[name]].to(self.dtype) if name in self.initial else
                             torch.zeros((B, *grid), dtype=self.dtype, device=basis.device))[:, None]
                      for name in self.outputs}  # (B, 1, *grid) each
            of_offset = GridDerivatives({**offset, **self._derive(offset)}, self.coords, self.spacing, **on_grid)
        outputs = {name: work[:, :, k] for k, name in enumerate(self.outputs)}  # (B, N, *grid) each
        of_basis = GridDerivatives({**outputs, **self._derive(outputs)}, self.coords, self.spacing, **on_grid)
        of_data = GridDerivatives({name: data[name].to(self.dtype)[:, None] for name in self.data_fields},
                                  self.coords, self.spacing, **on_grid) if self.data_fields else None

        # collocation nodes (B, K, m) and, per condition, its nodes in each block (K, L) + mask
        nodes, mask = self._collocation(layout["blocks"], B)
        node_sets = [(nodes, mask)] + [(n[None].expand(B, -1, -1), v[None].expand(B, -1, -1)) for n, v in layout["conditions"]]
        tensors, plan, M = [], [], len(self.model_fields)
        for blk, (idx, valid) in zip(blocks, node_sets):
            m = idx.shape[-1]
            flat_idx = idx.reshape(B, 1, K * m)
            for k, path in blk.model_keys + blk.data_keys:
                full = (of_basis if k < M else of_data)(self.names[k], *(self.coords[i] for i in path)).flatten(2)
                picked = torch.gather(full, 2, flat_idx.expand(-1, full.shape[1], -1)).view(B, -1, K, m)
                tensors.append(picked.permute(0, 2, 3, 1).reshape(S, m, -1) if k < M else picked.reshape(S, m))
            for k, path in blk.model_keys if of_offset is not None else ():  # u0's part of each model partial
                full = of_offset(self.names[k], *(self.coords[i] for i in path)).flatten(2)
                tensors.append(torch.gather(full, 2, flat_idx).reshape(S, m))
            coords = [self._coordinate(a, idx, grid).reshape(S, m) for a in range(D)]
            plan.append((coords, valid.reshape(S, m).to(self.dtype)))

        w0 = (torch.zeros if self.init == "zeros" else torch.ones)(S, N, dtype=self.dtype, device=basis.device)
        # the plan (node coordinates, masks) is bound here: a backward after a later forward still sees its own
        rows = functools.partial(self._residual_rows, plan)
        jac = functools.partial(self._jacobian, plan) if self.jacobian == "pointwise" else "loop"
        solver, status = LevenbergMarquardt(jac=jac, **self.solver_options), {}

        def solve(x0, *params):
            status["sol"] = solver(rows, x0, *params, throw=False)
            return status["sol"].value

        hessian = functools.partial(self._hessian, plan) if self.jacobian == "pointwise" else None
        w = custom_least_squares(rows, adjoint=self.adjoint, hessian_matrix=hessian)(solve)(w0, *tensors)
        self._report(status["sol"])
        if not layout["determined_checked"] and not tracing():  # once per layout: one host read, off the per-step path
            layout["determined_checked"] = True
            self._warn_undetermined(rows, jac, w.detach(), [t.detach() for t in tensors], work, layout)
        # u = b . sum_k phi_k w_k: each node takes its block's coefficients (blended across an overlap)
        w_node = torch.einsum("kn,bki->bni", layout["weights"], w.view(B, K, N))  # (B, n_nodes, N)
        u = torch.einsum("bicn,bni->bcn", work.flatten(3), w_node).reshape(B, C, *grid)
        if offset is not None:  # + u0: on the first time level m b . w is exactly 0, so u there is u0 exactly
            u = u + torch.cat(list(offset.values()), dim=1)
        u = u.to(basis.dtype)
        return u if C > 1 else u[:, 0]

    def _warn_undetermined(self, rows, jac, w: Tensor, tensors: list[Tensor], work: Tensor, layout: dict) -> None:
        """Warn about the blocks (holding condition nodes) whose rows leave their field partly free on this basis.

        Free: a direction v of the coefficients whose rows' change is below the ridge's (sigma(J) < ridge: the
        ridge, not the PDE or a condition, sets w along it) while the field on the block's nodes moves with it by
        more than 1e-3 of the basis's largest change (not a mere redundancy among the basis fields). J is taken
        at the solution, so a nonlinear residual is judged by its linearisation there. Measured: 9e-3 to 0.2 for
        the free x y of a cubic basis on 2 x 2 Dirichlet blocks; at most 4e-5 for FNO bases at initialisation on
        the built-in problems' determined set-ups (Burgers, Navier-Stokes 2 x 2, diffusion-sorption shared), whose
        own near-null directions barely move the field. A generic basis hides an underdetermined block (4e-4 to
        2e-3 for diffusion-sorption's inner blocks without shared_conditions): no warning proves nothing."""
        N, K = w.shape[1], self.n_experts
        # the first sample's blocks only: the basis of a whole batch, gathered per block, is several copies of the
        # layer's largest tensor (GBs at the paper's Navier-Stokes size), and one sample shows a free direction
        J = jacobian(rows, w, *tensors, mode=jac)[1][:K, :-N]  # without the ridge rows
        work = work[:1]
        finite = torch.isfinite(J).all(2).all(1)  # a failed solve is reported by its status, not judged here
        _, sigma, Vh = torch.linalg.svd(torch.where(finite[:, None, None], J, 0), full_matrices=False)
        floor = torch.clamp(math.sqrt(torch.finfo(J.dtype).eps) * sigma[:, :1], min=self.ridge)
        free = Vh.mT * (sigma < floor)[:, None, :]  # (S, N, r): the free directions, others zeroed
        members, valid = layout["blocks"]  # (K, L)
        B = work.shape[0]
        fields = work.flatten(3)[:, :, :, members] * valid  # (B, N, C, K, L): each block's basis fields
        fields = fields.permute(0, 3, 2, 4, 1).reshape(B * K, -1, N)
        moved = finite & (torch.linalg.matrix_norm(fields @ free, ord=2) > 1e-3 * torch.linalg.matrix_norm(fields, ord=2))
        blocks = sorted(set(moved.nonzero().flatten().tolist()) - layout["bare"])
        if blocks:
            where = f"expert block(s) {blocks} of experts {self.experts}: their" if K > 1 else "the layer's"
            fix = ("set shared_conditions=True (every expert then fits every condition node), use fewer experts, "
                   "or add conditions" if K > 1 and not self.shared_conditions else "add conditions")
            warnings.warn(f"{where} PDE and condition rows leave part of the field free on this basis: some "
                          f"combination of the basis fields changes it there while no row changes, and the ridge alone "
                          f"sets it (e.g. Dirichlet values on two sides of a 2D block); {fix}. Checked once, on the "
                          f"first solve", stacklevel=_caller_level())

    def _mollifier(self, grid: tuple[int, ...], device) -> Tensor:
        """m on the grid, ``(1, 1, C, *grid)``: (t - t_0) / (t_last - t_0) on the outputs with an initial value, 1 on
        the others. Linear rather than the paper's code's 1 - exp(-t / 0.005): that time scale is far below these
        problems' time steps (Burgers 0.02, Navier-Stokes 0.078 at the paper's 65 levels and 0.31 at the CPU size's
        17, diffusion-sorption 5 s), where 1 - exp(-t / tau) is 0 on the first level and 1 on every other: a jump that
        the time differences read as u_t. t / T is smooth on any grid, and (u - u0) / m stays bounded (-> T u_t(0)
        at t = 0), so the basis need not grow near t = 0. T is the grid's span: on a grid of other
        levels (physics.train_levels, then the whole test grid) m changes by one factor for every basis field, which the
        solve's coefficients absorb (bar the ridge)."""
        a = self.coords.index(self.initial_axis)
        n = grid[a]
        if n < 2:
            raise ValueError(f"initial holds the value on the first {self.initial_axis} node; the grid {grid} has {n} there")
        shape = [1] * len(grid)
        shape[a] = n
        m = (torch.arange(n, dtype=self.dtype, device=device) / (n - 1)).reshape(shape)
        return torch.stack([m.expand(grid) if name in self.initial else torch.ones(grid, dtype=self.dtype, device=device)
                            for name in self.outputs])[None, None]

    def _derive(self, outputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The derived fields of `outputs` (each ``(..., *grid)``); the first call checks each map's linearity."""
        if self.derived and not self._derived_checked:
            ref = next(iter(outputs.values()))
            check_linear(self.derived, self.outputs, ref.shape[-len(self.coords):], tuple(self.spacing),
                         dtype=ref.dtype, device=ref.device)
            self._derived_checked = True
        return derive(self.derived, outputs, tuple(self.spacing))

    def _collocation(self, blocks: tuple[Tensor, Tensor], B: int) -> tuple[Tensor, Tensor]:
        members, valid = blocks  # (K, L)
        if self.points is None:
            return members[None].expand(B, -1, -1), valid[None].expand(B, -1, -1)
        if self.training:
            keys = torch.rand(B, *members.shape, device=members.device)
        else:  # one fixed draw for every sample: a prediction must not depend on its place in the batch
            fixed = torch.Generator(members.device).manual_seed(0)
            keys = torch.rand(1, *members.shape, device=members.device, generator=fixed).expand(B, -1, -1)
        keys = keys.masked_fill(~valid, -1.0)
        pick = keys.topk(self.points, dim=-1).indices
        return torch.gather(members[None].expand(B, -1, -1), 2, pick), torch.ones_like(pick, dtype=torch.bool)

    def _coordinate(self, axis: int, flat_idx: Tensor, grid: tuple[int, ...]) -> Tensor:
        stride = math.prod(grid[axis + 1:])
        i = torch.div(flat_idx, stride, rounding_mode="floor") % grid[axis]
        return self.origin[axis] + self.spacing[axis] * i.to(self.dtype)

    # --- the least-squares rows and their Jacobian ----------------------------------------------
    def _fields(self, blk: _Block, w: Tensor, tensors, pos: int) -> tuple[dict, dict, int]:
        model, given = {}, {}
        for key in blk.model_keys:
            model[key] = (tensors[pos] @ w[..., None])[..., 0]
            pos += 1
        for key in blk.data_keys:
            given[key] = tensors[pos]
            pos += 1
        if self.initial:  # the fixed offset u0 (its partials, derived fields) after the block's data tensors
            for key in blk.model_keys:
                model[key] = model[key] + tensors[pos]
                pos += 1
        return model, given, pos

    def _rows(self, blk: _Block, coords, valid, model: dict, given: dict) -> Tensor:
        view = _Nodes(self.names, self.coords, self.spatial, {**model, **given}, coords)
        rows = residual_terms(blk.fn, view, self.params, blk.takes_params)
        if len(rows) != blk.n_terms:
            raise RuntimeError("the residual returned a different number of terms than on its first call")
        self._check_shapes(blk.name, rows, tuple(valid.shape))  # shapes only: no host read
        return torch.cat([blk.weight * valid * r for r in rows], dim=1)

    def _residual_rows(self, plan, w: Tensor, *tensors: Tensor) -> Tensor:
        out, pos = [], 0
        for blk, (coords, valid) in zip(self._probe(), plan):
            model, given, pos = self._fields(blk, w, tensors, pos)
            out.append(self._rows(blk, coords, valid, model, given))
        out.append(self.ridge * w)
        return torch.cat(out, dim=1)

    def _blocks_at(self, plan, w: Tensor, tensors):
        """Per block: (block, its bases B_q, the fields f_q = B_q w (+ offset) as fresh leaves, the rows built
        on them with their graph); iterate under torch.enable_grad()."""
        pos = 0
        for blk, (coords, valid) in zip(self._probe(), plan):
            start = pos
            model, given, pos = self._fields(blk, w, tensors, pos)
            fields = [v.detach().requires_grad_() for v in model.values()]
            yield blk, tensors[start:start + len(fields)], fields, self._rows(blk, coords, valid, dict(zip(model, fields)), given)

    def _jacobian(self, plan, w: Tensor, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        # A pointwise residual of fields f_q = B_q w has dr/dw = sum_q diag(dr/df_q) B_q; the partials
        # dr/df_q of all q come from one reverse pass per residual term (the rows are pointwise).
        # Returns the rows too (computed on the way), so the solver does not evaluate them again.
        rows_out, jac_out = [], []
        with torch.enable_grad():
            for blk, bases, fields, rows in self._blocks_at(plan, w, tensors):
                per_term = rows.view(w.shape[0], blk.n_terms, -1)
                for t in range(blk.n_terms):
                    partials = torch.autograd.grad(per_term[:, t].sum(), fields, allow_unused=True,
                                                   retain_graph=t < blk.n_terms - 1)
                    J = per_term.new_zeros(*per_term[:, t].shape, w.shape[1])
                    for d, basis in zip(partials, bases):
                        if d is not None:
                            J.addcmul_(d[..., None], basis)
                    jac_out.append(J)
                rows_out.append(rows.detach())
        rows_out.append(self.ridge * w)
        jac_out.append(self.ridge * torch.eye(w.shape[1], dtype=w.dtype, device=w.device).expand(w.shape[0], -1, -1))
        return torch.cat(rows_out, dim=1), torch.cat(jac_out, dim=1)

    def _hessian(self, plan, w: Tensor, *tensors: Tensor) -> Tensor:
        """The Hessian of 1/2 ||rows(w)||^2, (S, N, N), for the implicit backward. Pointwise rows of fields
        f_q = B_q w have, per node, a Q x Q Hessian h in the fields, so H = sum_{q,q'} B_q^T diag(h_qq') B_q'
        (J^T J and the rows' curvature both): Q + 1 reverse passes per block instead of one HVP per coefficient."""
        S, N = w.shape
        H = (self.ridge ** 2) * torch.eye(N, dtype=w.dtype, device=w.device).expand(S, N, N)
        with torch.enable_grad():
            for _, bases, fields, rows in self._blocks_at(plan, w, tensors):
                grads = torch.autograd.grad(0.5 * rows.square().sum(), fields, create_graph=True, allow_unused=True)
                for basis, g in zip(bases, grads):
                    if g is None or not g.requires_grad:  # unused, or linear in the fields: no curvature through it
                        continue
                    h = torch.autograd.grad(g.sum(), fields, retain_graph=True, allow_unused=True)  # row q: (S, m) each
                    mixed = sum(d[..., None] * b for d, b in zip(h, bases) if d is not None)
                    if isinstance(mixed, Tensor):  # sum_p diag(h_qp) B_p, then B_q^T of it
                        H = H + basis.mT @ mixed.detach()
        return H

    def _report(self, sol) -> None:
        self.last_stats = {"status": sol.status.detach(), "num_steps": sol.stats["num_steps"].detach(),
                           "residual_norm": sol.stats["residual_norm"].detach()}
        status = self.last_stats["status"]  # eval solves count too, apart: a test prediction may rest on a failed one
        self._solve_totals[0 if self.training else 1] += torch.stack([
            torch.full((), float(status.numel()), dtype=torch.float64, device=status.device),  # a fill, not a host copy
            (status != Status.SUCCESS).sum().double(), self.last_stats["num_steps"].double().sum()])
        if self.on_failure == "record":
            return
        failed = bool((sol.status != Status.SUCCESS).any())
        if failed:
            message = describe(sol.status, "hard-constraint solve") + "\n  (raise max_steps or loosen rtol/atol)"
            if self.on_failure == "raise":
                raise SolveError(message, sol)
            warnings.warn(message, RuntimeWarning, stacklevel=_caller_level())


_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep, os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)


def _caller_level() -> int:
    """The `warnings.warn` stacklevel, for the function that calls this, of the first frame outside this
    package's layers (sciml/constraints) and torch: the user's call of the layer or of a model holding
    it. A fixed level lands in ``nn.Module._call_impl``, and torch's wrappers vary in depth (version, hooks)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def derived_names(derived: Mapping[str | tuple[str, ...], Callable]) -> tuple[str, ...]:
    """The field names a `derived` mapping defines, in order (a tuple key names several)."""
    return tuple(n for key in derived for n in ((key,) if isinstance(key, str) else key))


def derive(derived: Mapping[str | tuple[str, ...], Callable], fields: Mapping[str, Tensor],
           spacing: tuple[float, ...]) -> dict[str, Tensor]:
    """Each derived field of `fields` (name -> ``(..., *grid)``) by name, checked to keep their shape."""
    shape, out = next(iter(fields.values())).shape, {}
    for key, fn in derived.items():
        names, values = ((key,), (fn(fields, spacing),)) if isinstance(key, str) else (key, tuple(fn(fields, spacing)))
        if len(values) != len(names):
            raise ValueError(f"derived fields {key} need {len(names)} fields from their map, got {len(values)}")
        for name, v in zip(names, values):
            if not isinstance(v, Tensor) or v.shape != shape:
                raise ValueError(f"derived field {name!r} must be a tensor of its inputs' shape {tuple(shape)}, "
                                 f"got {getattr(v, 'shape', type(v))}")
            out[name] = v
    return out


def check_linear(derived: Mapping[str | tuple[str, ...], Callable], names: Sequence[str], grid: Sequence[int],
                 spacing: tuple[float, ...], *, dtype=torch.float64, device=None) -> None:
    """Raise unless each map f satisfies f(a + 2.5 b) = f(a) + 2.5 f(b) for two random sets of fields
    `names` on `grid` (drawn from a private generator): the hard layer combines per-basis values,
    which only a linear map allows."""
    gen = torch.Generator().manual_seed(0)
    a, b = ({k: torch.randn(*grid, generator=gen, dtype=torch.float64).to(device, dtype) for k in names} for _ in range(2))
    of_a, of_b = derive(derived, a, spacing), derive(derived, b, spacing)
    for name, lhs in derive(derived, {k: a[k] + 2.5 * b[k] for k in names}, spacing).items():
        rhs = of_a[name] + 2.5 * of_b[name]
        if not torch.allclose(lhs, rhs, rtol=1e-5, atol=1e-5 * float(rhs.abs().max())):
            raise ValueError(f"derived field {name!r} is not linear in the outputs (f(a + 2.5 b) != f(a) + 2.5 f(b)); "
                             "the hard-constraint layer combines it per basis field, which needs a linear map. Read a "
                             "nonlinear expression in the residual instead")


def _members(member: Tensor) -> tuple[Tensor, Tensor]:
    """Flat node indices of each group, padded: (groups, L) indices and (groups, L) validity.

    member: (groups, n_nodes) bool. Padding slots hold some index with valid False."""
    counts = member.sum(1)
    L = max(int(counts.max()), 1)
    idx = torch.argsort((~member).to(torch.int8), dim=1, stable=True)[:, :L]  # members first, in node order
    return idx, torch.arange(L)[None] < counts[:, None]


def _expert_weights(grid, experts, overlap, periodic) -> Tensor:
    """(K, n_nodes) partition of unity: expert k's weight at each node, experts in row-major block order.

    Per axis, e contiguous blocks (node i in block i*e//n); with overlap o each block's weight ramps
    linearly from 1 to 0 across 2o nodes centred on each interface (wrapping on periodic axes), so
    neighbours sum to 1 there; o = 0 gives each node to its own block alone."""
    per_axis = []
    for n, e, o, wrap in zip(grid, experts, overlap, periodic):
        i = torch.arange(n, dtype=torch.float64)
        starts = [-(-b * n // e) for b in range(e + 1)]  # block b = {i : i*e//n = b}
        if o == 0:
            per_axis.append(torch.nn.functional.one_hot(torch.arange(n) * e // n, e).T.double())
            continue
        if 2 * o > min(b - a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"overlap={o} needs blocks of at least {2 * o} nodes; the grid's {n} nodes in {e} blocks "
                             f"are narrower; lower the overlap or use fewer experts")
        rows = []
        for b in range(e):
            half, rel = (starts[b + 1] - starts[b]) / 2, i - (starts[b] + starts[b + 1] - 1) / 2  # from the centre
            if wrap:
                rel = torch.remainder(rel + n / 2, n) - n / 2
            left, right = half + rel, half - rel  # signed distances inside the block's two interfaces
            ramp = lambda d: (0.5 + d / (2 * o)).clamp(0, 1)
            rows.append(torch.minimum(ramp(left) if (b > 0 or wrap) and e > 1 else torch.ones(n),
                                      ramp(right) if (b < e - 1 or wrap) and e > 1 else torch.ones(n)))
        per_axis.append(torch.stack(rows))
    weights = per_axis[0]
    for w in per_axis[1:]:  # expert (b_0, b_1, ...) -> b_0 * e_1 * ... + b_1 * ... ; node likewise
        weights = (weights[:, None, :, None] * w[None, :, None, :]).flatten(0, 1).flatten(1, 2)
    return weights / weights.sum(0, keepdim=True)
