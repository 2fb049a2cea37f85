"""2D incompressible Navier–Stokes in vorticity form on the unit torus (FNO's data generator).

    w_t + u . grad w = nu Lap w + f,   u = (d_y psi, -d_x psi),   -Lap psi = w,   (x, y) in [0,1)^2,

periodic. Grid: nodes ``linspace(0, 1, s+1)[:-1]`` per axis, arrays indexed ``w[..., i, j] =
w(x_i, y_j)`` (``indexing="ij"``), as in FNO's ``ns_2d.py``. Default forcing (FNO):
f = 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)).

Spatial discretisation: Fourier pseudo-spectral (``rfft2``), advection u w_x + v w_y evaluated on
the grid and its transform masked by the square 2/3 rule (|k_x|, |k_y| <= s/3), as FNO does.
The mean of w is not forced and stays 0 (exactly, up to roundoff, for the spectral sums).

Time integrators:
* ``"etdrk4"`` (default): exponential time differencing RK4 (Cox & Matthews 2002) with
  Kassam–Trefethen coefficients; viscosity integrated exactly, advection + forcing explicit,
  4th order. Step: fixed upper bound ``dt``, or (``dt=None``) CFL-adaptive: `speed_checks` times per
  output interval (default 4) the velocity is computed on the device, ``dt = cfl * dx /
  max(|u|+|v|)``, and that piece of the interval is split into equal steps that end on it: one
  host sync per piece, none per step. ETDRK4's linear advective limit with the 2/3 rule is cfl ~ 1.35
  (RK4's 2.83 on the imaginary axis over the largest kept wavenumber). Measured on FNO's sets
  (float32, batches of 2-16 trajectories): within a quarter interval the speed grows at most 4.5%
  (nu = 1e-3, 128^2, T = 50) and 5.6% (nu = 1e-5, 128^2, T = 20), within a whole interval 17% and
  23%; runs blew up at cfl 1.6 (nu = 1e-5, 256^2) and 2.6 (nu = 1e-3, 64^2), not at 1.4 and 2.2. So
  the default ``cfl = 1.0`` keeps a margin of 40% or more. Its time error (float64, nu = 1e-3, 128^2:
  6e-7 at t = 1, 5e-9 at T = 50; nu = 1e-5, 256^2: 2e-5 at t = 1, 2e-6 at T = 20) is at or under
  float32's roundoff (2-3e-5 at the final time), at half the steps of cfl = 0.5.
* ``"cn_euler"``: FNO's scheme, Crank–Nicolson on viscosity and forward Euler on advection and
  forcing (first order), fixed ``dt`` (default 1e-4, FNO's), for comparisons.

References: Li et al., ICLR 2021 (FNO, ``data_generation/navier_stokes/ns_2d.py``);
Kassam & Trefethen, SIAM J. Sci. Comput. 26 (2005); Canuto et al., "Spectral Methods" (2006).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from solvers.pde._spectral import (complex_dtype, dealias_mask, etdrk4_coefficients, etdrk4_step, fft_wavenumbers,
                                   output_times, rfft_wavenumbers, substeps)

__all__ = ["NavierStokes2D", "solve_navier_stokes", "fno_forcing", "INTEGRATORS"]

INTEGRATORS = ("etdrk4", "cn_euler")
DOWNSAMPLING = ("stride", "spectral")
DEFAULT_CFL = 1.0
DEFAULT_SPEED_CHECKS = 4  # adaptive step: speed measured 4 times per output interval
FNO_DT = 1e-4


def fno_forcing(s: int, *, device=None, dtype=torch.float64) -> Tensor:
    """FNO's forcing 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y)) on the s x s node grid, shape (s, s)."""
    x = torch.linspace(0, 1, s + 1, device=device, dtype=torch.float64)[:-1]
    X, Y = torch.meshgrid(x, x, indexing="ij")
    return (0.1 * (torch.sin(2 * math.pi * (X + Y)) + torch.cos(2 * math.pi * (X + Y)))).to(dtype)


class NavierStokes2D:
    """Vorticity-form Navier–Stokes on the unit torus; see the module docstring for the scheme.

    Args:
        nu: kinematic viscosity (> 0).
        forcing: ``"fno"`` (default), ``None`` (unforced) or a real tensor (s, s) or (batch, s, s)
            sampled on the grid, time independent.
        integrator: ``"etdrk4"`` or ``"cn_euler"``.
        dt: step upper bound. ``None``: CFL-adaptive for etdrk4, 1e-4 for cn_euler.
        cfl: Courant number for the adaptive step, on max(|u| + |v|) dt / dx.
        speed_checks: how often per output interval the adaptive step measures the speed.
        out_resolution: side of returned snapshots; default s. Must divide s.
        downsample: ``"stride"`` (FNO: ``w[::s//out, ::s//out]``) or ``"spectral"`` (Fourier
            truncation to the out x out grid's modes, same node positions as stride).
    """

    def __init__(self, *, nu: float, forcing: Tensor | None | str = "fno", integrator: str = "etdrk4",
                 dt: float | None = None, cfl: float = DEFAULT_CFL, out_resolution: int | None = None,
                 downsample: str = "stride", speed_checks: int = DEFAULT_SPEED_CHECKS):
        if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 0):
            raise ValueError(f"nu={nu!r}: expected a finite viscosity > 0, e.g. 1e-3")
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator={integrator!r}: expected one of {INTEGRATORS}")
        if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt={dt!r}: expected a positive step, or None for the default")
        if not (isinstance(cfl, (int, float)) and 0 < cfl <= 1.3):
            raise ValueError(f"cfl={cfl!r}: expected 0 < cfl <= 1.3 (ETDRK4 advective stability limit)")
        if isinstance(forcing, str) and forcing != "fno":
            raise ValueError(f"forcing={forcing!r}: expected 'fno', None or a tensor (s, s) / (batch, s, s)")
        if isinstance(forcing, Tensor) and (forcing.ndim not in (2, 3) or not forcing.is_floating_point()
                                            or forcing.is_complex()):
            raise ValueError(f"forcing has shape {tuple(forcing.shape)} and dtype {forcing.dtype}: "
                             f"expected a real tensor (s, s) or (batch, s, s)")
        if not (forcing is None or isinstance(forcing, (str, Tensor))):
            raise ValueError(f"forcing={forcing!r}: expected 'fno', None or a tensor")
        if out_resolution is not None and (isinstance(out_resolution, bool) or not isinstance(out_resolution, int)
                                           or out_resolution < 1):
            raise ValueError(f"out_resolution={out_resolution!r}: expected a positive int dividing s, or None")
        if isinstance(speed_checks, bool) or not isinstance(speed_checks, int) or speed_checks < 1:
            raise ValueError(f"speed_checks={speed_checks!r}: expected a positive int (speed measurements per "
                             f"output interval for the adaptive step), e.g. {DEFAULT_SPEED_CHECKS}")
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample={downsample!r}: expected one of {DOWNSAMPLING}")
        self.nu, self.forcing, self.integrator = float(nu), forcing, integrator
        self.dt = dt if dt is not None else (FNO_DT if integrator == "cn_euler" else None)
        self.cfl, self.out_resolution, self.downsample = float(cfl), out_resolution, downsample
        self.speed_checks = speed_checks
        self.last_steps = 0  # number of time steps taken by the last solve (diagnostics)

    # -- spectral operators ------------------------------------------------------------------
    def _setup(self, w0: Tensor):
        s, device, dtype = w0.shape[-1], w0.device, w0.dtype
        cdtype = complex_dtype(dtype)
        kx = fft_wavenumbers(s, device=device)[:, None]       # axis -2 (x)
        ky = rfft_wavenumbers(s, device=device)[None, :]      # axis -1 (y), half spectrum
        lap = 4 * math.pi ** 2 * (kx ** 2 + ky ** 2)          # symbol of -Lap, float64
        inv_lap = torch.where(lap > 0, 1 / torch.where(lap > 0, lap, 1.0), 0.0)
        mask = dealias_mask(kx, s) & dealias_mask(ky, s)  # square 2/3 rule
        ikx, iky, inv_lap = (2j * math.pi * kx).to(cdtype), (2j * math.pi * ky).to(cdtype), inv_lap.to(cdtype)
        ops = {
            # spectral factors of u = psi_y, v = -psi_x, w_x, w_y (psi = w inv_lap folded in), (4, 1, s, s//2+1):
            # one broadcast product with w_hat gives all four, the first two the velocity
            "derivs": torch.stack(torch.broadcast_tensors(iky * inv_lap, -ikx * inv_lap, ikx, iky)).unsqueeze(1),
            "mask": mask.to(cdtype), "lap": lap, "s": s,
        }
        f = self.forcing
        if isinstance(f, str):
            f = fno_forcing(s, device=device, dtype=dtype)
        if f is not None:
            if f.shape[-2:] != (s, s) or (f.ndim == 3 and f.shape[0] not in (1, w0.shape[0])):
                raise ValueError(f"forcing has shape {tuple(f.shape)}; w0 has shape {tuple(w0.shape)}: "
                                 f"expected (s, s) or (batch, s, s) with s = {s}")
            f = torch.fft.rfft2(f.to(device=device, dtype=dtype))
        ops["f_hat"] = f
        return ops

    def _nonlinear(self, ops):
        derivs, f_hat, s, neg_mask = ops["derivs"], ops["f_hat"], ops["s"], -ops["mask"]

        def N(w_hat: Tensor) -> Tensor:
            u, v, wx, wy = torch.fft.irfft2(derivs * w_hat, s=(s, s))
            adv_hat = torch.fft.rfft2(torch.addcmul(u * wx, v, wy))
            return adv_hat.mul_(neg_mask) if f_hat is None else torch.addcmul(f_hat, neg_mask, adv_hat)
        return N

    @staticmethod
    def _speed(w_hat: Tensor, ops) -> Tensor:
        u, v = torch.fft.irfft2(ops["derivs"][:2] * w_hat, s=(ops["s"], ops["s"]))
        return (u.abs() + v.abs()).amax()

    def _snapshot(self, w_hat: Tensor, s: int) -> Tensor:
        out = self.out_resolution or s
        if self.downsample == "spectral" and out != s:
            # keep |k| < out/2 on both axes (the out-grid Nyquist modes are dropped: they alias)
            m = out // 2 if out % 2 == 0 else (out + 1) // 2
            trunc = w_hat.new_zeros((*w_hat.shape[:-2], out, out // 2 + 1))
            trunc[..., :m, :m] = w_hat[..., :m, :m]
            trunc[..., out - m + 1:, :m] = w_hat[..., s - m + 1:, :m]
            return torch.fft.irfft2(trunc, s=(out, out)) * (out / s) ** 2
        w = torch.fft.irfft2(w_hat, s=(s, s))
        return w[..., :: s // out, :: s // out]

    # -- driver ------------------------------------------------------------------------------
    def solve(self, w0: Tensor, times: Sequence[float] | Tensor) -> Tensor:
        """Integrate from t = 0; w0 (batch, s, s) real -> (batch, len(times), s_out, s_out)."""
        if not isinstance(w0, Tensor) or w0.ndim != 3 or w0.shape[-1] != w0.shape[-2] or w0.shape[-1] < 4:
            shape = tuple(w0.shape) if isinstance(w0, Tensor) else type(w0).__name__
            raise ValueError(f"w0 has shape {shape}: expected a tensor (batch, s, s) with s >= 4")
        if w0.is_complex() or not w0.is_floating_point():
            raise ValueError(f"w0 has dtype {w0.dtype}: expected a real floating tensor")
        s = w0.shape[-1]
        out = self.out_resolution or s
        if s % out:
            raise ValueError(f"out_resolution={out} does not divide the grid size s={s}; pick a divisor, "
                             f"e.g. {s // 4}")
        ts = output_times(times)
        ops = self._setup(w0)
        N = self._nonlinear(ops)
        cdtype = complex_dtype(w0.dtype)
        L = -self.nu * ops["lap"]
        w_hat = torch.fft.rfft2(w0)
        result = w0.new_empty((w0.shape[0], len(ts), out, out))
        h_now, c = None, None  # the coefficients of the last step size (steps repeat it while the speed holds)
        dx, t_now, steps_total = 1.0 / s, 0.0, 0
        for i, t in enumerate(ts):
            interval = t - t_now
            # adaptive: the speed is measured `speed_checks` times per output interval (one sync each)
            pieces = 0 if interval <= 0 else 1 if self.dt is not None else self.speed_checks
            for _ in range(pieces):
                span = interval / pieces
                dt = self.dt
                if dt is None:
                    speed = float(self._speed(w_hat, ops))
                    dt = self.cfl * dx / speed if speed > 0 else span
                n, h = substeps(span, dt)
                if n and h != h_now:
                    if self.integrator == "etdrk4":
                        c = etdrk4_coefficients(L, h, dtype=cdtype)
                    else:
                        half = 0.5 * h * self.nu * ops["lap"]
                        c = (((1 - half) / (1 + half)).to(cdtype), (h / (1 + half)).to(cdtype))
                    h_now = h
                if self.integrator == "etdrk4":
                    for _ in range(n):
                        w_hat = etdrk4_step(w_hat, N, c)
                else:
                    a, b = c
                    for _ in range(n):
                        w_hat = a * w_hat + b * N(w_hat)
                steps_total += n
            result[:, i] = w0[..., :: s // out, :: s // out] if (t == 0 and self.downsample == "stride") \
                else self._snapshot(w_hat, s)
            t_now = t
        self.last_steps = steps_total
        if not bool(torch.isfinite(result).all()):  # one sync, after the loop
            raise FloatingPointError(f"vorticity became non-finite ({self.integrator}, nu={self.nu}, s={s}): "
                                     f"lower dt or cfl, or raise the resolution")
        return result


def solve_navier_stokes(w0: Tensor, *, nu: float, times: Sequence[float] | Tensor,
                        forcing: Tensor | None | str = "fno", integrator: str = "etdrk4",
                        dt: float | None = None, cfl: float = DEFAULT_CFL, out_resolution: int | None = None,
                        downsample: str = "stride", speed_checks: int = DEFAULT_SPEED_CHECKS) -> Tensor:
    """Solve w_t + u.grad w = nu Lap w + f on the unit torus (vorticity / stream function).

    Args:
        w0: (batch, s, s) initial vorticity at nodes (i/s, j/s), ``w[..., i, j] = w(x_i, y_j)``.
            Its mean should be 0 (the mean mode is carried along unchanged but does not move
            the fluid).
        nu: viscosity; times: sorted output times >= 0.
        forcing: ``"fno"`` (0.1 (sin 2 pi (x+y) + cos 2 pi (x+y))), ``None`` or a tensor on the grid.
        integrator: ``"etdrk4"`` (default; CFL-adaptive when dt is None) or ``"cn_euler"``
            (FNO's, dt default 1e-4).
        dt, cfl, speed_checks: step upper bound / Courant number / speed measurements per output
            interval of the adaptive step (see the module docstring).
        out_resolution: output side, a divisor of s (FNO: 256 -> 64); ``downsample="stride"``
            (FNO's ``[::4]``, default) or ``"spectral"`` (Fourier truncation).

    Returns (batch, len(times), s_out, s_out), same dtype/device as w0.
    """
    return NavierStokes2D(nu=nu, forcing=forcing, integrator=integrator, dt=dt, cfl=cfl, out_resolution=out_resolution,
                          downsample=downsample, speed_checks=speed_checks).solve(w0, times)
