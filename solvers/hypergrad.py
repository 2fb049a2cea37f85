"""Hypergradients by the implicit function theorem with a Neumann-series inverse Hessian.

Bilevel problem (Lorraine, Vicol & Duvenaud, AISTATS 2020):

    lam* = argmin_lam L_V(w*(lam), lam),   w*(lam) = argmin_w L_T(w, lam)
    dL_V/dlam = dL_V/dlam|_direct - (d2 L_T / dlam dw) H^{-1} dL_V/dw,   H = d2 L_T / dw2

H^{-1} v is approximated by the truncated Neumann series

    H^{-1} v ~ alpha sum_{j=0}^{K} (I - alpha H)^j v,

which converges when ||I - alpha H|| < 1 (0 < alpha < 2 / lambda_max(H), H positive definite);
K terms cost K Hessian-vector products and O(P) memory, and K Neumann steps from w* give exactly
the hypergradient of K + 1 unrolled gradient-descent steps with learning rate alpha started at
w* (Lorraine et al., Thm. 2) -- the test suite checks this identity.

`Neumann` is also a linear solver ``(matvec, b) -> Solution`` usable as
``solvers.implicit.Implicit(backward_solve=Neumann(...))``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .implicit import _INEXACT, _report, call_solver, krylov, warn_inexact
from .linear import _col, _norm
from .solution import RUNNING, Solution, Status, SolveError, check_options, describe, iterate, mark

__all__ = ["Neumann", "neumann", "hypergradient"]


class Neumann:
    """Truncated Neumann series x = alpha sum_{j=0}^{steps} (I - alpha A)^j b ~ A^{-1} b.

    steps: number of matvecs (steps + 1 terms).  alpha: step, 0 < alpha < 2 / lambda_max(A) for a
    positive definite A; for the fixed-point adjoint A = J_T^T - I of a contraction T use
    alpha = -1, which is the DEQ backward iteration u <- J_T^T u + b up to sign.
    rtol: optional early stop when a term is below rtol times the partial sum (per sample).
    A term that grows past ``blowup`` times the first marks BREAKDOWN ("I - alpha A is not a
    contraction: lower alpha").  Otherwise the status is SUCCESS: the series is an approximation
    by design; stats["residual_norm"] = ||b - A x|| says how good (one extra matvec), and
    `Implicit` and `hypergradient` warn when it is over 1e-2 ||b||.
    b: (batch, *shape).
    """

    name = "neumann"
    truncated = True  # SUCCESS means the series ran its steps, not that the residual is small
    failure_hint = "(I - alpha A is not a contraction: lower alpha)"

    def __init__(self, steps: int = 10, alpha: float = 1.0, *, rtol: Optional[float] = None, blowup: float = 1e3):
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"neumann: steps={steps!r} must be an int >= 0 (matvecs; steps + 1 series terms)")
        if not (abs(float(alpha)) > 0 and abs(float(alpha)) < float("inf")):
            raise ValueError(f"neumann: alpha={alpha!r} must be finite and non-zero (0 < alpha < 2 / lambda_max(A) "
                             f"for positive definite A; alpha = -1 for the fixed-point adjoint J_T^T - I)")
        check_options(self.name, rtol=rtol)
        self.steps, self.alpha, self.rtol, self.blowup = steps, float(alpha), rtol, float(blowup)

    def __call__(self, matvec: Callable[[Tensor], Tensor], b: Tensor, *, throw: bool = True) -> Solution:
        if not isinstance(b, Tensor) or b.dim() < 2:
            raise ValueError("neumann: b must be a tensor (batch, *shape); for one vector pass b[None]")
        status = torch.full(b.shape[:1], RUNNING, dtype=torch.int64, device=b.device)
        if self.steps == 0:
            x, status, steps = self.alpha * b, torch.zeros_like(status), torch.zeros_like(status)
        else:
            state = {"x": b.clone(), "v": b.clone(), "v0": _norm(b), "status": status, "A": matvec}
            poll = 10 if self.rtol is not None else self.steps  # nothing to poll for without rtol
            sol = iterate(self, state, max_steps=self.steps, check_every=poll, throw=False, name=self.name)
            # Running all `steps` is the intended outcome of a truncated series, not a failure.
            status = torch.where(sol.status == Status.MAX_STEPS, torch.zeros_like(sol.status), sol.status)
            x, steps = sol.value, sol.stats["num_steps"]
        sol = Solution(x, status, {"num_steps": steps, "residual_norm": _norm(b - matvec(x))})
        if throw and bool((status != Status.SUCCESS).any()):
            raise SolveError(describe(status, self.name) + "\n  " + self.failure_hint, sol)
        return sol

    def step(self, s: dict) -> dict:
        active = s["status"] == RUNNING
        go = _col(active, s["v"])
        v = torch.where(go, s["v"] - self.alpha * s["A"](s["v"]), s["v"])  # next term (I - alpha A)^j b
        x = torch.where(go, s["x"] + v, s["x"])
        vn = _norm(v)
        status = mark(s["status"], active & (vn > self.blowup * s["v0"]), Status.BREAKDOWN)
        if self.rtol is not None:
            status = mark(status, active & (vn <= self.rtol * _norm(x)), Status.SUCCESS)
        return {**s, "x": x, "v": v, "status": status}

    def postprocess(self, s: dict):
        return self.alpha * s["x"], {}


def neumann(matvec: Callable[[Tensor], Tensor], b: Tensor, *, steps: int = 10, alpha: float = 1.0,
            throw: bool = True) -> Solution:
    """A^{-1} b by the truncated Neumann series; see `Neumann`."""
    return Neumann(steps, alpha)(matvec, b, throw=throw)


def _flat(ts: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in ts])[None]


def _unflat(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(v[0, i:i + t.numel()].reshape(t.shape))
        i += t.numel()
    return out


def _check_scalar(name: str, value: Any) -> None:
    if not isinstance(value, Tensor) or value.numel() != 1:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"hypergradient: {name} must return a scalar tensor, got {got}; reduce it (e.g. .sum() or .mean())")


def hypergradient(train_loss: Callable[..., Tensor], val_loss: Callable[..., Tensor], params: Sequence[Tensor],
                  hparams: Sequence[Tensor], *, solve: "Neumann | str | Callable" = None,
                  on_failure: str = "raise", on_nonstationary: str = "warn") -> tuple[list[Tensor], Solution]:
    """dL_V/dhparams at an (approximate) inner optimum ``params`` ~ w*(hparams), by the IFT.

    train_loss(params, hparams) -> scalar L_T; val_loss(params, hparams) -> scalar L_V;
    params, hparams: sequences of tensors (params need not require grad; they are detached).
    solve: how to apply H^{-1}: a `Neumann` (default ``Neumann(steps=10, alpha=1.0)`` -- set
    alpha ~ the inner learning rate), "cg" (H SPD), "gmres", or any ``(matvec, b) -> Solution``.
    Cost: one HVP per solver step, one mixed second derivative; memory O(P + H).
    Returns (list of hypergradients shaped like hparams, the linear-solve Solution).
    A failed inverse-Hessian solve raises `SolveError` (``on_failure="raise"``) or warns.

    The IFT holds only at a stationary point: at params with grad_w L_T != 0 the result is wrong
    (at w = 0 on a ridge problem it was 0 for a true -0.22) and nothing else fails.  So ``params`` is
    checked, at one more HVP: when the Cauchy step ||g||^3 / |g^T H g| (g = grad_w L_T), a lower
    bound of the Newton step ||H^{-1} g|| to the optimum, is over 1e-2 ||params||, the call warns
    (``on_nonstationary="warn"``, the default), raises `SolveError` (``"raise"``) or says nothing
    (``"ignore"``).  An inner problem solved to a usual gradient tolerance (1e-6) passes.
    """
    if on_failure not in ("raise", "warn"):
        raise ValueError(f"hypergradient: on_failure={on_failure!r} is not valid; use 'raise' or 'warn'")
    if on_nonstationary not in ("raise", "warn", "ignore"):
        raise ValueError(f"hypergradient: on_nonstationary={on_nonstationary!r} is not valid; use 'raise', 'warn' "
                         f"or 'ignore'")
    for name, ts, eg in (("params", params, "w"), ("hparams", hparams, "log_lam")):
        if not isinstance(ts, (list, tuple)) or not all(isinstance(t, Tensor) for t in ts):
            got = f"a {type(ts).__name__} of {[type(t).__name__ for t in ts][:5]}" if isinstance(ts, (list, tuple)) \
                else f"a {type(ts).__name__}"
            raise TypeError(f"hypergradient: {name} must be a list or tuple of tensors ([{eg}] for one tensor {eg}), "
                            f"got {got}")
    solve = Neumann() if solve is None else solve
    if isinstance(solve, str):
        if solve not in ("cg", "gmres"):
            raise ValueError(f"hypergradient: solve={solve!r} is not valid; use 'cg', 'gmres', a Neumann(...) "
                             f"or a callable (matvec, b) -> Solution")
        solve = krylov(solve, params[0].dtype)
    w = [p.detach().requires_grad_(True) for p in params]
    lam = [h if h.requires_grad else h.detach().requires_grad_(True) for h in hparams]
    with torch.enable_grad():
        Lv = val_loss(w, lam)
        _check_scalar("val_loss", Lv)
        v_w = torch.autograd.grad(Lv, w, allow_unused=True, materialize_grads=True, retain_graph=True)
        direct = torch.autograd.grad(Lv, lam, allow_unused=True, materialize_grads=True)
        Lt = train_loss(w, lam)
        _check_scalar("train_loss", Lt)
        g_w = torch.autograd.grad(Lt, w, create_graph=True)

        def hvp(u: Tensor) -> Tensor:
            hv = torch.autograd.grad(g_w, w, grad_outputs=_unflat(u, w), retain_graph=True, allow_unused=True,
                                     materialize_grads=True)
            return _flat(hv)

        said = _nonstationary(g_w, w, hvp) if on_nonstationary != "ignore" else None
        if said:  # reported here, so that a warning names the caller's line
            _report(on_nonstationary, said, None)
        sol = call_solver(solve, hvp, _flat(v_w))
        if bool((sol.status != Status.SUCCESS).any()):  # with the solver's own advice: it names its fix
            hint = getattr(solve, "failure_hint", "")
            _report(on_failure, "hypergradient inverse-Hessian solve: " + describe(sol.status, getattr(solve, "name", "solve"))
                    + (f"\n  {hint}" if hint else ""), sol)
        if getattr(solve, "truncated", False):
            warn_inexact(sol, _flat(v_w), "hypergradient inverse-Hessian solve")
        mixed = torch.autograd.grad(g_w, lam, grad_outputs=_unflat(sol.value.detach(), w), allow_unused=True,
                                    materialize_grads=True)
    return [d - m for d, m in zip(direct, mixed)], sol


def _nonstationary(g_w: Sequence[Tensor], w: Sequence[Tensor], hvp: Callable[[Tensor], Tensor]) -> Optional[str]:
    """Why w is not an inner optimum, or None when it is one to first order.

    The distance to the optimum is the Newton step ||H^{-1} g||.  Rather than a second linear solve (as
    costly as the hypergradient's own) this takes the Cauchy step ||g||^3 / g^T H g: one HVP, and for a
    positive definite H a lower bound of the Newton step (Cauchy-Schwarz), so it adds no false alarm; it
    equals the Newton step where an inner optimizer leaves its gradient, along the low-curvature
    directions it converges slowest in.  Compared with ||w||, it is scale-free.
    """
    g = _flat(g_w).detach()
    tiny = torch.finfo(g.dtype).tiny
    g_norm = g.norm()
    d = g / g_norm.clamp_min(tiny)  # unit direction: ||g||^3 itself overflows float32 far from the optimum
    curv = (d * hvp(d).detach()).sum().abs()  # |.|: a saddle is as far from the IFT's minimum
    step = g_norm / curv.clamp_min(tiny)
    w_norm = _flat(w).detach().norm()
    if bool(step <= _INEXACT * w_norm):  # one host read; a NaN gradient fails it too
        return None
    return (f"hypergradient: params are not an inner optimum: ||grad_w L_T|| = {g_norm.item():.2e}, so the optimum "
            f"is a Newton step of at least {step.item():.2e} away (||params|| = {w_norm.item():.2e}; over "
            f"{_INEXACT:g} of it is too far), and the implicit function theorem needs grad_w L_T = 0 (the "
            f"hypergradient is wrong, not just inexact); solve the inner problem to convergence first (or pass "
            f"on_nonstationary='ignore' to take it as it is)")
