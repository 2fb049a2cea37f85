"""Neumann-series hypergradients against closed-form ridge regression and unrolled descent."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from solvers.hypergrad import Neumann, hypergradient, neumann
from solvers.implicit import Implicit, fixed_point
from solvers.nonlinear import Anderson
from solvers.solution import SolveError, Status

DT = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def ridge_problem(n=40, p=5):
    X = torch.randn(n, p, generator=gen(0), dtype=DT) / n ** 0.5
    y = torch.randn(n, generator=gen(1), dtype=DT)
    Xv = torch.randn(n, p, generator=gen(2), dtype=DT) / n ** 0.5
    yv = torch.randn(n, generator=gen(3), dtype=DT)
    return X, y, Xv, yv


def losses(X, y, Xv, yv):
    train = lambda w, h: 0.5 * ((X @ w[0] - y) ** 2).sum() + 0.5 * torch.exp(h[0]) * (w[0] ** 2).sum()
    val = lambda w, h: 0.5 * ((Xv @ w[0] - yv) ** 2).sum()
    return train, val


def exact_hypergradient(X, y, Xv, yv, loglam):
    lam = loglam.detach().clone().requires_grad_()
    w = torch.linalg.solve(X.T @ X + torch.exp(lam) * torch.eye(X.shape[1], dtype=DT), X.T @ y)
    (g,) = torch.autograd.grad(0.5 * ((Xv @ w - yv) ** 2).sum(), lam)
    return g, w.detach()


def test_neumann_hypergradient_converges_to_closed_form():
    X, y, Xv, yv = ridge_problem()
    loglam = torch.tensor(0.0, dtype=DT)
    exact, w_star = exact_hypergradient(X, y, Xv, yv, loglam)
    train, val = losses(X, y, Xv, yv)
    H = X.T @ X + torch.eye(5, dtype=DT)
    alpha = 1.0 / torch.linalg.eigvalsh(H).max().item()
    errs = []
    for steps in (0, 5, 20, 200):
        (g,), sol = hypergradient(train, val, [w_star], [loglam], solve=Neumann(steps, alpha))
        assert (sol.status == Status.SUCCESS).all()
        errs.append(abs(g.item() - exact.item()) / abs(exact.item()))
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-10, errs
    (g_cg,), _ = hypergradient(train, val, [w_star], [loglam], solve="cg")
    assert abs(g_cg.item() - exact.item()) < 1e-10 * abs(exact.item())


@pytest.mark.parametrize("solve", ["cg", "gmres"])
def test_krylov_hypergradients_in_float32_converge_to_a_tolerance_float32_reaches(solve):
    """A fixed 1e-10 relative tolerance is out of float32's reach: GMRES then ran out of steps."""
    X, y, Xv, yv = (t.float() for t in ridge_problem())
    exact, w_star = exact_hypergradient(*(t.double() for t in (X, y, Xv, yv)), torch.tensor(0.0, dtype=DT))
    train, val = losses(X, y, Xv, yv)
    (g,), sol = hypergradient(train, val, [w_star.float()], [torch.tensor(0.0)], solve=solve)
    assert (sol.status == Status.SUCCESS).all()
    assert abs(g.item() - exact.item()) < 1e-4 * abs(exact.item())


def test_neumann_equals_unrolled_descent_from_the_optimum():
    # Lorraine et al. Thm 2: K Neumann steps == differentiating K + 1 gradient steps started at w*.
    X, y, Xv, yv = ridge_problem()
    loglam = torch.tensor(-1.0, dtype=DT)
    _, w_star = exact_hypergradient(X, y, Xv, yv, loglam)
    train, val = losses(X, y, Xv, yv)
    alpha, K = 0.3, 7
    (g_neu,), _ = hypergradient(train, val, [w_star], [loglam], solve=Neumann(K, alpha))
    lam = loglam.clone().requires_grad_()
    w = w_star.clone().requires_grad_()
    for _ in range(K + 1):
        (gw,) = torch.autograd.grad(train([w], [lam]), w, create_graph=True)
        w = w - alpha * gw
    (g_unr,) = torch.autograd.grad(val([w], [lam]), lam)
    assert abs(g_neu.item() - g_unr.item()) < 1e-12 * abs(g_unr.item())


def test_neumann_solver_contract_and_divergence_reported():
    A = torch.diag(torch.tensor([[1.0, 2.0, 4.0]], dtype=DT)[0]).expand(2, 3, 3)
    b = torch.ones(2, 3, dtype=DT)
    mv = lambda v: (A @ v[..., None])[..., 0]
    sol = neumann(mv, b, steps=400, alpha=0.4)
    assert rel(sol.value, b / torch.tensor([1.0, 2.0, 4.0], dtype=DT)) < 1e-12
    assert sol.stats["residual_norm"].max() < 1e-12
    with pytest.raises(SolveError, match="BREAKDOWN"):
        neumann(mv, b, steps=400, alpha=0.6)  # |1 - 0.6 * 4| > 1: the series diverges
    early = Neumann(400, 0.4, rtol=1e-14)(mv, b)
    assert (early.stats["num_steps"] < 400).all()
    with pytest.raises(ValueError, match="alpha=0.0"):
        Neumann(5, 0.0)


def test_neumann_as_implicit_backward_solve():
    # For F = T(x) - x the adjoint matrix is J_T^T - I (negative definite for a contraction T);
    # Neumann with alpha = -1 is the classic DEQ backward iteration u <- J_T^T u + v.
    W = torch.randn(6, 6, generator=gen(5), dtype=DT) * 0.3 / 6 ** 0.5
    x = torch.randn(3, 6, generator=gen(6), dtype=DT, requires_grad=True)
    cell = lambda z, W, x: torch.tanh(z @ W.T + x)
    aa = Anderson(rtol=1e-15, atol=1e-15)
    grads = []
    for bs in ("lu", Neumann(60, -1.0)):
        z = fixed_point(cell, torch.zeros(3, 6, dtype=DT), W, x, solver=aa, adjoint=Implicit(bs)).value
        grads.append(torch.autograd.grad((z ** 2).sum(), x)[0])
    assert rel(grads[1], grads[0]) < 1e-12


def test_a_diverging_neumann_hypergradient_keeps_its_own_advice():
    """hypergradient re-described the status and dropped Neumann's "lower alpha" for a generic text about
    CG, BiCGSTAB and ridges."""
    X, y, Xv, yv = ridge_problem()
    train, val = losses(X, y, Xv, yv)
    _, w_star = exact_hypergradient(X, y, Xv, yv, torch.tensor(0.0, dtype=DT))
    with pytest.raises(SolveError, match="lower alpha"):  # lambda_max(H) = 1 + lambda_max(X^T X) > 2: alpha = 1 diverges
        hypergradient(train, val, [w_star], [torch.tensor(0.0, dtype=DT)], solve=Neumann(200, alpha=1.0))
    with pytest.warns(RuntimeWarning, match="lower alpha"):
        hypergradient(train, val, [w_star], [torch.tensor(0.0, dtype=DT)], solve=Neumann(200, alpha=1.0),
                      on_failure="warn")


def test_a_truncated_neumann_backward_far_from_converged_warns():
    """z = 0.95 z + U with Neumann(5): dz*/dU came out 5.3 for 20 without a word, its residual_norm unread."""
    n = 4
    W = (0.95 * torch.eye(n, dtype=DT)).requires_grad_()
    U = torch.randn(1, n, generator=gen(7), dtype=DT, requires_grad=True)
    T = lambda z, W, U: z @ W.T + U
    z = fixed_point(T, torch.zeros(1, n, dtype=DT), W, U, adjoint=Implicit(Neumann(steps=5, alpha=-1.0))).value
    with pytest.warns(RuntimeWarning, match=r"(?s)implicit backward: the linear solve left a residual.*more Neumann "
                                            r"steps.*'cg'.*'gmres'"):
        torch.autograd.grad(z.sum(), U)
    z = fixed_point(T, torch.zeros(1, n, dtype=DT), W, U, adjoint=Implicit(Neumann(steps=800, alpha=-1.0))).value
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough terms: no warning, and the right answer
        (g,) = torch.autograd.grad(z.sum(), U)
    torch.testing.assert_close(g, torch.full_like(g, 20.0))
    X, y, Xv, yv = ridge_problem()
    train, val = losses(X, y, Xv, yv)
    _, w_star = exact_hypergradient(X, y, Xv, yv, torch.tensor(0.0, dtype=DT))
    with pytest.warns(RuntimeWarning, match="hypergradient inverse-Hessian solve: the linear solve left a residual"):
        hypergradient(train, val, [w_star], [torch.tensor(0.0, dtype=DT)], solve=Neumann(2, alpha=0.1))


def test_the_ridge_example_hypergradients_match_the_closed_form_it_prints():
    """examples/hypergradient_ridge.py claimed a few dozen Neumann terms suffice while printing +2.97e-06 next
    to a closed form of +5.61e-04 at its last outer step."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, str(root / "examples" / "hypergradient_ridge.py")], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=300)
    pairs = re.findall(r"hypergrad ([-+0-9.e]+) \(closed form ([-+0-9.e]+)\)", out.stdout)
    assert len(pairs) == 4, out.stdout
    for g, exact in pairs:
        assert abs(float(g) - float(exact)) <= 1e-3 * abs(float(exact)), out.stdout
    assert "RuntimeWarning" not in out.stderr, out.stderr


def test_a_hypergradient_away_from_the_inner_optimum_warns_raises_or_is_ignored():
    """At w = 0 (the inner problem never solved) the IFT gave 0 for a true -0.22, at a random w -10.5: no word."""
    X, y, Xv, yv = ridge_problem()
    train, val = losses(X, y, Xv, yv)
    loglam = torch.tensor(0.0, dtype=DT)
    exact, w_star = exact_hypergradient(X, y, Xv, yv, loglam)
    for w in (torch.zeros(5, dtype=DT), torch.randn(5, generator=gen(8), dtype=DT)):
        with pytest.warns(RuntimeWarning, match=r"params are not an inner optimum.*on_nonstationary='ignore'"):
            (g,), _ = hypergradient(train, val, [w], [loglam], solve="cg")
        assert abs(g.item() - exact.item()) > 1e-2 * abs(exact.item())  # the wrong answer the warning is about
        with pytest.raises(SolveError, match="not an inner optimum"):
            hypergradient(train, val, [w], [loglam], solve="cg", on_nonstationary="raise")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            hypergradient(train, val, [w], [loglam], solve="cg", on_nonstationary="ignore")
    with pytest.raises(ValueError, match="on_nonstationary='off'"):
        hypergradient(train, val, [w_star], [loglam], solve="cg", on_nonstationary="off")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["ridge", "logistic"])
def test_an_inner_problem_solved_to_a_usual_tolerance_passes_the_stationarity_check(dtype, kind):
    """The check must not cry wolf: L-BFGS to a 1e-6 gradient tolerance (float32 stops short of it, near
    1e-4), ill-conditioned features (singular values over 1e-2) and a weak penalty."""
    g = gen(9)
    X = torch.randn(200, 20, generator=g, dtype=dtype) / 200 ** 0.5 * torch.logspace(0, -2, 20, dtype=dtype)
    wt = torch.randn(20, generator=g, dtype=dtype)
    if kind == "ridge":
        y = X @ wt + 0.5 * torch.randn(200, generator=g, dtype=dtype)
        fit = lambda w: 0.5 * (X @ w - y).square().sum()
    else:
        y = (torch.sigmoid(5 * X @ wt) > torch.rand(200, generator=g, dtype=dtype)).to(dtype)
        fit = lambda w: torch.nn.functional.binary_cross_entropy_with_logits(X @ w, y, reduction="sum")
    train = lambda w, h: fit(w[0]) + 0.5 * h[0].exp() * w[0].square().sum()
    val = lambda w, h: 0.5 * w[0].square().sum()
    loglam = torch.tensor(-4.0, dtype=dtype)
    w = torch.zeros(20, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=5000, tolerance_grad=1e-6, tolerance_change=0, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = train([w], [loglam])
        loss.backward()
        return loss
    opt.step(closure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hypergradient(train, val, [w.detach()], [loglam], solve="cg")


def test_params_or_hparams_as_a_bare_tensor_say_to_pass_a_list():
    """hypergradient(train, val, w, log_lam) failed with 'iteration over a 0-d tensor' or a matmul error."""
    X, y, Xv, yv = ridge_problem()
    train, val = losses(X, y, Xv, yv)
    _, w_star = exact_hypergradient(X, y, Xv, yv, torch.tensor(0.0, dtype=DT))
    with pytest.raises(TypeError, match=r"params must be a list or tuple of tensors \(\[w\] for one tensor w\)"):
        hypergradient(train, val, w_star, [torch.tensor(0.0, dtype=DT)])
    with pytest.raises(TypeError, match=r"hparams must be a list or tuple of tensors"):
        hypergradient(train, val, [w_star], torch.tensor(0.0, dtype=DT))


def test_a_loss_that_is_not_a_scalar_says_to_reduce_it():
    """A per-sample train or validation loss failed with torch's 'grad can be implicitly created only for scalar
    outputs'."""
    X, y, Xv, yv = ridge_problem()
    train, val = losses(X, y, Xv, yv)
    _, w_star = exact_hypergradient(X, y, Xv, yv, torch.tensor(0.0, dtype=DT))
    lam = [torch.tensor(0.0, dtype=DT)]
    per_sample = lambda p, h: (X @ p[0] - y) ** 2 + torch.exp(h[0]) * (p[0] ** 2).sum()  # noqa: E731
    with pytest.raises(ValueError, match=r"train_loss must return a scalar tensor, got \(\d+,\); reduce it"):
        hypergradient(per_sample, val, [w_star], lam)
    with pytest.raises(ValueError, match=r"val_loss must return a scalar tensor, got float"):
        hypergradient(train, lambda p, h: 1.0, [w_star], lam)
