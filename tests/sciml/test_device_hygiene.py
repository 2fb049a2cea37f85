"""Hot loops stay on the device: one training or solver step, run on the "meta" device, makes no
CPU tensors and reads nothing back to the host.

"meta" tensors have shapes but no data, so any host read in the step (``.item()``, ``float(t)``,
``bool(t)``, ``.tolist()``) raises, and any op that makes a CPU tensor is recorded. On a GPU these
are a stall per step and a host-to-device copy per step; neither shows up in a CPU-only suite
otherwise (the FNO's DFT matrices were once built on the CPU under torch.compile).
"""

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class RecordCPUOps(TorchDispatchMode):
    """Names of the ops that return a CPU tensor of more than one element (scalars are host constants)."""

    def __init__(self):
        super().__init__()
        self.cpu_ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel() > 1:
                self.cpu_ops.add(func.overloadpacket.__name__)
        return out


@pytest.fixture
def no_autocast_on_meta(monkeypatch):
    # torch.autocast has no "meta" device type; the layers only use it to switch autocast off
    monkeypatch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())


@pytest.mark.parametrize("last", [True, False])
def test_dft_matrices_are_built_on_the_requested_device(last):
    """Under torch.compile the builder is traced into the graph (the cache is bypassed there), so
    it is checked itself: the operator test below may find the matrices already cached."""
    from sciml.models.spectral import dft_matrices

    with RecordCPUOps() as rec:
        fwd, inv = dft_matrices.__wrapped__(85, 12, last, torch.device("meta"), torch.float32)
    assert rec.cpu_ops == set()
    assert fwd.device.type == inv.device.type == "meta"
    assert fwd.shape == ((85, 24) if last else (24, 85))


@pytest.mark.parametrize("name, options, shape", [
    ("fno", dict(modes=16, width=32), (4, 1, 256)),
    ("fno", dict(modes=8, width=16), (2, 1, 85, 85)),
    ("fno", dict(modes=8, width=16, transform="fft"), (2, 1, 64, 64)),
    ("deeponet", dict(sensors=85, basis=16, width=32, depth=2, branch="cnn", trunk="mlp"), (2, 1, 85, 85)),
], ids=["fno1d", "fno2d-dft", "fno2d-fft", "deeponet"])
def test_operator_forward_and_backward_stay_on_the_device(no_autocast_on_meta, name, options, shape):
    from sciml.models._registry import build_model

    model = build_model(name, in_channels=1, out_channels=1, n_dims=len(shape) - 2, **options).to("meta")
    with RecordCPUOps() as rec:
        model(torch.randn(*shape, device="meta")).sum().backward()
    assert rec.cpu_ops == set()


@pytest.mark.parametrize("mode", ["jet", "reverse"])
@pytest.mark.parametrize("problem_name", ["burgers", "wave", "poisson_lshape"])
def test_pinn_loss_and_backward_stay_on_the_device(problem_name, mode):
    from sciml.pde import MLP, PINNModel, get_problem, loss_terms, sample_collocation

    problem = get_problem(problem_name)
    points = sample_collocation(problem, interior=64, boundary=16, initial=16, method="sobol", seed=0)
    model = PINNModel(MLP(len(problem.coords), len(problem.outputs), width=8, depth=2, seed=0)).to("meta")
    points = points.to("meta", torch.float32)
    with RecordCPUOps() as rec:
        sum(loss_terms(model, problem, points, mode=mode).values()).backward()
    assert rec.cpu_ops == set()


def _first_order_optimizers():
    from sciml.optim import OPTIMIZERS, closure_kind

    return [n for n in OPTIMIZERS if closure_kind(n) == "none"]


@pytest.mark.parametrize("name", _first_order_optimizers())
def test_optimizer_steps_stay_on_the_device(name):
    from sciml.optim import build_optimizer

    weight = torch.nn.Parameter(torch.randn(8, 6, device="meta"))
    bias = torch.nn.Parameter(torch.randn(6, device="meta"))
    optimizer = build_optimizer([weight, bias], name, lr=1e-3)
    with RecordCPUOps() as rec:
        for _ in range(3):
            weight.grad, bias.grad = torch.randn_like(weight), torch.randn_like(bias)
            optimizer.step()
    assert rec.cpu_ops == set()


def test_navier_stokes_step_stays_on_the_device():
    from solvers.pde._spectral import etdrk4_coefficients, etdrk4_step
    from solvers.pde.navier_stokes import NavierStokes2D

    solver = NavierStokes2D(nu=1e-3)
    w0 = torch.randn(2, 32, 32, device="meta")
    ops = solver._setup(w0)
    c = etdrk4_coefficients(-solver.nu * ops["lap"], 1e-2, dtype=torch.complex64)
    with RecordCPUOps() as rec:
        etdrk4_step(torch.fft.rfft2(w0), solver._nonlinear(ops), c)
    assert rec.cpu_ops == set()
