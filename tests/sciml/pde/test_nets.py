"""The PINN MLP's options: modified (gated) layers and random weight factorisation, against their formulas."""

import math

import pytest
import torch

from sciml.pde.nets import MLP, FactorizedLinear

F64 = torch.float64
RWF = {"mean": 1.0, "std": 0.1}


def _points(n=32, d=2):
    return torch.rand(n, d, dtype=F64, generator=torch.Generator().manual_seed(5)) * 2 - 1


def test_factorized_net_starts_as_the_plain_net_of_its_seed_and_learns_each_units_scale():
    plain = MLP(2, 3, width=16, depth=3, seed=7, dtype=F64)
    factorized = MLP(2, 3, width=16, depth=3, seed=7, dtype=F64, weight_factorization=RWF)
    x = _points()
    torch.testing.assert_close(factorized(x), plain(x), rtol=1e-14, atol=1e-14)
    for lin in factorized.layers:
        assert isinstance(lin, FactorizedLinear)
        scale = lin.log_scale.detach().exp()
        assert 1.5 < scale.mean() < 4.0 and scale.std() > 0  # exp(N(1, 0.1²)) ≈ 2.7, one draw per output unit
    factorized(x).square().sum().backward()
    assert all(lin.log_scale.grad.abs().max() > 0 for lin in factorized.layers)


def test_modified_net_gates_every_hidden_layer_by_its_two_encoders():
    net = MLP(2, 1, width=8, depth=3, seed=1, dtype=F64, modified=True)
    x = _points()
    u, v = (torch.tanh(enc(x)) for enc in net.encoders)
    h = x
    for lin in net.layers[:-1]:
        z = torch.tanh(lin(h))
        h = z * u + (1 - z) * v
    torch.testing.assert_close(net(x), net.layers[-1](h), rtol=1e-14, atol=1e-14)
    # the plain layers of a seed do not move when the encoders are added
    plain = MLP(2, 1, width=8, depth=3, seed=1, dtype=F64)
    for a, b in zip(plain.layers, net.layers):
        assert torch.equal(a.weight, b.weight)


def test_building_a_net_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    MLP(3, 2, width=8, depth=2, modified=True, weight_factorization=RWF, fourier_features=4)
    assert torch.equal(torch.rand(4), expected)


@pytest.mark.parametrize("bad", [{"mean": 1.0}, {"mean": 1.0, "std": -0.1}, {"mean": 1.0, "std": 0.1, "scale": 2}])
def test_a_bad_weight_factorization_names_its_keys(bad):
    with pytest.raises(ValueError, match="mean.*std"):
        MLP(2, 1, weight_factorization=bad)


def test_a_periodic_net_cast_to_float64_is_periodic_to_float64_rounding():
    """ω = 2π/P was kept from the float32 build through the cast: periodic only to ~1e-7."""
    net = MLP(2, 1, periodic={0: 3.0}, width=8, depth=2).to(torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    lo, hi = torch.stack([torch.zeros(7, dtype=torch.float64), t], -1), torch.stack([torch.full((7,), 3.0, dtype=torch.float64), t], -1)
    assert (net(lo) - net(hi)).abs().max() < 1e-14
    assert net.omega.dtype == torch.float64 and float(net.omega[0, 0]) == 2 * math.pi / 3
