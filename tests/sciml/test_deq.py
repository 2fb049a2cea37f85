"""DEQ layer: equilibrium reached, implicit gradients equal unrolled ones, cheap backwards behave."""

import pytest
import torch
from torch import nn

from sciml.models.deq import DEQ, DEQNet
from solvers.linear import GMRES
from solvers.nonlinear import Anderson, FixedPointIteration

DT = torch.float64


class Cell(nn.Module):
    def __init__(self, d=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(d, d, generator=g, dtype=DT) * 0.6 / d ** 0.5)
        self.b = nn.Parameter(torch.randn(d, generator=g, dtype=DT) * 0.1)

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x + self.b)


def grads(deq, x):
    deq.zero_grad()
    x = x.clone().requires_grad_()
    z = deq(x)
    ((z ** 2).sum() + z.sum()).backward()
    return [deq.cell.W.grad.clone(), deq.cell.b.grad.clone(), x.grad.clone()]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_deq_reaches_equilibrium_and_implicit_matches_unrolled():
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(1), dtype=DT)
    tight = Anderson(rtol=1e-14, atol=1e-15, max_steps=200)
    implicit = DEQ(Cell(), solver=tight, backward_solve=GMRES(rtol=1e-13, restart=30), on_failure="raise")
    z = implicit(x)
    assert (implicit.cell(z, x) - z).abs().max() < 1e-13
    assert (implicit.last_solution.status == 0).all()
    unrolled = DEQ(Cell(), solver=FixedPointIteration(rtol=1e-14, atol=1e-15, max_steps=400), backward="unrolled",
                   on_failure="raise")
    for a, u in zip(grads(implicit, x), grads(unrolled, x)):
        assert rel(a, u) < 1e-6
    # cheap backwards: approximate, but descent-aligned for this contractive cell
    exact = torch.cat([g.reshape(-1) for g in grads(implicit, x)])
    for kind, kw in (("one_step", {}), ("phantom", {"phantom_steps": 40, "phantom_damping": 1.0})):
        approx = torch.cat([g.reshape(-1) for g in grads(DEQ(Cell(), solver=tight, backward=kind, **kw), x)])
        cos = (approx @ exact / (approx.norm() * exact.norm())).item()
        assert cos > 0.9, (kind, cos)
        if kind == "phantom":
            assert rel(approx, exact) < 1e-8, "40 undamped phantom steps: Neumann series of a ~0.55-contraction"
        else:
            assert rel(approx, exact) > 1e-3, "one step is an approximation"


def test_deq_non_converged_forward_warns():
    deq = DEQ(Cell(), solver=Anderson(max_steps=2, rtol=1e-14, check_every=1))
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(2), dtype=DT)
    with pytest.warns(RuntimeWarning, match="MAX_STEPS"):
        deq(x)
    assert (deq.last_solution.status == 1).all()


@pytest.mark.parametrize("n_dims,grid", [(1, (16,)), (2, (8, 8))])
def test_deqnet_shapes_and_gradients(n_dims, grid):
    torch.manual_seed(0)
    net = DEQNet(in_channels=2, out_channels=3, n_dims=n_dims, width=8, rtol=1e-8, max_steps=60,
                 on_failure="raise").double()
    x = torch.randn(2, 2, *grid, dtype=DT)
    y = net(x)
    assert y.shape == (2, 3, *grid)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.deq.cell.conv.weight.grad.abs().sum() > 0


def test_deq_validation():
    with pytest.raises(ValueError, match="backward='ift' is not valid"):
        DEQ(Cell(), backward="ift")
    with pytest.raises(ValueError, match="n_dims=4"):
        DEQNet(in_channels=1, out_channels=1, n_dims=4)


def test_deq_default_backward_tolerance_follows_the_dtype():
    """The default adjoint GMRES stopped at rtol 1e-5 whatever the dtype: float64 gradients were 3.9e-6 off the
    unrolled ones; with Implicit's rule (1e-10 in float64) they agree to ~1e-10."""
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(3), dtype=DT)
    deq = DEQ(Cell(), solver=Anderson(memory=5, rtol=1e-13, atol=1e-14, max_steps=200), on_failure="raise")
    cell = Cell()

    def unrolled(x):
        z = torch.zeros_like(x)
        for _ in range(300):
            z = cell(z, x)
        return z
    # plain autograd through 300 iterations of the contraction as the reference
    xr = x.clone().requires_grad_()
    z = unrolled(xr)
    ((z ** 2).sum() + z.sum()).backward()
    reference = [cell.W.grad, cell.b.grad, xr.grad]
    for a, r in zip(grads(deq, x), reference):
        assert rel(a, r) < 1e-9, rel(a, r)
    # float32 keeps a tolerance it can reach: no failed solve
    deq32 = DEQ(Cell().float(), on_failure="raise")
    deq32(x.float().requires_grad_()).sum().backward()
    assert (deq32.adjoint.last_backward.status == 0).all()


def test_deq_bad_inputs_name_the_fix():
    """Raw torch errors before: a matmul shape error for z of another shape than x with no z0, a dtype mismatch
    for a float64 input to a float32 cell, a conv channel error for a (2, 1, 16) input to DEQNet(n_dims=2)."""
    class Lift(nn.Module):  # z: 4 features, x: 3
        def __init__(self):
            super().__init__()
            self.W, self.U = nn.Linear(4, 4, bias=False), nn.Linear(3, 4)

        def forward(self, z, x):
            return torch.tanh(0.3 * self.W(z) + self.U(x))
    deq, x = DEQ(Lift()), torch.randn(5, 3)
    with pytest.raises(RuntimeError, match=r"z0 = zeros_like\(x\), shape \(5, 3\); if z does not have x's shape, pass z0"):
        deq(x)
    assert deq(x, z0=torch.zeros(5, 4)).shape == (5, 4)
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model's parameters are torch.float32.*double\(\)"):
        deq(x.double(), z0=torch.zeros(5, 4))
    with pytest.raises(TypeError, match=r"z0 is torch.float64"):
        deq(x, z0=torch.zeros(5, 4, dtype=DT))
    net = DEQNet(in_channels=1, out_channels=1, n_dims=2, width=4)
    with pytest.raises(ValueError, match=r"DEQNet expects input of shape \(batch, 1, \*grid\) with 2 grid dimension\(s\), got \(2, 1, 16\)"):
        net(torch.randn(2, 1, 16))
    with pytest.raises(ValueError, match=r"DEQNet expects input of shape \(batch, 1, \*grid\) with 2 grid dimension\(s\), got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="DEQNet: x is torch.float64"):
        net(torch.randn(2, 1, 8, 8, dtype=DT))
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    for scale in (-3.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="init_scale=.* must be a positive number"):
            DEQNet(in_channels=1, out_channels=1, n_dims=2, init_scale=scale)
