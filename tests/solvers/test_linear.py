"""Batched linear solvers: b = A x checks, per-sample status, preconditioning, validation."""

import pytest
import torch

from solvers.linear import cg
from solvers.solution import SolveError, Status

DT = torch.float64


def spd(batch, n, cond=100.0, seed=0):
    """Random SPD matrices with eigenvalues log-spaced in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(batch, n, n, generator=g, dtype=DT))
    lam = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=DT)
    return q @ torch.diag_embed(lam.expand(batch, n)) @ q.transpose(-1, -2)


def mv(A):
    return lambda v: (A @ v[..., None])[..., 0]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_cg_solves_batched_spd():
    A = spd(6, 30)
    x_true = torch.randn(6, 30, generator=torch.Generator().manual_seed(1), dtype=DT)
    sol = cg(mv(A), mv(A)(x_true), rtol=1e-12)
    assert sol.status.dtype == torch.int64 and sol.status.shape == (6,)
    assert (sol.status == Status.SUCCESS).all()
    assert rel(sol.value, x_true) < 1e-9
    assert sol.stats["num_steps"].shape == (6,) and sol.stats["residual_norm"].shape == (6,)
    assert (sol.stats["residual_norm"] <= 1e-12 * mv(A)(x_true).norm(dim=1) * 10).all()


def test_cg_multidim_shape_reduces_over_all_nonbatch_dims():
    # A acts on (4, 5) fields as a 20x20 SPD matrix; inner products must span both dims.
    A = spd(3, 20, cond=10.0, seed=2)
    op = lambda v: mv(A)(v.reshape(3, 20)).reshape(3, 4, 5)
    x_true = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(3), dtype=DT)
    sol = cg(op, op(x_true), rtol=1e-12)
    assert rel(sol.value, x_true) < 1e-9


def test_cg_per_sample_status_and_masking():
    # Sample 0: trivial (b = 0) -> success in 0 steps and value exactly 0.  Sample 1: well
    # conditioned -> converges.  Sample 2: cond 1e8 cannot converge in 20 steps -> MAX_STEPS.
    A = torch.stack([spd(1, 40, 10.0, 4)[0], spd(1, 40, 10.0, 5)[0], spd(1, 40, 1e8, 6)[0]])
    b = torch.randn(3, 40, generator=torch.Generator().manual_seed(7), dtype=DT)
    b[0] = 0
    sol = cg(mv(A), b, rtol=1e-3, max_steps=20, check_every=3, throw=False)
    assert sol.status.tolist() == [Status.SUCCESS, Status.SUCCESS, Status.MAX_STEPS]
    assert sol.stats["num_steps"][0] == 0 and sol.stats["num_steps"][2] == 20
    assert (sol.value[0] == 0).all()
    # A converged sample stops changing: 9 more steps of the batch leave its bits unchanged.
    k = int(sol.stats["num_steps"][1])
    early = cg(mv(A), b, rtol=1e-3, max_steps=k, throw=False)
    assert early.status[1] == Status.SUCCESS and torch.equal(early.value[1], sol.value[1])
    alone = cg(mv(A[1:2]), b[1:2], rtol=1e-3, max_steps=20, check_every=3)
    assert torch.allclose(alone.value[0], sol.value[1], rtol=1e-12, atol=0)
    assert sol.stats["num_steps"][1] == alone.stats["num_steps"][0]
    with pytest.raises(SolveError, match="MAX_STEPS for samples \\[2\\]") as err:
        cg(mv(A), b, rtol=1e-3, max_steps=20)
    assert err.value.solution.status[2] == Status.MAX_STEPS


def test_cg_jacobi_preconditioner_reduces_iterations():
    # Badly scaled SPD: D S D with D spanning 4 decades; Jacobi undoes the scaling.
    S = spd(2, 50, cond=5.0, seed=8)
    d = torch.logspace(0, 2, 50, dtype=DT)
    A = d[:, None] * S * d[None, :]
    b = torch.randn(2, 50, generator=torch.Generator().manual_seed(9), dtype=DT)
    diag = torch.diagonal(A, dim1=-2, dim2=-1)
    plain = cg(mv(A), b, rtol=1e-10, max_steps=2000)
    pre = cg(mv(A), b, rtol=1e-10, preconditioner=lambda v: v / diag)
    assert rel(pre.value, plain.value) < 1e-7
    assert (pre.stats["num_steps"] * 3 < plain.stats["num_steps"]).all(), (pre.stats, plain.stats)


def test_cg_reports_breakdown_on_indefinite_and_nonfinite():
    A = torch.stack([spd(1, 10, 10.0, 10)[0], -torch.eye(10, dtype=DT), torch.eye(10, dtype=DT)])
    b = torch.ones(3, 10, dtype=DT)
    b[2, 0] = float("nan")
    sol = cg(mv(A), b, throw=False)
    assert sol.status.tolist() == [Status.SUCCESS, Status.BREAKDOWN, Status.NONFINITE]


def test_cg_ridge_and_initial_guess():
    A = spd(2, 12, 10.0, 11)
    x_true = torch.randn(2, 12, generator=torch.Generator().manual_seed(12), dtype=DT)
    lam = 0.5
    b = mv(A)(x_true) + lam * x_true
    sol = cg(mv(A), b, ridge=lam, rtol=1e-12)
    assert rel(sol.value, x_true) < 1e-10
    exact = cg(mv(A), b, ridge=lam, x0=x_true, rtol=1e-8)
    assert (exact.stats["num_steps"] == 0).all()


def test_cg_validates_arguments():
    A = spd(1, 4)
    with pytest.raises(ValueError, match="b must be a tensor of shape \\(batch"):
        cg(mv(A), torch.ones(4, dtype=DT))
    with pytest.raises(ValueError, match="rtol=-1"):
        cg(mv(A), torch.ones(1, 4, dtype=DT), rtol=-1)
    with pytest.raises(ValueError, match="matvec mapped"):
        cg(lambda v: v[:, :2], torch.ones(1, 4, dtype=DT))
    with pytest.raises(ValueError, match="x0 has shape"):
        cg(mv(A), torch.ones(1, 4, dtype=DT), x0=torch.ones(1, 3, dtype=DT))
