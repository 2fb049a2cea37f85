"""A thin `torch.optim.Optimizer` over a per-parameter functional update.

Each of our optimizers supplies `init_state(p, group) -> dict` and a functional
`update(p, grad, state, group)` that changes `p` and `state` in place. The per-parameter loop
here is the reference path (there is no foreach path to drift from it). Complex parameters are
handled by presenting real views (`torch.view_as_real`): a complex entry is two reals, the
convention torch.optim uses, so FNO spectral weights train with every optimizer.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor


def check_range(name: str, value: Any, lo: float, hi: float = math.inf, *, lo_open=False, hi_open=False, fix: str = "") -> None:
    """Raise a ValueError naming the argument, its value, the allowed range and a fix. A string or bool is no number
    here: float() takes "1" and True, which then fail (or train) mid-run."""
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        v = float(value)  # ints, floats, 0-d tensors (a captured optimizer's lr)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} must be a number (int or float), not {type(value).__name__}: write a "
                         "plain number, unquoted (infinity: .inf)") from None
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi and math.isfinite(v) or (v == hi == math.inf)):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name}={value!r} is outside {interval}" + (f"; {fix}" if fix else ""))


def check_betas(name: str, betas: Any, n: int = 2) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != n:
        raise ValueError(f"{name} must be a sequence of {n} numbers in [0, 1), got {betas!r}")
    for i, b in enumerate(betas):
        check_range(f"{name}[{i}]", b, 0.0, 1.0, hi_open=True, fix="use e.g. 0.9 or 0.999")


def real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class FunctionalOptimizer(torch.optim.Optimizer):
    """Base class: subclasses define `init_state` and `update`; `step` loops over parameters.

    The step count ``state["step"]`` is a Python int, or with ``capturable=True`` (a keyword of
    every subclass, as in torch's optimizers) a 0-dim float64 tensor on the parameter's device.
    `update` is written once for both: with the tensor, everything that depends on the step (bias
    corrections, warm-ups, resets) is tensor arithmetic, no number that changes from step to step
    reaches a kernel as a Python scalar and no step reads the host, so a CUDA graph can capture
    the step and replay it (`graph_capturable`); with the int, those are Python numbers and the
    eager step launches no extra kernels. The learning rate may be a float or a 0-dim tensor.
    """

    @property
    def graph_capturable(self) -> bool:
        """Built with capturable=True; subclasses with host-side modes also say when not."""
        return all(group.get("capturable", False) for group in self.param_groups)

    def init_state(self, p: Tensor, group: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, p: Tensor, grad: Tensor, state: dict, group: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def _prepare_group(self, group: dict) -> None:
        """Hook for per-group work before the parameter loop (e.g. a shared norm)."""

    def _real_views(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """The tensors `init_state` and `update` see for parameter `p`: its real view and its gradient's."""
        return real_view(p), real_view(p.grad)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._prepare_group(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                pr, gr = self._real_views(p)
                if "step" not in state:  # a group hook may already have put group-level state here
                    state.update(self.init_state(pr, group))
                    state["step"] = 0
                if group.get("capturable", False):
                    step = state["step"]
                    if not isinstance(step, Tensor) or step.device != p.device or step.dtype != torch.float64:
                        # the first step, an eager run's checkpoint, one loaded onto another device, or a
                        # count torch's load_state_dict made float32 (it does for capturable groups; a count is
                        # exact in float32, so the float64 copy is too, and every b^t after it runs in float64)
                        state["step"] = torch.as_tensor(state["step"], dtype=torch.float64).to(p.device)
                    state["step"].add_(1)
                else:
                    state["step"] = int(state["step"]) + 1  # int() of a capturable run's tensor: a resume
                self.update(pr, gr, state, group)
        return loss
