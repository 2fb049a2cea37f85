"""Stability-aware optimizers by name, the training guard, and second-order PINN phases.

>>> from sciml.optim import build_optimizer, Guard
>>> opt = build_optimizer(model.parameters(), "adam", lr=1e-3)
>>> guard = Guard(model, opt)            # loss.backward(); guard.step(loss)

`OPTIMIZERS.entries()` lists every name with its description and source paper.
pytorch-optimizer is imported only when one of its optimizers is built.

Stepping: ``closure_kind(name)`` says how — ``"none"`` (``loss.backward(); guard.step(loss)``),
``"backward"`` (L-BFGS: ``guard.step(None, closure=closure)`` with a closure that calls
backward) or ``"loss"`` (``nys_newton_cg``: the closure returns the loss without backward).
Complex parameters work with every entry (real views where an implementation needs them).
Adam → L-BFGS → Newton-CG schedules for PINNs: `sciml.optim.phases.PhaseSchedule`.
"""

from ._registry import (OPTIMIZERS, OptimizerSpec, build_optimizer, check_optimizer, closure_kind, graph_optimizer_kwargs,
                        graph_safe, load_optimizer_state, optimizer_spec)
from ._lr import lrs_as_tensors, set_lr
from ._complex import complex_as_real
from . import _catalog  # noqa: F401  (registers the entries)
from .guard import Guard, GuardError

__all__ = ["OPTIMIZERS", "OptimizerSpec", "build_optimizer", "check_optimizer", "closure_kind", "graph_optimizer_kwargs",
           "graph_safe", "load_optimizer_state", "lrs_as_tensors", "optimizer_spec", "set_lr", "complex_as_real", "Guard", "GuardError"]

from ._adaptive import MARS, SPAM, AdaBelief, AdEMAMix, ClipRAdaGradD, FAdam, SubsetNorm  # noqa: E402
from ._lbfgs import LBFGS  # noqa: E402
from ._newton import NysNewtonCG  # noqa: E402
from .phases import PhaseSchedule  # noqa: E402

__all__ += ["AdaBelief", "SPAM", "AdEMAMix", "MARS", "FAdam", "SubsetNorm", "ClipRAdaGradD", "LBFGS", "NysNewtonCG",
            "PhaseSchedule"]
