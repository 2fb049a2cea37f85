"""Spectral convolution over the lowest Fourier modes, any number of grid dimensions."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ._validate import per_dim_ints, positive_int

TRANSFORMS = ("dft", "fft")


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

    Only the kept modes are ever computed on, by one of two transforms (same result to rounding):
    "dft" (default) multiplies by truncated DFT matrices that hold only the kept frequencies (GEMMs,
    no spectrum beyond the kept modes, any grid size at the same cost); "fft" runs pruned FFTs
    (``rfft`` on the last dim, cut to ``m_d``, then ``fft`` on the others) and an inverse that
    puts zeros between the two frequency blocks (no ``fftshift``, so odd grids are right). The
    contraction is one real batched matmul over modes.

    Args:
        in_channels, out_channels: channel counts.
        modes: kept modes per grid dimension (int: the same for all); its length sets the dimension
            unless `n_dims` is given.
        transform: "dft" or "fft" (see above); pick by measurement (benchmarks/bench_fno_speed.py).

    Weights: ``(prod(kept), in, out, 2)`` real (re, im), initialised ``U[0,1) / (in*out)`` for both
    parts as in Li et al.'s code; `bias` (default on) adds a per-channel constant ``b`` to ``y``
    (folded into the zero mode, so it costs no pass over the grid). The layer runs in float32 (float64 when its weights are) even
    under autocast.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: int | Sequence[int], *, n_dims: int | None = None,
                 transform: str = "dft", bias: bool = True):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        self.transform = transform
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        if n_dims is None:
            n_dims = 1 if isinstance(modes, int) else len(modes)
        self.n_dims = positive_int("n_dims", n_dims)
        self.modes = per_dim_ints("modes", modes, self.n_dims)
        self.kept = kept_shape(self.modes)
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(math.prod(self.kept), in_channels, out_channels, 2))
        bound = 1.0 / math.sqrt(in_channels)  # as nn.Linear's bias
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}, transform={self.transform!r}"

    def check_grid(self, grid: Sequence[int], padding: Sequence[int] | None = None) -> None:
        """Every kept mode fits the grid: 2 m points on a leading dim, 2 m - 1 on the last (m <= ceil(n/2)).
        `padding`: points of the grid that are a model's padding, named in the message."""
        for i, (n, m) in enumerate(zip(grid, self.modes)):
            need = 2 * m - 1 if i == self.n_dims - 1 else 2 * m
            if n < need:
                pad = padding[i] if padding is not None else 0
                of = f" ({pad} of them the model's padding)" if pad else ""
                fits = max(1, (n + 1) // 2 if i == self.n_dims - 1 else n // 2)  # the most modes n points hold
                hint = f"lower modes (one per dim is allowed, e.g. modes={(*self.modes[:i], fits, *self.modes[i + 1:])})"
                raise ValueError(f"modes[{i}]={m} needs a grid of at least {need} points on dim {i}, got {n}{of}; {hint} "
                                 f"or refine the grid")

    def forward(self, x: Tensor, channel_dim: int = 1) -> Tensor:
        """x: (batch, in_channels, *grid) real -> (batch, out_channels, *grid), same dtype as x;
        with ``channel_dim=0`` both are channel-major, (channels, batch, *grid) (the FNO's GEMM layout).

        1. transform to the kept modes (batch, in, *kept) complex; 2. per-mode channel contraction
        -> (batch, out, *kept); 3. inverse transform to the grid. Runs in float32 (float64 when the
        weights are) with autocast off: half-precision spectra lose the small modes' accuracy.
        """
        if channel_dim not in (0, 1):
            raise ValueError(f"channel_dim must be 0 (channel-major) or 1 (batch-major), got {channel_dim!r}")
        if x.ndim != self.n_dims + 2 or x.shape[channel_dim] != self.in_channels:
            layout = "(batch, channels, *grid)" if channel_dim == 1 else "(channels, batch, *grid)"
            raise ValueError(f"SpectralConv expects {layout} with {self.in_channels} channels and {self.n_dims} grid "
                             f"dimension(s), got {tuple(x.shape)}")
        grid = tuple(x.shape[-self.n_dims:])
        self.check_grid(grid)
        in_dtype = x.dtype
        with torch.autocast(x.device.type, enabled=False):
            w = self.weight if self.weight.dtype == torch.float64 else self.weight.float()
            x = x.to(w.dtype)
            xf = (self._forward_dft if self.transform == "dft" else self._forward_fft)(x, grid)
            yf = self._contract(xf, w, math.prod(grid), channel_dim)
            y = (self._inverse_dft if self.transform == "dft" else self._inverse_fft)(yf, grid)
        return y.to(in_dtype)

    def _contract(self, xf: Tensor, w: Tensor, n_points: int, channel_dim: int) -> Tensor:
        # per mode (batch, in) @ (in, out), as one real batched matmul on interleaved (re, im)
        # pairs: [xr xi] @ [[Wr Wi], [-Wi Wr]]. Real, not complex: complex bmm on strided input is
        # ~30x slower on CPU, and real GEMMs take TF32 on GPU when it is enabled.
        n_kept = w.shape[0]
        lead = xf.shape[:2]  # (batch, in) or (in, batch)
        batch = lead[1 - channel_dim]
        xr = torch.view_as_real(xf).reshape(*lead, n_kept, 2).movedim(2, 0)  # (kept, *lead, 2)
        if channel_dim == 0:
            xr = xr.transpose(1, 2)
        xr = xr.reshape(n_kept, batch, 2 * self.in_channels)
        w2 = torch.stack([w, torch.stack([-w[..., 1], w[..., 0]], dim=-1)], dim=2)
        yr = torch.bmm(xr, w2.reshape(n_kept, 2 * self.in_channels, 2 * self.out_channels))
        if self.bias is not None:  # a constant is the zero mode times 1/N: adding it there is free
            yr[0, :, 0::2] += n_points * self.bias.to(yr.dtype)
        yr = yr.view(n_kept, batch, self.out_channels, 2).permute((1, 2, 0, 3) if channel_dim == 1 else (2, 1, 0, 3))
        out_lead = (batch, self.out_channels) if channel_dim == 1 else (self.out_channels, batch)
        return torch.view_as_complex(yr.reshape(*out_lead, *self.kept, 2))

    # -- "fft": pruned FFTs. rfft on the last dim, cut, then fft on the others, cut; the inverse
    # puts zeros between the +/- blocks of each non-last dim (no fftshift: odd grids are right).
    def _forward_fft(self, x: Tensor, grid) -> Tensor:
        xf = torch.fft.rfft(x, dim=-1)[..., : self.modes[-1]]
        for i in range(self.n_dims - 1):
            dim, n, m = 2 + i, grid[i], self.modes[i]
            xf = torch.fft.fft(xf, dim=dim)
            xf = torch.cat([xf.narrow(dim, 0, m), xf.narrow(dim, n - m, m)], dim=dim)
        return xf

    def _inverse_fft(self, yf: Tensor, grid) -> Tensor:
        for i in reversed(range(self.n_dims - 1)):
            dim, n, m = 2 + i, grid[i], self.modes[i]
            if n > 2 * m:
                shape = list(yf.shape)
                shape[dim] = n - 2 * m
                yf = torch.cat([yf.narrow(dim, 0, m), yf.new_zeros(shape), yf.narrow(dim, m, m)], dim=dim)
            yf = torch.fft.ifft(yf, dim=dim)
        # c2r transforms may not ignore the DC column's imaginary part (cuFFT), so drop it explicitly.
        yf = torch.cat([torch.complex(yf[..., :1].real, torch.zeros_like(yf[..., :1].real)), yf[..., 1:]], dim=-1)
        return torch.fft.irfft(yf, n=grid[-1], dim=-1)

    # -- "dft": truncated DFTs as matrix products with only the kept frequencies. Memory-bound
    # GEMMs that never form a spectrum larger than the kept modes; prime sizes (85, 421) cost
    # no more than powers of two.
    def _forward_dft(self, x: Tensor, grid) -> Tensor:
        n, m = grid[-1], self.modes[-1]
        last, _ = _matrices(n, m, True, x.device, x.dtype)
        z = torch.view_as_complex((x.reshape(-1, n) @ last).view(*x.shape[:-1], m, 2))
        for i in range(self.n_dims - 1):
            z = _apply_along(_matrices(grid[i], self.modes[i], False, x.device, x.dtype)[0], z, 2 + i)
        return z

    def _inverse_dft(self, yf: Tensor, grid) -> Tensor:
        yf = yf.contiguous()
        for i in range(self.n_dims - 1):
            yf = _apply_along(_matrices(grid[i], self.modes[i], False, yf.device, yf.real.dtype)[1], yf, 2 + i)
        n, m = grid[-1], self.modes[-1]
        _, last = _matrices(n, m, True, yf.device, yf.real.dtype)
        return (torch.view_as_real(yf).reshape(-1, 2 * m) @ last).view(*yf.shape[:-1], n)


def _matrices(*key):
    # under torch.compile the matrices are traced (constants of the graph), not looked up in the cache
    return dft_matrices.__wrapped__(*key) if torch.compiler.is_compiling() else dft_matrices(*key)


def _apply_along(mat: Tensor, z: Tensor, dim: int) -> Tensor:
    """``mat @ z`` along dimension `dim` of a contiguous z: (..., n, ...) -> (..., mat.shape[0], ...)."""
    shape = z.shape
    lead, rest = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    out = torch.matmul(mat, z.reshape(lead, shape[dim], rest))
    return out.view(*shape[:dim], mat.shape[0], *shape[dim + 1:])


@functools.lru_cache(maxsize=128)
def dft_matrices(n: int, m: int, last: bool, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Truncated DFT matrices for one grid dim of `n` points keeping `m` modes (see SpectralConv).

    last=True (real <-> half spectrum, (re, im) interleaved): forward (n, 2m) real,
    inverse (2m, n) real with the Hermitian weights c_k and 1/n. last=False (complex, frequencies
    0..m-1, -m..-1): forward (2m, n), inverse (n, 2m) with 1/n. Phases from exact integer
    ``k*j mod n`` in float64, so large n lose no accuracy.
    """
    # Built on `device` itself: under torch.compile these ops are traced into the model's graph, and
    # CPU ops there would become CPU kernels plus a host-to-device copy in every step.
    with torch.inference_mode(False), torch.no_grad():  # cached: must be usable by autograd later
        f64 = {"dtype": torch.float64, "device": device}
        j = torch.arange(n, **f64)
        k = torch.arange(m, **f64) if last else torch.cat([torch.arange(m, **f64), torch.arange(-m, 0, **f64)])
        theta = 2 * math.pi * torch.remainder(torch.outer(k, j), n) / n  # (modes, n)
        if last:
            fwd = torch.stack([torch.cos(theta), -torch.sin(theta)], dim=1).reshape(2 * m, n).T
            c = torch.full((m, 1), 2.0, **f64)
            c[0] = 1.0
            inv = (torch.stack([c * torch.cos(theta), -c * torch.sin(theta)], dim=1) / n).reshape(2 * m, n)
            return fwd.contiguous().to(device, dtype), inv.contiguous().to(device, dtype)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        fwd = torch.polar(torch.ones_like(theta), -theta)
        inv = torch.polar(torch.ones_like(theta), theta).T / n
        return fwd.to(device, cdtype), inv.contiguous().to(device, cdtype)
