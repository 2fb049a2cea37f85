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


# ---------------------------------------------------------------- GMRES / BiCGSTAB / dense

from solvers.linear import bicgstab, gmres, solve_dense  # noqa: E402


def nonsym(batch, n, seed=0, shift=3.0):
    """Non-symmetric, well-conditioned: shift * I + a random matrix of spectral radius ~1."""
    g = torch.Generator().manual_seed(seed)
    return shift * torch.eye(n, dtype=DT) + torch.randn(batch, n, n, generator=g, dtype=DT) / n ** 0.5


@pytest.mark.parametrize("solver", [gmres, bicgstab])
def test_krylov_solves_batched_nonsymmetric(solver):
    A = nonsym(5, 40, seed=20)
    x_true = torch.randn(5, 40, generator=torch.Generator().manual_seed(21), dtype=DT)
    sol = solver(mv(A), mv(A)(x_true), rtol=1e-12)
    assert (sol.status == Status.SUCCESS).all()
    assert rel(sol.value, x_true) < 1e-9
    assert (sol.stats["residual_norm"] <= 1e-11 * mv(A)(x_true).norm(dim=1)).all()


def test_gmres_restart_and_precondition():
    # Badly scaled non-symmetric system: row scaling D spanning 3 decades.
    A = nonsym(2, 60, seed=22) * torch.logspace(0, 3, 60, dtype=DT)[:, None]
    b = torch.randn(2, 60, generator=torch.Generator().manual_seed(23), dtype=DT)
    x_ref = torch.linalg.solve(A, b)
    full = gmres(mv(A), b, rtol=1e-10, restart=60)
    assert rel(full.value, x_ref) < 1e-7
    short = gmres(mv(A), b, rtol=1e-10, restart=30, max_steps=3000)
    assert rel(short.value, x_ref) < 1e-7
    # Right preconditioner with the inverse row scaling: A M = (shifted random), few iterations.
    dinv = 1.0 / torch.diagonal(A, dim1=-2, dim2=-1)
    pre = gmres(mv(A), b, rtol=1e-10, restart=60, preconditioner=lambda v: v * dinv)
    assert rel(pre.value, x_ref) < 1e-7
    assert (pre.stats["num_steps"] * 2 < full.stats["num_steps"]).all(), (pre.stats, full.stats)


@pytest.mark.parametrize("solver", [gmres, bicgstab])
def test_krylov_per_sample_status(solver):
    # Sample 1 is a scaled rotation block-diagonal (eigenvalues +-i): no progress for a while.
    A = nonsym(3, 30, seed=24)
    rot = torch.zeros(30, 30, dtype=DT)
    for k in range(0, 30, 2):
        rot[k, k + 1], rot[k + 1, k] = 1.0, -1.0
    A[1] = rot * torch.linspace(1, 1e4, 30, dtype=DT)
    b = torch.randn(3, 30, generator=torch.Generator().manual_seed(25), dtype=DT)
    b[2] = 0
    sol = solver(mv(A), b, rtol=1e-10, max_steps=25, throw=False)
    assert (sol.stats["num_steps"] <= 25).all()
    assert sol.status[0] == Status.SUCCESS and sol.status[2] == Status.SUCCESS
    assert sol.status[1] != Status.SUCCESS
    assert (sol.value[2] == 0).all() and sol.stats["num_steps"][2] == 0
    assert rel(sol.value[0], torch.linalg.solve(A[0], b[0])) < 1e-8


def test_bicgstab_breakdown_reported():
    # rhat^T A rhat = 0 for a skew-symmetric A with rhat = b: the first step breaks down.
    S = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(26), dtype=DT)
    S = S - S.transpose(-1, -2)
    sol = bicgstab(mv(S), torch.ones(1, 6, dtype=DT), throw=False)
    assert sol.status.tolist() == [Status.BREAKDOWN]


def test_dense_paths_and_status():
    A = spd(4, 8, cond=50.0, seed=30)
    x_true = torch.randn(4, 8, generator=torch.Generator().manual_seed(31), dtype=DT)
    b = mv(A)(x_true)
    for method in ("cholesky", "lu", "lstsq"):
        sol = solve_dense(A, b, method=method)
        assert rel(sol.value, x_true) < 1e-12, method
    # ridge: (A + lam I) x = b
    lam = 0.3
    sol = solve_dense(A, b + lam * x_true, method="cholesky", ridge=lam)
    assert rel(sol.value, x_true) < 1e-12
    # multiple right-hand sides
    B = torch.stack([b, 2 * b], dim=-1)
    assert rel(solve_dense(A, B, method="lu").value[..., 1], 2 * x_true) < 1e-12
    # per-sample failures: a non-SPD matrix for Cholesky, an exactly singular one for LU
    bad = A.clone()
    bad[1] = -bad[1]
    bad[2] = 0
    chol = solve_dense(bad, b, method="cholesky", throw=False)
    assert chol.status.tolist() == [Status.SUCCESS, Status.BREAKDOWN, Status.BREAKDOWN, Status.SUCCESS]
    lu = solve_dense(bad, b, method="lu", throw=False)
    assert lu.status.tolist() == [Status.SUCCESS, Status.SUCCESS, Status.BREAKDOWN, Status.SUCCESS]
    with pytest.raises(SolveError, match="BREAKDOWN"):
        solve_dense(bad, b, method="cholesky")
    with pytest.raises(ValueError, match="unknown method 'qr'"):
        solve_dense(A, b, method="qr")


def test_dense_lstsq_overdetermined_ridge_and_min_norm():
    g = torch.Generator().manual_seed(32)
    A = torch.randn(3, 50, 6, generator=g, dtype=DT)
    b = torch.randn(3, 50, generator=g, dtype=DT)
    ref = torch.linalg.solve(A.mT @ A, (A.mT @ b[..., None]))[..., 0]
    assert rel(solve_dense(A, b, method="lstsq").value, ref) < 1e-12
    lam = 2.0
    ref_r = torch.linalg.solve(A.mT @ A + lam * torch.eye(6, dtype=DT), (A.mT @ b[..., None]))[..., 0]
    assert rel(solve_dense(A, b, method="lstsq", ridge=lam).value, ref_r) < 1e-12
    W = A.mT[:, :4]  # (3, 4, 50) underdetermined: minimum-norm solution = pinv(W) c
    c = b[:, :4]
    ref_mn = (torch.linalg.pinv(W) @ c[..., None])[..., 0]
    assert rel(solve_dense(W, c, method="lstsq").value, ref_mn) < 1e-12
    rankdef = A.clone()
    rankdef[0, :, 5] = rankdef[0, :, 4]
    assert solve_dense(rankdef, b, method="lstsq", throw=False).status.tolist() == [Status.BREAKDOWN, 0, 0]
