"""Steady Darcy flow on the unit square (FNO's elliptic benchmark).

    -div(a(x) grad u(x)) = f(x),  x in (0,1)^2,   u = 0 on the boundary.

Discretisation (as FNO's ``solve_gwf.m``): second-order 5-point finite differences on an
s x s node grid ``x_i = i/(s-1)``, i = 0..s-1 (boundary included; s = 421 in the paper), with
the coefficient given at the nodes and arithmetic means on the edges:

    (A u)_ij = [a_{i+1/2,j}(u_ij - u_{i+1,j}) + a_{i-1/2,j}(u_ij - u_{i-1,j})
                + a_{i,j+1/2}(u_ij - u_{i,j+1}) + a_{i,j-1/2}(u_ij - u_{i,j-1})] / h^2,
    a_{i+1/2,j} = (a_ij + a_{i+1,j})/2,  h = 1/(s-1).

A is symmetric positive definite. It is solved by batched preconditioned CG
(``solvers.linear.cg``) on the device, preconditioned by the constant-coefficient Dirichlet
Laplacian, which the DST-I diagonalises (computed with ``torch.fft.rfft`` of the odd
extension). With a between a_min and a_max the preconditioned condition number is at most
a_max/a_min, so the iteration count does not grow with s (about 25 for FNO's 12/3 field to
1e-10 relative residual). Second order for smooth a; at coefficient jumps about first order.

Coefficients: ``darcy_coefficient`` draws FNO's piecewise-constant field, 12 where a Neumann
GRF N(0, 9(-Lap + 9)^-2) is >= 0 and 3 elsewhere. FNO's GRF lives on cell centres and
``solve_gwf.m`` spline-interpolates it to the nodes; here the s x s values are used directly
as nodal values (no spline overshoot at the jumps).

References: Li et al., ICLR 2021 (``data_generation/darcy``); Concus & Golub (1973) and
Swarztrauber (1977) for fast-Poisson preconditioning.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from solvers.linear import cg
from solvers.pde.grf import GaussianRandomField
from solvers.solution import Solution

__all__ = ["DarcySolver", "solve_darcy", "solve_darcy_scipy", "darcy_coefficient", "dst1"]


def dst1(x: Tensor, dim: int = -1) -> Tensor:
    """Unnormalised DST-I along ``dim``: X_k = sum_{j=1..n} x_j sin(pi j k/(n+1)), k = 1..n.

    Via the odd extension [0, x, 0, -reversed x] of length 2(n+1), whose FFT is -2i X.
    Self-inverse up to the factor 2/(n+1).
    """
    x = torch.movedim(x, dim, -1)
    n = x.shape[-1]
    zero = x.new_zeros((*x.shape[:-1], 1))
    ext = torch.cat((zero, x, zero, -x.flip(-1)), dim=-1)
    out = -torch.fft.rfft(ext).imag[..., 1:n + 1] / 2
    return torch.movedim(out, -1, dim)


def darcy_coefficient(n: int, s: int, *, generator: torch.Generator | None = None, alpha: float = 2,
                      tau: float = 3, high: float = 12.0, low: float = 3.0, device=None,
                      dtype=torch.float64) -> Tensor:
    """FNO's piecewise-constant coefficient: ``high`` where a Neumann GRF >= 0, else ``low``.

    The GRF is N(0, tau^(2 alpha - 2) (-Lap + tau^2)^(-alpha)) with zero-flux cosine modes
    (FNO's ``GRF.m``), sampled at s x s points. Returns (n, s, s) on ``device`` (default: the
    generator's device, else CPU).
    """
    if not (isinstance(high, (int, float)) and isinstance(low, (int, float)) and high > 0 and low > 0):
        raise ValueError(f"high={high!r}, low={low!r}: both must be positive (a must be > 0 for an SPD problem)")
    if device is None and generator is not None:
        device = generator.device
    grf = GaussianRandomField((s, s), alpha=alpha, tau=tau, boundary="neumann", device=device, dtype=dtype)
    g = grf.sample(n, generator=generator)
    return torch.where(g >= 0, torch.as_tensor(high, dtype=dtype, device=g.device),
                       torch.as_tensor(low, dtype=dtype, device=g.device))


def _check_inputs(a: Tensor, f) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor) or a.ndim != 3 or a.shape[-1] != a.shape[-2] or a.shape[-1] < 3:
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(f"a has shape {shape}: expected a tensor (batch, s, s) with s >= 3 (nodes incl. boundary)")
    if a.is_complex() or not a.is_floating_point():
        raise ValueError(f"a has dtype {a.dtype}: expected a real floating tensor (float64 recommended)")
    if not bool((a > 0).all()):
        raise ValueError("a must be > 0 everywhere (the operator is then SPD); got a minimum of "
                         f"{float(a.min()):.3g}")
    s = a.shape[-1]
    if isinstance(f, (int, float)):
        f = torch.full_like(a, float(f))
    elif isinstance(f, Tensor):
        if f.shape[-2:] != (s, s) or f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[0] not in (1, a.shape[0])):
            raise ValueError(f"f has shape {tuple(f.shape)}: expected a float, (s, s) or (batch, s, s) with "
                             f"s = {s} (nodal values; boundary values are ignored)")
        f = f.to(device=a.device, dtype=a.dtype).expand_as(a)
    else:
        raise ValueError(f"f={f!r}: expected a float or a tensor of nodal values")
    return a, f


class DarcySolver:
    """Batched DST-preconditioned CG for -div(a grad u) = f, u = 0 on the boundary of (0,1)^2.

    Args:
        rtol: relative residual tolerance ||b - A u|| <= rtol ||b|| per sample (default 1e-10).
        max_steps: CG iteration cap (default 10 s + 100).
        check_every: host polls of "all converged?" (``solvers.linear.cg``).
        throw: raise ``SolveError`` if any sample fails.

    ``solve(a, f)`` with a (batch, s, s) nodal, f float or nodal tensor: returns a ``Solution``
    whose value is (batch, s, s) including the zero boundary; status per sample (0 = success);
    stats from CG (``num_steps``, ``residual_norm``).
    """

    def __init__(self, *, rtol: float = 1e-10, max_steps: int | None = None, check_every: int = 10,
                 throw: bool = True):
        if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
            raise ValueError(f"rtol={rtol!r}: expected 0 < rtol < 1, e.g. 1e-10 (float64) or 1e-5 (float32)")
        self.rtol, self.max_steps, self.check_every, self.throw = float(rtol), max_steps, check_every, throw

    @staticmethod
    def operator(a: Tensor):
        """The matrix-free A on interior values (batch, s-2, s-2)."""
        s = a.shape[-1]
        inv_h2 = float((s - 1) ** 2)
        ax = 0.5 * (a[:, 1:, 1:-1] + a[:, :-1, 1:-1]) * inv_h2  # x-faces (i+1/2, j), interior j
        ay = 0.5 * (a[:, 1:-1, 1:] + a[:, 1:-1, :-1]) * inv_h2  # y-faces (i, j+1/2), interior i

        def matvec(u: Tensor) -> Tensor:
            U = torch.nn.functional.pad(u, (1, 1, 1, 1))         # zero Dirichlet ring
            fx = ax * (U[:, 1:, 1:-1] - U[:, :-1, 1:-1])          # a du/dx on x-faces (times 1/h)
            fy = ay * (U[:, 1:-1, 1:] - U[:, 1:-1, :-1])
            return -(fx[:, 1:] - fx[:, :-1]) - (fy[:, :, 1:] - fy[:, :, :-1])
        return matvec

    @staticmethod
    def preconditioner(a: Tensor):
        """(c_b L_h)^-1 with L_h the 5-point Dirichlet Laplacian and c_b the sample's mean of a."""
        s = a.shape[-1]
        n = s - 2
        k = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
        lam1 = 4 * (s - 1) ** 2 * torch.sin(math.pi * k / (2 * (n + 1))) ** 2
        scale = (2.0 / (n + 1)) ** 2  # DST-I inverse factor, both axes
        c = a.mean(dim=(-1, -2))[:, None, None]
        inv = scale / (c * (lam1[:, None] + lam1[None, :]))

        def apply(r: Tensor) -> Tensor:
            return dst1(dst1(dst1(dst1(r, -1), -2) * inv, -1), -2)
        return apply

    def solve(self, a: Tensor, f: float | Tensor = 1.0) -> Solution:
        a, f = _check_inputs(a, f)
        s = a.shape[-1]
        b = f[:, 1:-1, 1:-1]
        max_steps = self.max_steps if self.max_steps is not None else 10 * s + 100
        sol = cg(self.operator(a), b, preconditioner=self.preconditioner(a), rtol=self.rtol,
                 max_steps=max_steps, check_every=self.check_every, throw=self.throw)
        return Solution(torch.nn.functional.pad(sol.value, (1, 1, 1, 1)), sol.status, sol.stats)


def solve_darcy(a: Tensor, f: float | Tensor = 1.0, *, rtol: float = 1e-10, max_steps: int | None = None) -> Tensor:
    """Solve -div(a grad u) = f on (0,1)^2, u = 0 on the boundary (5-point FD, DST-PCG).

    Args:
        a: (batch, s, s) positive nodal coefficient on ``x_i = i/(s-1)`` (boundary included).
        f: float or nodal tensor (s, s) / (batch, s, s); boundary values unused. FNO: f = 1.
        rtol: per-sample relative residual tolerance; max_steps: CG cap.
    Returns u (batch, s, s) with the zero boundary, in a's dtype/device. Raises
    ``solvers.solution.SolveError`` if a sample does not converge. See ``DarcySolver``.
    """
    return DarcySolver(rtol=rtol, max_steps=max_steps).solve(a, f).value


def solve_darcy_scipy(a, f: float | Tensor = 1.0) -> Tensor:
    """Reference: the same 5-point matrix assembled in scipy.sparse and solved by ``spsolve``.

    One sample at a time on the CPU, float64; for tests. Returns (batch, s, s) float64 (CPU).
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    a, f = _check_inputs(a.detach().cpu().double(), f if not isinstance(f, Tensor) else f.detach().cpu().double())
    batch, s = a.shape[0], a.shape[-1]
    n = s - 2
    out = np.zeros((batch, s, s))
    idx = np.arange(n * n).reshape(n, n)
    for b in range(batch):
        A_ = a[b].numpy()
        ax = 0.5 * (A_[1:, 1:-1] + A_[:-1, 1:-1]) * (s - 1) ** 2  # (s-1, n)
        ay = 0.5 * (A_[1:-1, 1:] + A_[1:-1, :-1]) * (s - 1) ** 2  # (n, s-1)
        diag = ax[1:] + ax[:-1] + ay[:, 1:] + ay[:, :-1]
        rows, cols, vals = [idx.ravel()], [idx.ravel()], [diag.ravel()]
        # x-neighbours (i, j)-(i+1, j) through face ax[i+1]
        rows += [idx[:-1].ravel(), idx[1:].ravel()]
        cols += [idx[1:].ravel(), idx[:-1].ravel()]
        vals += [-ax[1:-1].ravel(), -ax[1:-1].ravel()]
        rows += [idx[:, :-1].ravel(), idx[:, 1:].ravel()]
        cols += [idx[:, 1:].ravel(), idx[:, :-1].ravel()]
        vals += [-ay[:, 1:-1].ravel(), -ay[:, 1:-1].ravel()]
        A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))
        out[b, 1:-1, 1:-1] = spsolve(A.tocsc(), f[b, 1:-1, 1:-1].numpy().ravel()).reshape(n, n)
    return torch.from_numpy(out)
