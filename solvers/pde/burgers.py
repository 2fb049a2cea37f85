"""Viscous Burgers equation on the periodic unit interval, and exact Cole–Hopf references.

    u_t + u u_x = nu u_xx,   x in [0, 1) periodic,   u(x, 0) = u0(x).

Solver: Fourier pseudo-spectral in x (``rfft``), nonlinear term in conservative form
-(u^2/2)_x with the 2/3 dealiasing rule applied to its transform, and ETDRK4 in time (the
viscous term is integrated exactly; Kassam–Trefethen contour coefficients in complex128).
Grid: ``x_j = j/n``, j = 0..n-1 (``linspace(0, 1, n+1)[:-1]``), the FNO convention.

References: Cox & Matthews, J. Comput. Phys. 176 (2002); Kassam & Trefethen, SIAM J. Sci.
Comput. 26 (2005); Hopf, CPAM 3 (1950) and Cole, Q. Appl. Math. 9 (1951) for the exact
solutions; Basdevant et al., Computers & Fluids 14 (1986) for the Raissi-style benchmark.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from solvers.pde.periodic1d import DEFAULT_CFL, PeriodicAdvection1D

__all__ = ["BurgersSolver", "solve_burgers", "burgers_step_size", "cole_hopf_sine", "burgers_raissi_reference"]

VISCOUS_STEP = 0.02


def burgers_step_size(u_max: float, n: int, nu: float, *, cfl: float = DEFAULT_CFL) -> float:
    """Automatic ETDRK4 step: ``dt = max(cfl * dx / u_max, VISCOUS_STEP * nu / u_max^2)``, dx = 1/n.

    Why: the viscous part is integrated exactly, so only advection limits the step.
    * Advective CFL: the fastest explicit rate is 2 pi (n/3) u_max (2/3 rule) and ETDRK4 is
      stable up to about 2.8/dt on the imaginary axis, i.e. ``cfl`` <= ~1.3; 0.5 keeps a margin.
    * When viscosity is strong, modes fast enough to break that CFL are damped much faster
      than they are advected: with dt = c nu/u_max^2, the mode whose damping per step is 1
      (2 pi k = (nu dt)^-1/2) has advective number u_max (dt/nu)^1/2 = c^1/2 = 0.14 and all
      higher modes are damped harder, so the larger of the two steps is stable. It resolves the
      nonlinear time scale nu/u_max^2 (a viscous front's width over its speed) with 50 steps.
    By the maximum principle max|u(t)| <= max|u0|, so a step chosen from u0 stays valid.
    Measured (tests/solvers/pde/test_burgers.py): FNO's Burgers data (GRF sigma=25, tau=5,
    alpha=2, nu=0.1, n=1024) is within ~3e-9 relative L2 of a 4x smaller step at t=1.
    Returns ``inf`` for u_max = 0 (the linear problem is solved exactly in one step).
    """
    if u_max <= 0:
        return math.inf
    return max(cfl / (n * u_max), VISCOUS_STEP * nu / u_max ** 2)


class BurgersSolver(PeriodicAdvection1D):
    """u_t + u u_x = nu u_xx on [0,1) periodic: pseudo-spectral, 2/3 dealiasing, ETDRK4
    (`PeriodicAdvection1D` with ``linear={2: nu}``).

    Args:
        nu: viscosity (> 0; nu = 0 is allowed but unresolved shocks then ruin a spectral run).
        dt: fixed time step upper bound; ``None`` chooses ``burgers_step_size`` from max|u0|
            (one host sync per solve, none inside the time loop).
        cfl: Courant number for the automatic step.

    ``solve(u0, times)``: u0 (batch, n) real, nodes ``j/n``; returns (batch, len(times), n) in
    u0's dtype and device. Each output interval is split into equal steps <= dt, so steps
    land exactly on the output times. Work in float64 for references; float32 runs too
    (coefficients are still computed in float64).
    """

    def __init__(self, *, nu: float, dt: float | None = None, cfl: float = DEFAULT_CFL):
        if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu >= 0):
            raise ValueError(f"nu={nu!r}: expected a finite viscosity >= 0, e.g. 0.1")
        super().__init__({2: float(nu)}, dt=dt, cfl=cfl, name=f"Burgers (nu={nu})")
        self.nu = float(nu)

    def step_for(self, u_max: float, n: int) -> float:
        """`burgers_step_size`: the advective step, or the longer one that strong viscosity allows."""
        return burgers_step_size(u_max, n, self.nu, cfl=self.cfl)


def solve_burgers(u0: Tensor, *, nu: float, times: Sequence[float] | Tensor, dt: float | None = None) -> Tensor:
    """Solve u_t + u u_x = nu u_xx on [0,1) periodic (pseudo-spectral, 2/3 rule, ETDRK4).

    Args:
        u0: (batch, n) initial values at ``x_j = j/n`` (``linspace(0, 1, n+1)[:-1]``).
        nu: viscosity.
        times: sorted output times >= 0 (t = 0 returns u0 unchanged).
        dt: step upper bound; default from ``burgers_step_size`` (CFL 0.5 on max|u0|).

    Returns (batch, len(times), n), same dtype and device as u0. See ``BurgersSolver``.
    """
    return BurgersSolver(nu=nu, dt=dt).solve(u0, times)


# ----------------------------------------------------------------------------------------------
# Exact solutions through the Hopf formula, by positive-weight quadrature (float64, NumPy).
#   u(x, t) = int (x - y)/t e^{E(y)} dy / int e^{E(y)} dy,
#   E(y) = -U0(y)/(2 nu) - (x - y)^2/(4 nu t),  U0' = u0.
# Every weight e^{E} is positive, so unlike a Fourier sum for phi there is no cancellation
# even where phi is tiny (small nu); the exponent is shifted by its maximum (log-sum-exp).

def _as_points(x, t):
    device = x.device if isinstance(x, Tensor) else (t.device if isinstance(t, Tensor) else None)
    xs = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    ts = t.detach().cpu().double().numpy() if isinstance(t, Tensor) else np.asarray(t, dtype=np.float64)
    xs, ts = np.broadcast_arrays(xs, ts)
    if not (np.isfinite(xs).all() and np.isfinite(ts).all()) or (ts < 0).any():
        raise ValueError("x and t must be finite and t >= 0")
    return xs, ts, device


def _hopf(x: np.ndarray, t: np.ndarray, nu: float, u0: Callable, U0: Callable, dU: float, curv: float,
          chunk: int = 256) -> np.ndarray:
    """Hopf-formula solution at points (x, t); dU bounds max U0 - min U0, curv bounds |u0'|."""
    out = np.empty(x.shape)
    xf, tf, of = x.ravel(), t.ravel(), out.reshape(-1)
    zero = tf == 0
    of[zero] = u0(xf[zero])
    idx = np.flatnonzero(~zero)
    # The integrand is a Gaussian in y of width sqrt(2 nu t) times e^{-U0/2nu}, whose own width
    # at a maximum of -U0 is >= sqrt(2 nu / curv). Trapezoid nodes at a quarter of the smaller
    # width make the (spectrally convergent) rule exact to roundoff; the range covers the
    # Gaussian tail down to e^{-40} below the worst-case contrast e^{dU/2nu}.
    w_u = math.sqrt(2 * nu / curv) if curv > 0 else math.inf
    for start in range(0, idx.size, chunk):
        j = idx[start:start + chunk]
        for tt in np.unique(tf[j]):
            jj = j[tf[j] == tt]
            w = min(math.sqrt(2 * nu * tt), w_u)
            half = math.sqrt(4 * nu * tt) * math.sqrt(40 + dU / (2 * nu))
            m = int(math.ceil(2 * half / (w / 4))) + 1
            eta = np.linspace(-half, half, m)
            y = xf[jj, None] - eta[None, :]
            E = -U0(y) / (2 * nu) - eta[None, :] ** 2 / (4 * nu * tt)
            wts = np.exp(E - E.max(axis=1, keepdims=True))
            of[jj] = (wts * eta[None, :]).sum(1) / (tt * wts.sum(1))
    return out


def _to_tensor(u: np.ndarray, device) -> Tensor:
    return torch.as_tensor(u, dtype=torch.float64, device=device)


def cole_hopf_sine(A: float, nu: float, t, x) -> Tensor:
    """Exact solution of u_t + u u_x = nu u_xx on [0,1) periodic with u(x,0) = A sin(2 pi x).

    Args:
        A: amplitude; nu: viscosity (> 0); t: time(s) >= 0; x: points (any real values,
            the solution is 1-periodic). x and t broadcast together.
    Returns a float64 tensor of the broadcast shape (on x's device if x is a tensor).
    Accuracy ~1e-13 relative (Hopf formula with positive-weight quadrature), any nu > 0
    for which nu/A is not so small that the front is thinner than ~1e-6.
    """
    if not (math.isfinite(A) and math.isfinite(nu) and nu > 0):
        raise ValueError(f"A={A!r}, nu={nu!r}: need finite A and nu > 0")
    xs, ts, device = _as_points(x, t)
    u0 = lambda y: A * np.sin(2 * math.pi * y)
    U0 = lambda y: A * (1 - np.cos(2 * math.pi * y)) / (2 * math.pi)
    u = _hopf(xs, ts, nu, u0, U0, dU=abs(A) / math.pi, curv=2 * math.pi * abs(A))
    return _to_tensor(u, device)


RAISSI_NU = 0.01 / math.pi


def burgers_raissi_reference(x, t) -> Tensor:
    """Exact solution of the PINN benchmark (Raissi et al. 2019; Basdevant et al. 1986):

        u_t + u u_x = (0.01/pi) u_xx,  x in [-1, 1],  u(-1, t) = u(1, t) = 0,  u(x, 0) = -sin(pi x).

    The odd 2-periodic extension solves the same equation on the real line, so the Hopf
    formula applies. x, t broadcast; returns float64 (on x's device if x is a tensor).
    Known value: max_t |u_x(0, t)| = 152.00516 at t = 1.6037/pi (Basdevant et al.).
    """
    xs, ts, device = _as_points(x, t)
    u0 = lambda y: -np.sin(math.pi * y)
    U0 = lambda y: (np.cos(math.pi * y) - 1) / math.pi
    u = _hopf(xs, ts, RAISSI_NU, u0, U0, dU=2 / math.pi, curv=math.pi)
    return _to_tensor(u, device)
