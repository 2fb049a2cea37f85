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
    # same branch input (the cell averages), trunk evaluated at the finer points
    assert torch.allclose(model(fine)[..., ::4], model(coarse), rtol=0, atol=1e-12)


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
