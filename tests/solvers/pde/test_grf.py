"""GaussianRandomField: empirical spectra against the requested eigenvalues, reproducibility."""

import math

import pytest
import torch

from solvers.pde.grf import GaussianRandomField


def _z_scores(power: torch.Tensor, lam: torch.Tensor, n: int) -> torch.Tensor:
    # mean of n draws of lam * chi^2_1 (worst case; complex modes are lam * Exp(1)) has sd lam*sqrt(2/n)
    mask = lam > 0
    return ((power[mask] / lam[mask] - 1) / math.sqrt(2 / n)).abs()


@pytest.mark.parametrize("shape,alpha,tau,sigma", [((64,), 2.0, 5.0, 25.0), ((16, 24), 2.5, 7.0, None)])
def test_periodic_spectrum_matches_eigenvalues(shape, alpha, tau, sigma):
    n = 4000
    grf = GaussianRandomField(shape, alpha=alpha, tau=tau, sigma=sigma)
    u = grf.sample(n, generator=torch.Generator().manual_seed(0))
    assert u.shape == (n, *shape) and u.dtype == torch.float64
    dims = tuple(range(1, len(shape) + 1))
    coeff = torch.fft.rfftn(u, dim=dims) / math.prod(shape)  # Fourier coefficients of e^{2 pi i k x}
    power = (coeff.abs() ** 2).mean(0)
    lam = grf.eigenvalues()
    expected_sigma = sigma if sigma is not None else tau ** (alpha - len(shape) / 2)
    freqs = [torch.fft.fftfreq(m, 1 / m, dtype=torch.float64) for m in shape[:-1]]
    freqs.append(torch.fft.rfftfreq(shape[-1], 1 / shape[-1], dtype=torch.float64))
    k2 = sum(g ** 2 for g in torch.meshgrid(*freqs, indexing="ij"))
    closed = expected_sigma ** 2 * (4 * math.pi ** 2 * k2 + tau ** 2) ** (-alpha)
    closed[(0,) * len(shape)] = 0
    torch.testing.assert_close(lam, closed, rtol=1e-13, atol=0)
    assert power[(0,) * len(shape)] < 1e-25, "mean mode must be zero"
    z = _z_scores(power, lam, n)
    assert z.max() < 5.0, f"empirical spectrum off by {z.max():.2f} standard errors"
    # pointwise variance = sum over the full spectrum of lambda_k
    full = lam.clone()
    full[..., 1:(shape[-1] + 1) // 2] *= 2  # rfft half spectrum: count the conjugate modes
    var = u.var(dim=0).mean()
    assert abs(var / full.sum() - 1) < 0.05


def test_neumann_2d_spectrum_matches_eigenvalues():
    n, s, alpha, tau = 3000, (12, 10), 2.0, 3.0
    grf = GaussianRandomField(s, alpha=alpha, tau=tau, boundary="neumann")
    u = grf.sample(n, generator=torch.Generator().manual_seed(1))
    x, y = grf.grid()
    torch.testing.assert_close(x, (torch.arange(12, dtype=torch.float64) + 0.5) / 12)

    def basis(xs, m):
        b = torch.cos(math.pi * xs[:, None] * torch.arange(m, dtype=torch.float64)) * math.sqrt(2)
        b[:, 0] = 1
        return b

    bx, by = basis(x, s[0]), basis(y, s[1])
    coeff = torch.einsum("nij,ik,jl->nkl", u, bx, by) / (s[0] * s[1])  # discrete orthonormality at centres
    power = (coeff ** 2).mean(0)
    kx, ky = torch.meshgrid(torch.arange(s[0], dtype=torch.float64), torch.arange(s[1], dtype=torch.float64),
                            indexing="ij")
    closed = tau ** (2 * (alpha - 1)) * (math.pi ** 2 * (kx ** 2 + ky ** 2) + tau ** 2) ** (-alpha)
    closed[0, 0] = 0
    torch.testing.assert_close(grf.eigenvalues(), closed, rtol=1e-13, atol=0)
    assert power[0, 0] < 1e-25
    z = _z_scores(power, closed, n)
    assert z.max() < 5.0, f"empirical spectrum off by {z.max():.2f} standard errors"


def test_seeded_reproducible_and_dtype():
    for boundary in ("periodic", "neumann"):
        grf = GaussianRandomField((8, 8, 6), alpha=3.0, tau=4.0, boundary=boundary, dtype=torch.float32)
        a = grf.sample(3, generator=torch.Generator().manual_seed(5))
        b = grf.sample(3, generator=torch.Generator().manual_seed(5))
        c = grf.sample(3, generator=torch.Generator().manual_seed(6))
        assert a.dtype == torch.float32 and a.device.type == "cpu" and a.shape == (3, 8, 8, 6)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert torch.isfinite(a).all()


def test_float32_matches_float64_statistics_and_device_arg():
    g64 = GaussianRandomField((32,), alpha=2, tau=5, sigma=25, device="cpu")
    g32 = GaussianRandomField((32,), alpha=2, tau=5, sigma=25, device=torch.device("cpu"), dtype=torch.float32)
    assert g64.device == torch.device("cpu")
    u = g32.sample(2, generator=torch.Generator().manual_seed(3))
    v = g64.sample(2, generator=torch.Generator().manual_seed(3))
    assert u.dtype == torch.float32 and v.dtype == torch.float64
    assert g32.sample(0).shape == (0, 32)


@pytest.mark.parametrize("kwargs,match", [
    (dict(shape=(1,), alpha=2, tau=3), "shape"),
    (dict(shape=(8,), alpha=-1, tau=3), "alpha"),
    (dict(shape=(8,), alpha=2, tau=0), "tau"),
    (dict(shape=(8,), alpha=2, tau=3, sigma=-1.0), "sigma"),
    (dict(shape=(8,), alpha=2, tau=3, boundary="dirichlet"), "boundary"),
    (dict(shape=(8,), alpha=2, tau=3, dtype=torch.int64), "dtype"),
])
def test_invalid_arguments(kwargs, match):
    shape = kwargs.pop("shape")
    with pytest.raises(ValueError, match=match):
        GaussianRandomField(shape, **kwargs)


def test_invalid_sample_count():
    with pytest.raises(ValueError, match="n="):
        GaussianRandomField((8,), alpha=2, tau=3).sample(-1)
