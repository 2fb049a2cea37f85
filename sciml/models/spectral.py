"""Spectral convolution over the lowest Fourier modes, any number of grid dimensions."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ._validate import per_dim_ints, positive_int


def kept_shape(modes: Sequence[int]) -> tuple[int, ...]:
    """Shape of the kept spectrum: both frequency signs on all but the last dim, ``0..m-1`` on the last."""
    return tuple(2 * m for m in modes[:-1]) + (modes[-1],)


class SpectralConv(nn.Module):
    r"""Fourier layer :math:`y = \mathcal F^{-1}[W(k)\,\mathcal F[x](k)]`, :math:`W(k) = 0` beyond the kept modes.

    Kept modes (the original FNO's corners): ``k_i in {-m_i..m_i-1}`` on every grid dimension but
    the last, ``k_d in {0..m_d-1}`` on the last (the real FFT's half spectrum). ``W(k)`` is a
    complex ``in_channels x out_channels`` matrix per kept mode. The output is real:
    ``y(n) = (1/N) sum_k c_k Re(W(k) X(k) e^{2 pi i k.n/N})`` with ``c_k = 1`` where ``k_d = 0``
    and 2 elsewhere. That needs ``2 m_i <= n_i`` and ``m_d <= ceil(n_d / 2)`` (no Nyquist bin),
    checked per call since the grid may change (resolution invariance).

    Only the kept modes are ever computed on: the last dimension is transformed with ``rfft`` and
    cut to ``m_d`` before the other dimensions are transformed (a pruned FFT), the contraction is
    one batched complex matmul over modes, and the inverse pads each non-last dimension back with
    zeros between the two frequency blocks (no ``fftshift``, so odd grids are right) and lets
    ``irfft(n=...)`` zero-pad the last one implicitly.

    Args:
        in_channels, out_channels: channel counts.
        modes: kept modes per grid dimension (int: the same for all); its length sets the dimension
            unless `n_dims` is given.

    Weights: ``(prod(kept), in, out, 2)`` real (re, im), initialised ``U[0,1) / (in*out)`` for both
    parts as in Li et al.'s code.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | Sequence[int], *, n_dims: int | None = None):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        if n_dims is None:
            n_dims = 1 if isinstance(modes, int) else len(modes)
        self.n_dims = positive_int("n_dims", n_dims)
        self.modes = per_dim_ints("modes", modes, self.n_dims)
        self.kept = kept_shape(self.modes)
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(math.prod(self.kept), in_channels, out_channels, 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"

    def check_grid(self, grid: Sequence[int]) -> None:
        *lead, last = grid
        for i, (n, m) in enumerate(zip(lead, self.modes[:-1])):
            if 2 * m > n:
                raise ValueError(f"modes[{i}]={m} needs a grid of at least {2 * m} points on dim {i}, got {n}; lower modes or refine the grid")
        if self.modes[-1] > (last + 1) // 2:
            raise ValueError(
                f"modes[{self.n_dims - 1}]={self.modes[-1]} needs a grid of at least {2 * self.modes[-1]} points on the last dim, "
                f"got {last}; lower modes or refine the grid"
            )

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, in_channels, *grid) real -> (batch, out_channels, *grid), same dtype as x
        (half-precision inputs are transformed in float32: cuFFT half needs power-of-two sizes)."""
        d, grid = self.n_dims, x.shape[-self.n_dims:]
        self.check_grid(grid)
        in_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        batch = x.shape[0]
        # 1. forward transform, pruned: rfft on the last dim, cut, then fft on the others, cut.
        xf = torch.fft.rfft(x, dim=-1)[..., : self.modes[-1]]
        for i in range(d - 1):
            dim, n, m = 2 + i, grid[i], self.modes[i]
            xf = torch.fft.fft(xf, dim=dim)
            xf = torch.cat([xf.narrow(dim, 0, m), xf.narrow(dim, n - m, m)], dim=dim)
        # 2. contraction: per mode (batch, in) @ (in, out), as one batched complex matmul.
        weight = torch.view_as_complex(self.weight if self.weight.dtype == torch.float64 else self.weight.float())
        if weight.dtype != xf.dtype:
            xf = xf.to(weight.dtype)
        n_kept = weight.shape[0]
        xm = xf.reshape(batch, self.in_channels, n_kept).permute(2, 0, 1)  # (modes, batch, in)
        yf = torch.bmm(xm, weight).permute(1, 2, 0).reshape(batch, self.out_channels, *self.kept)
        # 3. inverse: zeros between the +/- blocks on each non-last dim, ifft; irfft pads the last dim.
        for i in reversed(range(d - 1)):
            dim, n, m = 2 + i, grid[i], self.modes[i]
            if n > 2 * m:
                shape = list(yf.shape)
                shape[dim] = n - 2 * m
                yf = torch.cat([yf.narrow(dim, 0, m), yf.new_zeros(shape), yf.narrow(dim, m, m)], dim=dim)
            yf = torch.fft.ifft(yf, dim=dim)
        # c2r transforms may not ignore the DC column's imaginary part (cuFFT), so drop it explicitly.
        yf = torch.cat([torch.complex(yf[..., :1].real, torch.zeros_like(yf[..., :1].real)), yf[..., 1:]], dim=-1)
        y = torch.fft.irfft(yf, n=grid[-1], dim=-1)
        return y.to(in_dtype)
