"""Every registered optimizer: trains a model with a complex (spectral-like) weight, and a
state_dict round trip resumes bit-identically."""

import copy

import pytest
import torch

from sciml.optim import OPTIMIZERS, build_optimizer, closure_kind
from sciml.optim._base import FunctionalOptimizer
from sciml.optim._registry import optimizer_spec

NAMES = OPTIMIZERS.names()
# learning rates that make 40 steps meaningful on this toy problem (defaults where they suffice)
LR = {"sgd": 0.05, "gravity": 0.05, "radam": 0.05, "clip_radagradd": 0.05, "lbfgs": 1.0, "nys_newton_cg": 1.0}
EXTRA = {"lbfgs": {"line_search_fn": "strong_wolfe"}, "nys_newton_cg": {"rank": 4, "mu": 1e-6, "cg_max_iters": 10},
         "spam": {"warmup_steps": 5}, "soap": {"weight_decay": 0.0}, "fadam": {"weight_decay": 0.0}}


class Spectral(torch.nn.Module):
    """y = Re(x W) + b with a complex weight, like one FNO spectral multiply."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex128, generator=g) * 0.5)
        self.b = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return (x @ self.w).real + self.b


def _data():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 4, dtype=torch.complex128, generator=g)
    w_true = torch.randn(4, 3, dtype=torch.complex128, generator=g)
    return x, (x @ w_true).real + 0.1


def _steps(model, opt, name, x, y, n):
    kind = closure_kind(name)
    loss_fn = lambda: ((model(x) - y) ** 2).mean()  # noqa: E731

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    for _ in range(n):
        if kind == "none":
            closure()
            opt.step()
        elif kind == "backward":
            opt.step(closure)
        else:
            opt.step(loss_fn)
    return loss_fn().item()


# options that change the update's structure, each run through the same two tests
VARIANTS = {"spam": {"density": 0.5, "reset_interval": 6, "warmup_steps": 2}, "subset_norm": {"momentum_rank": 1, "proj_every": 3}}
CASES = [(n, {}) for n in NAMES] + list(VARIANTS.items())
IDS = NAMES + [f"{n}-{'-'.join(kw)}" for n, kw in VARIANTS.items()]


def _build(name, model, **options):
    kw = {"lr": LR.get(name, 1e-2), **EXTRA.get(name, {}), **options}
    return build_optimizer(model.parameters(), name, **kw)


@pytest.mark.parametrize("name, options", CASES, ids=IDS)
def test_trains_complex_parameters(name, options):
    x, y = _data()
    model = Spectral()
    w0 = model.w.detach().clone()
    opt = _build(name, model, **options)
    first = ((model(x) - y) ** 2).mean().item()
    n = 5 if closure_kind(name) != "none" else 40
    last = _steps(model, opt, name, x, y, n)
    assert model.w.dtype == torch.complex128 and model.w.imag.abs().sum() > 0
    assert not torch.equal(model.w.detach().imag, w0.imag), "the imaginary part is trained too"
    assert last < 0.7 * first, f"{name}: loss {first:.4g} -> {last:.4g}"


def _functional(name):
    spec = optimizer_spec(name)
    return spec is not None and isinstance(spec.resolve(), type) and issubclass(spec.resolve(), FunctionalOptimizer)


# sciml's own optimizers again with the step count on the device (capturable=True works on the CPU too)
CAPTURABLE = [(n, {**kw, "capturable": True}) for n, kw in CASES if _functional(n)]
CAPTURABLE_IDS = [f"{i}-capturable" for i, (n, _) in zip(IDS, CASES) if _functional(n)]


def test_every_functional_optimizer_has_a_capturable_case():
    assert {n for n, _ in CAPTURABLE} >= {"adabelief", "spam", "ademamix", "mars", "fadam", "subset_norm",
                                          "clip_radagradd"}


@pytest.mark.parametrize("name, options", CASES + CAPTURABLE, ids=IDS + CAPTURABLE_IDS)
def test_state_dict_round_trip_resumes_identically(name, options):
    x, y = _data()
    n = 2 if closure_kind(name) != "none" else 4
    a = Spectral()
    opt_a = _build(name, a, **options)
    _steps(a, opt_a, name, x, y, n)
    b = copy.deepcopy(a)
    sd = copy.deepcopy(opt_a.state_dict())
    _steps(a, opt_a, name, x, y, n)
    opt_b = _build(name, b, **options)
    opt_b.load_state_dict(sd)
    _steps(b, opt_b, name, x, y, n)
    if options.get("capturable"):  # torch's load makes a capturable "step" float32; our step counts in float64
        assert all(s["step"].dtype == torch.float64 for s in opt_b.state.values() if "step" in s)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), f"{name}: parameter {k} differs after resume"


def test_sparse_spam_resumes_identically_when_a_tensor_first_gets_a_gradient_after_the_resume():
    """Each tensor's momentum subset is tied to its place in the optimizer, not to the order in
    which tensors first got gradients, which a resumed optimizer would see differently."""
    def run(resume_at):
        torch.manual_seed(0)
        a, b = torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(4, 7))
        opt = build_optimizer([a, b], "spam", density=0.3, reset_interval=3, warmup_steps=0)
        for step in range(8):
            if step == resume_at:
                sd = copy.deepcopy(opt.state_dict())
                opt = build_optimizer([a, b], "spam", density=0.3, reset_interval=3, warmup_steps=0)
                opt.load_state_dict(sd)
            a.grad = torch.full_like(a, 0.1 * (step + 1))
            b.grad = torch.full_like(b, -0.2) if step >= 2 else None  # b joins at step 2
            opt.step()
        return a.detach().clone(), b.detach().clone()

    straight = run(resume_at=None)
    resumed = run(resume_at=2)
    assert all(torch.equal(x, y) for x, y in zip(straight, resumed))
