"""Batched nonlinear solvers against closed forms, per-sample status and equal-path checks."""

import pytest
import torch

from solvers.nonlinear import (Anderson, FixedPointIteration, GaussNewton, LevenbergMarquardt, Newton,
                               anderson, gauss_newton, jacobian, levenberg_marquardt, newton)
from solvers.solution import SolveError, Status

DT = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_jacobian_fwd_loop_match_closed_form():
    A = torch.randn(3, 5, 4, generator=gen(0), dtype=DT)
    x = torch.randn(3, 4, generator=gen(1), dtype=DT)
    fn = lambda x, A: torch.sin((A @ x[..., None])[..., 0])
    exact = torch.cos((A @ x[..., None]))[..., 0][..., None] * A
    for mode in ("fwd", "loop"):
        f, J = jacobian(fn, x, A, mode=mode)
        assert f.shape == (3, 5) and J.shape == (3, 5, 4)
        assert (J - exact).abs().max() < 1e-14, mode
    _, Jc = jacobian(fn, x, A, chunk_size=2)
    assert (Jc - exact).abs().max() < 1e-14
    # a callable jac: J alone (fn evaluated once more), or (f, J) computed together (fn not called)
    calls = []
    counted = lambda x, A: calls.append(1) or fn(x, A)
    f, J = jacobian(counted, x, A, mode=lambda x, A: exact)
    assert len(calls) == 1 and torch.equal(f, fn(x, A)) and torch.equal(J, exact)
    f, J = jacobian(counted, x, A, mode=lambda x, A: (fn(x, A), exact))
    assert len(calls) == 1 and torch.equal(f, fn(x, A)) and torch.equal(J, exact)


def test_newton_batched_roots_and_status():
    # x^2 = theta: sample 0, 1 converge to sqrt(theta); sample 2 (theta = -1) has no real root;
    # sample 3 starts at x = 0 where J = 0 exactly (singular).
    theta = torch.tensor([[2.0], [9.0], [-1.0], [4.0]], dtype=DT)
    x0 = torch.tensor([[1.0], [1.0], [1.0], [0.0]], dtype=DT)
    sol = newton(lambda x, th: x ** 2 - th, x0, theta, max_steps=40, rtol=0.0, atol=1e-14, throw=False)
    assert sol.status[0] == Status.SUCCESS and sol.status[1] == Status.SUCCESS
    assert sol.status[2] != Status.SUCCESS
    assert sol.status[3] == Status.BREAKDOWN
    assert abs(sol.value[0, 0].item() - 2 ** 0.5) < 1e-14 and abs(sol.value[1, 0].item() - 3.0) < 1e-14
    with pytest.raises(SolveError, match="BREAKDOWN for samples \\[(2, )?3\\]"):
        newton(lambda x, th: x ** 2 - th, x0, theta, max_steps=40)


def test_newton_line_search_globalises():
    # arctan(x) = 0 from x0 = 3: the full Newton step diverges (|x| grows); backtracking fixes it.
    x0 = torch.full((2, 1), 3.0, dtype=DT)
    sol = newton(lambda x: torch.atan(x), x0)
    assert (sol.value.abs() < 1e-12).all()
    nols = Newton(max_backtracks=0, max_steps=10)(lambda x: torch.atan(x), x0, throw=False)
    assert (nols.status == Status.LINESEARCH).all()


def test_newton_nonlinear_system_matches_closed_form():
    # F(x) = (x0^2 + x1^2 - r^2, x0 - x1): root (r/sqrt2, r/sqrt2) from the positive quadrant.
    r = torch.tensor([1.0, 2.0, 5.0], dtype=DT)
    F = lambda x, r: torch.stack([x[:, 0] ** 2 + x[:, 1] ** 2 - r ** 2, x[:, 0] - x[:, 1]], dim=1)
    sol = newton(F, torch.tensor([[1.0, 0.5]], dtype=DT).repeat(3, 1), r, rtol=0.0, atol=1e-13)
    exact = (r / 2 ** 0.5)[:, None].expand(3, 2)
    assert (sol.value - exact).abs().max() < 1e-13


def rosenbrock(x):
    return torch.stack([10 * (x[:, 1] - x[:, 0] ** 2), 1 - x[:, 0]], dim=1)


@pytest.mark.parametrize("solver", [levenberg_marquardt, gauss_newton])
def test_least_squares_rosenbrock_zero_residual(solver):
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -1.0], [0.5, 0.5]], dtype=DT)
    sol = solver(rosenbrock, x0)
    assert (sol.status == Status.SUCCESS).all()
    assert (sol.value - 1).abs().max() < 1e-10


T = torch.linspace(0, 1, 60, dtype=DT)


def exp_problem(batch=4, m=60):
    t = T[:m]
    y = 2 * torch.exp(-1.3 * t)[None] + 0.05 * torch.randn(batch, m, generator=gen(2), dtype=DT)
    res = lambda p, y: p[:, 0:1] * torch.exp(-p[:, 1:2] * t) - y
    return res, y


def test_least_squares_nonzero_residual_stationary_and_paths_agree():
    res, y = exp_problem()
    x0 = torch.ones(4, 2, dtype=DT)
    lm = levenberg_marquardt(res, x0, y)
    assert (lm.stats["residual_norm"] > 0.2).all(), "the residual at the optimum is not zero"
    assert (lm.stats["grad_norm"] < 1e-8).all()
    gn = gauss_newton(res, x0, y)
    assert (lm.value - gn.value).abs().max() < 1e-9
    # equal paths: chunked normal equations, scaled damping, loop Jacobian
    analytic = lambda p, y: torch.stack([torch.exp(-p[:, 1:2] * T), -p[:, 0:1] * T * torch.exp(-p[:, 1:2] * T)], 2)
    for kw in ({"normal": "columns"}, {"jac": "fwd"}, {"scaled": True}, {"jac": analytic}):
        other = levenberg_marquardt(res, x0, y, **kw)
        assert (other.value - lm.value).abs().max() < 1e-9, kw


def test_lm_linear_problem_matches_lstsq_and_ridge_rows():
    # r(x) = [A x - b; sqrt(lam) x]: LM must land on the ridge least-squares solution.
    A = torch.randn(8, 40, 6, generator=gen(3), dtype=DT)
    b = torch.randn(8, 40, generator=gen(4), dtype=DT)
    lam = 1e-4
    res = lambda x, A, b: torch.cat([(A @ x[..., None])[..., 0] - b, lam ** 0.5 * x], dim=1)
    sol = levenberg_marquardt(res, torch.zeros(8, 6, dtype=DT), A, b)
    assert (sol.status == Status.SUCCESS).all()
    ref = torch.linalg.solve(A.mT @ A + lam * torch.eye(6, dtype=DT), A.mT @ b[..., None])[..., 0]
    assert (sol.value - ref).abs().max() < 1e-12
    assert (sol.stats["grad_norm"] < 1e-12).all()


def test_lm_status_max_steps_and_nonfinite():
    res, y = exp_problem(batch=3)
    y = y.clone()
    y[1, 5] = float("nan")
    sol = LevenbergMarquardt(max_steps=2)(res, torch.ones(3, 2, dtype=DT), y, throw=False)
    assert sol.status.tolist() == [Status.MAX_STEPS, Status.NONFINITE, Status.MAX_STEPS]


def test_gauss_newton_rank_deficient_breakdown_lm_copes():
    # r depends on x0 + x1 only: J^T J singular.  GN must say so; LM's damping still converges.
    res = lambda x: torch.stack([x[:, 0] + x[:, 1] - 1, 2 * (x[:, 0] + x[:, 1]) - 2.5], dim=1)
    x0 = torch.zeros(2, 2, dtype=DT)
    assert (gauss_newton(res, x0, throw=False).status == Status.BREAKDOWN).all()
    lm = levenberg_marquardt(res, x0)
    assert ((lm.value.sum(1) - 1.2).abs() < 1e-9).all()  # argmin of (s-1)^2 + (2s-2.5)^2 is s = 1.2


def test_a_solve_stops_at_the_step_that_converges_without_linearising_again():
    """The convergence test runs on the accepted step's own values: a linear problem is one Newton
    step, and two Gauss-Newton / LM steps (the second confirms a negligible step); before, each took
    one more step, a whole Jacobian, to notice."""
    A = torch.randn(3, 4, 4, generator=gen(0), dtype=DT) + 4 * torch.eye(4, dtype=DT)
    b = torch.randn(3, 4, generator=gen(1), dtype=DT)
    F = lambda x: (A @ x[..., None])[..., 0] - b
    jacobians = []

    def counted(x):
        jacobians.append(1)
        return A
    sol = Newton(jac=counted)(F, torch.zeros(3, 4, dtype=DT))
    assert (sol.status == Status.SUCCESS).all() and (sol.stats["num_steps"] == 1).all() and len(jacobians) == 1
    assert torch.allclose(sol.value, torch.linalg.solve(A, b), rtol=0, atol=1e-12)
    for solver in (GaussNewton(), LevenbergMarquardt(tau=1e-12)):  # damping ~0: a Gauss-Newton step
        sol = solver(F, torch.zeros(3, 4, dtype=DT))
        assert (sol.status == Status.SUCCESS).all() and (sol.stats["num_steps"] == 2).all(), (solver, sol.stats)
        assert torch.allclose(sol.value, torch.linalg.solve(A, b), rtol=0, atol=1e-10)


def test_fixed_point_and_anderson_match_closed_form():
    # x = A x + b, spectral radius 0.95: x* = (I - A)^{-1} b.  Anderson with memory n is a Krylov
    # method here (GMRES-like): it needs far fewer steps than Picard's ~log(1e-11)/log(0.95).
    n = 30
    q, _ = torch.linalg.qr(torch.randn(2, n, n, generator=gen(5), dtype=DT))
    A = q @ torch.diag_embed(torch.linspace(-0.95, 0.95, n, dtype=DT).expand(2, n)) @ q.mT
    b = torch.randn(2, n, generator=gen(6), dtype=DT)
    T = lambda x, A, b: (A @ x[..., None])[..., 0] + b
    exact = torch.linalg.solve(torch.eye(n, dtype=DT) - A, b)
    pic = FixedPointIteration(rtol=1e-11, max_steps=2000)(T, torch.zeros(2, n, dtype=DT), A, b)
    aa = anderson(T, torch.zeros(2, n, dtype=DT), A, b, memory=30, rtol=1e-11)
    for sol in (pic, aa):
        assert (sol.status == Status.SUCCESS).all()
        assert ((sol.value - exact).norm(dim=1) / exact.norm(dim=1)).max() < 1e-9
    assert (aa.stats["num_steps"] * 5 < pic.stats["num_steps"]).all(), (aa.stats, pic.stats)


def test_anderson_nonlinear_multidim_and_status():
    W = torch.randn(3, 24, 24, generator=gen(7), dtype=DT) * 0.8 / 24 ** 0.5
    u = torch.randn(3, 4, 6, generator=gen(8), dtype=DT)
    T = lambda z, W, u: torch.tanh((W @ z.reshape(3, 24, 1)).reshape(3, 4, 6) + u)
    sol = anderson(T, torch.zeros(3, 4, 6, dtype=DT), W, u, rtol=1e-12)
    assert ((T(sol.value, W, u) - sol.value).abs().max() < 1e-11)
    short = Anderson(max_steps=3, check_every=1)(T, torch.zeros(3, 4, 6, dtype=DT), W, u, throw=False)
    assert (short.status == Status.MAX_STEPS).all()


def test_validation_messages():
    with pytest.raises(ValueError, match="x0 must be a floating tensor"):
        newton(lambda x: x, torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="a root problem must be square"):
        newton(lambda x: torch.cat([x, x], 1), torch.ones(2, 3, dtype=DT))
    with pytest.raises(ValueError, match="normal='qr' is not valid"):
        LevenbergMarquardt(normal="qr")
    with pytest.raises(ValueError, match="jac='bwd' is not valid"):
        LevenbergMarquardt(jac="bwd")
    with pytest.raises(ValueError, match="memory=0"):
        Anderson(memory=0)
    with pytest.raises(ValueError, match="max_steps=0"):
        GaussNewton(max_steps=0)


def test_default_tolerances_follow_the_dtype_so_easy_float32_solves_converge():
    """float64's defaults (rtol 1e-10, atol 1e-12) cannot be met by float32 iterates, which stall
    near 1e-7: Newton on x² = 2 and an exponential fit by LM ended MAX_STEPS, and `root` raised."""
    from solvers.implicit import least_squares, root
    from solvers.nonlinear import FixedPointIteration, LevenbergMarquardt, Newton
    from solvers.solution import Status

    c = torch.tensor([[2.0], [3.0], [5.0], [7.0]], requires_grad=True)
    x = root(lambda x, c: x * x - c, torch.ones(4, 1), c).value
    torch.testing.assert_close(x, c.detach().sqrt())
    (x.sum()).backward()
    torch.testing.assert_close(c.grad, 0.5 / c.detach().sqrt())  # dx/dc = 1 / (2 x)
    gen = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 2, 20)
    y = 2 * torch.exp(-1.3 * t) + 0.01 * torch.randn(4, 20, generator=gen)
    r = lambda p, y: p[:, :1] * torch.exp(-p[:, 1:] * t) - y
    s32 = LevenbergMarquardt()(r, torch.ones(4, 2), y, throw=False)
    s64 = LevenbergMarquardt()(r, torch.ones(4, 2, dtype=torch.float64), y.double(), throw=False)
    assert (s32.status == Status.SUCCESS).all() and (s64.status == Status.SUCCESS).all()
    assert (s32.value.double() - s64.value).abs().max() < 1e-5
    least_squares(r, torch.ones(4, 2), y)  # raised SolveError
    assert Newton().tolerances(torch.zeros(1, dtype=torch.float64)) == (1e-10, 1e-12)  # float64 as before
    assert FixedPointIteration().tolerances(torch.zeros(1, dtype=torch.float64)) == (1e-8, 1e-12)
    assert Newton(rtol=1e-3, atol=0.0).tolerances(torch.zeros(1)) == (1e-3, 0.0)  # given ones are kept
