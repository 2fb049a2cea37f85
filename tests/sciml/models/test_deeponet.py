"""DeepONet: the build_model contract, the Cartesian-product formula, the POD trunk, validation."""

import pytest
import torch

from sciml.models import DeepONet, build_model


@pytest.mark.parametrize("branch,n_dims,grid", [("mlp", 1, (32,)), ("cnn", 1, (40,)), ("mlp", 2, (9, 8)), ("cnn", 2, (21, 21))])
def test_shapes_and_grad(branch, n_dims, grid):
    torch.manual_seed(0)
    model = build_model("deeponet", in_channels=2, out_channels=3, n_dims=n_dims, sensors=grid, basis=8, width=16,
                        depth=2, branch=branch).double()
    x = torch.randn(4, 2, *grid, dtype=torch.float64)
    y = model(x)
    assert y.shape == (4, 3, *grid) and y.dtype == torch.float64
    y.square().sum().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())


def test_cartesian_product_formula():
    """Output at grid point n equals sum_k branch_k(a) trunk_k(y_n) + bias, evaluated point by point."""
    torch.manual_seed(0)
    model = DeepONet(1, 2, 1, sensors=16, basis=5, width=12, depth=2).double()
    with torch.no_grad():
        model.bias.copy_(torch.tensor([0.3, -0.7]))
    x = torch.randn(3, 1, 16, dtype=torch.float64)
    y = model(x)
    coef = model.branch(x.flatten(1)).view(3, 2, 5)
    for n in (0, 7, 15):
        t = model.trunk(torch.tensor([[n / 16]], dtype=torch.float64)).view(2, 5)
        expected = (coef * t).sum(-1) + model.bias
        assert torch.allclose(y[..., n], expected, rtol=0, atol=1e-13)


def test_sensor_pooling_when_grid_differs():
    torch.manual_seed(0)
    model = DeepONet(1, 1, 1, sensors=16, basis=4, width=8, depth=1).double()
    fine = torch.randn(2, 1, 16, dtype=torch.float64).repeat_interleave(4, dim=-1)  # piecewise constant on 64 points
    coarse = fine[..., ::4]
    # same branch input (every 4th point: the sensor points), trunk evaluated at the finer points
    assert torch.allclose(model(fine)[..., ::4], model(coarse), rtol=0, atol=1e-12)


def _smooth(x):  # band-limited (modes 1 to 5) and periodic on [0, 1)
    return torch.sin(2 * torch.pi * x) + 0.5 * torch.cos(6 * torch.pi * x + 0.3) + 0.3 * torch.sin(10 * torch.pi * x)


def test_a_grid_including_the_sensor_points_gives_the_branch_their_exact_values():
    """Average pooling fed the branch the means of neighbouring points: at 2x the sensors the branch input
    differed from the training grid's by 0.3 of the field's scale here (Burgers: rel. L2 0.0172 -> 0.0206)."""
    torch.manual_seed(0)
    for coordinates, sensors, fine in (("periodic", 16, 32), ("periodic", 16, 48), ("closed", 9, 17), ("closed", 9, 25)):
        model = DeepONet(1, 1, 1, sensors=sensors, basis=4, width=8, depth=1, coordinates=coordinates).double()
        at = lambda n: (torch.arange(n) / (n if coordinates == "periodic" else n - 1)).double()
        a = lambda n: torch.stack([_smooth(at(n)), _smooth(at(n) + 0.2)])[:, None]  # two samples
        assert torch.equal(model.branch_input(a(fine)), a(sensors)), (coordinates, fine)
        k = fine // sensors if coordinates == "periodic" else (fine - 1) // (sensors - 1)
        torch.testing.assert_close(model(a(fine))[..., ::k], model(a(sensors)), rtol=0, atol=1e-12)
    model = DeepONet(1, 1, 2, sensors=(8, 6), basis=4, width=8, depth=1).double()
    x = torch.randn(3, 1, 16, 18, dtype=torch.float64)
    assert torch.equal(model.branch_input(x), x[..., ::2, ::3])


def test_a_grid_without_the_sensor_points_interpolates_the_branch_input_and_warns():
    """Pooling a grid that misses the sensor points fed the branch neighbours' means (errors of 0.18 to 0.35
    here, the field being O(1)); now the values at the sensors, to interpolation accuracy."""
    torch.manual_seed(0)
    model = DeepONet(1, 1, 1, sensors=32, basis=4, width=8, depth=1).double()
    want = _smooth(torch.arange(32).double() / 32)
    for n in (48, 20, 33):  # finer, coarser, off by one: all hold modes up to 5 exactly
        with pytest.warns(UserWarning, match=r"grid \(%d,\) does not include the sensor points \(32,\).*trigonometric" % n):
            got = model.branch_input(_smooth(torch.arange(n).double() / n)[None, None])
        assert (got[0, 0] - want).abs().max() < 1e-12, n
    closed = DeepONet(1, 1, 1, sensors=11, basis=4, width=8, depth=1, coordinates="closed").double()
    f = lambda x: torch.exp(x) * torch.sin(3 * x)
    want = f(torch.linspace(0, 1, 11, dtype=torch.float64))
    for n in (30, 7):  # measured 0.0025 and 0.072 (pooled: 0.25 and 0.19)
        with pytest.warns(UserWarning, match="linear interpolation"):
            got = closed.branch_input(f(torch.linspace(0, 1, n, dtype=torch.float64))[None, None])
        assert (got[0, 0] - want).abs().max() < (1 / (n - 1)) ** 2 / 8 * 27, n  # linear's h^2/8 max|f''|, |f''| <= 27


def test_cells_coordinates_put_the_trunk_at_the_cell_centres_a_cells_file_stores():
    """The trunk knew i/n and i/(n-1) only: on a "cells" file (diffusion-sorption) i/n is half a cell off the points
    (i + 1/2)/n, an offset that changes with the resolution."""
    from sciml.data.arrays import unit_coordinates

    torch.manual_seed(0)
    seen = []
    for grid in ((8,), (32,), (8, 4)):
        model = DeepONet(1, 1, len(grid), sensors=(4,) * len(grid), basis=4, width=8, depth=1, coordinates="cells").double()
        model.trunk.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        model(torch.randn(2, 1, *grid, dtype=torch.float64))
        axes = [torch.from_numpy(unit_coordinates(n, "cells")) for n in grid]
        want = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))  # (points, n_dims)
        assert torch.equal(seen[-1], want), grid


def test_cells_sensors_are_the_block_means_the_loader_coarsens_a_cells_file_to(tmp_path):
    """Taking every k-th cell (the periodic rule) gave each sensor a value (k - 1)/2 fine cells off its centre, so a
    model evaluated on the file it was trained on coarsened (data.resolution) saw other inputs than in training.
    The sensor cells now get the means of their blocks: the loader's coarse values, to float32 rounding (each sums
    its block in its own order)."""
    import numpy as np

    from sciml.data import write_dataset
    from sciml.data.loading import load_splits

    a = np.random.default_rng(0).normal(size=(4, 32, 32)) * np.geomspace(1e-3, 1e3, 32)  # rounding shows
    path = write_dataset(tmp_path / "cells.h5", inputs={"a": a}, outputs={"u": a}, spatial_dims=2, grid_kind="cells")
    _, fine, _ = load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2)
    for m in (16, 8, 4):  # blocks of 2, 4 and 8 cells
        _, coarse, _ = load_splits(path, inputs=["a"], outputs=["u"], n_train=2, n_test=2, resolution=m)
        model = DeepONet(1, 1, 2, sensors=m, basis=2, width=4, depth=1, coordinates="cells")
        scale = coarse.x.abs().amax(dim=(0, 1, 2), keepdim=True)  # per column: the geomspace spans 1e6
        torch.testing.assert_close(model.branch_input(fine.x) / scale, coarse.x / scale, rtol=0, atol=1e-6, msg=str(m))
    x = torch.randn(2, 1, 12, dtype=torch.float64)  # 1-d, 3 cells a sensor: the middle cell alone is not the mean
    got = DeepONet(1, 1, 1, sensors=4, basis=2, width=4, depth=1, coordinates="cells").branch_input(x)
    torch.testing.assert_close(got, x.view(2, 1, 4, 3).mean(-1), rtol=0, atol=1e-15)


def test_a_cells_grid_that_does_not_tile_the_sensor_cells_is_interpolated_at_the_centres_and_warned_of():
    """Linear interpolation of the cell values at (i + 1/2)/n onto (j + 1/2)/m, held at the outermost centres: torch's
    own ``interpolate(align_corners=False)``."""
    torch.manual_seed(0)
    model = DeepONet(1, 1, 1, sensors=12, basis=4, width=8, depth=1, coordinates="cells").double()
    for n in (20, 8, 13):  # finer, coarser (sensors beyond the outermost centres), off by one
        x = torch.randn(3, 1, n, dtype=torch.float64)
        with pytest.warns(UserWarning, match=r"grid \(%d,\) does not include the sensor points \(12,\) \(cells coordinates\)"
                                             r".*linear interpolation.*whose cells tile the sensor cells \(e.g. \(12,\) or "
                                             r"\(24,\)\)" % n):
            got = model.branch_input(x)
        want = torch.nn.functional.interpolate(x, size=12, mode="linear", align_corners=False)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_a_checkpoint_saved_before_sampling_keeps_the_pooling_it_was_trained_with():
    torch.manual_seed(0)
    model = DeepONet(1, 1, 1, sensors=16, basis=4, width=8, depth=1).double()
    x = torch.randn(2, 1, 32, dtype=torch.float64)
    legacy = {k: v for k, v in model.state_dict().items() if k != "pooled_sensors"}
    old = DeepONet(1, 1, 1, sensors=16, basis=4, width=8, depth=1).double()
    old.load_state_dict(legacy)
    assert torch.equal(old.branch_input(x), torch.nn.functional.adaptive_avg_pool1d(x, 16))
    assert torch.equal(old(x[..., ::2]), model(x[..., ::2]))  # the sensor grid itself: as before
    new = DeepONet(1, 1, 1, sensors=16, basis=4, width=8, depth=1).double()
    new.load_state_dict(model.state_dict())
    assert torch.equal(new.branch_input(x), x[..., ::2])


def test_pod_trunk_spans_training_outputs():
    torch.manual_seed(0)
    n, p, grid = 30, 4, (12, 10)
    modes = torch.randn(p, 120, dtype=torch.float64)
    outputs = (torch.randn(n, p, dtype=torch.float64) @ modes + torch.randn(120, dtype=torch.float64)).view(n, 1, *grid)
    model = DeepONet(1, 1, 2, sensors=grid, basis=p, width=8, depth=1, trunk="pod").double()
    with pytest.raises(RuntimeError, match="call model.prepare"):
        model(outputs)
    model.prepare(outputs, outputs)
    basis = model.pod_basis[0]  # (p, points), rows orthogonal, scaled by s/sqrt(N)
    gram = basis @ basis.T
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-10)
    centred = outputs.view(n, -1) - model.pod_mean[0]
    coef = centred @ basis.T @ torch.linalg.inv(gram)
    assert (coef @ basis - centred).abs().max() < 1e-10, "rank-p outputs are reproduced exactly by p POD modes"
    assert abs(float(coef.var(dim=0, correction=0).sum()) - p) < 1e-8, "coefficients have unit variance per mode"
    assert model(outputs).shape == (n, 1, *grid)
    with pytest.raises(ValueError, match="training grid only .*model.trunk=mlp"):
        model(torch.randn(1, 1, 6, 5, dtype=torch.float64))
    fresh = DeepONet(1, 1, 2, sensors=grid, basis=p, width=8, depth=1, trunk="pod").double()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, *grid, dtype=torch.float64)
    assert torch.equal(fresh(x), model(x))


def test_pod_needs_enough_samples():
    model = DeepONet(1, 1, 1, sensors=16, basis=10, trunk="pod")  # 16 grid points: only the samples fall short
    with pytest.raises(ValueError, match="lower model.basis or train on more samples"):
        model.prepare(torch.randn(5, 1, 16), torch.randn(5, 1, 16))


def test_pod_basis_must_be_below_the_sample_count_since_the_outputs_are_centred():
    """basis = N passed: the mean-centred outputs have rank <= N - 1, and the last mode had norm 1e-15."""
    torch.manual_seed(0)
    y = torch.randn(32, 1, 64)
    with pytest.raises(ValueError, match=r"basis=32 .* 32 samples have rank at most 31.* basis <= 31; lower model.basis or train on more samples"):
        DeepONet(1, 1, 1, sensors=64, basis=32, trunk="pod").prepare(y, y)
    model = DeepONet(1, 1, 1, sensors=64, basis=31, trunk="pod")
    model.prepare(y, y)
    assert float(model.pod_basis[0, -1].norm()) > 0.1  # a real direction of the data, not rounding


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(branch="rnn"), "branch must be one of"), (dict(trunk="fourier"), "trunk must be one of"),
     (dict(basis=0), "basis"), (dict(sensors=(4, 4)), "sensors"), (dict(coordinates="open"), "coordinates")],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepONet(1, 1, 1, **kwargs)


def test_a_pod_checkpoint_loads_into_a_model_of_another_dtype_and_basis_is_checked_against_the_grid():
    """Loading rebuilt the POD buffers in the checkpoint's dtype: a float32 checkpoint made a float64
    model's forward fail; a basis wider than the grid passed prepare and failed in an einsum."""
    torch.manual_seed(0)
    y = torch.randn(20, 1, 16)
    model = DeepONet(1, 1, 1, trunk="pod", basis=4, sensors=16)
    model.prepare(y, y)
    wide = model.double()
    fresh = DeepONet(1, 1, 1, trunk="pod", basis=4, sensors=16).double()
    fresh.load_state_dict(DeepONet(1, 1, 1, trunk="pod", basis=4, sensors=16).state_dict() | {
        k: v.float() for k, v in wide.state_dict().items()})
    assert fresh.pod_basis.dtype == fresh.pod_mean.dtype == torch.float64
    torch.testing.assert_close(fresh(y.double()), wide(y.double()), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="basis=32 needs at least that many grid points, got 16; lower model.basis"):
        DeepONet(1, 1, 1, trunk="pod", basis=32, sensors=16).prepare(torch.randn(50, 1, 16), torch.randn(50, 1, 16))


def test_a_pod_trunk_refuses_a_transposed_grid_of_as_many_points():
    """Trained on 6x8, it laid its modes onto an 8x6 input (the point count matched): rel. L2 0.21 against 0.08."""
    torch.manual_seed(0)
    y = torch.randn(20, 1, 6, 8)
    model = DeepONet(1, 1, 2, trunk="pod", basis=4, sensors=(6, 8))
    model.prepare(y, y)
    assert model(y[:2]).shape == (2, 1, 6, 8)
    reloaded = DeepONet(1, 1, 2, trunk="pod", basis=4, sensors=(6, 8))
    reloaded.load_state_dict(model.state_dict())
    for m in (model, reloaded):
        with pytest.raises(ValueError, match=r"training grid only \(6x8\), got grid \(8, 6\)"):
            m(y[:2].transpose(2, 3))
    legacy = {k: v for k, v in model.state_dict().items() if k != "pod_grid"}  # a checkpoint from before the check
    old = DeepONet(1, 1, 2, trunk="pod", basis=4, sensors=(6, 8))
    old.load_state_dict(legacy)
    torch.testing.assert_close(old(y[:2]), model(y[:2]), rtol=0, atol=0)
