"""Shared by the hard-constraint tests."""

import pytest
import torch

from sciml.constraints import HardConstraint
from solvers.implicit import Implicit

DT = torch.float64


@pytest.fixture
def check_layer_gradients():
    return _check_layer_gradients


def _check_layer_gradients(layer: HardConstraint, basis: torch.Tensor, u0: torch.Tensor, g: torch.Generator) -> None:
    """The layer's implicit gradients against central differences along random directions, and apart from the
    Gauss-Newton backward's (the residual stays large at the solution: J^T J alone is ~30 % off)."""
    weights = torch.randn(1, *basis.shape[2:], generator=g, dtype=DT)
    f = lambda b, v: (layer(b, {"u0": v}) * weights).sum()
    full, full_u0 = torch.autograd.grad(f(basis, u0), (basis, u0))
    for _ in range(2):
        db, dv = torch.randn(basis.shape, generator=g, dtype=DT), torch.randn(u0.shape, generator=g, dtype=DT)
        # step 1e-7: the directions' grid-scale (Nyquist) content meets u_xx's k_N^2, so the O(step^2)
        # truncation is 1.4e-6 relative at 1e-6 (it falls as step^2: 9e-9 at 1e-7, the gradient is exact)
        with torch.no_grad():
            fd = (f(basis + 1e-7 * db, u0 + 1e-7 * dv) - f(basis - 1e-7 * db, u0 - 1e-7 * dv)) / 2e-7
        predicted = (full * db).sum() + (full_u0 * dv).sum()
        assert abs(fd - predicted) < 1e-6 * abs(predicted), (float(fd), float(predicted))
    layer.adjoint = Implicit("lu", hessian="gauss-newton")
    gauss_newton = torch.autograd.grad(f(basis, u0), basis)[0]
    assert (gauss_newton - full).norm() > 0.1 * full.norm()
