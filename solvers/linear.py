"""Batched linear solvers: matrix-free Krylov (CG, GMRES, BiCGSTAB) and dense small-system paths.

Solve A x = b independently for every sample of a batch.  Matrix-free solvers take the operator
as a function ``matvec: (batch, *shape) -> (batch, *shape)`` that acts on each sample
separately; inner products reduce over all non-batch dimensions.  A preconditioner is a
function of the same shape that approximates A^{-1}.  ``ridge = λ`` solves (A + λ I) x = b.

Every solver returns ``Solution(value, status, stats)`` with a per-sample int64 ``status``
(see `solvers.solution.Status`) and ``stats["num_steps"]``, ``stats["residual_norm"]`` (batch,)
(the true residual ||b - (A + λI) x||, recomputed once at the end).  Samples that have finished
stop changing (masking); the host is polled for "all done?" only every ``check_every`` steps.
The loops run under the caller's grad mode; wrap them with `solvers.implicit` to differentiate.

Convergence: ||r||_2 <= max(atol, rtol * ||b||_2) per sample (the SciPy convention).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from .solution import RUNNING, Solution, SolveError, Status, check_options, describe, iterate, mark

__all__ = ["CG", "GMRES", "BiCGSTAB", "Dense", "cg", "gmres", "bicgstab", "solve_dense"]

MatVec = Callable[[Tensor], Tensor]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).reshape(a.shape[0], -1).sum(dim=1)


def _norm(a: Tensor) -> Tensor:
    return torch.linalg.vector_norm(a.reshape(a.shape[0], -1), dim=1)


def _col(s: Tensor, like: Tensor) -> Tensor:
    """(batch,) -> (batch, 1, ..., 1) to broadcast against a (batch, *shape) tensor."""
    return s.reshape(s.shape[0], *([1] * (like.dim() - 1)))


def _safe_div(num: Tensor, den: Tensor, ok: Tensor) -> Tensor:
    """num / den where ok, else 0 -- without ever dividing by a zero that would poison autograd."""
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _with_ridge(matvec: MatVec, ridge: float) -> MatVec:
    if ridge == 0.0:
        return matvec
    return lambda v: matvec(v) + ridge * v


def _check_rhs(name: str, matvec, b: Tensor, x0: Optional[Tensor]) -> None:
    if not callable(matvec):
        raise TypeError(f"{name}: matvec must be a function (batch, *shape) -> (batch, *shape), "
                        f"got {type(matvec).__name__}; for a dense matrix A use `lambda v: (A @ v[..., None])[..., 0]` "
                        f"or solve_dense")
    if not isinstance(b, Tensor) or b.dim() < 2:
        shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
        raise ValueError(f"{name}: b must be a tensor of shape (batch, *shape) with at least 2 dims, got {shape}; "
                         f"for a single system pass b[None]")
    if b.is_complex() or not b.is_floating_point():
        raise TypeError(f"{name}: b has dtype {b.dtype}; real floating point (float32/float64) is supported")
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"{name}: x0 has shape {tuple(x0.shape)} but b has shape {tuple(b.shape)}; they must match")


def _apply_checked(name: str, what: str, fn: MatVec, v: Tensor) -> Tensor:
    out = fn(v)
    if not isinstance(out, Tensor) or out.shape != v.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name}: {what} mapped a tensor of shape {tuple(v.shape)} to {shape}; "
                         f"it must return the same (batch, *shape)")
    return out


def _tolerance(b: Tensor, rtol: float, atol: float) -> Tensor:
    return torch.clamp(rtol * _norm(b), min=atol)


class _Krylov:
    """Shared option validation for the matrix-free solvers."""

    name = "krylov"

    def __init__(self, *, rtol: float = 1e-6, atol: float = 0.0, max_steps: Optional[int] = None,
                 check_every: int = 10, preconditioner: Optional[MatVec] = None, ridge: float = 0.0):
        check_options(self.name, rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every)
        if preconditioner is not None and not callable(preconditioner):
            raise TypeError(f"{self.name}: preconditioner must be a function v -> M v approximating A^-1 v, "
                            f"got {type(preconditioner).__name__}")
        if not (float(ridge) >= 0.0):
            raise ValueError(f"{self.name}: ridge={ridge!r} must be >= 0 (it adds ridge * I to the operator)")
        self.rtol, self.atol, self.max_steps = float(rtol), float(atol), max_steps
        self.check_every, self.preconditioner, self.ridge = check_every, preconditioner, float(ridge)

    def _default_steps(self, b: Tensor) -> int:
        return self.max_steps if self.max_steps is not None else 10 * max(1, b[0].numel())

    def _precond(self) -> MatVec:
        return self.preconditioner if self.preconditioner is not None else (lambda v: v)

    def _start(self, matvec: MatVec, b: Tensor, x0: Optional[Tensor]) -> dict:
        """The state every method begins from: operator (with ridge), preconditioner, x0, r0, M r0,
        the per-sample tolerance and a status with already-converged samples marked."""
        _check_rhs(self.name, matvec, b, x0)
        A, M = _with_ridge(matvec, self.ridge), self._precond()
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r = b - _apply_checked(self.name, "matvec", A, x)
        z = _apply_checked(self.name, "preconditioner", M, r)
        tol = _tolerance(b, self.rtol, self.atol)
        status = torch.full(b.shape[:1], RUNNING, dtype=torch.int64, device=b.device)
        # a non-finite b makes the tolerance infinite: "converged" at x0 (zeros) without this
        status = mark(status, ~torch.isfinite(tol) | ~torch.isfinite(_norm(r)), Status.NONFINITE)
        status = mark(status, _norm(r) <= tol, Status.SUCCESS)
        return {"x": x, "r": r, "z": z, "tol": tol, "status": status, "b": b, "A": A, "M": M}

    def _finish(self, state: dict) -> tuple[Tensor, dict]:
        x = state["x"]
        r = state["b"] - state["A"](x)
        return x, {"residual_norm": _norm(r)}


class CG(_Krylov):
    """Conjugate gradients for A x = b with A symmetric positive definite (per sample).

    Preconditioned CG (Hestenes & Stiefel 1952; Saad, "Iterative Methods", Alg. 9.1).  The
    preconditioner must be SPD as well.  A non-positive curvature p^T A p <= 0 or <r, M r> <= 0
    marks the sample BREAKDOWN (the operator or preconditioner is not SPD).

    Call: ``CG(rtol=..., ...)(matvec, b, x0=None, throw=True) -> Solution``;
    b, x0: (batch, *shape).  max_steps defaults to 10 * prod(shape).
    """

    name = "cg"

    def __call__(self, matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, throw: bool = True) -> Solution:
        state = self._start(matvec, b, x0)
        z = state.pop("z")
        state.update(p=z, rz=_dot(state["r"], z))
        return iterate(self, state, max_steps=self._default_steps(b), check_every=self.check_every,
                       throw=throw, name=self.name)

    def step(self, s: dict) -> dict:
        x, r, p, rz, status = s["x"], s["r"], s["p"], s["rz"], s["status"]
        Ap = s["A"](p)
        pAp = _dot(p, Ap)
        active = status == RUNNING
        go = active & (pAp > 0)
        status = mark(status, active & ~torch.isfinite(pAp), Status.NONFINITE)
        status = mark(status, active & ~(pAp > 0), Status.BREAKDOWN)
        alpha = _safe_div(rz, pAp, go)
        g = _col(go, x)
        # torch.where (not alpha = 0) so a stopped sample never sees 0 * inf = nan.
        x = torch.where(g, x + _col(alpha, x) * p, x)
        r = torch.where(g, r - _col(alpha, r) * Ap, r)
        done = go & (_norm(r) <= s["tol"])
        status = mark(status, done, Status.SUCCESS)
        z = s["M"](r)
        rz_new = _dot(r, z)
        cont = go & ~done
        # <r, M r> <= 0 with r != 0 means the preconditioner is not positive definite.
        status = mark(status, cont & torch.isfinite(rz_new) & ~(rz_new > 0), Status.BREAKDOWN)
        beta = _safe_div(rz_new, rz, cont)
        p = torch.where(_col(cont, p), z + _col(beta, p) * p, p)
        rz = torch.where(cont, rz_new, rz)
        return {**s, "x": x, "r": r, "p": p, "rz": rz, "status": status}

    def postprocess(self, state: dict) -> tuple[Tensor, dict]:
        return self._finish(state)


def cg(matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, preconditioner: Optional[MatVec] = None,
       rtol: float = 1e-6, atol: float = 0.0, max_steps: Optional[int] = None, check_every: int = 10,
       throw: bool = True, ridge: float = 0.0) -> Solution:
    """Solve (A + ridge I) x = b, A SPD, by batched preconditioned CG.  See `CG`.

    matvec: (batch, *shape) -> (batch, *shape); b, x0: (batch, *shape).
    Returns Solution(value (batch, *shape), status (batch,) int64, stats{"num_steps", "residual_norm"}).
    """
    return CG(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every,
              preconditioner=preconditioner, ridge=ridge)(matvec, b, x0=x0, throw=throw)


class GMRES(_Krylov):
    """Restarted GMRES(m) for a general (non-symmetric) A x = b, right-preconditioned.

    Minimises ||b - A M y|| over the Krylov space of A M each cycle (Saad & Schultz 1986;
    Saad, Alg. 9.5 with right preconditioning, so the monitored residual is the true one).
    Arnoldi uses modified Gram-Schmidt; Givens rotations track the residual per sample inside
    a cycle, and a sample whose estimate meets the tolerance is frozen for the rest of the cycle
    (its remaining Hessenberg columns are replaced by identity columns, so it adds nothing).
    One driver step is one cycle of at most ``restart`` matvecs; the host is polled every
    ``check_every`` inner steps (the cycle ends early once every sample is frozen) and after
    each cycle.  Uses in-place work buffers: not for autograd unrolling (use solvers.implicit).
    ``max_steps`` caps the total inner iterations (default 10 * prod(shape));
    ``stats["num_steps"]`` counts inner iterations per sample.  A nonlinear or changing
    preconditioner is allowed (the preconditioned vectors are stored: flexible GMRES).

    Call: ``GMRES(restart=20, ...)(matvec, b, x0=None, throw=True) -> Solution``.
    """

    name = "gmres"

    def __init__(self, *, restart: int = 20, **kw):
        super().__init__(**kw)
        if not isinstance(restart, int) or restart < 1:
            raise ValueError(f"gmres: restart={restart!r} must be a positive int (Krylov vectors kept per cycle)")
        self.restart = restart

    def __call__(self, matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, throw: bool = True) -> Solution:
        state = self._start(matvec, b, x0)
        del state["z"]
        total = self._default_steps(b)
        m = min(self.restart, total)
        state.update(m=m, left=total, inner=torch.zeros_like(state["status"]))
        return iterate(self, state, max_steps=math.ceil(total / m), check_every=1, throw=throw, name=self.name)

    def step(self, s: dict) -> dict:
        x, r, status, tol = s["x"], s["r"], s["status"], s["tol"]
        A, M = s["A"], s["M"]
        m = min(s["m"], s["left"])  # the last cycle is shortened so max_steps is exact
        B, shape = x.shape[0], x.shape
        active = status == RUNNING
        beta = _norm(r)
        V = x.new_zeros(B, m + 1, x[0].numel())  # orthonormal Krylov basis, flattened
        V[:, 0] = (r * _col(_safe_div(torch.ones_like(beta), beta, beta > 0), r)).reshape(B, -1)
        Z = []
        R = x.new_zeros(B, m, m)
        g = x.new_zeros(B, m + 1)
        g[:, 0] = beta
        # Q accumulates the Givens rotations (Q H = R), so rotating a new Hessenberg column is one
        # small bmm instead of j sequential 2x2 updates.
        Q = torch.eye(m + 1, dtype=x.dtype, device=x.device).repeat(B, 1, 1)
        frozen = ~active | (beta <= tol)
        broke = torch.zeros_like(frozen)
        inner = s["inner"]
        used = m
        for j in range(m):
            inner = inner + (~frozen).to(inner.dtype)
            z = M(V[:, j].reshape(shape))
            w = A(z).reshape(B, -1)
            # Classical Gram-Schmidt applied twice ("CGS2"): as stable as modified GS, but two
            # batched matmuls instead of j+1 sequential dot products.
            Vj = V[:, : j + 1]
            h = torch.einsum("bkn,bn->bk", Vj, w)
            w = w - torch.einsum("bkn,bk->bn", Vj, h)
            h2 = torch.einsum("bkn,bn->bk", Vj, w)
            w = w - torch.einsum("bkn,bk->bn", Vj, h2)
            hnext = torch.linalg.vector_norm(w, dim=1)
            V[:, j + 1] = w * _safe_div(torch.ones_like(hnext), hnext, hnext > 0)[:, None]
            Z.append(z)
            hr = (Q[:, : j + 1, : j + 1] @ (h + h2)[..., None])[..., 0]  # earlier rotations applied
            den = torch.hypot(hr[:, j], hnext)
            good = den > 0
            # A frozen (or broken) sample gets an identity column and zero right-hand side: y_j = 0.
            broke = broke | (~frozen & ~good)
            stop = frozen | ~good
            c = torch.where(stop, torch.ones_like(den), _safe_div(hr[:, j], den, good))
            sgn = torch.where(stop, torch.zeros_like(den), _safe_div(hnext, den, good))
            col = torch.where(stop[:, None], torch.zeros_like(hr), hr)
            col[:, j] = torch.where(stop, torch.ones_like(den), den)
            R[:, : j + 1, j] = col
            qj, qj1 = Q[:, j, : j + 2].clone(), Q[:, j + 1, : j + 2].clone()
            Q[:, j, : j + 2] = c[:, None] * qj + sgn[:, None] * qj1
            Q[:, j + 1, : j + 2] = -sgn[:, None] * qj + c[:, None] * qj1
            gj = torch.where(stop, torch.zeros_like(g[:, j]), g[:, j])
            g[:, j + 1] = -sgn * gj
            g[:, j] = c * gj
            frozen = stop | (g[:, j + 1].abs() <= tol)
            # Poll (one host sync) every check_every inner steps: stop the cycle once all are frozen.
            if (j + 1) % self.check_every == 0 and j + 1 < m and bool(frozen.all()):
                used = j + 1
                break
        y = torch.linalg.solve_triangular(R[:, :used, :used], g[:, :used, None], upper=True)[..., 0]
        dx = sum(_col(y[:, j], x) * Z[j] for j in range(used))
        x = torch.where(_col(active, x), x + dx, x)
        r = torch.where(_col(active, r), s["b"] - A(x), r)  # true residual: restarts never drift
        rn = _norm(r)
        status = mark(status, active & (rn <= tol), Status.SUCCESS)
        status = mark(status, active & ~torch.isfinite(rn), Status.NONFINITE)
        status = mark(status, active & broke, Status.BREAKDOWN)
        return {**s, "x": x, "r": r, "status": status, "inner": inner, "left": s["left"] - used}

    def postprocess(self, state: dict) -> tuple[Tensor, dict]:
        x, stats = self._finish(state)
        return x, {**stats, "num_steps": state["inner"]}


class BiCGSTAB(_Krylov):
    """BiCGSTAB for a general (non-symmetric) A x = b, right-preconditioned.

    van der Vorst (1992); Saad Alg. 7.7 with a right preconditioner M.  A zero shadow inner
    product (rho or r_hat^T v) or a zero stabiliser omega marks BREAKDOWN; GMRES is the robust
    fallback.  Each step costs two matvecs and two preconditioner applications.

    Call: ``BiCGSTAB(...)(matvec, b, x0=None, throw=True) -> Solution``.
    """

    name = "bicgstab"

    def __call__(self, matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, throw: bool = True) -> Solution:
        state = self._start(matvec, b, x0)
        del state["z"]
        r, one = state["r"], torch.ones_like(state["tol"])
        state.update(rhat=r.clone(), p=torch.zeros_like(r), v=torch.zeros_like(r), rho=one, alpha=one, omega=one)
        return iterate(self, state, max_steps=self._default_steps(b), check_every=self.check_every,
                       throw=throw, name=self.name)

    def step(self, s: dict) -> dict:
        x, r, rhat, p, v, status, tol = s["x"], s["r"], s["rhat"], s["p"], s["v"], s["status"], s["tol"]
        A, M = s["A"], s["M"]
        active = status == RUNNING
        rho = _dot(rhat, r)
        ok1 = active & (rho != 0)
        beta = _safe_div(rho, s["rho"], ok1) * _safe_div(s["alpha"], s["omega"], ok1)
        p = torch.where(_col(ok1, p), r + _col(beta, p) * (p - _col(s["omega"], v) * v), p)
        phat = M(p)
        v = torch.where(_col(ok1, v), A(phat), v)
        rv = _dot(rhat, v)
        ok2 = ok1 & (rv != 0)
        alpha = _safe_div(rho, rv, ok2)
        sres = r - _col(alpha, r) * v
        half = ok2 & (_norm(sres) <= tol)
        ok3 = ok2 & ~half
        shat = M(sres)
        t = A(shat)
        tt = _dot(t, t)
        ok4 = ok3 & (tt > 0)
        omega = _safe_div(_dot(t, sres), tt, ok4)
        x_half = x + _col(alpha, x) * phat
        x = torch.where(_col(half, x), x_half, x)
        x = torch.where(_col(ok4, x), x_half + _col(omega, x) * shat, x)
        r = torch.where(_col(half, r), sres, r)
        r = torch.where(_col(ok4, r), sres - _col(omega, r) * t, r)
        done = half | (ok4 & (_norm(r) <= tol))
        status = mark(status, done, Status.SUCCESS)
        nonfin = active & ~(torch.isfinite(rho) & torch.isfinite(rv) & torch.isfinite(tt))
        status = mark(status, nonfin, Status.NONFINITE)
        status = mark(status, active & ~(ok4 & (omega != 0)), Status.BREAKDOWN)
        return {**s, "x": x, "r": r, "p": p, "v": v, "status": status,
                "rho": torch.where(ok4, rho, s["rho"]), "alpha": torch.where(ok4, alpha, s["alpha"]),
                "omega": torch.where(ok4, omega, s["omega"])}

    def postprocess(self, state: dict) -> tuple[Tensor, dict]:
        return self._finish(state)


def gmres(matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, preconditioner: Optional[MatVec] = None,
          rtol: float = 1e-6, atol: float = 0.0, max_steps: Optional[int] = None, restart: int = 20,
          check_every: int = 10, throw: bool = True, ridge: float = 0.0) -> Solution:
    """Solve (A + ridge I) x = b, A general, by batched restarted GMRES.  See `GMRES`."""
    return GMRES(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every, restart=restart,
                 preconditioner=preconditioner, ridge=ridge)(matvec, b, x0=x0, throw=throw)


def bicgstab(matvec: MatVec, b: Tensor, *, x0: Optional[Tensor] = None, preconditioner: Optional[MatVec] = None,
             rtol: float = 1e-6, atol: float = 0.0, max_steps: Optional[int] = None, check_every: int = 10,
             throw: bool = True, ridge: float = 0.0) -> Solution:
    """Solve (A + ridge I) x = b, A general, by batched BiCGSTAB.  See `BiCGSTAB`."""
    return BiCGSTAB(rtol=rtol, atol=atol, max_steps=max_steps, check_every=check_every,
                    preconditioner=preconditioner, ridge=ridge)(matvec, b, x0=x0, throw=throw)


class Dense:
    """Direct solve of small batched dense systems: (A + ridge I) x = b, or least squares.

    method:
      "cholesky"  A SPD (batch, n, n); a failed factorisation marks BREAKDOWN (not SPD).
      "lu"        A square (batch, n, n), partial pivoting; an exactly singular pivot marks BREAKDOWN.
      "lstsq"     A (batch, m, n): min ||A x - b||^2 + ridge ||x||^2 via QR of [A; sqrt(ridge) I]
                  (never the normal equations, which square the condition number).  m < n without
                  a ridge gives the minimum-norm solution via QR of A^T.  A numerically
                  rank-deficient R (|R_ii| <= n eps max|R_jj|) marks BREAKDOWN; add a ridge.
    b: (batch, m) or (batch, m, k).  Returns Solution with stats["residual_norm"] (batch,); a sample
    marked BREAKDOWN holds the minimum-norm least-squares solution (pseudo-inverse).
    """

    name = "solve_dense"
    METHODS = ("cholesky", "lu", "lstsq")

    def __init__(self, method: str = "lu", *, ridge: float = 0.0):
        if method not in self.METHODS:
            raise ValueError(f"solve_dense: unknown method {method!r}; valid: {list(self.METHODS)}")
        if not (float(ridge) >= 0.0):
            raise ValueError(f"solve_dense: ridge={ridge!r} must be >= 0")
        self.method, self.ridge = method, float(ridge)

    def __call__(self, A: Tensor, b: Tensor, *, throw: bool = True) -> Solution:
        if A.dim() != 3:
            raise ValueError(f"solve_dense: A must be (batch, m, n), got shape {tuple(A.shape)}; for one system pass A[None]")
        vec = b.dim() == 2
        if b.dim() not in (2, 3) or b.shape[:2] != A.shape[:2]:
            raise ValueError(f"solve_dense: b must be (batch, m) or (batch, m, k) matching A {tuple(A.shape)}, "
                             f"got {tuple(b.shape)}")
        B, m, n = A.shape
        bb = b[..., None] if vec else b
        if self.method in ("cholesky", "lu") and m != n:
            raise ValueError(f"solve_dense: method={self.method!r} needs a square A, got {tuple(A.shape)}; "
                             f"use method='lstsq'")
        eye = torch.eye(n, dtype=A.dtype, device=A.device)
        bad = torch.zeros(B, dtype=torch.bool, device=A.device)
        if self.method == "cholesky":
            L, info = torch.linalg.cholesky_ex(A + self.ridge * eye)
            bad = info != 0
            L = torch.where(bad[:, None, None], eye.expand_as(L), L)
            x = torch.cholesky_solve(bb, L)
        elif self.method == "lu":
            LU, piv, info = torch.linalg.lu_factor_ex(A + self.ridge * eye)
            bad = info != 0
            LU = torch.where(bad[:, None, None], eye.expand_as(LU), LU)
            x = torch.linalg.lu_solve(LU, piv, bb)
        else:
            x, bad = self._lstsq(A, bb)
        if bool(bad.any()):  # still BREAKDOWN, but the minimum-norm least-squares solution, not zeros: a
            # caller that warns and goes on (an implicit gradient) gets the best answer there is
            M = A if self.method == "lstsq" else A + self.ridge * eye
            x = torch.where(bad[:, None, None], torch.linalg.pinv(M) @ bb, x)
        if self.method == "lstsq":
            res = A @ x - bb
        else:
            res = (A + self.ridge * eye) @ x - bb
        status = torch.full((B,), RUNNING, dtype=torch.int64, device=A.device)
        status = mark(status, bad, Status.BREAKDOWN)
        status = mark(status, ~torch.isfinite(x.reshape(B, -1)).all(1), Status.NONFINITE)
        status = torch.where(status == RUNNING, torch.zeros_like(status), status)
        sol = Solution(x[..., 0] if vec else x, status,
                       {"num_steps": torch.ones_like(status), "residual_norm": _norm(res)})
        if throw and bool((status != Status.SUCCESS).any()):
            raise SolveError(describe(status, f"solve_dense({self.method})"), sol)
        return sol

    def _lstsq(self, A: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        B, m, n = A.shape
        eps = torch.finfo(A.dtype).eps
        if m < n and self.ridge == 0.0:
            # minimum norm: A^T = Q R, x = Q R^{-T} b
            Q, R = torch.linalg.qr(A.transpose(-1, -2))
            d = torch.diagonal(R, dim1=-2, dim2=-1).abs()
            bad = (d <= m * eps * d.amax(-1, keepdim=True)).any(-1)
            R = torch.where(bad[:, None, None], torch.eye(m, dtype=A.dtype, device=A.device).expand_as(R), R)
            y = torch.linalg.solve_triangular(R.transpose(-1, -2), b, upper=False)
            return Q @ y, bad
        if self.ridge > 0.0:
            eye = torch.eye(n, dtype=A.dtype, device=A.device).expand(B, n, n)
            A = torch.cat([A, math.sqrt(self.ridge) * eye], dim=1)
            b = torch.cat([b, b.new_zeros(B, n, b.shape[-1])], dim=1)
        Q, R = torch.linalg.qr(A)
        d = torch.diagonal(R, dim1=-2, dim2=-1).abs()
        bad = (d <= max(A.shape[1], n) * eps * d.amax(-1, keepdim=True)).any(-1)
        R = torch.where(bad[:, None, None], torch.eye(n, dtype=A.dtype, device=A.device).expand_as(R), R)
        return torch.linalg.solve_triangular(R, Q.transpose(-1, -2) @ b, upper=True), bad


def solve_dense(A: Tensor, b: Tensor, *, method: str = "lu", ridge: float = 0.0, throw: bool = True) -> Solution:
    """Solve small batched dense systems; see `Dense`.  A: (batch, m, n); b: (batch, m[, k])."""
    return Dense(method, ridge=ridge)(A, b, throw=throw)
