"""Derivative backends against closed forms, float64."""

import math

import pytest
import torch

from sciml.pde import ForwardDerivatives, GridDerivatives, MLP, ReverseDerivatives

F64 = torch.float64


def field(x):
    """u = sin(3x) e^{t/2} cos(y), v = x³ t² y: two outputs, three coordinates (x, y, t)."""
    X, Y, T = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack([torch.sin(3 * X) * torch.exp(0.5 * T) * torch.cos(Y), X**3 * T**2 * Y], -1)


def exact(x):
    X, Y, T = x[:, 0], x[:, 1], x[:, 2]
    s, c, e, cy, sy = torch.sin(3 * X), torch.cos(3 * X), torch.exp(0.5 * T), torch.cos(Y), torch.sin(Y)
    return {
        ("u", "x"): 3 * c * e * cy, ("u", "xx"): -9 * s * e * cy, ("u", "xt"): 1.5 * c * e * cy,
        ("u", "xy"): -3 * c * e * sy, ("u", "yy"): -s * e * cy, ("u", "ttt"): 0.125 * s * e * cy,
        ("u", "xxy"): 9 * s * e * sy, ("v", "x"): 3 * X**2 * T**2 * Y, ("v", "xxt"): 12 * X * T * Y,
        ("v", "xxx"): 6 * T**2 * Y, ("v", "tt"): 2 * X**3 * Y, ("v", "xyt"): 6 * X**2 * T, ("v", "yy"): 0 * X,
    }


@pytest.mark.parametrize("backend", [ReverseDerivatives, ForwardDerivatives])
def test_pointwise_derivatives_match_closed_forms(backend):
    x = torch.rand(64, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    d = backend(field, x, ("u", "v"), ("x", "y", "t"))
    for (name, wrt), want in exact(x).items():
        got = d(name, *wrt)
        assert got.shape == (64,)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"{name}_{wrt}")
    torch.testing.assert_close(d.u_tx, d.u_xt)  # mixed partials commute: one cached tensor
    torch.testing.assert_close(d.laplacian("u"), exact(x)[("u", "xx")] + exact(x)[("u", "yy")], rtol=1e-12, atol=1e-12)
    assert d.grad("v").shape == (64, 2)
    torch.testing.assert_close(d.t, x[:, 2])


def test_forward_jacobian_is_one_vmap_and_matches_reverse():
    x = torch.rand(32, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    net = MLP(3, 2, width=16, depth=2, dtype=F64, seed=3)
    fwd = ForwardDerivatives(net, x, ("u", "v"), ("x", "y", "t"))
    rev = ReverseDerivatives(net, x, ("u", "v"), ("x", "y", "t"))
    jac = fwd.jacobian()
    assert jac.shape == (32, 2, 3)
    for k, o in enumerate("uv"):
        for j, c in enumerate("xyt"):
            torch.testing.assert_close(jac[:, k, j], rev(o, c), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(fwd(o, "x", "t"), rev(o, "x", "t"), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", [ReverseDerivatives, ForwardDerivatives])
def test_training_gradient_flows_through_derivatives(backend):
    """d/dθ mean(u_xx²) equals a central finite difference in one weight (step sqrt(eps)·scale)."""
    x = torch.rand(16, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    net = MLP(2, 1, width=8, depth=2, dtype=F64, seed=0)
    loss = lambda: backend(net, x, ("u",), ("x", "t")).u_xx.square().mean()
    w = net.layers[0].weight
    (g,) = torch.autograd.grad(loss(), w)
    h = 1e-6
    w.data[0, 0] += h
    lp = loss().item()
    w.data[0, 0] -= 2 * h
    lm = loss().item()
    w.data[0, 0] += h
    assert abs(g[0, 0].item() - (lp - lm) / (2 * h)) < 1e-7 * max(1.0, abs(g[0, 0].item()))


def test_reverse_derivatives_work_under_no_grad():
    x = torch.rand(8, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        d = ReverseDerivatives(lambda z: torch.sin(z[:, :1]) * z[:, 1:], x, ("u",), ("x", "t"))
        torch.testing.assert_close(d.u_xx, -torch.sin(x[:, 0]) * x[:, 1])


def test_shorthand_errors_name_the_fix():
    d = ReverseDerivatives(field, torch.zeros(2, 3, dtype=F64), ("u", "v"), ("x", "y", "t"))
    with pytest.raises(AttributeError, match="u_x"):
        d.u_q
    with pytest.raises(KeyError, match="coordinates are"):
        d("u", "z")


def test_grid_spectral_and_fd_derivatives():
    """The same residual on a grid: spectral along periodic x is exact, FD along t is O(h²)."""
    n, m = 64, 201
    x = torch.linspace(0, 2 * math.pi, n + 1, dtype=F64)[:-1]
    t = torch.linspace(0, 1, m, dtype=F64)
    X, T = torch.meshgrid(x, t, indexing="ij")
    beta = 3.0
    u = torch.sin(2 * X - beta * 2 * T)  # convection u_t + β u_x = 0
    d = GridDerivatives({"u": u}, ("x", "t"), (x[1] - x[0], t[1] - t[0]), periodic=("x",))
    torch.testing.assert_close(d.u_x, 2 * torch.cos(2 * X - 2 * beta * T), rtol=0, atol=1e-12)
    torch.testing.assert_close(d.u_xx, -4 * u, rtol=0, atol=1e-11)
    residual = d.u_t + beta * d.u_x
    assert residual.abs().max() < 5e-3  # FD in t, h = 5e-3: (2β)³ h²/6 ≈ 9e-4 inside, one-sided ends worse
    assert residual[:, 1:-1].abs().max() < 1e-3
    torch.testing.assert_close(d.x, X)


def test_grid_fd_second_derivatives_are_compact_and_second_order_up_to_the_ends():
    """u_xx by the 3-point stencil, not the first-derivative stencil twice: that one is the wide
    (f[i+2] - 2f[i] + f[i-2]) / 4h² (zero for a (-1)^i mode) and first order at the ends."""
    errors = []
    for n in (51, 101, 201):
        x = torch.linspace(0, 1, n, dtype=F64)
        d = GridDerivatives({"u": torch.sin(3 * x)}, ("x",), (1 / (n - 1),), method="fd")
        errors.append((d.u_xx + 9 * torch.sin(3 * x)).abs()[[0, 1, n // 2, -2, -1]])
    ratios = torch.stack(errors[:-1]) / torch.stack(errors[1:])
    assert (ratios > 3.5).all(), ratios  # O(h²) at every node, the ends included (the twice-applied stencil: 2.0 there)
    assert errors[-1].max() < 5e-4  # h = 0.005: 81 h² / 12 = 1.7e-4 inside
    zigzag = torch.tensor([(-1.0) ** i for i in range(16)], dtype=F64)
    h = 1 / 16
    for periodic in ((), ("x",)):
        d = GridDerivatives({"u": zigzag}, ("x",), (h,), periodic=periodic, method="fd")
        torch.testing.assert_close(d.u_xx[2:-2], -4 * zigzag[2:-2] / h ** 2, rtol=1e-12, atol=0)
    d = GridDerivatives({"u": zigzag}, ("x",), (h,), periodic=("x",), method="fd")
    torch.testing.assert_close(d.u_xxxx, 16 * zigzag / h ** 4, rtol=1e-12, atol=0)


@pytest.mark.parametrize("offset", [0.0, 0.5], ids=["nodes", "cells"])
def test_grid_fd_third_and_fourth_derivatives_are_second_order_at_every_node(offset):
    """u_xxx, u_xxxx on a non-periodic axis by their own stencils (one-sided (m+2)-point at the ends):
    composed as u_xx of u_x / u_xx they were O(1) wrong at the ends (u_xxx ≈ 25 off at the last node,
    u_xxxx ≈ 48 at the first, at every n). u = e^x sin 2x = Im e^{(1+2i)x} on [0, 1], node- or
    cell-centred (first node at offset * h)."""
    ends = [0, 1, 2, 3, -4, -3, -2, -1]
    errors = {3: [], 4: []}
    for n in (32, 64, 128):
        h = 1 / (n - 1 + 2 * offset)
        x = (torch.arange(n, dtype=F64) + offset) * h
        z = torch.exp((1 + 2j) * x.to(torch.complex128))
        u, e_t = z.imag, torch.exp(torch.linspace(0, 0.5, 6, dtype=F64))  # u e^t: the mixed u_xxxt too
        d = GridDerivatives({"u": u[:, None] * e_t}, ("x", "t"), (h, 0.1), origin=(offset * h, 0.0), method="fd")
        for m in (3, 4):
            exact = ((1 + 2j) ** m * z).imag
            err = (d("u", *"x" * m)[:, 2] - exact * e_t[2]).abs() / e_t[2]
            errors[m].append(err[ends + [n // 2]])
        if n == 128:
            torch.testing.assert_close(d.u_xxxt, d.u_xxx, rtol=0.02, atol=0.02)  # (u e^t)_t = u e^t, FD in t
    for m, errs in errors.items():
        ratios = torch.stack(errs[:-1]) / torch.stack(errs[1:])
        assert (ratios > 3.4).all(), (m, ratios)  # O(h²) everywhere: the error quarters as h halves
        assert errs[-1].max() < {3: 0.02, 4: 0.05}[m], (m, errs[-1])  # was ≈ 25 (m = 3) and ≈ 48 (m = 4)
    # exact for polynomials of degree m + 1 at every node: x⁴ -> 24x, x⁵ -> 120x
    x = torch.arange(12, dtype=F64) * 0.1
    d = GridDerivatives({"a": x ** 4, "b": x ** 5}, ("x",), (0.1,), method="fd")
    torch.testing.assert_close(d.a_xxx, 24 * x, rtol=0, atol=1e-8)
    torch.testing.assert_close(d.b_xxxx, 120 * x, rtol=0, atol=1e-6)


def test_grid_spectral_even_derivatives_keep_the_nyquist_mode():
    """An m-th spectral derivative is one multiplication by (ik)^m: for even m the Nyquist mode's is real,
    (-1)^(m/2) k_N^m, and kept (as two first derivatives, each dropping it, u_xx of cos(k_N x) was 0);
    for odd m it is imaginary and dropped."""
    n, h = 16, 1 / 16
    x = torch.arange(n, dtype=F64) * h
    k_n = math.pi / h
    u = torch.cos(k_n * x) + 0.5 * torch.sin(2 * math.pi * 3 * x)  # (-1)^j plus a resolved mode
    w = 2 * math.pi * 3
    d = GridDerivatives({"u": u}, ("x",), (h,), periodic=("x",))
    nyq, res = torch.cos(k_n * x), 0.5 * torch.sin(w * x)
    torch.testing.assert_close(d.u_x, w * 0.5 * torch.cos(w * x), rtol=0, atol=1e-9)
    torch.testing.assert_close(d.u_xx, -k_n ** 2 * nyq - w ** 2 * res, rtol=0, atol=1e-9)  # was -w² res only
    torch.testing.assert_close(d.u_xxx, -w ** 3 * 0.5 * torch.cos(w * x), rtol=0, atol=1e-7)
    torch.testing.assert_close(d.u_xxxx, k_n ** 4 * nyq + w ** 4 * res, rtol=0, atol=1e-5)
    torch.testing.assert_close(d.laplacian("u"), d.u_xx)


@pytest.mark.parametrize("n", [63, 100])
def test_grid_spectral_derivatives_are_float64_exact_when_the_wavenumbers_are_not_integers(n):
    """A period of 3 makes the wavenumbers 2 pi j / 3: taken in float32 they cost ~1e-7 (found on n = 15)."""
    x = 3 * torch.arange(n, dtype=F64) / n
    u = torch.sin(4 * math.pi * x / 3)[None]
    d = GridDerivatives({"u": u}, ("x",), (3 / n,), periodic=("x",))
    torch.testing.assert_close(d.u_x, 4 * math.pi / 3 * torch.cos(4 * math.pi * x / 3)[None], rtol=0, atol=1e-12)


RWF = {"mean": 1.0, "std": 0.1}


@pytest.mark.parametrize("kw", [{}, {"periodic": {0: 2.0}, "harmonics": 2}, {"fourier_features": 8, "fourier_scale": 2.0},
                                {"activation": "sin"}, {"modified": True}, {"weight_factorization": RWF},
                                {"modified": True, "weight_factorization": RWF, "periodic": {0: 2.0}, "fourier_features": 8}],
                         ids=["plain", "periodic", "fourier", "sin", "modified", "factorized", "modified-factorized-embedded"])
def test_jet_matches_reverse_to_fourth_order_with_transform(kw):
    """Taylor-mode MLP jets (+ a hard-constraint transform via nested jvp) equal nested autograd."""
    from sciml.pde import PINNModel
    from sciml.pde.jet import JetDerivatives, closure

    x = torch.rand(40, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    net = MLP(2, 2, width=12, depth=3, dtype=F64, seed=1, **kw)
    transform = lambda z, y: torch.sin(math.pi * z[:, :1]) + z[:, 1:] * (1 - z[:, :1] ** 2) * y**2
    paths = [(0, 0), (0, 1), (1, 1), (0, 0, 0, 1)]
    for model in (PINNModel(net), PINNModel(net, transform)):
        jet = JetDerivatives(model, x, ("u", "v"), ("x", "t"), paths)
        rev = ReverseDerivatives(model, x, ("u", "v"), ("x", "t"))
        for o in "uv":
            for p in closure(paths):
                wrt = ["xt"[i] for i in p]
                torch.testing.assert_close(jet(o, *wrt), rev(o, *wrt), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("name", ["wave", "burgers", "allen_cahn", "diffusion_reaction"])
def test_jets_of_an_automatic_hard_transform_match_autograd_and_are_kept_per_point_set(name):
    """The transform A(x) + D(x) y takes Leibniz's rule with the jets of A and D kept for the last point set
    (their nested jvps were ~40 % of a hard-constraint Adam step); a changed point set recomputes them."""
    from sciml.config import validate
    from sciml.pde.jet import JetDerivatives, closure, needed_paths
    from sciml.pde.problem import Params
    from sciml.pde.problems import get_problem
    from sciml.train.pinn import PINNConfig, build_model

    problem = get_problem(name)
    model, covered = build_model(problem, validate(PINNConfig, {"problem": name, "constraints": "hard",
                                                                "net": {"width": 12, "depth": 2}}))
    assert covered and model.transform is not None
    model = model.double()
    calls = []
    parts = model.transform.affine_parts
    model.transform.affine_parts = lambda x, m: (calls.append(1), parts(x, m))[1]
    x = problem.sample_interior(30, seed=1).double()
    paths = needed_paths(problem, Params(dict(problem.params)))
    for step in range(3):
        if step == 2:
            x.mul_(0.5)  # in place, as a resample into a static buffer: the kept jets are stale
        jet = JetDerivatives(model, x, problem.outputs, problem.coords, paths)
        rev = ReverseDerivatives(model, x, problem.outputs, problem.coords)
        for o in problem.outputs:
            for p in closure(paths):
                wrt = [problem.coords[i] for i in p]
                torch.testing.assert_close(jet(o, *wrt), rev(o, *wrt), rtol=1e-10, atol=1e-11)
        counts = counts + [len(calls)] if step else [len(calls)]
    assert counts[0] > 0 and counts[1] == counts[0] and counts[2] > counts[1], counts  # kept, then recomputed


def test_kept_transform_jets_are_not_made_in_inference_mode():
    """Jets kept from an inference-mode look at the loss failed the next training step on the same points
    ('Inference tensors cannot be saved for backward'); an inference tensor has no version to key on."""
    from sciml.config import validate
    from sciml.pde.losses import CollocationSet, loss_terms
    from sciml.pde.problems import get_problem
    from sciml.train.pinn import PINNConfig, build_model

    problem = get_problem("burgers")
    model, _ = build_model(problem, validate(PINNConfig, {"problem": "burgers", "constraints": "hard",
                                                          "net": {"width": 8, "depth": 2}}))
    x = CollocationSet(problem.sample_interior(20, seed=0).float(), [])
    with torch.inference_mode():
        looked = sum(loss_terms(model, problem, x, mode="jet").values())
        sum(loss_terms(model, problem, CollocationSet(x.interior.clone(), []), mode="jet").values())  # inference points
    loss = sum(loss_terms(model, problem, x, mode="jet").values())
    loss.backward()
    assert torch.isclose(loss.detach(), looked) and all(p.grad is not None for p in model.net.parameters())
