"""Implicit differentiation: implicit vs unrolled vs central finite differences (float64).

Independent truths: closed forms where they exist, central differences with step
sqrt(eps) * scale around tightly converged forward solves, and unrolled autograd through a
tightly converged solver.  A bisection forward solver has a zero autograd derivative, so a
broken custom rule cannot pass by falling back on autograd.
"""

import math
import warnings

import pytest
import torch

from solvers.implicit import (Implicit, OneStep, Phantom, Unrolled, custom_fixed_point, custom_least_squares,
                              custom_root, fixed_point, least_squares, root)
from solvers.linear import GMRES
from solvers.nonlinear import Anderson, FixedPointIteration, LevenbergMarquardt, Newton
from solvers.solution import SolveError, Status

DT = torch.float64
EPS = torch.finfo(DT).eps
TIGHT_NEWTON = Newton(rtol=0.0, atol=1e-15, max_steps=60)
TIGHT_LM = LevenbergMarquardt(rtol=1e-15, atol=1e-16, max_steps=200)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def directional_fd(loss, params, directions):
    """Central difference of loss(*params) along `directions`, step sqrt(eps) * scale."""
    scale = max(1.0, max(p.abs().max().item() for p in params))
    h = EPS ** 0.5 * scale
    with torch.no_grad():
        plus = loss(*[p + h * d for p, d in zip(params, directions)])
        minus = loss(*[p - h * d for p, d in zip(params, directions)])
    return ((plus - minus) / (2 * h)).item()


def check_fd(loss, params, grads, seeds=(100, 101), tol=1e-6):
    for s in seeds:
        dirs = [torch.randn(p.shape, generator=gen(s + i), dtype=DT) for i, p in enumerate(params)]
        fd = directional_fd(loss, params, dirs)
        an = sum((g * d).sum() for g, d in zip(grads, dirs)).item()
        assert abs(fd - an) <= tol * abs(an), (fd, an, abs(fd - an) / abs(an))


# ---------------------------------------------------------------- scalar problem: x^2 = theta


def bisection(x0, theta):
    """Root of x^2 - theta on [0, max(theta, 1)]; built from comparisons, so d/dtheta by autograd is 0."""
    lo, hi = torch.zeros_like(theta), theta.detach().clamp_min(1.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        above = mid * mid > theta
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return (lo + hi) / 2 + 0.0 * theta  # connected to theta in the graph, with derivative exactly 0


def square(x, theta):
    return x * x - theta


def test_scalar_bisection_has_zero_autograd_derivative_but_correct_implicit_gradient():
    theta = torch.tensor(2.0, dtype=DT, requires_grad=True)
    (plain,) = torch.autograd.grad(bisection(None, theta), theta)
    assert plain.item() == 0.0, "the control: autograd through bisection gives a zero derivative"
    for bs in ("lu", "gmres", "cg"):
        x = custom_root(square, batched=False, backward_solve=bs)(bisection)(torch.tensor(1.0, dtype=DT), theta)
        (g,) = torch.autograd.grad(x, theta)
        assert x.shape == () and abs(x.item() - 2 ** 0.5) < 1e-15
        assert abs(g.item() - 1 / (2 * 2 ** 0.5)) < 1e-15, bs


def test_scalar_implicit_matches_fd_and_unrolled_newton():
    theta = torch.tensor(3.0, dtype=DT, requires_grad=True)
    x0 = torch.tensor(1.0, dtype=DT)
    newton_scalar = lambda x0, th: TIGHT_NEWTON(square, x0.reshape(1, 1), th, throw=False)

    def solve(th, adjoint):
        sol = custom_root(lambda x, t: square(x, t), batched=False, adjoint=adjoint)(
            lambda x0, t: _squeeze(newton_scalar(x0, t)))(x0, th)
        return sol.value

    (gi,) = torch.autograd.grad(solve(theta, Implicit("lu")), theta)
    (gu,) = torch.autograd.grad(solve(theta, Unrolled()), theta)
    fd = directional_fd(lambda t: bisection(None, t), [theta.detach()], [torch.ones((), dtype=DT)])
    exact = 1 / (2 * 3 ** 0.5)
    assert abs(gi.item() - exact) <= 1e-14 and abs(gu.item() - exact) <= 1e-6 * exact
    assert abs(fd - exact) <= 1e-6 * exact


def _squeeze(sol):
    return type(sol)(sol.value.reshape(()), sol.status, sol.stats)


# ---------------------------------------------------------------- batched root: A x + c x^3 = b


def batched_problem():
    n, B = 4, 3
    A = torch.eye(n, dtype=DT) * 3 + torch.randn(B, n, n, generator=gen(1), dtype=DT) * 0.3
    b = torch.randn(B, n, generator=gen(2), dtype=DT)
    c = torch.tensor(0.2, dtype=DT)
    w = torch.randn(B, n, generator=gen(3), dtype=DT)
    return A, b, c, w


def cubic(x, A, b, c):
    return (A @ x[..., None])[..., 0] + c * x ** 3 - b


@pytest.mark.parametrize("adjoint", [Implicit("lu"), Implicit("lu", materialize="vmap"), Implicit("gmres"),
                                     Implicit(GMRES(rtol=1e-12, restart=4)), Implicit("bicgstab")])
def test_batched_root_implicit_matches_unrolled_and_fd(adjoint):
    A, b, c, w = batched_problem()
    params = [p.clone().requires_grad_() for p in (A, b, c)]

    def loss(*p, adj=adjoint):
        sol = root(cubic, torch.zeros_like(b), *p, solver=TIGHT_NEWTON, adjoint=adj)
        assert (sol.status == Status.SUCCESS).all()
        return (w * sol.value).sum() + (sol.value ** 2).sum()

    gi = torch.autograd.grad(loss(*params), params)
    gu = torch.autograd.grad(loss(*params, adj=Unrolled()), params)
    for a, u in zip(gi, gu):
        assert rel(a, u) <= 1e-6
    check_fd(loss, [p.detach() for p in params], gi)
    # the initial guess gets no gradient: x* does not depend on it
    x0 = torch.zeros_like(b, requires_grad=True)
    out = root(cubic, x0, *params, solver=TIGHT_NEWTON, adjoint=adjoint).value.sum()
    assert torch.autograd.grad(out, x0, allow_unused=True)[0] is None


def test_gradcheck_root_and_torch_func_grad():
    A, b, c, _ = batched_problem()
    A, b = A[:2, :3, :3], b[:2, :3]
    f = lambda A, b, c: root(cubic, torch.zeros_like(b), A, b, c, solver=TIGHT_NEWTON, adjoint=Implicit("lu")).value
    assert torch.autograd.gradcheck(f, (A.requires_grad_(), b.requires_grad_(), c.requires_grad_()))
    g_func = torch.func.grad(lambda b: (f(A.detach(), b, c.detach()) ** 2).sum())(b.detach())
    (g_ag,) = torch.autograd.grad((f(A.detach(), b, c.detach()) ** 2).sum(), b)
    assert rel(g_func, g_ag) < 1e-12


# ---------------------------------------------------------------- least squares with r(x*) != 0


def ls_problem(B=2, m=40, N=3):
    basis = torch.randn(B, m, N, generator=gen(10), dtype=DT) / N ** 0.5
    y = torch.randn(B, m, generator=gen(11), dtype=DT)
    return basis, y


def ls_residual(w, basis, y):
    u = (basis @ w[..., None])[..., 0]
    return torch.cat([u + 0.3 * u ** 3 - y, 1e-2 * w], dim=1)


def ls_loss(adjoint):
    def loss(basis, y):
        sol = least_squares(ls_residual, torch.zeros(basis.shape[0], basis.shape[2], dtype=DT), basis, y,
                            solver=TIGHT_LM, adjoint=adjoint)
        assert (sol.status == Status.SUCCESS).all()
        u = (basis @ sol.value[..., None])[..., 0]
        return 0.5 * (u ** 2).sum(), sol
    return loss


def test_least_squares_full_hessian_exact_gauss_newton_biased():
    basis, y = ls_problem()
    params = [basis.clone().requires_grad_(), y.clone().requires_grad_()]
    L, sol = ls_loss(Implicit("lu"))(*params)
    assert (sol.stats["residual_norm"] > 1.0).all(), "the residual is far from zero at the optimum"
    full = torch.autograd.grad(L, params)
    unrolled = torch.autograd.grad(ls_loss(Unrolled())(*params)[0], params)
    for a, u in zip(full, unrolled):
        assert rel(a, u) <= 1e-6
    for bs in ("cg", "gmres"):
        other = torch.autograd.grad(ls_loss(Implicit(bs))(*params)[0], params)
        assert all(rel(a, o) <= 1e-8 for a, o in zip(full, other)), bs
    check_fd(lambda *p: ls_loss(Implicit("lu"))(*p)[0], [p.detach() for p in params], full)
    gn = torch.autograd.grad(ls_loss(Implicit("lu", hessian="gauss-newton"))(*params)[0], params)
    bias = rel(gn[0], full[0])
    assert bias > 1e-2, f"Gauss-Newton gradients should be visibly biased here, got {bias:.2e}"


def test_least_squares_zero_residual_gauss_newton_exact():
    # With r(x*) = 0 the Gauss-Newton matrix is the Hessian: both rules agree.
    basis, _ = ls_problem()
    w_true = torch.tensor([[0.3, -0.2, 0.1], [0.1, 0.2, -0.4]], dtype=DT)
    u = (basis @ w_true[..., None])[..., 0]
    y = u + 0.3 * u ** 3
    res = lambda w, basis, y: ls_residual(w, basis, y)[:, :-3]
    basis.requires_grad_()
    out = {}
    for h in ("full", "gauss-newton"):
        sol = least_squares(res, torch.zeros(2, 3, dtype=DT), basis, y, solver=TIGHT_LM, adjoint=Implicit("lu", hessian=h))
        out[h] = torch.autograd.grad((sol.value ** 2).sum(), basis)[0]
    assert rel(out["gauss-newton"], out["full"]) < 1e-8


def test_least_squares_hessian_matrix_replaces_the_hvps_for_first_order_gradients():
    """A caller's formed Hessian (here autograd's, per sample) gives the same gradients as the n HVPs, is
    used for a first-order backward with the full Hessian, and left out for second order and Gauss-Newton."""
    basis, y = ls_problem()
    calls = []

    def hessian(w, basis, y):
        calls.append(w.shape)
        loss = lambda w_, b_, y_: 0.5 * ls_residual(w_[None], b_[None], y_[None]).square().sum()
        return torch.func.vmap(torch.func.hessian(loss))(w, basis, y)

    def value(adjoint, matrix, basis, y, **kw):
        solve = lambda w0, *p: TIGHT_LM(ls_residual, w0, *p)
        w = custom_least_squares(ls_residual, adjoint=adjoint, hessian_matrix=matrix, **kw)(solve)(
            torch.zeros(basis.shape[0], basis.shape[2], dtype=DT), basis, y).value
        return ((basis @ w[..., None])[..., 0] ** 2).sum()

    params = [basis.clone().requires_grad_(), y.clone().requires_grad_()]
    for bs in ("lu", "gmres"):
        calls.clear()
        formed = torch.autograd.grad(value(Implicit(bs), hessian, *params), params)
        assert len(calls) == 1, bs
        generic = torch.autograd.grad(value(Implicit(bs), None, *params), params)
        assert all(rel(a, b) < 1e-10 for a, b in zip(formed, generic)), bs
    calls.clear()  # a backward building a graph differentiates the HVPs; the first-order solves inside may use it
    (g,) = torch.autograd.grad(value(Implicit("lu"), hessian, *params), params[1], create_graph=True)
    assert not calls
    (gg,) = torch.autograd.grad(g.square().sum(), params[1])
    (g0,) = torch.autograd.grad(value(Implicit("lu"), None, *params), params[1], create_graph=True)
    assert rel(gg, torch.autograd.grad(g0.square().sum(), params[1])[0]) < 1e-10
    calls.clear()
    torch.autograd.grad(value(Implicit("lu", hessian="gauss-newton"), hessian, *params), params)
    assert not calls
    with pytest.raises(ValueError, match="batched=True"):
        custom_least_squares(ls_residual, hessian_matrix=hessian, batched=False)


def test_gradcheck_least_squares():
    basis, y = ls_problem(B=2, m=6, N=2)
    f = lambda basis, y: least_squares(ls_residual, torch.zeros(2, 2, dtype=DT), basis, y, solver=TIGHT_LM,
                                       adjoint=Implicit("lu")).value
    # fast_mode: one random projection per input (each probe is a full LM solve)
    assert torch.autograd.gradcheck(f, (basis.requires_grad_(), y.requires_grad_()), fast_mode=True)


# ---------------------------------------------------------------- fixed point z = tanh(W z + U x)


def fp_problem(B=3, d=6, k=2):
    W = torch.randn(d, d, generator=gen(20), dtype=DT) * 0.5 / d ** 0.5
    U = torch.randn(d, k, generator=gen(21), dtype=DT)
    x = torch.randn(B, k, generator=gen(22), dtype=DT)
    return W, U, x


def cell(z, W, U, x):
    return torch.tanh(z @ W.T + x @ U.T)


def fp_loss(adjoint, solver):
    def loss(W, U, x):
        sol = fixed_point(cell, torch.zeros(x.shape[0], W.shape[0], dtype=DT), W, U, x, solver=solver, adjoint=adjoint)
        assert (sol.status == Status.SUCCESS).all()
        return (sol.value ** 3).sum()
    return loss


def test_fixed_point_implicit_matches_unrolled_fd_and_phantom_limit():
    params = [p.clone().requires_grad_() for p in fp_problem()]
    aa = Anderson(rtol=1e-15, atol=1e-15, max_steps=200)
    gi = torch.autograd.grad(fp_loss(Implicit("gmres"), aa)(*params), params)
    gu = torch.autograd.grad(fp_loss(Unrolled(), FixedPointIteration(rtol=1e-15, atol=1e-15, max_steps=400))(*params),
                             params)
    for a, u in zip(gi, gu):
        assert rel(a, u) <= 1e-6
    check_fd(fp_loss(Implicit("gmres"), aa), [p.detach() for p in params], gi)
    # Phantom gradients with many undamped steps approach the IFT (Neumann series); one step does not.
    errs = [rel(torch.autograd.grad(fp_loss(Phantom(k, 1.0), aa)(*params), params)[0], gi[0]) for k in (1, 5, 40)]
    assert errs[0] > 1e-2 and errs[1] < errs[0] and errs[2] < 1e-8, errs
    g1 = torch.autograd.grad(fp_loss(OneStep(), aa)(*params), params)[0]
    assert rel(g1, gi[0]) == pytest.approx(errs[0], rel=1e-12)


def test_gradcheck_fixed_point():
    W, U, x = fp_problem(B=2, d=3, k=2)
    aa = Anderson(rtol=1e-15, atol=1e-15)
    f = lambda W, U, x: fixed_point(cell, torch.zeros(2, 3, dtype=DT), W, U, x, solver=aa, adjoint=Implicit("lu")).value
    assert torch.autograd.gradcheck(f, (W.requires_grad_(), U.requires_grad_(), x.requires_grad_()), fast_mode=True)


def test_custom_fixed_point_decorator_returns_tensor_when_solver_does():
    W, U, x = fp_problem()
    W.requires_grad_()

    @custom_fixed_point(cell, backward_solve="lu")
    def picard(z0, W, U, x):
        z = z0
        for _ in range(200):
            z = cell(z, W, U, x)
        return z

    z = picard(torch.zeros(3, 6, dtype=DT), W, U, x)
    assert isinstance(z, torch.Tensor) and z.requires_grad
    ref = fixed_point(cell, torch.zeros(3, 6, dtype=DT), W, U, x, adjoint=Implicit("lu"),
                      solver=Anderson(rtol=1e-15, atol=1e-15)).value
    assert rel(torch.autograd.grad(z.sum(), W)[0], torch.autograd.grad(ref.sum(), W)[0]) < 1e-10


# ---------------------------------------------------------------- failures are reported, never zeroed


def test_non_converging_forward_is_reported():
    theta = torch.tensor([[2.0], [3.0]], dtype=DT, requires_grad=True)
    with pytest.raises(SolveError, match="custom_root forward solve: 2 of 2 samples did not converge"):
        root(square, torch.ones(2, 1, dtype=DT), theta, solver=Newton(max_steps=1))
    with pytest.warns(RuntimeWarning, match="MAX_STEPS"):
        sol = root(square, torch.ones(2, 1, dtype=DT), theta, solver=Newton(max_steps=1),
                   adjoint=Implicit("lu", on_failure="warn"))
    assert (sol.status == Status.MAX_STEPS).all()


def test_failing_backward_is_reported_not_zeroed():
    # theta = 0: the root x* = 0 has dF/dx = 2x* = 0, so the adjoint system is singular.
    theta = torch.tensor([[0.0]], dtype=DT, requires_grad=True)
    x = custom_root(square, backward_solve="lu")(lambda x0, th: torch.zeros_like(th))(torch.ones(1, 1, dtype=DT), theta)
    with pytest.raises(SolveError, match="(?s)implicit backward.*BREAKDOWN"):
        x.sum().backward()
    # An iterative backward solve that cannot converge in its budget.
    A, b, c, _ = batched_problem()
    b.requires_grad_()
    adj = Implicit(GMRES(rtol=1e-14, max_steps=1, restart=1))
    x = root(cubic, torch.zeros_like(b), A, b, c, solver=TIGHT_NEWTON, adjoint=adj).value
    with pytest.raises(SolveError, match="MAX_STEPS"):
        x.sum().backward()
    assert adj.last_backward is not None and (adj.last_backward.status == Status.MAX_STEPS).all()
    warn = Implicit(GMRES(rtol=1e-14, max_steps=1, restart=1), on_failure="warn")
    x = root(cubic, torch.zeros_like(b), A, b, c, solver=TIGHT_NEWTON, adjoint=warn).value
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        (g,) = torch.autograd.grad(x.sum(), b)
    assert any("MAX_STEPS" in str(r.message) for r in rec) and g.abs().sum() > 0


def test_closure_over_a_grad_tensor_is_refused_and_options_validated():
    theta = torch.tensor([[2.0]], dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match="through a closure.*'theta'"):
        root(lambda x: x * x - theta, torch.ones(1, 1, dtype=DT), solver=TIGHT_NEWTON)
    with pytest.raises(ValueError, match="backward_solve='qr' is not valid"):
        Implicit("qr")
    with pytest.raises(ValueError, match="needs a fixed-point map"):
        custom_root(square, adjoint=OneStep())
    with pytest.raises(ValueError, match="on_failure='ignore'"):
        Implicit(on_failure="ignore")
    with pytest.raises(ValueError, match="materialize='jit'"):
        Implicit("lu", materialize="jit")
    with pytest.raises(ValueError, match="hessian='bfgs'"):
        custom_least_squares(ls_residual, adjoint=Implicit(hessian="bfgs"))


def test_implicit_saved_memory_does_not_grow_with_iterations():
    # Bytes autograd saves for backward during the forward: constant for the implicit rule,
    # proportional to the iteration count when unrolling.
    W, U, x = fp_problem(B=4, d=16, k=2)
    W.requires_grad_()

    def saved(adjoint, K):
        seen = {}

        def pack(t):
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        solver = FixedPointIteration(rtol=1e-30, atol=1e-30, max_steps=K, check_every=K)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # MAX_STEPS is intended: exactly K iterations
            fixed_point(cell, torch.zeros(4, 16, dtype=DT), W, U, x, solver=solver,
                        adjoint=type(adjoint)(on_failure="warn"))
        return sum(seen.values())

    imp = [saved(Implicit(), K) for K in (10, 40)]
    unr = [saved(Unrolled(), K) for K in (10, 40)]
    assert imp[0] == imp[1] and imp[0] > 0
    assert unr[1] > 3.5 * unr[0] and unr[0] > 5 * imp[0], (imp, unr)


@pytest.mark.parametrize("adjoint", [Unrolled(), Phantom(5, 1.0)])
def test_without_grad_no_graph_is_recorded_and_no_phantom_step_is_taken(adjoint):
    """Unrolled recorded every iteration under torch.no_grad() (memory grows with the steps), and Phantom
    evaluated its T steps for a gradient nobody asked for."""
    W, U, x = fp_problem()
    calls = []

    def counted(z, *args):
        calls.append(1)
        return cell(z, *args)

    solver = FixedPointIteration(rtol=1e-12, atol=1e-14, max_steps=200)
    with torch.no_grad():
        sol = fixed_point(counted, torch.zeros(x.shape[0], W.shape[0], dtype=DT), W.requires_grad_(), U, x,
                          solver=solver, adjoint=adjoint)
    n_solve = len(calls)
    assert not sol.value.requires_grad
    calls.clear()
    with torch.no_grad():
        fixed_point(counted, torch.zeros(x.shape[0], W.shape[0], dtype=DT), W, U, x, solver=solver, adjoint=Implicit())
    assert n_solve == len(calls)  # the solve's own evaluations only


W_GLOBAL = torch.tensor([[0.5]], dtype=DT, requires_grad=True)
NET_GLOBAL = torch.nn.Linear(1, 1).double()


def _reads_a_global_tensor(x):
    return torch.tanh(W_GLOBAL * x) + 0.1 - x


def _reads_a_global_net(x):
    return torch.tanh(NET_GLOBAL(x)) - x


class _Map:
    def __init__(self):
        self.W = torch.tensor([[0.5]], dtype=DT, requires_grad=True)

    def __call__(self, x):
        return torch.tanh(self.W * x) - x


@pytest.mark.parametrize("F", [_reads_a_global_tensor, _reads_a_global_net, _Map()], ids=["global", "net", "object"])
def test_tensors_reached_through_globals_or_attributes_are_refused_too(F):
    """Only closures were searched: W.grad came back None for a global W, a global nn.Linear or a
    callable object's attribute, without a word."""
    with pytest.raises(ValueError, match="F reaches tensors that require grad through a closure, a module, a global"):
        root(F, torch.ones(2, 1, dtype=DT), solver=TIGHT_NEWTON)


def test_shapes_that_break_the_implicit_function_theorem_are_named():
    c = torch.ones(3, 2, dtype=DT, requires_grad=True)
    with pytest.raises(ValueError, match=r"returned a solution of shape \(3, 1\) for x0 of shape \(3, 2\)"):
        custom_root(lambda x, c: x - c)(lambda x0, c: c[:, :1].clone())(torch.zeros(3, 2, dtype=DT), c)
    x = custom_root(lambda x, c: torch.cat([x - c, x[:, :1]], 1))(lambda x0, c: c.clone())(torch.zeros(3, 2, dtype=DT), c)
    with pytest.raises(ValueError, match=r"F\(x\*\) has shape \(3, 3\) but x\* has \(3, 2\).*custom_least_squares"):
        x.sum().backward()


@pytest.mark.parametrize("method", ["lu", "cholesky", "lstsq"])
def test_a_failed_dense_backward_warns_with_the_minimum_norm_gradient_not_zero(method):
    """F = A x - a·1 with A singular but consistent for this gradient: dx/da is 1 (the minimum-norm
    solution, as GMRES finds); the dense solves returned 0 and the docs promise no zero gradients."""
    A = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=DT)
    a = torch.tensor([[2.0]], dtype=DT, requires_grad=True)
    F = lambda x, a: x @ A.T - a
    solve = custom_root(F, adjoint=Implicit(method, on_failure="warn"))(lambda x0, a: (a / 2).expand(1, 2).clone())
    x = solve(torch.zeros(1, 2, dtype=DT), a)
    with pytest.warns(RuntimeWarning, match="BREAKDOWN"):
        x.sum().backward()
    torch.testing.assert_close(a.grad, torch.ones(1, 1, dtype=DT))


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_batched_false_solves_one_problem_of_any_shape_with_the_default_solvers(shape):
    c = torch.full(shape, 2.0, dtype=DT, requires_grad=True)
    x = root(lambda x, c: x * x - c, torch.ones(shape, dtype=DT), c, batched=False).value
    torch.testing.assert_close(x, c.detach().sqrt())
    x.sum().backward()
    torch.testing.assert_close(c.grad, 0.5 / c.detach().sqrt())
    p = fixed_point(lambda x, c: 0.5 * torch.cos(x) + 0 * c, torch.zeros(shape, dtype=DT), c, batched=False).value
    torch.testing.assert_close(p, 0.5 * torch.cos(p))
    r = least_squares(lambda x, c: torch.stack([x - c, 2 * (x - c)]), torch.zeros(shape, dtype=DT), c, batched=False).value
    torch.testing.assert_close(r, c.detach())


class _Holder:
    def __init__(self):
        self.W = torch.tensor([[2.0, 3.0]], dtype=DT, requires_grad=True)

    def F(self, x):
        return self.W * x - 1


def _reads_a_global_in_a_comprehension(x):
    return sum(W_GLOBAL * g for g in [x]) - 1  # W_GLOBAL is read by the generator's own code object


@pytest.mark.parametrize("F", [_Holder().F, _reads_a_global_in_a_comprehension], ids=["bound method", "comprehension"])
def test_tensors_behind_a_bound_method_or_inside_a_comprehension_are_refused(F):
    with pytest.raises(ValueError, match="F reaches tensors that require grad"):
        root(F, torch.ones(1, 2, dtype=DT), solver=TIGHT_NEWTON)


@pytest.mark.parametrize("batched, shape", [(False, (5,)), (False, (1, 5)), (True, (3, 5, 1)), (True, (2, 2, 2))],
                         ids=["flat-unbatched", "row-unbatched", "batched-3d", "batched-2x2"])
def test_gauss_newton_backward_for_any_shape_of_unknown(batched, shape):
    """The Gauss-Newton matvec got u flat, (batch, n), and crashed in its JVP ("a forward gradient that has a
    different size") unless each sample's unknown was already a flat vector with batched=True."""
    # ridge regression in log lam: the residual is linear in w, so Gauss-Newton is exact; closed form below
    p = math.prod(shape[1:]) if batched else math.prod(shape)
    B = shape[0] if batched else 1
    X = torch.randn(B, 12, p, generator=gen(40), dtype=DT)
    y = torch.randn(B, 12, generator=gen(41), dtype=DT)
    ll = torch.tensor(0.3, dtype=DT, requires_grad=True)

    def res(w, X, y, ll):
        wf = w.reshape(B, p)
        r = torch.cat([(X @ wf[..., None])[..., 0] - y, ll.exp().sqrt() * wf], 1)
        return r if batched else r.reshape(-1)

    w = least_squares(res, torch.zeros(shape, dtype=DT), X, y, ll, solver=TIGHT_LM, batched=batched,
                      adjoint=Implicit("lu", hessian="gauss-newton")).value
    (g,) = torch.autograd.grad((w ** 2).sum(), ll)
    lam = ll.detach().clone().requires_grad_()
    w_exact = torch.linalg.solve(X.mT @ X + lam.exp() * torch.eye(p, dtype=DT), (X.mT @ y[..., None])[..., 0])
    (g_exact,) = torch.autograd.grad((w_exact ** 2).sum(), lam)
    torch.testing.assert_close(w.reshape(B, p), w_exact.detach(), rtol=1e-10, atol=1e-12)
    assert abs(g.item() - g_exact.item()) <= 1e-10 * abs(g_exact.item())


PARAMS_GLOBAL = {"W": torch.tensor([[0.5]], dtype=DT, requires_grad=True)}
LAYERS_GLOBAL = [torch.nn.Linear(1, 1).double()]


def _reads_a_global_dict(x, b):
    return torch.tanh(PARAMS_GLOBAL["W"] * x) + b - x


def _reads_a_global_list_of_modules(x, b):
    return torch.tanh(LAYERS_GLOBAL[0](x)) + b - x


def _containers():
    W = torch.tensor([[0.5]], dtype=DT, requires_grad=True)
    d, lst, nested = {"W": W}, [W], {"layers": [(1, {"w": W})]}
    cyclic = [W]
    cyclic.append(cyclic)  # the walk must stop on a cycle
    return {
        "closed-over dict": lambda x, b: torch.tanh(d["W"] * x) + b - x,
        "closed-over list": lambda x, b: torch.tanh(lst[0] * x) + b - x,
        "nested containers": lambda x, b: torch.tanh(nested["layers"][0][1]["w"] * x) + b - x,
        "cyclic list": lambda x, b: torch.tanh(cyclic[0] * x) + b - x,
        "default argument": lambda x, b, W=W: torch.tanh(W * x) + b - x,
        "keyword-only default": lambda x, b, *, W=W: torch.tanh(W * x) + b - x,
        "global dict": _reads_a_global_dict,
        "global list of modules": _reads_a_global_list_of_modules,
    }


@pytest.mark.parametrize("case", list(_containers()))
@pytest.mark.parametrize("b_requires_grad", [True, False], ids=["b-grad", "only-W-grad"])
def test_tensors_reached_through_containers_or_defaults_are_refused(case, b_requires_grad):
    """A tensor behind params["W"], [W], W=W, a global dict or a global list of modules silently got no
    gradient; when it was the only tensor requiring grad, backward failed with torch's "element 0 of
    tensors does not require grad" instead."""
    F = _containers()[case]
    b = torch.tensor([[0.1]], dtype=DT, requires_grad=b_requires_grad)
    with pytest.raises(ValueError, match="F reaches tensors that require grad through .*a container"):
        root(F, torch.zeros(1, 1, dtype=DT), b, solver=TIGHT_NEWTON)


def test_a_grad_tensor_inside_a_container_argument_is_refused_and_plain_containers_pass():
    W = torch.tensor([[0.5]], dtype=DT, requires_grad=True)
    F = lambda x, p: torch.tanh(p["W"] * x) - x
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\]"):
        root(F, torch.zeros(1, 1, dtype=DT), {"W": W}, solver=TIGHT_NEWTON)
    # containers of constants and detached tensors are fine, and a long one is walked only in part
    consts = {"W": W.detach(), "names": ["a"] * 5000}
    x = root(lambda x, b: torch.tanh(consts["W"] * x) + b - x, torch.zeros(1, 1, dtype=DT),
             torch.tensor([[0.1]], dtype=DT, requires_grad=True), solver=TIGHT_NEWTON).value
    assert x.requires_grad


def test_cholesky_backward_refuses_a_non_symmetric_jacobian():
    """Cholesky reads one triangle of dF/dx: on the non-symmetric A + diag(3 c x^2) it returned a gradient
    9e-2 off without a word."""
    A, b, c, _ = batched_problem()
    b.requires_grad_()
    x = root(cubic, torch.zeros_like(b), A, b, c, solver=TIGHT_NEWTON, adjoint=Implicit("cholesky")).value
    with pytest.raises(ValueError, match="(?s)'cholesky' needs a symmetric dF/dx.*use backward_solve='lu'"):
        x.sum().backward()
    # a symmetric positive definite dF/dx (the Hessian of a least-squares problem) still goes through
    basis, y = ls_problem()
    params = [basis.clone().requires_grad_(), y.clone().requires_grad_()]
    chol = torch.autograd.grad(ls_loss(Implicit("cholesky"))(*params)[0], params)
    lu = torch.autograd.grad(ls_loss(Implicit("lu"))(*params)[0], params)
    assert all(rel(a, b) < 1e-10 for a, b in zip(chol, lu))


# ---------------------------------------------------------------- second and higher derivatives


def _cubic_root(th):
    """x(th) with x^3 + th x - 1 = 0 (Newton, tight)."""
    return root(lambda x, t: x ** 3 + t * x - 1, torch.tensor(0.5, dtype=DT), th, batched=False,
                solver=TIGHT_NEWTON).value


def test_second_derivatives_match_the_analytic_ones():
    """The backward detached x* and params: d2x/dth2 came back 0 (torch.func.grad of grad) or as an error
    (create_graph=True), and d2(x th)/dth2 dropped the x'' term (-0.1733 for -0.1441)."""
    th = torch.tensor(2.0, dtype=DT, requires_grad=True)
    x = _cubic_root(th)
    xs, t = x.detach(), th.detach()
    xp = -xs / (3 * xs ** 2 + t)
    xpp = -(xp * (3 * xs ** 2 + t) - xs * (6 * xs * xp + 1)) / (3 * xs ** 2 + t) ** 2
    assert abs(xpp.item() - 0.10122162988600138) < 1e-12
    (g,) = torch.autograd.grad(x, th, create_graph=True)
    (h,) = torch.autograd.grad(g, th)
    assert abs(g.item() - xp.item()) < 1e-14 and abs(h.item() - xpp.item()) < 1e-13
    h_func = torch.func.grad(torch.func.grad(_cubic_root))(t)
    assert abs(h_func.item() - xpp.item()) < 1e-13
    # a cotangent that depends on th itself: L = x th, L'' = x'' th + 2 x'
    (g,) = torch.autograd.grad(_cubic_root(th) * th, th, create_graph=True)
    (h,) = torch.autograd.grad(g, th)
    assert abs(h.item() - (xpp * t + 2 * xp).item()) < 1e-13
    # third order, against a central difference of the second
    d2 = lambda s: torch.func.grad(torch.func.grad(_cubic_root))(s)
    step = 1e-5
    fd3 = (d2(t + step) - d2(t - step)) / (2 * step)
    assert abs(torch.func.grad(d2)(t).item() - fd3.item()) < 1e-8 * abs(fd3.item())


def test_ridge_hessian_in_log_lambda_matches_the_closed_form():
    m, p = 30, 5
    X, y = torch.randn(m, p, generator=gen(50), dtype=DT), torch.randn(m, generator=gen(51), dtype=DT)
    Xv, yv = torch.randn(m, p, generator=gen(52), dtype=DT), torch.randn(m, generator=gen(53), dtype=DT)

    def val_closed(ll):
        w = torch.linalg.solve(X.T @ X + ll.exp() * torch.eye(p, dtype=DT), X.T @ y)
        return 0.5 * ((Xv @ w - yv) ** 2).sum()

    def val_implicit(ll, adjoint):
        res = lambda w, ll: torch.cat([X @ w - y, ll.exp().sqrt() * w])
        w = least_squares(res, torch.zeros(p, dtype=DT), ll, batched=False, solver=TIGHT_LM, adjoint=adjoint).value
        return 0.5 * ((Xv @ w - yv) ** 2).sum()

    ll = torch.tensor(0.3, dtype=DT)
    H = torch.autograd.functional.hessian(val_closed, ll)
    for adjoint in (Implicit("lu"), Implicit("cg"), Implicit("cholesky"), Implicit("lu", hessian="gauss-newton")):
        H_imp = torch.autograd.functional.hessian(lambda t: val_implicit(t, adjoint), ll)
        assert abs(H_imp.item() - H.item()) < 1e-9 * abs(H.item()), (adjoint, H_imp.item(), H.item())


@pytest.mark.parametrize("adjoint", [Implicit("lu"), Implicit("gmres"), Implicit("bicgstab")],
                         ids=["lu", "gmres", "bicgstab"])
def test_gradgradcheck_root_and_fixed_point(adjoint):
    A, b, c, _ = batched_problem()
    A, b = A[:2, :3, :3], b[:2, :3]
    f = lambda A, b, c: root(cubic, torch.zeros_like(b), A, b, c, solver=TIGHT_NEWTON, adjoint=adjoint).value
    assert torch.autograd.gradgradcheck(f, (A.requires_grad_(), b.requires_grad_(), c.requires_grad_()))
    W, U, x = fp_problem(B=2, d=3, k=2)
    aa = Anderson(rtol=1e-15, atol=1e-15)
    g = lambda W, U: fixed_point(cell, torch.zeros(2, 3, dtype=DT), W, U, x, solver=aa, adjoint=adjoint).value
    assert torch.autograd.gradgradcheck(g, (W.requires_grad_(), U.requires_grad_()))


@pytest.mark.parametrize("backward_solve", ["gmres", "cg", "bicgstab", "lu", "cholesky", "lstsq"])
def test_a_singular_jacobian_at_the_root_is_named_with_real_fixes(backward_solve):
    """F = (x - p)^2 has dF/dx = 0 at its double root: the failure said only "... or add a ridge", an option
    Implicit does not have, and never that the root is not isolated."""
    p = torch.tensor([[1.0, 2.0]], dtype=DT, requires_grad=True)
    solve = custom_root(lambda x, p: (x - p) ** 2, backward_solve=backward_solve)(lambda x0, p: p.detach().clone())
    x = solve(torch.zeros(1, 2, dtype=DT), p)
    with pytest.raises(SolveError) as err:
        x.sum().backward()
    msg = str(err.value)
    assert "dF/dx is singular at x*" in msg and "implicit function theorem does not apply" in msg
    assert "reformulate F" in msg and "add a ridge" not in msg


def test_an_invertible_jacobian_blames_the_backward_solve_and_keeps_its_own_message():
    from solvers.hypergrad import Neumann
    A = torch.eye(3, dtype=DT) * 3 + 0.1
    b = torch.ones(2, 3, dtype=DT, requires_grad=True)
    x = root(lambda x, b: x @ A.T - b, torch.zeros(2, 3, dtype=DT), b, adjoint=Implicit(Neumann(50, alpha=1.0))).value
    with pytest.raises(SolveError, match=r"(?s)BREAKDOWN.*lower alpha.*dF/dx is invertible at x\*"):
        x.sum().backward()


def test_the_solution_may_be_modified_in_place_before_backward():
    """The layer saved its output for the second-order backward, so x.mul_(2) on the returned solution
    made backward fail ("modified by an inplace operation"); it saves its input now."""
    A = torch.eye(3, dtype=DT) * 3 + 0.1
    b = torch.ones(2, 3, dtype=DT, requires_grad=True)
    x = root(lambda x, b: x @ A.T - b, torch.zeros(2, 3, dtype=DT), b, solver=Newton(atol=1e-12)).value
    x.mul_(2.0)
    x.sum().backward()
    # x = 2 A^{-1} b: d sum(x) / db = 2 A^{-T} 1 = 2 / 3.3 per entry
    assert torch.allclose(b.grad, torch.full_like(b, 2 / 3.3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backward_solve", ["gmres", "lu"])
def test_a_successful_backward_formats_no_failure_message(monkeypatch, backward_solve):
    """Each backward formatted the failure text (describe: a host copy and tolist of the status) and checked
    an exact solver's residual as if it were truncated: twice the host reads of a plain solve."""
    import solvers.implicit as implicit

    def no(*a, **k):
        raise AssertionError("called on a successful backward")

    monkeypatch.setattr(implicit, "describe", no)
    monkeypatch.setattr(implicit, "warn_inexact", no)
    A = torch.eye(3, dtype=DT) * 3 + 0.1
    b = torch.ones(2, 3, dtype=DT, requires_grad=True)
    x = root(lambda x, b: x @ A.T - b, torch.zeros(2, 3, dtype=DT), b, solver=Newton(atol=1e-12),
             adjoint=Implicit(backward_solve)).value
    x.sum().backward()
    assert torch.allclose(b.grad, torch.full_like(b, 1 / 3.3), rtol=0, atol=1e-10)


def test_the_closure_walk_looks_at_a_bounded_number_of_items_in_all():
    """The cap was per container (1000 items, 6 levels deep): a closure over a 50^3 nested list cost 35 ms a
    forward, the walk running on every call. It is now one budget for every container together."""
    from solvers.implicit import closure_tensors

    seen = [0]

    class Counted(list):
        def __iter__(self):
            for item in super().__iter__():
                seen[0] += 1
                yield item

    table = Counted(Counted(Counted(range(50)) for _ in range(50)) for _ in range(50))
    W = torch.ones(2, requires_grad=True)
    assert closure_tensors(lambda x: x * len(table) * W, ()) == ["W"]
    assert seen[0] <= 20_100, seen[0]


def test_a_big_constant_table_neither_hides_a_tensor_nor_passes_one_unsaid():
    """With a budget of 2000 items for all containers together, a 2500-entry table F also read used it up and
    theta['w'] behind it got no gradient without a word; past the budget the check now says it stopped."""
    from solvers.implicit import closure_tensors

    coeffs, theta = [0.0] * 2500, {"w": torch.ones(2, requires_grad=True)}
    assert closure_tensors(lambda x: x * (1 + coeffs[0]) * theta["w"], ()) == ["theta['w']"]
    hidden = [0.0] * 30_000 + [theta["w"]]
    with pytest.warns(RuntimeWarning, match="stopped there and may have missed one"):
        assert closure_tensors(lambda x: x * hidden[-1], ()) == []
