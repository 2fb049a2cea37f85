"""Shared pieces of the Fourier pseudo-spectral solvers: wavenumbers, 2/3 masks, ETDRK4.

ETDRK4 (Cox & Matthews 2002) for v' = L v + N(v) with a diagonal L, coefficients by the
Kassam & Trefethen (2005) contour integral, which avoids the cancellation in
(e^z - 1 - z - ...)/z^k for small |z|:

    a = E2 v + Q N(v);  b = E2 v + Q N(a);  c = E2 a + Q (2 N(b) - N(v))
    v <- E v + f1 N(v) + 2 f2 (N(a) + N(b)) + f3 N(c)

with E = e^{hL}, E2 = e^{hL/2} and Q, f1, f2, f3 the contour means below (h folded in).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

_CONTOUR_POINTS = 32  # full circle of radius 1: accurate to ~1e-15 for |hL| <= ~1e3 and beyond


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.float64: torch.complex128, torch.float32: torch.complex64,
            torch.float16: torch.complex32}.get(dtype, torch.complex128)


def rfft_wavenumbers(n: int, *, device=None, dtype=torch.float64) -> Tensor:
    """Integer wavenumbers 0..n//2 of ``rfft`` on n points."""
    return torch.arange(n // 2 + 1, device=device, dtype=dtype)


def fft_wavenumbers(n: int, *, device=None, dtype=torch.float64) -> Tensor:
    """Integer wavenumbers of ``fft`` on n points, in fftfreq order (Nyquist counted negative)."""
    return torch.fft.fftfreq(n, d=1.0 / n, device=device, dtype=dtype)


def dealias_mask(k: Tensor, n: int) -> Tensor:
    """2/3 rule: keep |k| <= n/3 (products of kept modes alias only onto dropped ones)."""
    return k.abs() <= n / 3


class ETDRK4Coefficients(NamedTuple):
    E: Tensor
    E2: Tensor
    Q: Tensor
    f1: Tensor
    f2: Tensor
    f3: Tensor


def etdrk4_coefficients(L: Tensor, h: float, *, dtype: torch.dtype = torch.complex128) -> ETDRK4Coefficients:
    """ETDRK4 coefficients for the diagonal operator ``L`` (any shape) and step ``h``.

    Computed in complex128 on L's device, then cast to ``dtype``. For real L the contour
    means are real up to roundoff and the imaginary parts are dropped.
    """
    Lc = L.to(torch.complex128)
    hL = h * Lc
    theta = torch.arange(1, _CONTOUR_POINTS + 1, dtype=torch.float64, device=L.device) - 0.5
    roots = torch.polar(torch.ones_like(theta), 2 * math.pi * theta / _CONTOUR_POINTS)
    r = hL[..., None] + roots  # (..., M)
    er = torch.exp(r)
    Q = h * ((torch.exp(r / 2) - 1) / r).mean(-1)
    f1 = h * ((-4 - r + er * (4 - 3 * r + r ** 2)) / r ** 3).mean(-1)
    f2 = h * ((2 + r + er * (r - 2)) / r ** 3).mean(-1)
    f3 = h * ((-4 - 3 * r - r ** 2 + er * (4 - r)) / r ** 3).mean(-1)
    out = [torch.exp(hL), torch.exp(hL / 2), Q, f1, f2, f3]
    if not L.is_complex():
        out = [c.real.to(torch.complex128) for c in out]
    return ETDRK4Coefficients(*[c.to(dtype) for c in out])


def etdrk4_step(v: Tensor, nonlinear: Callable[[Tensor], Tensor], c: ETDRK4Coefficients) -> Tensor:
    """One ETDRK4 step of v' = L v + N(v) in spectral space.

    Written for memory traffic (the step is bandwidth-bound on a GPU): E2·v is formed once, and
    multiply-adds write into one buffer (`addcmul`) instead of a temporary per operator.
    `nonlinear` must return a fresh tensor (it is updated in place here).
    """
    Nv = nonlinear(v)
    E2v = c.E2 * v
    a = torch.addcmul(E2v, c.Q, Nv)
    Na = nonlinear(a)
    b = torch.addcmul(E2v, c.Q, Na)
    Nb = nonlinear(b)
    cc = torch.addcmul(c.E2 * a, c.Q, torch.add(Nv, Nb, alpha=-2), value=-1)  # E2 a + Q (2 Nb - Nv)
    Nc = nonlinear(cc)
    out = torch.addcmul(c.E * v, c.f1, Nv)
    out.addcmul_(c.f2, Na.add_(Nb), value=2)
    return out.addcmul_(c.f3, Nc)


def output_times(times: Sequence[float] | Tensor, name: str = "times") -> list[float]:
    """Validate output times: a non-empty 1D sorted sequence of finite values >= 0."""
    if isinstance(times, Tensor):
        if times.ndim != 1:
            raise ValueError(f"{name} must be 1D, got shape {tuple(times.shape)}")
        values = [float(t) for t in times.detach().cpu().tolist()]
    else:
        try:
            values = [float(t) for t in times]
        except TypeError as err:
            raise ValueError(f"{name}={times!r}: expected a sequence of floats, e.g. [0.0, 0.5, 1.0]") from err
    if not values:
        raise ValueError(f"{name} is empty: give at least one output time")
    if not all(math.isfinite(t) and t >= 0 for t in values):
        raise ValueError(f"{name}={values}: all times must be finite and >= 0")
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}={values}: must be sorted in non-decreasing order")
    return values


def substeps(interval: float, dt: float) -> tuple[int, float]:
    """Number of equal steps of size <= dt (up to roundoff) that cover ``interval`` exactly."""
    if interval <= 0:
        return 0, 0.0
    n = max(1, math.ceil(interval / dt * (1 - 1e-12)))
    return n, interval / n


def spectral_tail(u: Tensor) -> Tensor:
    """Energy fraction in the top third of the modes the 2/3 rule keeps (2n/9 < k <= n/3 of 1..n/3):
    a resolved solution's spectrum has decayed there, an under-resolved one's has not (Gibbs).

    u (batch, ..., n) real, periodic in the last axis; returns (batch,), the worst over the other axes.
    Batched, no host sync; a zero state reads 0.
    """
    n = u.shape[-1]
    kept = n // 3
    energy = torch.fft.rfft(u).abs().square()[..., 1:kept + 1]
    top = energy[..., kept - kept // 3:].sum(-1)
    total = energy.sum(-1)
    fraction = torch.where(total > 0, top / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(top))
    return fraction.reshape(u.shape[0], -1).amax(-1)
