"""Batched nonlinear solvers: Newton, Gauss-Newton, Levenberg-Marquardt, fixed-point / Anderson.

Every sample of the batch is an independent problem.  Functions follow the positional
contract ``fn(x, *args)`` with x: (batch, *shape) and every arg batched or broadcastable as the
function needs; samples must not interact (the dense Jacobian is assembled with one
forward-mode JVP per unknown, each JVP pushing the same unit tangent through every sample).

  * `Newton`              root of F(x, *args) = 0, F: (batch, n) -> (batch, n)
  * `GaussNewton`,        min_x 1/2 ||r(x, *args)||^2, r: (batch, n) -> (batch, m), m >= n
    `LevenbergMarquardt`
  * `FixedPointIteration`, fixed point x = T(x, *args), T: (batch, *shape) -> (batch, *shape)
    `Anderson`

Each returns ``Solution(value, status, stats)`` (per-sample int64 status, see
`solvers.solution.Status`) from the shared driver; no host synchronisation happens inside the
loop except the "all done?" poll every ``check_every`` steps (default 1 for Newton / GN / LM,
whose steps each cost a Jacobian, so a poll is cheap next to a wasted step; 5 for fixed points).  Line searches are spread over
iterations (a rejected trial halves that sample's step and costs one iteration) so no sample
ever waits on a host-side loop.  Dense linear algebra is N x N per sample: use float64 for
ill-conditioned problems -- the solvers keep the caller's dtype.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .linear import _col, _norm
from .solution import RUNNING, Solution, Status, check_options, iterate, mark

__all__ = ["jacobian", "Newton", "GaussNewton", "LevenbergMarquardt", "FixedPointIteration", "Anderson",
           "newton", "gauss_newton", "levenberg_marquardt", "fixed_point_iteration", "anderson"]

Fn = Callable[..., Tensor]
JacSpec = Union[str, Callable[..., Tensor]]


def _flat(fn: Fn, x: Tensor, args: tuple) -> Callable[[Tensor], Tensor]:
    B, shape = x.shape[0], x.shape
    return lambda xf: fn(xf.reshape(shape), *args).reshape(B, -1)


def jacobian(fn: Fn, x: Tensor, *args, mode: JacSpec = "loop", chunk_size: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Per-sample dense Jacobian of a batched function.

    J[b] = d fn(x)[b] / d x[b];  x: (batch, *shape) with n = prod(shape) unknowns,
    fn(x, *args): (batch, *out) with m = prod(out) outputs.  Returns (f (batch, m), J (batch, m, n)).
    mode: "loop" (default: n JVPs one after another; memory of one JVP), "fwd" (the n JVPs in
    one torch.func.vmap call, optionally in chunks of ``chunk_size`` tangents: fewer kernel
    launches, but vmap copies an unbatched matmul operand -- e.g. a basis B in u = B x -- once
    per tangent), or a callable ``jac(x, *args)`` returning J (batch, m, n), or ``(f, J)`` when
    it computes fn(x) on the way (then fn is not evaluated again).
    """
    B, n = x.shape[0], x[0].numel()
    f = _flat(fn, x, args)
    xf = x.reshape(B, n)
    if callable(mode):
        out = mode(x, *args)
        fx, J = (out[0].reshape(B, -1), out[1]) if isinstance(out, tuple) else (f(xf), out)
        if J.shape != (B, fx.shape[1], n):
            raise ValueError(f"jacobian: the user jac returned shape {tuple(J.shape)}, expected "
                             f"(batch, m, n) = {(B, fx.shape[1], n)}")
        return fx, J
    fx = f(xf)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    if mode == "fwd":
        tangents = eye[:, None, :].expand(n, B, n)
        cols = torch.func.vmap(lambda t: torch.func.jvp(f, (xf,), (t,))[1], chunk_size=chunk_size)(tangents)
    elif mode == "loop":
        cols = torch.stack([torch.func.jvp(f, (xf,), (eye[j].expand(B, n),))[1] for j in range(n)])
    else:
        raise ValueError(f"jacobian: unknown mode {mode!r}; valid: 'fwd', 'loop' or a callable jac(x, *args)")
    return fx, cols.permute(1, 2, 0)


def _inf_norm(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], -1).abs().amax(dim=1)


def _check_x0(name: str, fn, x0) -> None:
    if not callable(fn):
        raise TypeError(f"{name}: the function must be callable fn(x, *args), got {type(fn).__name__}")
    if not isinstance(x0, Tensor) or x0.dim() < 2 or not x0.is_floating_point():
        desc = f"{x0.dtype} tensor of shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"{name}: x0 must be a floating tensor (batch, *shape) with at least 2 dims, got {desc}; "
                         f"for one problem pass x0[None]")


class _Iterative:
    """Tolerances left at None are the class's float64 defaults (`default_rtol`, `default_atol`), or in a
    lower precision 50 ulp relative and 1 ulp absolute: float32 iterates stall near 1e-7, short of
    float64's defaults, and every easy float32 solve would end MAX_STEPS."""

    name = "solver"
    default_rtol, default_atol = 1e-10, 1e-12

    def __init__(self, *, rtol: float | None, atol: float | None, max_steps: int, check_every: int):
        check_options(self.name, rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        self.rtol = None if rtol is None else float(rtol)
        self.atol = None if atol is None else float(atol)
        self.max_steps, self.check_every = max_steps, check_every

    def tolerances(self, like: Tensor) -> tuple[float, float]:
        """(rtol, atol) for iterates of `like`'s dtype."""
        eps = torch.finfo(like.dtype).eps
        return (self.rtol if self.rtol is not None else max(self.default_rtol, 50 * eps),
                self.atol if self.atol is not None else max(self.default_atol, eps))

    def _run(self, state: dict, throw: bool) -> Solution:
        return iterate(self, state, max_steps=self.max_steps, check_every=self.check_every, throw=throw, name=self.name)

    @staticmethod
    def _status(x: Tensor) -> Tensor:
        return torch.full(x.shape[:1], RUNNING, dtype=torch.int64, device=x.device)


def _check_jac(name: str, jac: JacSpec, chunk_size) -> None:
    if not (callable(jac) or jac in ("fwd", "loop")):
        raise ValueError(f"{name}: jac={jac!r} is not valid; use 'fwd', 'loop' or a callable jac(x, *args)")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"{name}: chunk_size={chunk_size!r} must be a positive int or None")


class Newton(_Iterative):
    """Newton's method for F(x, *args) = 0 with a backtracking (Armijo) line search.

    x_{k+1} = x_k + t_k d_k,  J(x_k) d_k = -F(x_k)  (dense LU per sample),  t_k = 2^-j the first
    step with ||F(x + t d)||^2 <= (1 - 2 c t) ||F(x)||^2, c = 1e-4 (descent on 1/2 ||F||^2;
    Dennis & Schnabel Alg. 6.3.5).  A rejected trial halves t and costs one iteration; after
    ``max_backtracks`` halvings the sample is marked LINESEARCH.  An exactly singular J marks
    BREAKDOWN.  Converged when ||F(x)||_2 <= atol + rtol ||F(x0)||_2.

    Call: ``Newton(...)(F, x0, *args, throw=True) -> Solution``; x0: (batch, *shape),
    F(x, *args): (batch, *shape).  stats: "num_steps", "residual_norm" = ||F(x)||_2.
    """

    name = "newton"

    def __init__(self, *, rtol: float | None = None, atol: float | None = None, max_steps: int = 50, check_every: int = 1,
                 max_backtracks: int = 20, jac: JacSpec = "loop", chunk_size: Optional[int] = None):
        super().__init__(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        _check_jac(self.name, jac, chunk_size)
        if not isinstance(max_backtracks, int) or max_backtracks < 0:
            raise ValueError(f"newton: max_backtracks={max_backtracks!r} must be an int >= 0")
        self.max_backtracks, self.jac, self.chunk_size = max_backtracks, jac, chunk_size

    def __call__(self, F: Fn, x0: Tensor, *args, throw: bool = True) -> Solution:
        _check_x0(self.name, F, x0)
        f0 = F(x0, *args)
        if f0.shape != x0.shape:
            raise ValueError(f"newton: F(x0) has shape {tuple(f0.shape)} but x0 has {tuple(x0.shape)}; a root "
                             f"problem must be square -- for more equations than unknowns use LevenbergMarquardt")
        fn0 = _norm(f0)
        rtol, atol = self.tolerances(x0)
        state = {"x": x0.clone(), "status": self._status(x0), "F": F, "args": args, "fnorm": fn0,
                 "tol": atol + rtol * fn0, "t": torch.ones_like(fn0)}
        return self._run(state, throw)

    def step(self, s: dict) -> dict:
        x, status, t, F, args = s["x"], s["status"], s["t"], s["F"], s["args"]
        active = status == RUNNING
        fx, J = jacobian(F, x, *args, mode=self.jac, chunk_size=self.chunk_size)
        phi = (fx * fx).sum(1)
        fnorm = phi.sqrt()
        status = mark(status, active & ~torch.isfinite(fnorm), Status.NONFINITE)
        status = mark(status, active & (fnorm <= s["tol"]), Status.SUCCESS)
        LU, piv, info = torch.linalg.lu_factor_ex(J)
        status = mark(status, active & (info != 0), Status.BREAKDOWN)
        go = status == RUNNING
        eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        LU = torch.where(go[:, None, None], LU, eye)  # keeps lu_solve finite for stopped samples
        d = torch.linalg.lu_solve(LU, piv, -fx[..., None])[..., 0].reshape(x.shape)
        x_try = torch.where(_col(go, x), x + _col(t, x) * d, x)
        f_try = _norm(F(x_try, *args))
        ok = go & (f_try ** 2 <= (1 - 2e-4 * t) * phi)
        status = mark(status, ok & (f_try <= s["tol"]), Status.SUCCESS)  # now, not after another Jacobian
        x = torch.where(_col(ok, x), x_try, x)
        t = torch.where(ok, torch.ones_like(t), torch.where(go, t / 2, t))
        status = mark(status, go & ~ok & (t < 2.0 ** -self.max_backtracks), Status.LINESEARCH)
        return {**s, "x": x, "status": status, "t": t, "fnorm": torch.where(ok, f_try, fnorm)}

    def postprocess(self, s: dict) -> tuple[Tensor, dict]:
        return s["x"], {"residual_norm": s["fnorm"]}


class _LeastSquares(_Iterative):
    """Shared normal-equation assembly and Cauchy termination for GN and LM.

    Convergence (per sample): ||J^T r||_2 <= gtol at the current point, or an accepted step with
    ||dx||_inf <= atol + rtol ||x||_inf and cost decrease <= atol + rtol cost (as optimistix's
    Cauchy termination).
    """

    def __init__(self, *, rtol: float, atol: float, gtol: float, max_steps: int, check_every: int,
                 jac: JacSpec, chunk_size: Optional[int], normal: str):
        super().__init__(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        _check_jac(self.name, jac, chunk_size)
        if not (float(gtol) >= 0):
            raise ValueError(f"{self.name}: gtol={gtol!r} must be >= 0 (0 disables the gradient test)")
        if normal not in ("materialize", "columns"):
            raise ValueError(f"{self.name}: normal={normal!r} is not valid; use 'materialize' or 'columns'")
        if normal == "columns" and callable(jac):
            raise ValueError(f"{self.name}: normal='columns' builds J column by column with JVPs; with a callable "
                             f"jac use normal='materialize'")
        self.gtol, self.jac, self.chunk_size, self.normal = float(gtol), jac, chunk_size, normal

    def normal_equations(self, r_fn: Fn, x: Tensor, args: tuple) -> tuple[Tensor, Tensor, Tensor]:
        """Returns r (batch, m), J^T J (batch, n, n), J^T r (batch, n).

        normal="materialize" forms J (batch, m, n) (see `jacobian` for jac / chunk_size) and
        J^T J by one bmm.  normal="columns" never holds more than one Jacobian column: for each
        unknown j, J e_j by a JVP and J^T (J e_j) by a VJP -- memory O(batch m), 2n passes.
        """
        if self.normal == "materialize":
            r, J = jacobian(r_fn, x, *args, mode=self.jac, chunk_size=self.chunk_size)
            Jt = J.transpose(-1, -2)
            return r, Jt @ J, (Jt @ r[..., None])[..., 0]
        B, n = x.shape[0], x[0].numel()
        f = _flat(r_fn, x, args)
        xf = x.reshape(B, n)
        r, vjp_fn = torch.func.vjp(f, xf)
        g = vjp_fn(r)[0]
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        # A Python loop, not vmap: vmap's batching rule for a matmul with an unbatched operand
        # (e.g. basis @ w) copies that operand once per tangent.
        cols = [vjp_fn(torch.func.jvp(f, (xf,), (eye[j].expand(B, n),))[1])[0] for j in range(n)]
        return r.detach(), torch.stack(cols, dim=2), g

    def _init(self, r_fn: Fn, x0: Tensor, args: tuple, throw: bool, **extra) -> Solution:
        _check_x0(self.name, r_fn, x0)
        r0 = r_fn(x0, *args)
        if r0.shape[0] != x0.shape[0]:
            raise ValueError(f"{self.name}: residual(x0) has batch {r0.shape[0]} but x0 has {x0.shape[0]}")
        cost = 0.5 * _norm(r0) ** 2
        state = {"x": x0.clone(), "status": self._status(x0), "F": r_fn, "args": args, "cost": cost, **extra}
        return self._run(state, throw)

    def _start(self, s: dict):
        """Linearise at x; mark converged / non-finite samples; return the pieces for a step."""
        x, status = s["x"], s["status"]
        active = status == RUNNING
        r, JtJ, g = self.normal_equations(s["F"], x, s["args"])
        cost = 0.5 * (r * r).sum(1)
        status = mark(status, active & ~(torch.isfinite(cost) & torch.isfinite(JtJ).flatten(1).all(1)),
                      Status.NONFINITE)
        status = mark(status, active & (_norm(g) <= self.gtol), Status.SUCCESS)
        return status, cost, JtJ, g

    def _cauchy(self, x: Tensor, dx: Tensor, cost: Tensor, cost_new: Tensor) -> Tensor:
        # Also applied to rejected trials: at round-off level a step can be both tiny and
        # "uphill", and must count as convergence rather than a failed search.
        rtol, atol = self.tolerances(x)
        small_step = _inf_norm(dx) <= atol + rtol * _inf_norm(x)
        small_change = (cost - cost_new).abs() <= atol + rtol * cost
        return small_step & small_change

    def postprocess(self, s: dict) -> tuple[Tensor, dict]:
        x = s["x"]
        B = x.shape[0]
        f = _flat(s["F"], x, s["args"])
        r, vjp_fn = torch.func.vjp(f, x.reshape(B, -1))
        g = vjp_fn(r)[0]
        return x, {"residual_norm": _norm(r).detach(), "cost": 0.5 * _norm(r).detach() ** 2,
                   "grad_norm": _norm(g).detach()}


class GaussNewton(_LeastSquares):
    """Gauss-Newton for min_x 1/2 ||r(x, *args)||^2 with an Armijo backtracking line search.

    J^T J d = -J^T r (Cholesky per sample; a singular J^T J marks BREAKDOWN -- use
    LevenbergMarquardt for rank-deficient problems), x <- x + t d with t halved until
    cost(x + t d) <= cost(x) + c t (J^T r)^T d, c = 1e-4 (one halving per iteration).
    See `_LeastSquares` for the convergence test and `LevenbergMarquardt` for the arguments.
    """

    name = "gauss_newton"

    def __init__(self, *, rtol: float | None = None, atol: float | None = None, gtol: float = 0.0, max_steps: int = 100,
                 check_every: int = 1, max_backtracks: int = 20, jac: JacSpec = "loop",
                 chunk_size: Optional[int] = None, normal: str = "materialize"):
        super().__init__(rtol=rtol, atol=atol, gtol=gtol, max_steps=max_steps, check_every=check_every, jac=jac,
                         chunk_size=chunk_size, normal=normal)
        self.max_backtracks = max_backtracks

    def __call__(self, residual: Fn, x0: Tensor, *args, throw: bool = True) -> Solution:
        return self._init(residual, x0, args, throw, t=torch.ones(x0.shape[0], dtype=x0.dtype, device=x0.device))

    def step(self, s: dict) -> dict:
        x, t = s["x"], s["t"]
        status, cost, JtJ, g = self._start(s)
        L, info = torch.linalg.cholesky_ex(JtJ)
        status = mark(status, info != 0, Status.BREAKDOWN)
        go = status == RUNNING
        L = torch.where(go[:, None, None], L, torch.eye(L.shape[-1], dtype=L.dtype, device=L.device))
        d = torch.cholesky_solve(-g[..., None], L)[..., 0]
        dx = torch.where(go[:, None], t[:, None] * d, torch.zeros_like(d)).reshape(x.shape)
        x_try = x + dx
        cost_try = 0.5 * _norm(s["F"](x_try, *s["args"])) ** 2
        slope = t * (g * d).sum(1)
        # A predicted decrease below round-off cannot be measured: accept it (see LM).
        noise = -slope <= 16 * torch.finfo(x.dtype).eps * cost
        ok = go & torch.isfinite(cost_try) & ((cost_try <= cost + 1e-4 * slope) | noise)
        small = go & self._cauchy(x, dx, cost, cost_try)
        status = mark(status, small, Status.SUCCESS)  # now, not after linearising at the new point
        t = torch.where(ok, torch.ones_like(t), torch.where(go, t / 2, t))
        status = mark(status, go & ~ok & (t < 2.0 ** -self.max_backtracks), Status.LINESEARCH)
        x = torch.where(_col(ok, x), x_try, x)
        return {**s, "x": x, "status": status, "t": t, "cost": torch.where(ok, cost_try, cost)}


class LevenbergMarquardt(_LeastSquares):
    """Levenberg-Marquardt for min_x 1/2 ||r(x, *args)||^2, r: (batch, n) -> (batch, m).

    (J^T J + mu D) d = -J^T r with D = I (Levenberg) or D = diag(J^T J) (Marquardt, ``scaled=True``),
    solved by Cholesky of the N x N matrix per sample -- nothing m x m is ever formed.  Gain
    ratio rho = (cost - cost(x + d)) / (1/2 d^T (mu D d - J^T r)); accept if rho > 0, then
    mu *= max(1/3, 1 - (2 rho - 1)^3), nu = 2, else mu *= nu, nu *= 2 (Nielsen 1999;
    Madsen, Nielsen & Tingleff, "Methods for non-linear least squares problems", Alg. 3.16).
    mu_0 = tau max diag(J^T J).  A sample whose mu exceeds 1e32 (no decrease possible) is marked
    LINESEARCH.

    Arguments: rtol, atol (Cauchy step/cost test), gtol (||J^T r||_2 test, 0 = off), max_steps,
    check_every, tau, scaled, jac ("fwd" | "loop" | callable), chunk_size (tangents per vmap
    chunk), normal ("materialize": J then J^T J by bmm; "columns": one column at a time).
    Sizes: at the hard-constraint shape (batch*experts 1024, n 64, m 20 000, float64) J is
    10 GB.  jac="fwd" vmaps the n tangents, and torch.func.vmap copies an unbatched matmul
    operand (e.g. a basis B in u = B w) once per tangent -- 64 x 10 GB there; the default
    jac="loop" (n JVPs) does not; normal="columns" bounds memory by O(batch m); best is a
    callable jac(x, *args) that returns J directly (for u = B w: J = diag(dr/du) B).

    Call: ``LevenbergMarquardt(...)(residual, x0, *args, throw=True) -> Solution``;
    stats: "num_steps", "residual_norm" ||r||, "cost", "grad_norm" ||J^T r|| at the solution.
    """

    name = "levenberg_marquardt"

    def __init__(self, *, rtol: float | None = None, atol: float | None = None, gtol: float = 0.0, max_steps: int = 100,
                 check_every: int = 1, tau: float = 1e-3, scaled: bool = False, jac: JacSpec = "loop",
                 chunk_size: Optional[int] = None, normal: str = "materialize"):
        super().__init__(rtol=rtol, atol=atol, gtol=gtol, max_steps=max_steps, check_every=check_every, jac=jac,
                         chunk_size=chunk_size, normal=normal)
        if not (float(tau) > 0):
            raise ValueError(f"levenberg_marquardt: tau={tau!r} must be > 0 (initial damping mu0 = tau max diag J^T J)")
        self.tau, self.scaled = float(tau), bool(scaled)

    def __call__(self, residual: Fn, x0: Tensor, *args, throw: bool = True) -> Solution:
        B = x0.shape[0]
        mu = torch.full((B,), -1.0, dtype=x0.dtype, device=x0.device)  # < 0: set from J at the first step
        return self._init(residual, x0, args, throw, mu=mu, nu=torch.full_like(mu, 2.0))

    def step(self, s: dict) -> dict:
        x, mu, nu = s["x"], s["mu"], s["nu"]
        status, cost, JtJ, g = self._start(s)
        go = status == RUNNING
        diag = torch.diagonal(JtJ, dim1=-2, dim2=-1)
        mu = torch.where(mu < 0, self.tau * diag.amax(1).clamp_min(torch.finfo(x.dtype).tiny), mu)
        D = diag.clamp_min(torch.finfo(x.dtype).eps * diag.amax(1, keepdim=True)) if self.scaled else torch.ones_like(diag)
        L, info = torch.linalg.cholesky_ex(JtJ + torch.diag_embed(mu[:, None] * D))
        chol_ok = info == 0
        L = torch.where((go & chol_ok)[:, None, None], L, torch.eye(L.shape[-1], dtype=L.dtype, device=L.device))
        d = torch.cholesky_solve(-g[..., None], L)[..., 0]
        trial = go & chol_ok
        d = torch.where(trial[:, None], d, torch.zeros_like(d))
        dx = d.reshape(x.shape)
        cost_try = 0.5 * _norm(s["F"](x + dx, *s["args"])) ** 2
        pred = 0.5 * (d * (mu[:, None] * D * d - g)).sum(1)
        rho = (cost - cost_try) / torch.where(pred > 0, pred, torch.ones_like(pred))
        # Below round-off the measured decrease is noise (|cost - cost_try| ~ eps cost) while the
        # model is still exact enough: trust the model, or LM stalls at |x - x*| ~ sqrt(eps cost).
        noise = pred <= 16 * torch.finfo(x.dtype).eps * cost
        rho = torch.where(noise, torch.ones_like(rho), rho)
        ok = trial & (pred > 0) & (rho > 0) & torch.isfinite(cost_try)
        small = trial & self._cauchy(x, dx, cost, cost_try)
        # A zero predicted decrease means d = 0: the gradient vanished to round-off -> converged.
        small = small | (trial & ~(pred > 0) & (_norm(g) == 0))
        status = mark(status, small, Status.SUCCESS)  # now, not after linearising at the new point
        grow = torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3)
        mu_new = torch.where(ok, mu * grow, mu * nu)
        nu_new = torch.where(ok, torch.full_like(nu, 2.0), nu * 2)
        mu = torch.where(go, mu_new, mu)
        nu = torch.where(go, nu_new, nu)
        status = mark(status, go & (mu > 1e32), Status.LINESEARCH)
        x = torch.where(_col(ok, x), x + dx, x)
        return {**s, "x": x, "status": status, "mu": mu, "nu": nu,
                "cost": torch.where(ok, cost_try, cost)}


class FixedPointIteration(_Iterative):
    """Damped Picard iteration x <- x + damping (T(x, *args) - x).

    Converged when ||T(x) - x||_2 <= atol + rtol ||T(x)||_2 per sample (the relative residual
    DEQ codes report).  Call: ``FixedPointIteration(...)(T, x0, *args)``; x0: (batch, *shape).
    stats: "num_steps", "residual_norm" = ||T(x) - x||_2 at the last evaluated iterate.
    """

    name = "fixed_point_iteration"
    default_rtol = 1e-8

    def __init__(self, *, rtol: float | None = None, atol: float | None = None, max_steps: int = 200, check_every: int = 5,
                 damping: float = 1.0):
        super().__init__(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        if not (0.0 < float(damping) <= 1.0):
            raise ValueError(f"{self.name}: damping={damping!r} must be in (0, 1]")
        self.damping = float(damping)

    def __call__(self, T: Fn, x0: Tensor, *args, throw: bool = True) -> Solution:
        _check_x0(self.name, T, x0)
        state = {"x": x0.clone(), "status": self._status(x0), "F": T, "args": args,
                 "res": torch.full(x0.shape[:1], float("inf"), dtype=x0.dtype, device=x0.device), "k": 0}
        return self._run(state, throw)

    def _evaluate(self, s: dict):
        x, status = s["x"], s["status"]
        fx = s["F"](x, *s["args"])
        if fx.shape != x.shape:
            raise ValueError(f"{self.name}: T(x) has shape {tuple(fx.shape)} but x has {tuple(x.shape)}; they must match")
        res = _norm(fx - x)
        active = status == RUNNING
        status = mark(status, active & ~torch.isfinite(res), Status.NONFINITE)
        rtol, atol = self.tolerances(x)
        status = mark(status, active & (res <= atol + rtol * _norm(fx)), Status.SUCCESS)
        return fx, res, status

    def step(self, s: dict) -> dict:
        fx, res, status = self._evaluate(s)
        x = s["x"]
        go = _col(status == RUNNING, x)
        x = torch.where(go, x + self.damping * (fx - x), x)
        return {**s, "x": x, "status": status, "res": res}

    def postprocess(self, s: dict) -> tuple[Tensor, dict]:
        return s["x"], {"residual_norm": s["res"]}


class Anderson(FixedPointIteration):
    """Anderson acceleration (type II) for x = T(x, *args).

    With the last m iterates X_i and images F_i = T(X_i), G_i = F_i - X_i:
    alpha = argmin ||sum_i alpha_i G_i||^2 + lam ||alpha||^2 s.t. sum_i alpha_i = 1, then
    x <- mixing sum_i alpha_i F_i + (1 - mixing) sum_i alpha_i X_i  (Walker & Ni 2011).  The
    m x m Gram system is regularised by lam = ridge * max diag (scale-free) and solved by Cholesky.
    Arguments: memory m, mixing beta in (0, 1], ridge, plus those of `FixedPointIteration`.
    """

    name = "anderson"

    def __init__(self, *, memory: int = 5, mixing: float = 1.0, ridge: float = 1e-10, rtol: float | None = None,
                 atol: float | None = None, max_steps: int = 200, check_every: int = 5):
        super().__init__(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        if not isinstance(memory, int) or memory < 1:
            raise ValueError(f"anderson: memory={memory!r} must be a positive int (iterates kept)")
        if not (0.0 < float(mixing) <= 1.0):
            raise ValueError(f"anderson: mixing={mixing!r} must be in (0, 1]")
        if not (float(ridge) >= 0):
            raise ValueError(f"anderson: ridge={ridge!r} must be >= 0")
        self.memory, self.mixing, self.ridge = memory, float(mixing), float(ridge)

    def __call__(self, T: Fn, x0: Tensor, *args, throw: bool = True) -> Solution:
        _check_x0(self.name, T, x0)
        B, d = x0.shape[0], x0[0].numel()
        state = {"x": x0.clone(), "status": self._status(x0), "F": T, "args": args,
                 "res": torch.full((B,), float("inf"), dtype=x0.dtype, device=x0.device), "k": 0,
                 "X": x0.new_zeros(B, self.memory, d), "FX": x0.new_zeros(B, self.memory, d)}
        return self._run(state, throw)

    def step(self, s: dict) -> dict:
        fx, res, status = self._evaluate(s)
        x, k = s["x"], s["k"]
        B = x.shape[0]
        slot, n = k % self.memory, min(k + 1, self.memory)
        X, FX = s["X"].clone(), s["FX"].clone()
        X[:, slot], FX[:, slot] = x.reshape(B, -1), fx.reshape(B, -1)
        G = (FX - X)[:, :n]
        H = G @ G.transpose(-1, -2)
        # Relative ridge, never below ~sqrt(eps): the Gram matrix of nearly collinear residual
        # differences is numerically singular well before the method converges (float32 above all).
        ridge = max(self.ridge, torch.finfo(x.dtype).eps ** 0.5 * 1e-2)
        lam = ridge * torch.diagonal(H, dim1=-2, dim2=-1).amax(1).clamp_min(torch.finfo(x.dtype).tiny)
        H = H + torch.diag_embed(lam[:, None].expand(B, n))
        L, info = torch.linalg.cholesky_ex(H)
        go = status == RUNNING
        good = go & (info == 0)
        L = torch.where(good[:, None, None], L, torch.eye(n, dtype=x.dtype, device=x.device))
        w = torch.cholesky_solve(torch.ones(B, n, 1, dtype=x.dtype, device=x.device), L)[..., 0]
        alpha = w / w.sum(1, keepdim=True)
        mixed = self.mixing * (alpha[:, None, :] @ FX[:, :n])[:, 0] + (1 - self.mixing) * (alpha[:, None, :] @ X[:, :n])[:, 0]
        # A failed Gram factorisation falls back to the plain Picard step for that sample.
        x_new = torch.where(good[:, None], mixed, fx.reshape(B, -1)).reshape(x.shape)
        x = torch.where(_col(go, x), x_new, x)
        return {**s, "x": x, "status": status, "res": res, "k": k + 1, "X": X, "FX": FX}


def newton(F: Fn, x0: Tensor, *args, throw: bool = True, **options) -> Solution:
    """Root of F(x, *args) = 0 by `Newton` (options as its constructor)."""
    return Newton(**options)(F, x0, *args, throw=throw)


def gauss_newton(residual: Fn, x0: Tensor, *args, throw: bool = True, **options) -> Solution:
    """min 1/2 ||r(x, *args)||^2 by `GaussNewton` (options as its constructor)."""
    return GaussNewton(**options)(residual, x0, *args, throw=throw)


def levenberg_marquardt(residual: Fn, x0: Tensor, *args, throw: bool = True, **options) -> Solution:
    """min 1/2 ||r(x, *args)||^2 by `LevenbergMarquardt` (options as its constructor)."""
    return LevenbergMarquardt(**options)(residual, x0, *args, throw=throw)


def fixed_point_iteration(T: Fn, x0: Tensor, *args, throw: bool = True, **options) -> Solution:
    """x = T(x, *args) by damped Picard iteration, `FixedPointIteration`."""
    return FixedPointIteration(**options)(T, x0, *args, throw=throw)


def anderson(T: Fn, x0: Tensor, *args, throw: bool = True, **options) -> Solution:
    """x = T(x, *args) by `Anderson` acceleration."""
    return Anderson(**options)(T, x0, *args, throw=throw)
