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

__all__ = ["CG", "cg"]

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
        _check_rhs(self.name, matvec, b, x0)
        A, M = _with_ridge(matvec, self.ridge), self._precond()
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r = b - _apply_checked(self.name, "matvec", A, x)
        z = _apply_checked(self.name, "preconditioner", M, r)
        tol = _tolerance(b, self.rtol, self.atol)
        status = torch.full(b.shape[:1], RUNNING, dtype=torch.int64, device=b.device)
        status = mark(status, _norm(r) <= tol, Status.SUCCESS)
        state = {"x": x, "r": r, "p": z, "rz": _dot(r, z), "tol": tol, "status": status, "b": b, "A": A, "M": M}
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
