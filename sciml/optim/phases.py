"""Phase driver for PINN-grade training: Adam → L-BFGS → NysNewton-CG, optionally in float64.

Contract (what a PINN trainer supplies and gets back)::

    from sciml.optim.phases import PhaseSchedule
    schedule = PhaseSchedule([
        {"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 10000},
        {"optimizer": {"name": "lbfgs", "lr": 1.0, "history_size": 100, "line_search_fn": "strong_wolfe"},
         "steps": 2000, "dtype": "float64"},
        {"optimizer": {"name": "nys_newton_cg", "rank": 60, "mu": 1e-4}, "steps": 100},
    ])
    history = schedule.run(model, loss_fn, callback=None)  # a guard per phase: "guard": {...}

* ``loss_fn()`` returns the scalar training loss of the model's *current* parameters, built
  with autograd (do **not** call ``backward()``: the driver does, or differentiates twice for
  Newton-CG). Its inputs must follow the parameters' dtype, e.g.
  ``x.to(next(model.parameters()).dtype)``, so a float64 phase works.
* A phase is ``{"optimizer": {"name": ..., **kwargs}, "steps": N}`` plus optionally
  ``"dtype": "float32" | "float64"`` (the model is cast in place before the phase and stays in
  that dtype; complex parameters and buffers go to complex64 | complex128) and ``"guard": {...}`` (a `Guard` config for this phase; default: no guard).
  ``steps`` counts ``optimizer.step`` calls: one L-BFGS step runs up to ``max_iter`` (torch
  default 20) inner iterations, one Newton-CG step runs a CG solve and a line search.
* ``callback(phase_index, step, loss)`` is called after every step with the loss as a float
  (it costs a host sync; pass None to avoid it). Returning True ends the phase early.
* ``run`` returns one dict per phase: ``name``, ``steps``, ``loss`` (last), ``evaluations``
  (loss evaluations, counting every closure call), ``seconds``, and the guard's ``events``.
* Closures are built per optimizer kind: first-order optimizers use
  ``zero_grad(); loss_fn().backward(); step()``; L-BFGS gets the standard torch closure with
  ``backward()``; Newton-CG gets ``loss_fn`` itself.

Why this order (Rathore et al., ICML 2024): Adam first avoids the saddles that attract
L-BFGS; L-BFGS cuts the condition number; Newton-CG continues where L-BFGS's line search stalls.
Float64 for the quasi-Newton phases keeps L-BFGS's tests from tripping early (Xu et al. 2025,
"FP64 is all you need", arXiv:2505.10949).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from ._registry import build_optimizer, check_optimizer, closure_kind
from .guard import Guard

_DTYPES = {"float32": torch.float32, "float64": torch.float64, None: None}


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def cast_model(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast `model`'s parameters and buffers in place: real floating ones to `dtype`, complex ones to the
    complex dtype of that precision (``model.to(torch.float64)`` would drop their imaginary parts);
    integer and bool tensors stay as they are."""
    complex_dtype = _COMPLEX[dtype]

    def cast(t: torch.Tensor) -> torch.Tensor:
        if t.is_complex():
            return t.to(complex_dtype)
        return t.to(dtype) if t.is_floating_point() else t

    return model._apply(cast)


class PhaseSchedule:
    """An ordered list of optimizer phases; see the module docstring for the contract."""

    def __init__(self, phases: list[dict[str, Any]]):
        if not isinstance(phases, (list, tuple)) or not phases:
            raise ValueError(f"phases must be a non-empty list of {{'optimizer': {{...}}, 'steps': N}}, got {phases!r}")
        self.phases = []
        for i, ph in enumerate(phases):
            if not isinstance(ph, dict):
                raise ValueError(f"phase {i} must be a mapping, got {ph!r}")
            unknown = set(ph) - {"optimizer", "steps", "dtype", "guard"}
            if unknown:
                raise ValueError(f"phase {i} has unknown keys {sorted(unknown)}; allowed: optimizer, steps, dtype, guard")
            opt = ph.get("optimizer")
            if not isinstance(opt, dict) or "name" not in opt:
                raise ValueError(f"phase {i} needs optimizer: {{name: ..., ...}}, got {opt!r}")
            kwargs = {k: v for k, v in opt.items() if k != "name"}
            try:  # every phase's name, keywords and values fail now, not after the earlier phases trained
                check_optimizer(opt["name"], kwargs)
                if ph.get("guard"):
                    Guard.check_settings(ph["guard"])
            except ValueError as err:
                raise ValueError(f"phase {i}: {err}") from None
            steps = ph.get("steps")
            if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
                raise ValueError(f"phase {i} steps={steps!r} must be a positive integer")
            if ph.get("dtype") not in _DTYPES:
                raise ValueError(f"phase {i} dtype={ph.get('dtype')!r} must be 'float32', 'float64' or absent")
            self.phases.append({"optimizer": dict(opt), "steps": steps, "dtype": ph.get("dtype"),
                                "guard": dict(ph["guard"]) if ph.get("guard") else None})

    @property
    def total_steps(self) -> int:
        return sum(p["steps"] for p in self.phases)

    def run(self, model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], *,
            callback: Callable[[int, int, float], Any] | None = None) -> list[dict[str, Any]]:
        history = []
        for i, ph in enumerate(self.phases):
            dtype = _DTYPES[ph["dtype"]]
            if dtype is not None:
                cast_model(model, dtype)
            kw = dict(ph["optimizer"])
            name = kw.pop("name")
            opt = build_optimizer(model.parameters(), name, **kw)
            kind = closure_kind(name)
            guard = Guard(model, opt, **ph["guard"]) if ph["guard"] else None
            evals = [0]

            def counted_loss():
                evals[0] += 1
                return loss_fn()

            def backward_closure():
                opt.zero_grad(set_to_none=True)
                loss = counted_loss()
                loss.backward()
                return loss

            start, last, events, k = time.perf_counter(), None, [], 0
            for k in range(1, ph["steps"] + 1):
                if kind == "none":
                    loss = backward_closure()
                    guard.step(loss) if guard else opt.step()
                else:
                    closure = counted_loss if kind == "loss" else backward_closure
                    loss = guard.step(None, closure=closure) if guard else opt.step(closure)
                last = loss
                if guard:
                    events += guard.pop_events()
                if callback is not None and callback(i, k, float(loss.detach())):
                    break
            history.append({"name": name, "steps": k, "loss": None if last is None else float(last.detach()),
                            "evaluations": evals[0], "seconds": time.perf_counter() - start, "events": events})
        return history
