"""Per-sample solve status, the `Solution` record and the one loop every iterative solver shares.

A solver is a small object with validated options and three methods::

    state = method.init(...)          # dict of tensors; must hold "x" (batch, ...) and "status" (batch,)
    state = method.step(state)        # one iteration; marks finished samples in state["status"]
    value, stats = method.postprocess(state)

`iterate` owns the loop: it counts steps per sample, marks samples whose iterate turned
non-finite, polls "all samples done?" on the host only every `check_every` steps (the only
device->host synchronisation in the loop), sets MAX_STEPS on samples still running at the end,
and raises `SolveError` when asked to.  Status lives on the device as an int64 tensor (batch,).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Status", "Solution", "SolveError", "RUNNING", "describe", "iterate", "mark", "check_options"]

RUNNING = -1  # sentinel inside the loop only; never returned


class Status(IntEnum):
    """Per-sample outcome of a solve (stored as int64 on the device)."""

    SUCCESS = 0
    MAX_STEPS = 1
    NONFINITE = 2
    BREAKDOWN = 3
    LINESEARCH = 4
    BACKWARD = 5


_ADVICE = {
    Status.SUCCESS: "converged",
    Status.MAX_STEPS: "hit max_steps before the tolerance was met; raise max_steps, loosen rtol/atol, "
                      "add a preconditioner or a better initial guess",
    Status.NONFINITE: "the iterate became NaN/Inf; check the operator/function for NaNs, scale the problem "
                      "or use float64",
    Status.BREAKDOWN: "the method broke down (e.g. a non-positive curvature p^T A p <= 0 in CG, a zero "
                      "inner product in BiCGSTAB, a singular or non-SPD dense factorisation); check that the "
                      "operator has the structure this method needs or add a ridge",
    Status.LINESEARCH: "the line search found no decrease; the Jacobian may be wrong or the problem "
                       "ill-conditioned; try Levenberg-Marquardt or a better initial guess",
    Status.BACKWARD: "the adjoint linear solve (dF/dx)^T u = -v of an implicit backward pass failed.  Where dF/dx "
                     "is singular at x* the root is not isolated (e.g. the double root of F = (x - p)^2) and the "
                     "implicit function theorem does not apply: reformulate F so that dF/dx is invertible at the "
                     "solution (F = x - p there), or make the problem itself well-posed (for least squares, a "
                     "regulariser sqrt(lam) x appended to the residual).  Where dF/dx is invertible, use a more "
                     "robust backward_solve ('lu' for small n, 'gmres' with a larger max_steps)",
}


class Solution(NamedTuple):
    """value: solution (batch, ...); status: int64 (batch,), see `Status`; stats: dict of tensors."""

    value: Tensor
    status: Tensor
    stats: dict[str, Any]


class SolveError(RuntimeError):
    """A solve failed for at least one sample; `.solution` holds the full result."""

    def __init__(self, message: str, solution: Solution | None = None):
        super().__init__(message)
        self.solution = solution


def describe(status: Tensor, name: str = "solve", max_listed: int = 5) -> str:
    """Human-readable summary of a per-sample status tensor (one host sync)."""
    status = status.detach().reshape(-1).cpu()
    bad = torch.nonzero(status != Status.SUCCESS).reshape(-1).tolist()
    if not bad:
        return f"{name}: all {status.numel()} samples converged"
    lines = [f"{name}: {len(bad)} of {status.numel()} samples did not converge:"]
    for code in sorted({int(status[i]) for i in bad}):
        idx = [i for i in bad if int(status[i]) == code]
        shown = ", ".join(map(str, idx[:max_listed])) + (", ..." if len(idx) > max_listed else "")
        lines.append(f"  {Status(code).name} for samples [{shown}]: {_ADVICE[Status(code)]}")
    return "\n".join(lines)


def mark(status: Tensor, where: Tensor, code: Status) -> Tensor:
    """Set `code` on samples that are still RUNNING and where `where` holds (first reason wins)."""
    return torch.where(where & (status == RUNNING), torch.full_like(status, int(code)), status)


def check_options(name: str, *, rtol: float | None = None, atol: float | None = None,
                  max_steps: int | None = None, check_every: int | None = None) -> None:
    """Shared validation of the common solver options; messages name argument, value and fix."""
    for arg, val in (("rtol", rtol), ("atol", atol)):
        if val is not None and not (float(val) >= 0.0):
            raise ValueError(f"{name}: {arg}={val!r} must be a float >= 0")
    if rtol is not None and atol is not None and float(rtol) == 0.0 and float(atol) == 0.0:
        raise ValueError(f"{name}: rtol=0 and atol=0 can never be met; set rtol (e.g. 1e-6) or atol > 0")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"{name}: max_steps={max_steps!r} must be a positive int (or None for the default)")
    if check_every is not None and (not isinstance(check_every, int) or check_every < 1):
        raise ValueError(f"{name}: check_every={check_every!r} must be a positive int")


def _nonfinite(x: Tensor) -> Tensor:
    return ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)


def iterate(method: Any, state: dict, *, max_steps: int, check_every: int = 10,
            throw: bool = True, name: str = "solve") -> Solution:
    """Run `method.step` until every sample has finished or `max_steps` is reached.

    state: dict with "x" (batch, ...) and "status" (batch,) int64 (RUNNING = -1 while active).
    Returns `Solution(value, status, stats)`; stats gets "num_steps" (batch,) int64 counting the
    steps each sample was active.  With throw=True a failed sample raises `SolveError`.
    """
    status = state["status"]
    steps = torch.zeros_like(status)
    state["status"] = mark(status, _nonfinite(state["x"]), Status.NONFINITE)
    # One poll before the loop: a zero right-hand side or a perfect initial guess costs nothing.
    if bool((state["status"] == RUNNING).any()):
        for k in range(max_steps):
            active = state["status"] == RUNNING
            state = method.step(state)
            steps = steps + active.to(steps.dtype)
            state["status"] = mark(state["status"], _nonfinite(state["x"]), Status.NONFINITE)
            if (k + 1) % check_every == 0 and not bool((state["status"] == RUNNING).any()):
                break
    status = state["status"]
    status = torch.where(status == RUNNING, torch.full_like(status, int(Status.MAX_STEPS)), status)
    state["status"] = status
    value, stats = method.postprocess(state)
    stats = {"num_steps": steps, **stats}
    sol = Solution(value, status, stats)
    if throw and bool((status != Status.SUCCESS).any()):
        raise SolveError(describe(status, name), sol)
    return sol
