"""Semilinear PDEs with an advective nonlinearity on a periodic interval:

    u_t + a u u_x = sum_p c_p d^p u/dx^p,   x in [0, length) periodic,   u(x, 0) = u0(x).

Viscous Burgers (a = 1, c_2 = nu), Korteweg-de Vries (c_3 = -1; the soliton form has a = 6) and
Kuramoto-Sivashinsky (c_2 = c_4 = -1) are instances. Fourier pseudo-spectral in x (``rfft``); the
linear part is integrated exactly by ETDRK4 (Kassam-Trefethen contour coefficients, complex128),
the advection in conservative form -(a u^2/2)_x explicitly, its transform cut by the 2/3 rule.
Grid ``x_j = j length / n``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor

from solvers.pde._spectral import (complex_dtype, dealias_mask, etdrk4_coefficients, etdrk4_step, output_times,
                                   rfft_wavenumbers, substeps)

__all__ = ["PeriodicAdvection1D", "advective_step_size"]

DEFAULT_CFL = 0.5


def advective_step_size(speed: float, n: int, length: float = 1.0, *, cfl: float = DEFAULT_CFL) -> float:
    """``cfl * dx / speed`` (dx = length / n): the explicit advection is the only step limit, the
    linear part being exact. ETDRK4 is stable to about 2.8/dt on the imaginary axis and the 2/3 rule
    keeps rates up to 2 pi (n/3) speed / length, so cfl <= ~1.3; 0.5 keeps a margin. ``inf`` for speed 0."""
    return math.inf if speed <= 0 else cfl * length / (n * speed)


class PeriodicAdvection1D:
    """``u_t + a u u_x = sum_p c_p d^p u/dx^p`` on [0, length) periodic (see the module).

    Args:
        linear: ``{p: c_p}``, the linear operator's derivative orders and coefficients
            (``{2: nu}`` Burgers, ``{3: -1.0}`` KdV, ``{2: -1.0, 4: -1.0}`` Kuramoto-Sivashinsky).
        advection: a, the advection coefficient.
        length: the period.
        dt: step upper bound; ``None`` chooses it from the advection speed: a times the larger of
            ``growth * max|u0|`` and ``speed_floor`` (one host sync per solve).
        cfl: Courant number of the automatic step.
        growth: how far max|u| may grow above max|u0| (1 where a maximum principle holds, as for
            Burgers; about 2 for KdV, whose solitons outgrow smooth data).
        speed_floor: a bound on max|u| that holds whatever u0 (Kuramoto-Sivashinsky's chaotic
            amplitude, reached from any small data).
        name: used in error messages.

    ``solve(u0, times)``: u0 (batch, n) real at ``x_j = j length / n``; returns (batch, len(times), n)
    in u0's dtype and device. Each output interval is split into equal steps <= dt, so steps land
    on the output times. Work in float64 for references; float32 runs too.
    """

    def __init__(self, linear: Mapping[int, float], *, advection: float = 1.0, length: float = 1.0,
                 dt: float | None = None, cfl: float = DEFAULT_CFL, growth: float = 1.0, speed_floor: float = 0.0,
                 name: str = "the"):
        if not linear or any(not isinstance(p, int) or p < 1 for p in linear):
            raise ValueError(f"linear={dict(linear)!r}: expected {{derivative order >= 1: coefficient}}, e.g. {{2: 0.1}}")
        if not all(math.isfinite(float(c)) for c in linear.values()):
            raise ValueError(f"linear={dict(linear)!r}: coefficients must be finite")
        if not (math.isfinite(length) and length > 0):
            raise ValueError(f"length={length!r}: expected a positive period")
        if dt is not None and not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt={dt!r}: expected a positive step, or None for the automatic CFL rule")
        if not (isinstance(cfl, (int, float)) and 0 < cfl <= 1.3):
            raise ValueError(f"cfl={cfl!r}: expected 0 < cfl <= 1.3 (ETDRK4 advective stability limit)")
        self.linear = {int(p): float(c) for p, c in linear.items()}
        self.advection, self.length, self.dt, self.cfl = float(advection), float(length), dt, float(cfl)
        self.growth, self.speed_floor, self.name = float(growth), float(speed_floor), name

    def step_size(self, u0: Tensor) -> float:
        """The automatic step for these initial values (see `dt`): one host read of max|u0|."""
        return self.step_for(float(u0.detach().abs().max()) if u0.numel() else 0.0, u0.shape[-1])

    def step_for(self, u_max: float, n: int) -> float:
        """The step rule for data bounded by `u_max` on `n` points (subclasses with a better rule override it)."""
        speed = abs(self.advection) * max(self.growth * u_max, self.speed_floor)
        return advective_step_size(speed, n, self.length, cfl=self.cfl)

    def operators(self, n: int, device, dtype) -> tuple[Tensor, Tensor]:
        """The linear symbol L(k) (real when every order is even) and the advection's factor g(k)."""
        k = rfft_wavenumbers(n, device=device)
        w = 2 * math.pi * k / self.length
        real, imag = torch.zeros_like(w), torch.zeros_like(w)
        for p, c in self.linear.items():  # (i w)^p = i^p w^p
            sign = -1 if (p // 2) % 2 else 1
            if p % 2:
                imag = imag + c * sign * w ** p
            else:
                real = real + c * sign * w ** p
        L = torch.complex(real, imag) if any(p % 2 for p in self.linear) else real
        # -(a u^2/2)_x -> -(i a pi k / length) * fft(u^2), masked by the 2/3 rule
        g = (-1j * (self.advection * math.pi / self.length) * k * dealias_mask(k, n)).to(complex_dtype(dtype))
        return L, g

    def solve(self, u0: Tensor, times: Sequence[float] | Tensor) -> Tensor:
        if not isinstance(u0, Tensor) or u0.ndim != 2 or u0.shape[-1] < 4:
            shape = tuple(u0.shape) if isinstance(u0, Tensor) else type(u0).__name__
            raise ValueError(f"u0 has shape {shape}: expected a tensor (batch, n) with n >= 4")
        if u0.is_complex() or not u0.is_floating_point():
            raise ValueError(f"u0 has dtype {u0.dtype}: expected a real floating tensor (float64 recommended)")
        ts = output_times(times)
        n = u0.shape[-1]
        dt = self.dt if self.dt is not None else self.step_size(u0)
        L, g = self.operators(n, u0.device, u0.dtype)
        cdtype = complex_dtype(u0.dtype)

        def nonlinear(v: Tensor) -> Tensor:
            u = torch.fft.irfft(v, n=n)
            return g * torch.fft.rfft(u * u)

        coefficients: dict[float, object] = {}
        out = u0.new_empty((u0.shape[0], len(ts), n))
        v = torch.fft.rfft(u0)
        t_now, u_now = 0.0, u0
        for i, t in enumerate(ts):
            steps, h = substeps(t - t_now, dt)
            if steps:
                c = coefficients.get(h)
                if c is None:
                    c = coefficients[h] = etdrk4_coefficients(L, h, dtype=cdtype)
                for _ in range(steps):
                    v = etdrk4_step(v, nonlinear, c)
                u_now = torch.fft.irfft(v, n=n)
            out[:, i] = u_now
            t_now = t
        if not bool(torch.isfinite(out).all()):  # one sync, after the loop
            raise FloatingPointError(f"{self.name} solution became non-finite (dt={dt:.3g}, n={n}): lower dt or cfl, "
                                     f"or raise n to resolve the solution's steepest gradients")
        return out
