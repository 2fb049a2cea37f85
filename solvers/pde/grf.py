"""Gaussian random fields on the unit cube, sampled through their Karhunen–Loève expansion.

    u ~ N(0, C),   C = sigma^2 (-Laplacian + tau^2 I)^(-alpha)   on [0, 1]^d,

with the mean (k = 0) mode removed. The Laplacian's eigenfunctions depend on the boundary:

* ``"periodic"``: Fourier modes e^{2 pi i k.x}, eigenvalues 4 pi^2 |k|^2, k in Z^d. Grid nodes
  ``linspace(0, 1, s + 1)[:-1]`` per axis (right end excluded). This is FNO's ``GaussianRF``
  (``random_fields.py``) used for Burgers and Navier–Stokes initial conditions.
* ``"neumann"``: cosine modes prod_j c_kj cos(pi k_j x_j) (c_0 = 1, c_k = sqrt 2, so they are
  orthonormal in L2), eigenvalues pi^2 |k|^2, k in {0..s-1}^d. Grid: **cell centres**
  ``(i + 1/2) / s`` per axis, exactly FNO Darcy's ``GRF.m`` (an inverse orthonormal DCT-II).

Both are truncated at the grid's own modes, so the sampled vector has covariance
sum_k lambda_k phi_k(x) phi_k(y) over the represented k; its pointwise variance is
sum_k lambda_k and converges as s grows iff alpha > d/2.

References: Li et al., "Fourier neural operator for parametric PDEs" (2021), data generation
scripts ``random_fields.py`` and ``GRF.m``; Lord, Powell & Shardlow, "An introduction to
computational stochastic PDEs" (2014), ch. 7 (spectral sampling of stationary fields).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GaussianRandomField"]

_BOUNDARIES = ("periodic", "neumann")


class GaussianRandomField:
    """Samples N(0, sigma^2 (-Laplacian + tau^2 I)^(-alpha)) on [0,1]^d, zero mean mode.

    Args:
        shape: grid points per axis, ``(s,)`` in 1D, ``(s, s)`` in 2D (any d >= 1; axes may
            differ).
        alpha: smoothness exponent (> 0). The continuum field has finite variance iff
            alpha > d/2; a realisation is roughly C^(alpha - d/2) (Hölder, in the sense of
            Sobolev embedding).
        tau: inverse length scale (> 0).
        sigma: amplitude; default ``tau ** (alpha - d/2)`` (FNO's default, which makes the
            spectrum tend to 1 at k = 0 up to sigma's scale).
        boundary: ``"periodic"`` (Fourier, nodes ``i/s``) or ``"neumann"`` (cosine series,
            cell centres ``(i+1/2)/s``). See the module docstring.
        device, dtype: where and in which real floating dtype samples are made.

    ``sample(n, generator=...)`` returns a tensor of shape ``(n, *shape)``. The same generator
    state, device and dtype give the same samples.

    Example (FNO Navier–Stokes initial condition): ``GaussianRandomField((256, 256), alpha=2.5,
    tau=7.0)``; FNO Darcy: ``GaussianRandomField((421, 421), alpha=2, tau=3, boundary="neumann")``;
    FNO Burgers (paper): ``GaussianRandomField((8192,), alpha=2, tau=5, sigma=25)``.
    """

    def __init__(self, shape: tuple[int, ...], *, alpha: float, tau: float, sigma: float | None = None,
                 boundary: str = "periodic", device=None, dtype=torch.float64):
        if isinstance(shape, int):
            shape = (shape,)
        shape = tuple(shape)
        if len(shape) == 0 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 2 for s in shape):
            raise ValueError(f"shape={shape!r}: expected a non-empty tuple of ints >= 2, e.g. (256,) or (64, 64)")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha={alpha!r}: expected a finite number > 0 (e.g. 2 or 2.5)")
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau={tau!r}: expected a finite number > 0 (e.g. 3 or 7)")
        if boundary not in _BOUNDARIES:
            raise ValueError(f"boundary={boundary!r}: expected one of {_BOUNDARIES}")
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point and not dtype.is_complex):
            raise ValueError(f"dtype={dtype!r}: expected a real floating dtype such as torch.float64 or torch.float32")
        d = len(shape)
        if sigma is None:
            sigma = float(tau) ** (alpha - d / 2)
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma={sigma!r}: expected a finite number > 0, or None for tau**(alpha - d/2)")
        self.shape, self.alpha, self.tau, self.sigma = shape, float(alpha), float(tau), float(sigma)
        self.boundary, self.dtype = boundary, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # Eigen-data in float64, cast once: the spectrum spans many decades for large alpha.
        if boundary == "periodic":
            freqs = [torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64) for s in shape[:-1]]
            freqs.append(torch.fft.rfftfreq(shape[-1], d=1.0 / shape[-1], dtype=torch.float64))
            scale = 4 * math.pi ** 2
        else:
            freqs = [torch.arange(s, dtype=torch.float64) for s in shape]
            scale = math.pi ** 2
        k2 = sum(torch.meshgrid(*[f ** 2 for f in freqs], indexing="ij"))
        self._k_squared, self._scale = k2, scale  # integer |k|^2 on the stored (half-)spectrum, float64, CPU
        sqrt_eig = self.sigma * (scale * k2 + self.tau ** 2) ** (-self.alpha / 2)
        sqrt_eig[(0,) * d] = 0.0  # zero mean mode
        if boundary == "periodic":
            # u = irfftn(sqrt(N lambda) * rfftn(z)) for real white noise z: E|rfftn(z)_k|^2 = N,
            # irfftn divides by N, so u's Fourier coefficients have variance lambda_k.
            n_points = math.prod(shape)
            self._multiplier = (sqrt_eig * math.sqrt(n_points)).to(device=self.device, dtype=dtype)
            self._cosines = None
        else:
            # Cosine bases per axis, evaluated at cell centres; rows i, columns k.
            self._multiplier = sqrt_eig.to(device=self.device, dtype=dtype)
            self._cosines = []
            for s in shape:
                x = (torch.arange(s, dtype=torch.float64) + 0.5) / s
                k = torch.arange(s, dtype=torch.float64)
                basis = torch.cos(math.pi * x[:, None] * k[None, :]) * math.sqrt(2.0)
                basis[:, 0] = 1.0
                self._cosines.append(basis.to(device=self.device, dtype=dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def eigenvalues(self) -> Tensor:
        """lambda_k = sigma^2 (c |k|^2 + tau^2)^(-alpha), zero at k = 0, float64 on CPU.

        Periodic: on the ``rfftn`` half spectrum (shape ``(*shape[:-1], shape[-1]//2 + 1)``,
        fftfreq order), c = 4 pi^2. Neumann: shape ``shape``, k_j = 0..s_j-1, c = pi^2.
        """
        lam = self.sigma ** 2 * (self._scale * self._k_squared + self.tau ** 2) ** (-self.alpha)
        lam[(0,) * self.ndim] = 0.0
        return lam

    def grid(self) -> list[Tensor]:
        """The 1D node coordinates per axis (float64, CPU) that samples live on."""
        if self.boundary == "periodic":
            return [torch.linspace(0, 1, s + 1, dtype=torch.float64)[:-1] for s in self.shape]
        return [(torch.arange(s, dtype=torch.float64) + 0.5) / s for s in self.shape]

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` independent fields, shape ``(n, *shape)``, on ``device`` in ``dtype``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n={n!r}: expected an int >= 0 (number of samples)")
        if generator is not None and torch.device(generator.device).type != self.device.type:
            raise ValueError(f"generator is on {generator.device} but the field samples on {self.device}; "
                             f"create it with torch.Generator(device={str(self.device)!r})")
        if n == 0:  # some FFT back ends reject empty batches
            return torch.empty((0, *self.shape), device=self.device, dtype=self.dtype)
        dims = tuple(range(1, self.ndim + 1))
        if self.boundary == "periodic":
            z = torch.randn((n, *self.shape), generator=generator, device=self.device, dtype=self.dtype)
            return torch.fft.irfftn(torch.fft.rfftn(z, dim=dims) * self._multiplier, s=self.shape, dim=dims)
        xi = torch.randn((n, *self.shape), generator=generator, device=self.device, dtype=self.dtype)
        u = xi * self._multiplier
        # Synthesis along each axis: u[..., i, ...] = sum_k basis[i, k] u[..., k, ...].
        for axis, basis in enumerate(self._cosines, start=1):
            u = torch.movedim(torch.movedim(u, axis, -1) @ basis.T, -1, axis)
        return u

    def __repr__(self) -> str:
        return (f"GaussianRandomField(shape={self.shape}, alpha={self.alpha}, tau={self.tau}, sigma={self.sigma}, "
                f"boundary={self.boundary!r}, device={self.device}, dtype={self.dtype})")
