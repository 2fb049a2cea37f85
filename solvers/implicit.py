"""Implicit differentiation: any root, fixed-point or least-squares solve as a differentiable layer.

Given an optimality condition F(x, *params) = 0 and any forward solver, the solution x*(params)
has, by the implicit function theorem,

    dx*/dparams = -(dF/dx)^{-1} dF/dparams,   so for a cotangent v = dL/dx*:
    solve (dF/dx)^T u = -v,   then dL/dparams = u^T dF/dparams.

The forward solve runs without building a graph; the backward is one linear solve with VJPs of
F (matrix-free Krylov, or a dense factorisation of the materialised Jacobian) plus one VJP in the
params.  Memory is independent of the number of forward iterations.

How to differentiate is an object (as optimistix's adjoints):

  * `Implicit(backward_solve=..., on_failure="raise")`  the IFT rule above
  * `Unrolled()`                     backpropagate through the solver's iterations
  * `Phantom(steps, damping)`        fixed points only: backprop through `steps` damped steps
                                     z <- (1 - damping) z + damping T(z) started at x*.detach()
                                     (Geng et al. 2021); `OneStep()` = Phantom(1, 1), the
                                     Jacobian-free backprop of Fung et al. 2022.

Contract (kept positional on purpose: keyword binding cost jaxopt a layer of bugs):
``F(x, *params)``; the solver is called ``solver(x0, *params)`` and returns a
`solvers.solution.Solution` (or a tensor).  Every tensor the solution depends on must be passed
in ``params``: a tensor reached otherwise gets no gradient, so `Implicit` refuses one that requires
grad and that F reaches through a closure, a default argument, a module, a global its code names,
a callable object's attributes, or a dict/list/tuple/set held by any of these or passed in params
(a bounded walk: 6 levels deep, 20 000 container items in all, with a warning past that).  x: (batch, *shape) with independent samples when
``batched=True`` (the default); ``batched=False`` treats the whole x (any shape, 0-d included)
as one problem.

Failures are never turned into zero gradients: a forward sample whose status is not SUCCESS, or
a failed backward linear solve, raises `SolveError` (``on_failure="raise"``) or warns and
returns the inexact gradient (``"warn"``).  A backward solve that reports success with a residual
over 1e-2 of the right-hand side (a truncated `Neumann` series) warns, naming the fix.  `Implicit.last_backward` keeps the last backward
`Solution` for inspection.

Derivatives of any order are exact (for `Implicit`): with ``create_graph=True`` the backward is
itself differentiable -- it treats the adjoint u as the root of (dF/dx)^T u + v = 0 and x* as the
layer's own output, so each further order costs one more linear solve of the same kind.  Works
with ``torch.autograd`` (``backward``, ``grad`` with or without ``create_graph``, ``gradcheck``,
``gradgradcheck``, ``torch.autograd.functional.jacobian`` / ``hessian`` with the default
``vectorize=False``) and with ``torch.func.grad`` / ``torch.func.vjp``, nested
(``grad(grad(f))``).  Not supported: every transform built on ``torch.func.vmap`` --
``vmap``, ``jacrev``, ``jacfwd``, ``hessian`` -- since the solvers poll convergence on the host,
and forward mode (``torch.func.jvp``, ``jacfwd``), which has no rule here; use
``torch.autograd.functional.hessian`` or nested ``torch.func.grad`` instead.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from .linear import BiCGSTAB, CG, GMRES, Dense
from .solution import Solution, SolveError, Status, describe

__all__ = ["Implicit", "Unrolled", "Phantom", "OneStep", "custom_root", "custom_fixed_point",
           "custom_least_squares", "root", "fixed_point", "least_squares"]

_DENSE = ("lu", "cholesky", "lstsq")
_KRYLOV = {"gmres": lambda rtol: GMRES(rtol=rtol, restart=50), "cg": lambda rtol: CG(rtol=rtol),
           "bicgstab": lambda rtol: BiCGSTAB(rtol=rtol)}
_POLICIES = ("raise", "warn")


def default_rtol(dtype: torch.dtype) -> float:
    """The backward solves' default relative tolerance: 1e-10, or 50 ulp where the dtype cannot reach it
    (float32: 6e-6)."""
    return max(1e-10, 50 * torch.finfo(dtype).eps)


def krylov(name: str, dtype: torch.dtype):
    """Krylov solver `name` with a tolerance the dtype can reach (`default_rtol`)."""
    return _KRYLOV[name](default_rtol(dtype))


def _check_policy(on_failure: str) -> None:
    if on_failure not in _POLICIES:
        raise ValueError(f"on_failure={on_failure!r} is not valid; use one of {list(_POLICIES)}")


class Implicit:
    """Differentiate through the implicit function theorem.

    backward_solve: how to solve (dF/dx)^T u = -v.
      "gmres" (default), "cg" (only when dF/dx is symmetric positive definite, e.g. the Hessian at
      a strict minimum), "bicgstab": matrix-free with rtol 1e-10 in float64 (50 eps otherwise),
      one VJP per iteration;
      "lu", "cholesky", "lstsq": materialise dF/dx^T with n VJPs and factorise -- exact and
      fastest for small n; "cholesky" checks that dF/dx is symmetric (relative asymmetry at most
      sqrt(eps)) and raises ValueError otherwise;
      or any callable ``(matvec, b) -> Solution`` such as ``GMRES(rtol=1e-12, restart=80)`` or
      ``solvers.hypergrad.Neumann(steps=20, alpha=0.1)``; matvec and b are (batch, n).
    on_failure: "raise" (SolveError) or "warn" for a failed forward sample or backward solve.
    hessian: least squares only -- "full" (default, exact) or "gauss-newton" (replaces the
      Hessian by J^T J in the linear system: biased whenever the residual is non-zero at x*).
    materialize: for the dense solves -- "loop" (default: n VJPs one after another) or "vmap"
      (one batched call; F must be vmappable, and torch.func.vmap copies an unbatched matmul
      operand such as a basis in u = B x once per column: n-fold memory at large sizes).
    """

    def __init__(self, backward_solve: Union[str, Callable[..., Solution]] = "gmres", *,
                 on_failure: str = "raise", hessian: str = "full", materialize: str = "loop"):
        if isinstance(backward_solve, str) and backward_solve not in _DENSE and backward_solve not in _KRYLOV:
            raise ValueError(f"Implicit: backward_solve={backward_solve!r} is not valid; use one of "
                             f"{sorted(_KRYLOV) + list(_DENSE)} or a callable (matvec, b) -> Solution")
        if not isinstance(backward_solve, str) and not callable(backward_solve):
            raise TypeError(f"Implicit: backward_solve must be a name or a callable, got {type(backward_solve).__name__}")
        _check_policy(on_failure)
        if hessian not in ("full", "gauss-newton"):
            raise ValueError(f"Implicit: hessian={hessian!r} is not valid; use 'full' or 'gauss-newton'")
        if materialize not in ("loop", "vmap"):
            raise ValueError(f"Implicit: materialize={materialize!r} is not valid; use 'loop' or 'vmap'")
        self.backward_solve, self.on_failure, self.hessian = backward_solve, on_failure, hessian
        self.materialize = materialize
        self.last_backward: Optional[Solution] = None

    def solve(self, matvec: Callable[[Tensor], Tensor], b: Tensor) -> Solution:
        return self._solve(matvec, b)[0]

    def _solve(self, matvec: Callable[[Tensor], Tensor], b: Tensor,
               At: Optional[Tensor] = None) -> tuple[Solution, str, bool]:
        """The Solution, the solver's own advice for a failure beyond its per-status summary, and whether
        the solver stops short by design (its SUCCESS says nothing of the residual). No host read here:
        the caller reads the status once. At: matvec's matrix where the caller has it already."""
        bs = self.backward_solve
        if isinstance(bs, str) and bs in _DENSE:
            if At is None:
                At = _materialize(matvec, b, vmap=self.materialize == "vmap")
            if bs == "cholesky":
                _check_symmetric(At)
            return Dense(bs)(At, b, throw=False), "", False
        solver = krylov(bs, b.dtype) if isinstance(bs, str) else bs
        return call_solver(solver, matvec, b), getattr(solver, "failure_hint", ""), getattr(solver, "truncated", False)

    def __repr__(self) -> str:
        return (f"Implicit(backward_solve={self.backward_solve!r}, on_failure={self.on_failure!r}, "
                f"hessian={self.hessian!r}, materialize={self.materialize!r})")


def _materialize(matvec: Callable[[Tensor], Tensor], b: Tensor, vmap: bool = False) -> Tensor:
    """The (batch, n, n) matrix whose columns are matvec(e_j), by n calls or one vmapped call."""
    B, n = b.shape
    eye = torch.eye(n, dtype=b.dtype, device=b.device).expand(B, n, n)
    if vmap:
        return torch.func.vmap(matvec, in_dims=2, out_dims=2)(eye)
    return torch.stack([matvec(eye[:, :, j]) for j in range(n)], dim=2)


def _check_symmetric(At: Tensor) -> None:
    # Cholesky reads one triangle only: on a non-symmetric dF/dx it solves another system, silently.
    # sqrt(eps) leaves room for the rounding of a Hessian assembled from VJPs.
    asym = torch.linalg.matrix_norm(At - At.mT) / torch.linalg.matrix_norm(At).clamp_min(torch.finfo(At.dtype).tiny)
    over = asym > torch.finfo(At.dtype).eps ** 0.5
    if bool(over.any()):  # one host read per backward; the sample list only when it fails
        bad = torch.nonzero(over).reshape(-1).tolist()
        raise ValueError(f"implicit backward: backward_solve='cholesky' needs a symmetric dF/dx, but at x* it is not "
                         f"(||A - A^T|| / ||A|| = {asym.max().item():.2e} for samples {bad[:5]}); use "
                         f"backward_solve='lu' (or 'gmres' for large n)")


def call_solver(solver: Callable, matvec: Callable[[Tensor], Tensor], b: Tensor) -> Solution:
    """Run a ``(matvec, b) -> Solution`` solver without letting it raise on a failed status (the caller
    reads the status once and reports; a solver's own advice is its ``failure_hint``, e.g. Neumann's)."""
    return solver(matvec, b, throw=False) if _accepts_throw(solver) else solver(matvec, b)


def _accepts_throw(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return "throw" in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


class Unrolled:
    """Differentiate by backpropagating through every solver iteration (memory grows with them)."""

    def __init__(self, *, on_failure: str = "raise"):
        _check_policy(on_failure)
        self.on_failure = on_failure

    def __repr__(self) -> str:
        return "Unrolled()"


class Phantom:
    """Fixed points only: gradient of `steps` damped steps z <- (1-damping) z + damping T(z) from x*.

    The returned value is exactly the forward solution; only the gradient is approximate
    (Geng et al., "On training implicit models", NeurIPS 2021).  Cheap: `steps` VJPs of T.
    """

    def __init__(self, steps: int = 5, damping: float = 0.5, *, on_failure: str = "raise"):
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"Phantom: steps={steps!r} must be a positive int")
        if not (0.0 < float(damping) <= 1.0):
            raise ValueError(f"Phantom: damping={damping!r} must be in (0, 1]")
        _check_policy(on_failure)
        self.steps, self.damping, self.on_failure = steps, float(damping), on_failure

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, damping={self.damping})"


class OneStep(Phantom):
    """Jacobian-free backprop (Fung et al., AAAI 2022): one undamped step, i.e. (I - J_T)^{-1} ~ I."""

    def __init__(self, *, on_failure: str = "raise"):
        super().__init__(1, 1.0, on_failure=on_failure)


Adjoint = Union[Implicit, Unrolled, Phantom]


# ---------------------------------------------------------------- helpers


_MAX_ITEMS = 20_000  # container items looked at per call, all containers together (~3 ms): the walk runs on every call
_CONTAINERS = (dict, list, tuple, set, frozenset)
_SCALARS = frozenset((int, float, complex, bool, str, bytes, type(None)))  # skipped at a type test: tables of numbers


def _label(name: Any) -> str:
    """A walked object's name, kept as (parent, suffix) pairs until a tensor needs it: formatting every
    container item's name was most of the walk's cost."""
    parts = []
    while isinstance(name, tuple):
        name, suffix = name
        parts.append(suffix if isinstance(suffix, str) else "{...}" if suffix[1] else f"[{suffix[0]!r}]")
    return name + "".join(reversed(parts))


def closure_tensors(fn: Any, params: tuple) -> list[str]:
    """Names of tensors requiring grad that `fn` reaches but not through params: through closures,
    default arguments, modules, partials, the globals its code names, a callable object's attributes,
    and the dicts, lists, tuples and sets any of these hold (nested, up to 6 levels from `fn` and
    20 000 container items in all, in a fixed order; past that it warns that the check is incomplete),
    non-tensor entries of params included."""
    passed = {id(p) for p in params if isinstance(p, Tensor)}
    found: list[str] = []
    seen: set[int] = set()
    budget = [_MAX_ITEMS]  # shared by every container: nested lists would multiply a per-container cap

    def visit(name: str, obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 6:
            return
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            if obj.requires_grad and id(obj) not in passed:
                found.append(_label(name))
            return
        if isinstance(obj, nn.Module):
            found.extend(f"{_label(name)}.{k}" for k, p in obj.named_parameters() if p.requires_grad and id(p) not in passed)
            return
        if isinstance(obj, _CONTAINERS):
            is_set = isinstance(obj, (set, frozenset))
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for key, value in items:
                if budget[0] <= 0:  # said below: a silent stop would pass a missed tensor as checked
                    break
                budget[0] -= 1
                if type(value) in _SCALARS:
                    continue
                visit((name, (key, is_set)), value, depth + 1)
            return
        if isinstance(obj, functools.partial):
            visit((name, ".func"), obj.func, depth + 1)
            for i, a in enumerate(obj.args):
                visit((name, f".args[{i}]"), a, depth + 1)
            for k, a in obj.keywords.items():
                visit((name, f".keywords[{k!r}]"), a, depth + 1)
            return
        self_obj = getattr(obj, "__self__", None)
        if self_obj is not None and not isinstance(self_obj, type(functools)):  # a bound method's object (not a module's function)
            visit((name, ".__self__"), self_obj, depth + 1)
        code, cells = getattr(obj, "__code__", None), getattr(obj, "__closure__", None)
        if code is not None and cells:
            for var, cell in zip(code.co_freevars, cells):
                try:
                    visit(var, cell.cell_contents, depth + 1)
                except ValueError:  # empty cell
                    pass
        if code is not None:  # default arguments (lambda x, W=W: ...) are read like closures
            defaults = getattr(obj, "__defaults__", None) or ()
            args = code.co_varnames[:code.co_argcount][-len(defaults):] if defaults else ()
            for var, value in zip(args, defaults):
                visit(f"{var} (default)", value, depth + 1)
            for var, value in (getattr(obj, "__kwdefaults__", None) or {}).items():
                visit(f"{var} (default)", value, depth + 1)
        if code is not None:  # module-level names the code reads (a global W, a global net, a helper)
            scope = getattr(obj, "__globals__", {})
            for var in sorted(_names_read(code)):  # a set: its order followed the hash seed
                value = scope.get(var)
                if isinstance(value, (Tensor, nn.Module) + _CONTAINERS) or (callable(value) and hasattr(value, "__code__")):
                    visit(var, value, depth + 1)
        elif (callable(obj) or depth > 0) and not isinstance(obj, type) and hasattr(obj, "__dict__") \
                and not isinstance(obj, type(functools)):  # a callable object, or the object of a bound method
            for var, value in vars(obj).items():
                visit((name, f".{var}"), value, depth + 1)
            call = getattr(type(obj), "__call__", None)
            if call is not None and hasattr(call, "__code__"):
                visit((name, ".__call__"), call, depth + 1)

    visit("F", fn, 0)
    for i, p in enumerate(params):  # a tensor inside a dict or list argument is not an input of the layer either
        if isinstance(p, _CONTAINERS):
            visit(f"params[{i}]", p, 1)
    if budget[0] <= 0 and not found:
        warnings.warn(f"implicit: F reaches more than {_MAX_ITEMS} items of Python containers (lists, dicts, ...), so "
                      f"the check for tensors that require grad but are not passed in params stopped there and may "
                      f"have missed one (it would get no gradient): pass every such tensor in params, and hold big "
                      f"constant tables as numpy arrays or tensors, which the check does not walk", RuntimeWarning,
                      stacklevel=3)
    return found


def _names_read(code) -> set[str]:
    """The global names a code object reads, its nested ones (comprehensions, lambdas) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names_read(const)
    return names


_INEXACT = 1e-2  # a residual above this fraction of ||b|| leaves a gradient with no correct digits to speak of


def warn_inexact(sol: Solution, b: Tensor, where: str) -> None:
    """Warn when a solve that reports SUCCESS (a truncated Neumann series always does) left a residual
    ||b - A u|| over 1e-2 ||b||: its gradient is then no better than that, or worse when A is ill-conditioned."""
    res = sol.stats.get("residual_norm")
    if not isinstance(res, Tensor):
        return
    rel = res / b.reshape(b.shape[0], -1).norm(dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    loose = (sol.status == Status.SUCCESS) & (rel > _INEXACT)
    if bool(loose.any()):
        warnings.warn(f"{where}: the linear solve left a residual ||b - A u|| of up to {rel[loose].max().item():.1e} "
                      f"of ||b|| (samples {torch.nonzero(loose).reshape(-1).tolist()[:5]}), so the gradient is at best "
                      f"that accurate; use more Neumann steps, alpha ~ 1 / lambda_max, or an exact solve: 'cg' for a "
                      f"symmetric positive definite system, 'gmres' otherwise", RuntimeWarning, stacklevel=3)


def _report(on_failure: str, message: str, sol: Optional[Solution]) -> None:
    if on_failure == "raise":
        raise SolveError(message, sol)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


class _Spec:
    """Everything the backward needs that is not a tensor."""

    def __init__(self, F, adjoint: Implicit, batched: bool, x_shape, matvec_factory=None, matrix_factory=None):
        self.F, self.adjoint, self.batched, self.x_shape = F, adjoint, batched, x_shape
        self.B = x_shape[0] if batched else 1
        self.n = math.prod(x_shape) // self.B if self.B else 0
        self.matvec_factory = matvec_factory
        self.matrix_factory = matrix_factory  # (x, params) -> (B, n, n) (dF/dx)^T, for first-order backwards


def _transposed_jacobian(spec: _Spec, x: Tensor, params: list) -> Callable[[Tensor], Tensor]:
    """u -> (dF/dx)^T u at (x, params) (J^T J u under Gauss-Newton); u in any shape of x's size."""
    if spec.matvec_factory is not None:
        return spec.matvec_factory(x, params)
    fx, vjp_x = torch.func.vjp(lambda x_: spec.F(x_, *params), x)
    if fx.shape != x.shape:
        raise ValueError(f"implicit backward: F(x*) has shape {tuple(fx.shape)} but x* has {tuple(x.shape)}; the "
                         f"implicit function theorem needs as many equations as unknowns -- for more equations "
                         f"use custom_least_squares / least_squares")
    return lambda u: vjp_x(u.reshape(x.shape))[0]


class _ImplicitRoot(torch.autograd.Function):
    """Identity on the precomputed solution x*; the backward is the IFT adjoint solve.

    The backward is itself differentiable: under create_graph it re-applies this Function to the
    saved x* (the input, so a caller may modify the output in place), whose node then carries
    dx*/dparams, and gets the adjoint u as the root of G(u) = (dF/dx)^T u + v = 0
    through this same Function, so u's dependence on x*, v and params is differentiated by the IFT
    too (one more linear solve per order).
    """

    @staticmethod
    def forward(x_star: Tensor, spec: _Spec, *params):
        return x_star.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x_star, spec, *params = inputs
        ctx.spec = spec
        ctx.is_tensor = [isinstance(p, Tensor) for p in params]
        ctx.others = [None if t else p for p, t in zip(params, ctx.is_tensor)]
        ctx.save_for_backward(x_star, *[p for p, t in zip(params, ctx.is_tensor) if t])

    @staticmethod
    def backward(ctx, v: Tensor):
        spec: _Spec = ctx.spec
        x, *tensors = ctx.saved_tensors
        it = iter(tensors)
        params = [next(it) if t else o for t, o in zip(ctx.is_tensor, ctx.others)]
        want = [i for i, t in enumerate(ctx.is_tensor) if t and ctx.needs_input_grad[2 + i]]
        grads: list = [None] * len(params)
        if not want:
            return (None, None, *grads)
        higher = torch.is_grad_enabled()  # create_graph=True (or a nested torch.func.grad)
        if higher:  # x* again, now with its dependence on params: the same value, a node of this Function
            x = _ImplicitRoot.apply(x.detach(), spec, *params)
        else:
            x, v = x.detach(), v.detach()
            params = [p.detach() if isinstance(p, Tensor) else p for p in params]
        B, n = spec.B, spec.n
        x0 = x.detach()
        p0 = [p.detach() if isinstance(p, Tensor) else p for p in params]
        At = None
        if spec.matrix_factory is not None and not higher:  # the caller forms (dF/dx)^T faster than n VJPs
            At = spec.matrix_factory(x0, p0).detach()
            matvec = lambda u: (At @ u.reshape(B, n, 1))[..., 0]
        else:
            matvec_x = _transposed_jacobian(spec, x0, p0)  # the solve itself never needs a graph
            matvec = lambda u: matvec_x(u).reshape(B, n)
        b = -v.detach().reshape(B, n).to(x.dtype)
        sol, said, truncated = spec.adjoint._solve(matvec, b, At)
        spec.adjoint.last_backward = sol
        failed = sol.status != Status.SUCCESS
        if bool(failed.any()):
            _report(spec.adjoint.on_failure, _backward_failure(spec, sol, said, matvec, b, At), sol)
        if truncated:
            warn_inexact(sol, b, "implicit backward")
        u = sol.value.reshape(x.shape)
        if higher:
            adjoint_spec = _Spec(functools.partial(_adjoint_residual, spec), spec.adjoint, spec.batched, tuple(x.shape))
            u = _ImplicitRoot.apply(u, adjoint_spec, x, v.to(x.dtype), *params)

        def F_params(*dp):
            full = list(params)
            for i, t in zip(want, dp):
                full[i] = t
            return spec.F(x, *full)

        _, vjp_p = torch.func.vjp(F_params, *[params[i] for i in want])
        for i, gi in zip(want, vjp_p(u)):
            grads[i] = gi
        return (None, None, *grads)


def _backward_failure(spec: _Spec, sol: Solution, said: str, matvec: Callable[[Tensor], Tensor], b: Tensor,
                      At: Optional[Tensor] = None) -> str:
    """What failed in the adjoint solve and, where it can be told, why: a NaN cotangent or a singular dF/dx."""
    failed = sol.status != Status.SUCCESS
    ended = "; ".join(line.strip().split(":")[0] for line in describe(sol.status).splitlines()[1:])
    res = sol.stats.get("residual_norm")
    worst = f"; largest residual_norm {res.max().item():.3e} vs |v| {b.norm(dim=1).max().item():.3e}" \
        if isinstance(res, Tensor) else ""
    lines = [f"implicit backward: the adjoint linear solve (dF/dx)^T u = -v by {spec.adjoint!r} ended with "
             f"{ended}{worst}" + (f"\n  the solver said: {said}" if said else "")]
    bad = torch.nonzero(failed).reshape(-1).tolist()
    if not bool(torch.isfinite(b[failed]).all()):
        lines.append("  the cotangent v is not finite: a NaN/Inf reaches this layer from the loss above it")
    elif spec.n <= 256:  # small enough to settle the cause: the singular values of dF/dx at x*
        with torch.no_grad():
            sv = torch.linalg.svdvals((At if At is not None else _materialize(matvec, b))[failed])
        ratio = sv[:, -1] / sv[:, 0].clamp_min(torch.finfo(sv.dtype).tiny)
        singular = ratio <= spec.n * torch.finfo(sv.dtype).eps
        if bool(singular.any()):
            which = [i for i, s in zip(bad, singular.tolist()) if s]
            lines.append(f"  dF/dx is singular at x* for samples {which[:5]} (smallest / largest singular value "
                         f"{ratio.min().item():.1e}): x* is not an isolated root, so the implicit function "
                         f"theorem does not apply there")
        else:
            lines.append(f"  dF/dx is invertible at x* (condition number up to {(1 / ratio).max().item():.1e}): "
                         f"the backward_solve itself failed")
    advice = describe(torch.where(failed, int(Status.BACKWARD), int(Status.SUCCESS))).splitlines()[1:]
    return "\n".join(lines + advice)


def _adjoint_residual(spec: _Spec, u: Tensor, x: Tensor, v: Tensor, *params) -> Tensor:
    """G(u, x, v, params) = (dF/dx)^T u + v: the adjoint u is its root, differentiable like any other."""
    return _transposed_jacobian(spec, x, list(params))(u) + v.reshape(u.shape)


def _as_solution(out: Any, where: str) -> tuple[Tensor, Optional[Solution]]:
    if isinstance(out, Solution):
        return out.value, out
    if isinstance(out, Tensor):
        return out, None
    raise TypeError(f"{where}: the forward solver must return a Solution or a Tensor, got {type(out).__name__}")


def _check_forward(sol: Optional[Solution], on_failure: str, name: str) -> None:
    if sol is not None and bool((sol.status != Status.SUCCESS).any()):
        _report(on_failure, describe(sol.status, f"{name} forward solve") +
                "\n  (gradients of a non-converged solution are not those of the solution)", sol)


def _wrap(F: Callable, adjoint: Adjoint, batched: bool, name: str, T: Optional[Callable] = None,
          matvec_factory=None, matrix_factory=None) -> Callable:
    if not isinstance(adjoint, (Implicit, Unrolled, Phantom)):
        raise TypeError(f"{name}: adjoint must be Implicit(), Unrolled(), Phantom() or OneStep(), got {adjoint!r}")
    if isinstance(adjoint, Phantom) and T is None:
        raise ValueError(f"{name}: {adjoint!r} needs a fixed-point map T; use custom_fixed_point / fixed_point, "
                         f"or Implicit() / Unrolled() here")

    def decorate(solver: Callable) -> Callable:
        @functools.wraps(solver)
        def solve(x0: Tensor, *params):
            if isinstance(adjoint, Unrolled):  # records the iterations only where a gradient is wanted
                value, sol = _as_solution(solver(x0, *params), name)
                _check_forward(sol, adjoint.on_failure, name)
                return sol if sol is not None else value
            with torch.no_grad():
                value, sol = _as_solution(solver(x0.detach(), *[p.detach() if isinstance(p, Tensor) else p
                                                                 for p in params]), name)
            value = value.detach()
            if isinstance(x0, Tensor) and value.shape != x0.shape:
                raise ValueError(f"{name}: the solver returned a solution of shape {tuple(value.shape)} for x0 of shape "
                                 f"{tuple(x0.shape)}; it must return one of x0's shape")
            _check_forward(sol, adjoint.on_failure, name)
            if batched and value.dim() == 0:
                raise ValueError(f"{name}: the solution is 0-d; pass batched=False for a single scalar problem")
            if isinstance(adjoint, Phantom) and not torch.is_grad_enabled():
                out = value  # the phantom steps only shape a gradient: none is wanted here
            elif isinstance(adjoint, Phantom):
                z = value
                for _ in range(adjoint.steps):
                    z = (1 - adjoint.damping) * z + adjoint.damping * T(z, *params)
                out = value + (z - z.detach())  # exact forward value, phantom gradient
            else:
                if torch.is_grad_enabled():
                    missing = closure_tensors(F, params)
                    if missing:
                        raise ValueError(f"{name}: F reaches tensors that require grad through a closure, a module, a global, "
                                         f"a container (dict, list, tuple, set), a default argument or an object's attribute: "
                                         f"{missing}; implicit differentiation only returns gradients for "
                                         f"tensors passed positionally -- call it as solve(x0, *params) with each "
                                         f"of them in params, not inside a dict or list (for a module use "
                                         f"torch.func.functional_call); one F never reads (a kept loss, say) must "
                                         f"be out of its reach or detached: the check cannot tell")
                spec = _Spec(F, adjoint, batched, tuple(value.shape), matvec_factory, matrix_factory)
                out = _ImplicitRoot.apply(value, spec, *params)
            return Solution(out, sol.status, sol.stats) if sol is not None else out

        return solve

    return decorate


# ---------------------------------------------------------------- public wrappers


def custom_root(F: Callable, *, adjoint: Optional[Adjoint] = None, backward_solve: Any = None,
                batched: bool = True) -> Callable:
    """Decorator: ``custom_root(F)(solver)(x0, *params)`` differentiates x* with F(x*, *params) = 0.

    F(x, *params) -> same shape as x; solver(x0, *params) -> Solution | Tensor.
    adjoint: `Implicit()` (default), `Unrolled()`; backward_solve is a shortcut for
    ``Implicit(backward_solve)``.  The returned function gives what the solver gives (a Solution
    with a differentiable ``value``, or a tensor); the gradient w.r.t. x0 is None (x* does not
    depend on the initial guess).
    """
    return _wrap(F, _adjoint(adjoint, backward_solve), batched, "custom_root")


def custom_fixed_point(T: Callable, *, adjoint: Optional[Adjoint] = None, backward_solve: Any = None,
                       batched: bool = True) -> Callable:
    """Decorator for x* = T(x*, *params): the root rule on F = T(x) - x; Phantom/OneStep allowed."""
    F = lambda x, *p: T(x, *p) - x
    return _wrap(F, _adjoint(adjoint, backward_solve), batched, "custom_fixed_point", T=T)


def _ls_gradient(residual: Callable) -> Callable:
    """F(x, *params) = grad_x 1/2 ||r(x, *params)||^2 = J^T r, as one VJP (differentiable again)."""
    def F(x, *params):
        r, vjp = torch.func.vjp(lambda x_: residual(x_, *params), x)
        return vjp(r)[0]
    return F


def custom_least_squares(residual: Callable, *, adjoint: Optional[Adjoint] = None, backward_solve: Any = None,
                         batched: bool = True, hessian_matrix: Optional[Callable] = None) -> Callable:
    """Decorator for x* = argmin 1/2 ||r(x, *params)||^2: the root rule on F = J^T r.

    The adjoint system matrix is the full Hessian J^T J + sum_i r_i d2 r_i (applied by HVPs);
    ``Implicit(hessian="gauss-newton")`` uses J^T J only (biased when r(x*) != 0).  The default
    backward_solve here is "lu" (dense n x n, as optimistix); pass "cg" for large n at a minimum.
    hessian_matrix: optional ``(x, *params) -> (batch, n, n)``, that full Hessian at x, for a caller
    who forms it faster than n HVPs (a pointwise residual can); batched only, used by first-order
    backwards with the full Hessian (a backward that builds a graph and Gauss-Newton keep the HVPs).
    """
    adj = _adjoint(adjoint, backward_solve if (backward_solve is not None or adjoint is not None) else "lu")
    F = _ls_gradient(residual)
    factory = matrix = None
    if hessian_matrix is not None and not batched:
        raise ValueError("custom_least_squares: hessian_matrix needs batched=True (a (batch, n, n) matrix)")
    if hessian_matrix is not None and isinstance(adj, Implicit) and adj.hessian == "full":
        matrix = lambda x, params: hessian_matrix(x, *params)  # symmetric: its own transpose
    if isinstance(adj, Implicit) and adj.hessian == "gauss-newton":
        def gauss_newton(x, params):
            f = lambda x_: residual(x_, *params)
            _, vjp = torch.func.vjp(f, x)
            # u arrives flat, (batch, n) or (1, n); the JVP needs it in x's shape, as the default path has it
            return lambda u: vjp(torch.func.jvp(f, (x,), (u.reshape(x.shape),))[1])[0]  # J^T (J u)
        factory = gauss_newton
    return _wrap(F, adj, batched, "custom_least_squares", matvec_factory=factory, matrix_factory=matrix)


def _adjoint(adjoint: Optional[Adjoint], backward_solve: Any) -> Adjoint:
    if adjoint is not None and backward_solve is not None:
        raise ValueError("give either adjoint=Implicit(backward_solve=...) or backward_solve=..., not both")
    if adjoint is None:
        return Implicit(backward_solve if backward_solve is not None else "gmres")
    return adjoint


def _solving(solver: Any, fn: Callable, batched: bool) -> Callable:
    """``(x, *params) -> Solution`` by a batched solver; with batched=False the one problem, of any
    shape, is handed to it as a batch of one flat row (x as (1, n), fn's output flattened alike)."""
    if batched:
        return lambda x, *p: solver(fn, x, *p, throw=False)

    def solve(x, *p):
        shape = x.shape
        sol = solver(lambda z, *q: fn(z.reshape(shape), *q).reshape(1, -1), x.reshape(1, -1), *p, throw=False)
        return Solution(sol.value.reshape(shape), sol.status, sol.stats)
    return solve


def root(F: Callable, x0: Tensor, *params, solver: Any = None, adjoint: Optional[Adjoint] = None,
         batched: bool = True) -> Solution:
    """Differentiable root of F(x, *params) = 0; solver defaults to `solvers.nonlinear.Newton()`."""
    from .nonlinear import Newton
    solver = solver if solver is not None else Newton()
    return custom_root(F, adjoint=adjoint, batched=batched)(_solving(solver, F, batched))(x0, *params)


def fixed_point(T: Callable, x0: Tensor, *params, solver: Any = None, adjoint: Optional[Adjoint] = None,
                batched: bool = True) -> Solution:
    """Differentiable fixed point x = T(x, *params); solver defaults to `solvers.nonlinear.Anderson()`."""
    from .nonlinear import Anderson
    solver = solver if solver is not None else Anderson()
    return custom_fixed_point(T, adjoint=adjoint, batched=batched)(_solving(solver, T, batched))(x0, *params)


def least_squares(residual: Callable, x0: Tensor, *params, solver: Any = None, adjoint: Optional[Adjoint] = None,
                  batched: bool = True) -> Solution:
    """Differentiable argmin 1/2 ||r(x, *params)||^2; solver defaults to `LevenbergMarquardt()`."""
    from .nonlinear import LevenbergMarquardt
    solver = solver if solver is not None else LevenbergMarquardt()
    return custom_least_squares(residual, adjoint=adjoint, batched=batched)(_solving(solver, residual, batched))(x0, *params)
