"""SpectralConv against an explicit float64 DFT, on odd and even grids, and across resolutions."""

import math

import pytest
import torch

from sciml.models import SpectralConv


def _freqs(n: int, m: int, last: bool) -> torch.Tensor:
    return torch.arange(m, dtype=torch.float64) if last else torch.cat([torch.arange(m), torch.arange(-m, 0)]).double()


def dense_reference(layer: SpectralConv, x: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
    """y(n) = (1/N) sum_k c_k Re(W(k) X(k) e^{2 pi i k.n/N}), X by explicit DFT matrices."""
    d = layer.n_dims
    grid = x.shape[2:]
    letters = "xyz"[:d]
    kletters = "pqr"[:d]
    fwd, inv = [], []
    for i, (n, m) in enumerate(zip(grid, layer.modes)):
        k = _freqs(n, m, i == d - 1)
        j = torch.arange(n, dtype=torch.float64)
        phase = 2 * math.pi * torch.outer(k, j) / n  # (kept_i, n_i)
        fwd.append(torch.exp(-1j * phase))
        inv.append(torch.exp(1j * phase))
    xc = x.to(torch.complex128)
    X = torch.einsum(f"bc{letters}," + ",".join(f"{kl}{l}" for kl, l in zip(kletters, letters)) + f"->bc{kletters}", xc, *fwd)
    w = layer.weight if differentiable else layer.weight.detach()
    W = torch.view_as_complex(w.double()).reshape(*layer.kept, layer.in_channels, layer.out_channels)
    Y = torch.einsum(f"bi{kletters},{kletters}io->bo{kletters}", X, W)
    c = torch.full(layer.kept, 2.0, dtype=torch.float64)
    c[..., 0] = 1.0  # k_d = 0 appears once in the half spectrum
    Y = Y * c
    y = torch.einsum(f"bo{kletters}," + ",".join(f"{kl}{l}" for kl, l in zip(kletters, letters)) + f"->bo{letters}", Y, *inv)
    bias = 0.0 if layer.bias is None else layer.bias.detach().double().view(-1, *([1] * d))
    return y.real / math.prod(grid) + bias


CASES = [
    ((85,), (16,)), ((64,), (16,)), ((421,), (12,)), ((141,), (71,)),  # 71 = every rfft mode of an odd grid
    ((85, 85), (12, 12)), ((16, 21), (8, 11)), ((211, 20), (3, 5)), ((64, 64), (12, 12)),
    ((9, 10, 7), (2, 3, 4)), ((8, 12, 13), (4, 3, 2)),
]


@pytest.mark.parametrize("transform", ["dft", "fft"])
@pytest.mark.parametrize("grid,modes", CASES)
def test_matches_dense_dft(grid, modes, transform):
    torch.manual_seed(0)
    layer = SpectralConv(3, 2, modes, transform=transform).double()
    with torch.no_grad():  # random complex weights, not just the U[0,1) init, so signs and phases matter
        layer.weight.normal_()
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    y = layer(x)
    ref = dense_reference(layer, x)
    assert y.shape == (2, 2, *grid) and y.dtype == torch.float64
    err = (y - ref).abs().max() / ref.abs().max()
    assert err < 1e-12, f"max relative deviation from the dense DFT {err:.2e}"
    # the channel-major layout (channels, batch, *grid) gives the same field
    y_cm = layer(x.transpose(0, 1).contiguous(), channel_dim=0)
    assert y_cm.shape == (2, 2, *grid)
    torch.testing.assert_close(y_cm.transpose(0, 1), y, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("transform", ["dft", "fft"])
def test_gradient_matches_dense_dft(transform):
    torch.manual_seed(1)
    layer = SpectralConv(2, 2, (3, 4), transform=transform).double()
    x = torch.randn(1, 2, 11, 9, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 11, 9, dtype=torch.float64)
    (gx,) = torch.autograd.grad((layer(x) * v).sum(), x)
    (gx_ref,) = torch.autograd.grad((dense_reference(layer, x) * v).sum(), x)
    assert (gx - gx_ref).abs().max() < 1e-12 * gx_ref.abs().max()
    (gw,) = torch.autograd.grad((layer(x) * v).sum(), layer.weight)
    (gw_ref,) = torch.autograd.grad((dense_reference(layer, x, differentiable=True) * v).sum(), layer.weight)
    assert (gw - gw_ref).abs().max() < 1e-12 * gw_ref.abs().max()


def _band_limited(kmax, kept, seed):
    """A real trigonometric polynomial with |k_i| <= kmax[i], half its terms inside the kept modes."""
    g = torch.Generator().manual_seed(seed)
    terms = []
    for t in range(6):
        bound = kmax if t % 2 else [m - 1 for m in kept]
        k = [int(torch.randint(-b, b + 1, (1,), generator=g)) for b in bound]
        a, phi = torch.rand(2, generator=g, dtype=torch.float64)
        terms.append((k, float(a), float(phi) * 2 * math.pi))

    def sample(shape):
        axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) / n for n in shape], indexing="ij")
        f = torch.zeros(shape, dtype=torch.float64)
        for k, a, phi in terms:
            f = f + a * torch.cos(2 * math.pi * sum(ki * xi for ki, xi in zip(k, axes)) + phi)
        return f

    return sample


def trig_interpolate(y: torch.Tensor, shape) -> torch.Tensor:
    """Trigonometric interpolation of periodic samples onto a finer grid (zero-padded spectrum)."""
    d = len(shape)
    Y = torch.fft.fftn(y, dim=tuple(range(-d, 0)))
    for i, (n, N) in enumerate(zip(y.shape[-d:], shape)):
        dim = y.ndim - d + i
        half = (n + 1) // 2  # frequencies 0..half-1 and -(n-half)..-1
        pad_shape = list(Y.shape)
        pad_shape[dim] = N - n
        Y = torch.cat([Y.narrow(dim, 0, half), Y.new_zeros(pad_shape), Y.narrow(dim, half, n - half)], dim=dim)
    return torch.fft.ifftn(Y, dim=tuple(range(-d, 0))).real * (math.prod(shape) / math.prod(y.shape[-d:]))


@pytest.mark.parametrize("transform", ["dft", "fft"])
@pytest.mark.parametrize("grid,modes", [((33,), (8,)), ((64,), (16,)), ((21, 16), (5, 6)), ((11, 12, 9), (2, 3, 3))])
def test_resolution_invariance(grid, modes, transform):
    """For band-limited input, the output at 2s equals the trigonometric interpolation of the output at s."""
    torch.manual_seed(2)
    layer = SpectralConv(1, 1, modes, transform=transform).double()
    kmax = [(n - 1) // 2 for n in grid]  # below Nyquist of the coarse grid
    f = _band_limited(kmax, modes, seed=3)
    fine = tuple(2 * n for n in grid)
    y_coarse = layer(f(grid)[None, None])
    y_fine = layer(f(fine)[None, None])
    interp = trig_interpolate(y_coarse, fine)
    assert y_fine.abs().max() > 1e-2, "the test function must have energy in the kept modes"
    assert (y_fine - interp).abs().max() < 1e-12 * y_fine.abs().max()
    assert torch.allclose(y_fine[(..., *(slice(None, None, 2),) * len(grid))], y_coarse, rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid,modes,msg", [((20,), (11,), "modes\\[0\\]=11"), ((10, 32), (6, 4), "modes\\[0\\]=6")])
def test_grid_too_small_names_the_mode(grid, modes, msg):
    layer = SpectralConv(1, 1, modes)
    with pytest.raises(ValueError, match=msg):
        layer(torch.randn(1, 1, *grid))


def test_bad_channel_dim_rejected():
    with pytest.raises(ValueError, match="channel_dim must be 0"):
        SpectralConv(1, 1, 4)(torch.randn(1, 1, 16), channel_dim=2)


def test_bad_modes_rejected():
    with pytest.raises(ValueError, match="modes"):
        SpectralConv(1, 1, (4, 0))
    with pytest.raises(ValueError, match="one per grid dimension"):
        SpectralConv(1, 1, (4, 4, 4), n_dims=2)


def test_transforms_agree_in_float32():
    torch.manual_seed(4)
    dft, fft = SpectralConv(4, 4, (6, 5), transform="dft"), SpectralConv(4, 4, (6, 5), transform="fft")
    fft.load_state_dict(dft.state_dict())
    x = torch.randn(2, 4, 85, 43)
    y = dft(x)
    assert y.dtype == torch.float32
    assert (y - fft(x)).abs().max() < 1e-5 * y.abs().max()
    with pytest.raises(ValueError, match="transform must be one of"):
        SpectralConv(1, 1, 4, transform="fast")


def test_half_precision_input_keeps_dtype():
    layer = SpectralConv(2, 2, 4)
    x = torch.randn(1, 2, 24)
    y16 = layer(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    ref = layer(x.bfloat16().float())
    assert (y16.float() - ref).abs().max() < 1e-2 * ref.abs().max(), "only the final cast to bfloat16 differs"


def test_compiled_layer_equals_eager():
    """The path `training.compile: true` takes: the DFT matrices are traced into the graph."""
    torch.manual_seed(0)
    layer = SpectralConv(3, 4, modes=(6,), transform="dft")
    compiled = torch.compile(layer)
    x = torch.randn(2, 3, 32)
    y, y_compiled = layer(x), compiled(x)
    torch.testing.assert_close(y_compiled, y, rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(y.square().sum(), layer.weight)[0]
    g_compiled = torch.autograd.grad(compiled(x).square().sum(), layer.weight)[0]
    torch.testing.assert_close(g_compiled, g, rtol=1e-5, atol=1e-6)


def test_bad_input_and_too_many_modes_are_named_with_the_fix():
    """A 1-D input to a 2-D layer blamed modes on the channel axis; a wrong channel count failed in a
    reshape; the last-dim minimum said 2m points where 2m - 1 fit; padding went unmentioned."""
    from sciml.models import FNO, SpectralConv

    layer = SpectralConv(3, 3, 4, n_dims=2)
    for bad in (torch.randn(2, 3, 16), torch.randn(3, 16, 16), torch.randn(2, 5, 16, 16)):
        with pytest.raises(ValueError, match=r"SpectralConv expects \(batch, channels, \*grid\) with 3 channels and 2 grid"):
            layer(bad)
    assert FNO(1, 1, 1, modes=6)(torch.randn(2, 1, 11)).shape == (2, 1, 11)  # 2m - 1 points are enough
    with pytest.raises(ValueError, match=r"at least 11 points on dim 0, got 10; lower modes .*modes=\(5,\)"):
        FNO(1, 1, 1, modes=6)(torch.randn(2, 1, 10))
    with pytest.raises(ValueError, match=r"at least 15 points on dim 0, got 14 \(4 of them the model's padding\)"):
        FNO(1, 1, 1, modes=8, padding=4)(torch.randn(2, 1, 10))
