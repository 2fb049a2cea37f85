"""FNO family: shapes, the build_model contract, validation, padding, variants, the neuralop adapter."""

import subprocess
import sys

import pytest
import torch

from sciml.models import MODELS, FNO, FNO2dTime, FNO3dSpaceTime, build_model, count_parameters



@pytest.mark.parametrize(
    "n_dims,grid,modes", [(1, (64,), 16), (1, (85,), 16), (2, (21, 21), (5, 5)), (2, (16, 17), 4), (3, (8, 9, 10), 2)]
)
def test_shapes_and_grad(n_dims, grid, modes):
    torch.manual_seed(0)
    model = build_model("fno", in_channels=2, out_channels=3, n_dims=n_dims, modes=modes, width=8).double()
    x = torch.randn(2, 2, *grid, dtype=torch.float64)
    y = model(x)
    assert y.shape == (2, 3, *grid) and y.dtype == torch.float64
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_paper_burgers_architecture():
    model = build_model("fno", in_channels=1, out_channels=1, n_dims=1, modes=16, width=64, n_layers=4)
    spectral = sum(m.weight.numel() for m in model.spectral)
    assert spectral == 4 * 16 * 64 * 64 * 2, "4 layers x 16 complex 64x64 matrices"
    assert count_parameters(model) == 558017


def test_batch_independence_and_determinism():
    torch.manual_seed(0)
    model = FNO(1, 1, 2, modes=4, width=8).double()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    y = model(x)
    assert torch.allclose(model(x[1:2]), y[1:2], rtol=0, atol=1e-13)
    assert torch.equal(model(x), y)


def test_grid_embedding_kinds():
    torch.manual_seed(0)
    base = dict(modes=4, width=8)
    periodic = FNO(1, 1, 1, **base)
    torch.manual_seed(0)
    closed = FNO(1, 1, 1, grid_embedding="closed", **base)
    x = torch.randn(1, 1, 16)
    assert not torch.allclose(periodic(x), closed(x)), "coordinates differ (i/n vs i/(n-1))"
    none = FNO(1, 1, 1, grid_embedding=False, **base)
    assert none.lifting.layers[0].weight.shape[1] == 1 and periodic.lifting.layers[0].weight.shape[1] == 2


def test_a_cells_embedding_is_the_cell_centres_a_cells_file_stores():
    """grid_embedding knew i/n and i/(n-1) only: on a "cells" file, half a cell off its points (i + 1/2)/n."""
    from sciml.data.arrays import unit_coordinates

    model = FNO(1, 1, 2, modes=2, width=4, grid_embedding="cells").double()
    seen = []
    model.lifting.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(torch.zeros(1, 1, 8, 6, dtype=torch.float64))
    x, y = (torch.from_numpy(unit_coordinates(n, "cells")) for n in (8, 6))
    assert torch.equal(seen[0][0, 1], x[:, None].expand(8, 6)) and torch.equal(seen[0][0, 2], y[None].expand(8, 6))
    assert model.pad_sizes((64,)) == (0,) and FNO(1, 1, 1, padding=0.25, grid_embedding="cells").pad_sizes((64,)) == (16,)


def test_an_embedding_kind_per_axis_puts_cell_centred_x_beside_times_from_0_to_t():
    """One kind served every axis: a space-time grid of cells in x and saved times from t = 0 to T (diffusion-
    sorption's) had no setting that put both where the file stores them."""
    from sciml.data.arrays import unit_coordinates

    model = FNO(1, 1, 2, modes=2, width=4, grid_embedding=["cells", "closed"], padding=0.25).double()
    seen = []
    model.lifting.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(torch.zeros(1, 1, 8, 6, dtype=torch.float64))
    x, t = torch.from_numpy(unit_coordinates(8, "cells")), torch.from_numpy(unit_coordinates(6, "nodes"))
    assert torch.equal(seen[0][0, 1], x[:, None].expand(8, 6)) and torch.equal(seen[0][0, 2], t[None].expand(8, 6))
    assert model.pad_sizes((64, 101)) == (16, 24)  # a quarter of 64 cells; of the 100 steps between 101 times
    assert FNO(1, 1, 2, grid_embedding=["closed", "closed"]).grid_embedding == "closed"  # one kind repeated is that kind


def test_padding_is_cropped_and_changes_result():
    torch.manual_seed(0)
    plain = FNO(1, 1, 2, modes=4, width=8).double()
    padded = FNO(1, 1, 2, modes=4, width=8, padding=(5, 0.25)).double()
    padded.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 17, 16, dtype=torch.float64)
    assert padded.pad_sizes((17, 16)) == (5, 4)
    y = padded(x)
    assert y.shape == (2, 1, 17, 16)
    assert not torch.allclose(y, plain(x)), "padding must change the (non-periodic) convolution"


def test_fractional_padding_keeps_one_period_at_every_resolution():
    # periodic nodes (spacing 1/n): f of the points; closed nodes (spacing 1/(n-1)): the padded grid
    # spans (1 + f) domain lengths, so Darcy's 85 (9 points, the FNO script's) and 421 see one period
    periodic = FNO(1, 1, 2, modes=4, width=8, padding=0.25)
    assert periodic.pad_sizes((16, 64)) == (4, 16)
    closed = FNO(1, 1, 2, modes=4, width=8, padding=0.11905, grid_embedding="closed")
    (p85, p421) = closed.pad_sizes((85, 421))
    assert (p85, p421) == (9, 49) and (85 + p85) / 84 == (421 + p421) / 420
    # a fixed fraction of the points would give 45 at 421: period 466/420 instead of 470/420
    assert FNO(1, 1, 1, padding=(7, ), grid_embedding="closed").pad_sizes((85,)) == (7,)  # points stay points


def test_fno_evaluates_at_finer_grid():
    torch.manual_seed(0)
    model = FNO(1, 1, 1, modes=8, width=8).double()
    s = 64
    xs = torch.linspace(0, 1, 2 * s + 1, dtype=torch.float64)[:-1]
    u = torch.sin(2 * torch.pi * xs) + 0.5 * torch.cos(6 * torch.pi * xs)
    y_coarse = model(u[::2][None, None])
    y_fine = model(u[None, None])
    assert y_fine.shape == (1, 1, 2 * s)
    # pointwise nonlinearities alias a little between grids; the nodes shared by both grids agree closely
    rel = (y_fine[..., ::2] - y_coarse).norm() / y_coarse.norm()
    assert rel < 1e-3, f"relative difference at shared nodes {rel:.2e}"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(modes=0), "modes"),
        (dict(modes=(4, 4)), "one per grid dimension"),
        (dict(width=0), "width"),
        (dict(n_layers=1.5), "n_layers"),
        (dict(activation="swish"), "activation must be one of"),
        (dict(padding=-1), "padding"),
        (dict(padding=1.5), "padding"),
        (dict(grid_embedding="yes"), "grid_embedding"),
        (dict(grid_embedding=["cells", "closed"]), r"a list of 1 of those kinds"),  # one per grid dim
        (dict(grid_embedding=["nodes"]), r"'periodic', 'closed', 'cells'"),  # the file's word, not the model's
        (dict(lifting_channels=-2), "lifting_channels"),
        (dict(pointwise_kernel="cudnn"), "kernel must be one of"),
    ],
)
def test_invalid_options_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FNO(1, 1, 1, **kwargs)


@pytest.mark.parametrize("n_dims,grid,options", [
    (1, (40,), {}),
    (2, (12, 13), {}),
    (2, (12, 13), dict(padding=(3, 0.25), grid_embedding="closed", out_channels=3)),
    (1, (40,), dict(grid_embedding=False, lifting_channels=0, projection_channels=0)),
])
def test_pointwise_kernels_agree(n_dims, grid, options, device):
    # the same weights (same seed, same shapes) through batched GEMMs, conv1d (cuDNN on CUDA) and
    # the channel-major 2D GEMMs ("mm"), with padding, a closed grid and several output channels too
    options = dict(options)
    out_channels = options.pop("out_channels", 1)
    x = torch.randn(3, 2, *grid, dtype=torch.float64, device=device)
    outs = []
    for kernel in ("gemm", "conv", "mm"):
        torch.manual_seed(0)
        model = FNO(2, out_channels, n_dims, modes=4, width=6, pointwise_kernel=kernel, **options).double().to(device)
        y = model(x)
        assert y.shape == (3, out_channels, *grid) and y.is_contiguous()
        (y.square() * torch.arange(1, y.numel() + 1, device=device).view_as(y)).sum().backward()
        outs.append((y.detach(), {k: p.grad for k, p in model.named_parameters()}))
    for out, grads in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], rtol=1e-12, atol=1e-12)
        for k, g in outs[0][1].items():
            torch.testing.assert_close(grads[k], g, rtol=1e-10, atol=1e-12, msg=k)


@pytest.mark.parametrize("cls", [FNO2dTime, FNO3dSpaceTime])
def test_time_variants_agree_across_kernels(cls, device):
    x = torch.randn(2, 4, 12, 12, dtype=torch.float64, device=device)
    outs = []
    for kernel in ("gemm", "mm"):
        torch.manual_seed(0)
        model = cls(4, 6, modes=3, width=5, pointwise_kernel=kernel).double().to(device)
        outs.append(model(x))
    assert outs[0].shape == (2, 6, 12, 12)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-12, atol=1e-12)


def test_unknown_option_rejected():
    with pytest.raises(TypeError, match="hidden_channels"):
        build_model("fno", in_channels=1, out_channels=1, n_dims=1, hidden_channels=3)


def test_wrong_input_shape_message():
    model = FNO(2, 1, 2, modes=4, width=8)
    with pytest.raises(ValueError, match=r"\(batch, 2, \*grid\) with 2 grid"):
        model(torch.randn(1, 1, 16, 16))


def test_autoregressive_rollout_feeds_predictions_back():
    torch.manual_seed(0)
    model = build_model("fno2d_time", in_channels=4, out_channels=3, n_dims=2, modes=3, width=6).double()
    assert isinstance(model, FNO2dTime) and model.history == 4 and model.n_steps == 3 and model.modes == (3, 3)
    x = torch.randn(2, 4, 12, 12, dtype=torch.float64)
    out = model.rollout(x, 3)
    assert out.shape == (2, 3, 1, 12, 12)
    y1 = model.step(x)
    y2 = model.step(torch.cat([x[:, 1:], y1], 1))
    y3 = model.step(torch.cat([x[:, 2:], y1, y2], 1))
    assert torch.equal(out[:, 0], y1) and torch.equal(out[:, 1], y2) and torch.equal(out[:, 2], y3)
    assert torch.equal(model(x), torch.cat([y1, y2, y3], 1)), "forward = the rollout, steps as channels"
    with pytest.raises(ValueError, match="multiple of state_channels=2"):
        FNO2dTime(10, 3, 2, state_channels=2)


def test_space_time_variant_defaults():
    torch.manual_seed(0)
    model = build_model("fno3d", in_channels=10, out_channels=12, n_dims=2)
    assert isinstance(model, FNO3dSpaceTime)
    assert model.modes == (8, 8, 8) and model.width == 20 and model.padding == (0, 0, 6) and model.n_steps == 12
    x = torch.randn(1, 10, 16, 16)
    y = model(x)
    assert y.shape == (1, 12, 16, 16)
    # the same as the 3D FNO on the input repeated along t, time moved to channels
    y3 = FNO.forward(model, FNO3dSpaceTime.expand_time(x, 12))
    assert torch.equal(y, y3[:, 0].permute(0, 3, 1, 2))


def test_registry_names_all_build():
    shapes = {"fno": (1, 1, 1), "fno2d_time": (10, 1, 2), "fno3d": (10, 40, 2)}
    for name in MODELS.names():
        if name.startswith("neuralop."):
            continue
        cin, cout, d = shapes.get(name, (1, 1, 1))
        model = build_model(name, in_channels=cin, out_channels=cout, n_dims=d)
        assert isinstance(model, torch.nn.Module), name


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="did you mean 'fno'"):
        build_model("fnoo", in_channels=1, out_channels=1, n_dims=1)


def test_neuralop_adapter():
    model = build_model("neuralop.FNO", in_channels=1, out_channels=2, n_dims=2, n_modes=[8, 7], hidden_channels=8)
    assert model(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="n_dims=1"):
        build_model("neuralop.FNO", in_channels=1, out_channels=1, n_dims=1, n_modes=(8, 8), hidden_channels=8)
    with pytest.raises(ValueError, match="no model 'NotAModel'"):
        build_model("neuralop.NotAModel", in_channels=1, out_channels=1, n_dims=1)


def test_import_is_lazy_and_quiet():
    code = "import sys, sciml.models; assert 'neuralop' not in sys.modules and 'tensorly' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize("kernel", ["gemm", "conv", "mm"])
def test_bf16_autocast_keeps_spectral_layers_in_float32(device, kernel):
    torch.manual_seed(0)
    model = FNO(1, 1, 2, modes=4, width=8, pointwise_kernel=kernel).to(device)
    x = torch.randn(2, 1, 16, 16, device=device)
    ref = model(x)
    with torch.autocast(device, dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == ref.shape
    rel = float(((y.float() - ref).norm() / ref.norm()).detach())
    # measured (seed 0, CPU): gemm 1.2e-3, conv 1.9e-3, mm 2.0e-3, all from the bf16 pointwise layers; with the
    # spectral layers in bf16 as well it measured 0.7e-3 to 2.8e-3, so only the layer's own test below tells
    assert rel < 4e-3, f"bf16 pointwise layers, fp32 spectral layers: relative deviation {rel:.1e}"


@pytest.mark.parametrize("transform", ["dft", "fft"])
@pytest.mark.parametrize("n_dims", [1, 2])
@pytest.mark.parametrize("channel_dim", [1, 0])
def test_bf16_autocast_leaves_the_spectral_layer_exactly_in_float32(device, transform, n_dims, channel_dim):
    """The FNO-level bound above is dominated by the pointwise layers: a spectral layer rounded to bf16 passed it."""
    import copy

    from sciml.models.spectral import SpectralConv

    torch.manual_seed(0)
    layer = SpectralConv(8, 8, 4, n_dims=n_dims, transform=transform).to(device)
    x = torch.randn(2, 8, *(16,) * n_dims, device=device)
    x = x if channel_dim == 1 else x.transpose(0, 1)
    with torch.no_grad():
        ref = layer(x, channel_dim)
        exact = copy.deepcopy(layer).double()(x.double(), channel_dim)
        # float32 arithmetic: measured <= 9.2e-8 (CPU) against float64; one bf16 rounding anywhere gives >= 1.6e-3
        assert ((ref.double() - exact).norm() / exact.norm()).item() < 2e-7
        half_ref = layer(x.bfloat16().float(), channel_dim).bfloat16()  # fp32 on bf16 inputs, rounded once at the end
        with torch.autocast(device, dtype=torch.bfloat16):
            y = layer(x, channel_dim)
            half = layer(x.bfloat16(), channel_dim)  # what it gets from a bf16 pointwise layer inside the FNO
    assert y.dtype == torch.float32 and torch.equal(y, ref)  # measured: 0.0 difference, dft and fft
    assert half.dtype == torch.bfloat16 and torch.equal(half, half_ref)


def test_neuralop_n_modes_as_one_number_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_modes takes one count per grid dim .* n_modes: \[16, 16\]"):
        build_model("neuralop.FNO", in_channels=1, out_channels=1, n_dims=2, n_modes=16)


@pytest.mark.parametrize("name, kwargs, grid", [("fno", {"modes": 4, "width": 8}, (16,)),
                                                ("fno3d", {"modes": 2, "width": 4}, (8, 8)),
                                                ("deeponet", {"sensors": 8}, (16,))])
def test_an_input_of_another_dtype_names_the_conversion_and_autocast_still_runs(name, kwargs, grid):
    """A float64 batch to a float32 model failed inside a matmul with 'expected scalar type Float but found Double'."""
    from sciml.models import build_model

    n_dims = 2 if name == "fno3d" else len(grid)
    model = build_model(name, in_channels=1, out_channels=1, n_dims=n_dims, **kwargs)
    x = torch.rand(2, 1, *grid)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's parameters are torch.float32; convert one of "
                                        r"them: model.to\(torch.float64\) \(e.g. model.double\(\)\) or x.to\(torch.float32\)"):
        model(x.double())
    torch.testing.assert_close(model.double()(x.double()), model.float()(x).double(), rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).shape[0] == 2
