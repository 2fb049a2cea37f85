"""The optimizer registry and `build_optimizer`.

An entry is an `OptimizerSpec`: the class (or a lazy ``"module:Class"`` path, so
pytorch-optimizer is imported only when one of its optimizers is built), the keyword
arguments a config may set (anything else is an error: pytorch-optimizer silently swallows
misspelt keywords), sciml's defaults where the library drifted from the paper, and whether the
class handles complex parameters itself or needs the complex-as-real adapter.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch

from sciml.registry import Registry, check_kwargs, load_object, signature_kwargs, takes_any_kwargs

from ._base import check_range
from ._complex import complex_as_real

OPTIMIZERS: Registry = Registry("optimizer")


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one registered optimizer.

    target: the class, or ``"module:Class"`` imported on first build.
    allowed: keyword arguments a config may pass; None means "the class signature".
    defaults: sciml's defaults, applied before the user's keywords (paper values where the
        library drifted).
    fixed: keywords always passed and not settable (e.g. ``foreach=False`` where the library's
        foreach path is untested against its per-parameter path).
    complex_native: the class trains complex parameters itself; otherwise complex parameters
        go through `complex_as_real`.
    needs_closure: ``step`` must be given a closure (L-BFGS, Newton-CG).
    fuse_by_default: pass ``fused=True`` when every parameter is a real floating tensor on CUDA or
        the CPU and the config chose neither ``fused`` nor ``foreach`` (torch's one-kernel step; its
        default is the multi-kernel foreach path on CUDA and the per-tensor loop on the CPU, ~3x
        slower for a PINN's eight tensors: 0.13 against 0.04 ms a step on one core).
    graph_safe: the step keeps all its state on device and reads no host value (torch's fused
        Adam with ``capturable=True`` on CUDA; our `FunctionalOptimizer` family), so a training
        step can be captured in a CUDA graph (`sciml.train.graphs`); see `graph_optimizer_kwargs`.
    adapters: functions applied in order to the resolved class before it is built (subclass
        factories from `sciml.optim._library`, e.g. per-parameter step counts for library classes
        that count per group); the complex-as-real adapter, where needed, comes last.
    """

    target: Any
    allowed: tuple[str, ...] | None = None
    defaults: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    complex_native: bool = False
    needs_closure: bool = False
    fuse_by_default: bool = False
    graph_safe: bool = False
    adapters: tuple = ()

    def resolve(self) -> type:
        if isinstance(self.target, str):
            try:
                return load_object(self.target)
            except ValueError as err:
                if "pytorch_optimizer" in self.target:
                    raise ValueError(f"{err}; install the pinned extra: pip install 'pytorch-optimizer==4.1.0'") from None
                raise
        return self.target

    def valid_kwargs(self) -> list[str]:
        if self.allowed is not None:
            return sorted(self.allowed)
        return signature_kwargs(self.resolve())

    def __call__(self, params, _name: str | None = None, **kwargs):
        cls = self.resolve()
        check_kwargs(f"optimizer {_name!r}" if _name else f"optimizer {cls.__name__}", kwargs, self.valid_kwargs())
        params = [_listed(p) for p in params]  # read below, then passed on: no generator may be spent
        kw = {**self.defaults, **kwargs, **self.fixed}
        if isinstance(kw.get("lr"), (bool, str)):  # torch's classes take lr=True, and fail on "0.01" in their own
            check_range(f"optimizer {_name or cls.__name__} lr", kw["lr"], 0.0)  # comparison; its range is theirs
        if (self.fuse_by_default and "fused" not in kw and "foreach" not in kw and not kw.get("differentiable")
                and _all_real_fusable(params)):  # torch's fused step refuses differentiable=True
            kw["fused"] = True
        for adapt in self.adapters:
            cls = adapt(cls)
        if not self.complex_native and _has_complex(params):
            cls = complex_as_real(cls)
        return cls(params, **kw)


def _listed(p):
    """A parameter, or a param group with its "params" (a tensor or any iterable) as a list."""
    if not isinstance(p, dict):
        return p
    ps = p["params"]
    return {**p, "params": [ps] if isinstance(ps, torch.Tensor) else list(ps)}


def _param_tensors(params) -> list:
    """The tensors of `params` as `_listed` leaves them."""
    return [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]


def _has_complex(params) -> bool:
    return any(t.is_complex() for t in _param_tensors(params))


def _all_real_fusable(params) -> bool:
    tensors = _param_tensors(params)
    devices = {t.device.type for t in tensors}  # one device: torch's fused step refuses a mix
    return len(devices) == 1 and devices <= {"cuda", "cpu"} and all(t.is_floating_point() for t in tensors)


def build_optimizer(params, name: str, **kwargs) -> torch.optim.Optimizer:
    """Build the optimizer registered as `name` (or ``"module:Class"``) over `params`.

    `name` and `kwargs` come straight from a config's ``optimizer:`` mapping, e.g.
    ``build_optimizer(model.parameters(), "adam", lr=1e-3)``. Unknown names list the known
    ones; misspelt keyword arguments raise a ValueError naming the valid ones. A user class
    given as ``"module:Class"`` is called as ``Class(params, **kwargs)`` after the same check
    against its signature.
    """
    obj = OPTIMIZERS.get(name)
    if isinstance(obj, OptimizerSpec) or getattr(obj, "takes_registry_name", False):
        return obj(params, _name=name, **kwargs)
    if isinstance(obj, type) and not takes_any_kwargs(obj):  # a **kwargs class checks its own keywords
        check_kwargs(f"optimizer {name!r}", kwargs, signature_kwargs(obj))
    optimizer = obj(params, **kwargs)
    if not isinstance(optimizer, torch.optim.Optimizer):  # a user's class of another kind failed in the scheduler
        raise ValueError(f"optimizer {name!r} built a {type(optimizer).__name__}, not a torch.optim.Optimizer: a "
                         f"user's optimizer subclasses it (or is a function returning one) and takes (params, **kwargs)")
    return optimizer


_HOW_TO_STEP = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, *, from_config=()) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's own choice of step
    implementation (fused, foreach, capturable): a checkpoint carries the flags of the run that
    wrote it, and torch would adopt them (an eager CPU run's checkpoint would turn a resumed
    CUDA-graph run's fused, capturable step into one that reads the host). The settings named in
    `from_config` (the keys of the config's optimizer section) also stay this optimizer's, so that a
    resume with e.g. ``optimizer.weight_decay=...`` takes effect; the caller sets the lr, whose
    schedule position the checkpoint holds."""
    keep = (*_HOW_TO_STEP, *from_config)
    groups = [{**saved, **{k: own[k] for k in keep if k in own}}
              for saved, own in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def optimizer_spec(name: str) -> OptimizerSpec | None:
    """The registered spec of `name` (None for a ``module:Class`` user optimizer)."""
    obj = OPTIMIZERS.get(name)
    return obj if isinstance(obj, OptimizerSpec) else None


def graph_optimizer_kwargs(name: str, device: torch.device | str, kwargs: dict | None = None) -> dict:
    """Keywords that make optimizer `name` (configured with `kwargs`) capturable in a CUDA graph:
    torch's Adam/AdamW take their fused step with the step count on device (``capturable``) on
    CUDA; ours (`FunctionalOptimizer`) take ``capturable``; a gradient filter needs its base's. Raises
    ValueError for an optimizer whose step cannot be captured (a Python step counter or host-side
    branches would be frozen at capture)."""
    obj = OPTIMIZERS.get(name)
    if hasattr(obj, "base_name"):  # a gradient filter: capturable when its base is
        return graph_optimizer_kwargs(obj.base_name(kwargs or {}), device)
    spec = obj if isinstance(obj, OptimizerSpec) else None
    if spec is None or not spec.graph_safe:
        safe = [n for n in OPTIMIZERS.names() if getattr(optimizer_spec(n), "graph_safe", False)]
        raise ValueError(f"optimizer {name!r} cannot run inside a CUDA graph (its step keeps Python-side state that a "
                         f"replay would freeze); use one of {', '.join(safe)} (or grokfast / perpgrad over one of them), "
                         "or set cuda_graph: false")
    if not spec.fuse_by_default:  # ours: the step count on the device on every device (the CPU simulation runs it)
        return {"capturable": True}
    return {"fused": True, **({"capturable": True} if torch.device(device).type == "cuda" else {})}


def graph_safe(name: str, kwargs: dict | None = None) -> bool:
    """Whether `graph_optimizer_kwargs` accepts optimizer `name` (a filter: over the base `kwargs` name)."""
    try:
        graph_optimizer_kwargs(name, "cpu", kwargs)
        return True
    except ValueError:
        return False


def check_optimizer(name: str, kwargs: dict, *, graph: bool = False) -> None:
    """Build optimizer `name` with `kwargs` on a probe parameter, so that an unknown name, a misspelt
    keyword or a bad value fails before a run spends anything on data or earlier phases. With
    `graph`, its step must also be capturable (`graph_optimizer_kwargs`; some optimizers only in
    some modes). Raises ValueError."""
    kw = dict(kwargs)
    _check_setting_types(name, kwargs)
    if graph:
        kw.update(graph_optimizer_kwargs(name, "cpu", kwargs))
    try:
        optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2, 2))], name, **kw)
    except ValueError:
        raise
    except Exception as err:  # a value of the wrong type or length (betas: [0.9]), or pytorch-optimizer's own
        # exceptions, which are not ValueErrors (NegativeLRError for lr: -1)
        raise ValueError(f"optimizer {name!r} rejects its settings {kwargs}: {type(err).__name__}: {err}"
                         f"{_sequence_hints(name, kwargs)}; fix the value or leave the key out for the default") from err
    if graph and not getattr(optimizer, "graph_capturable", True):
        raise ValueError(f"optimizer {name!r} cannot run inside a CUDA graph with these settings ({kwargs}): "
                         f"{type(optimizer).graph_capturable.__doc__.strip()}; change them or set cuda_graph: false")


def optimizer_defaults(name: str) -> dict[str, Any]:
    """The defaults optimizer `name` builds with: its constructor's, sciml's on top (`OptimizerSpec.defaults`);
    empty where they cannot be read (a user's factory of ``**kwargs`` alone)."""
    obj = OPTIMIZERS.get(name)
    spec = obj if isinstance(obj, OptimizerSpec) else None
    target = spec.resolve() if spec is not None else obj
    try:
        params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters.values()
    except (TypeError, ValueError):
        params = ()
    found = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return {**found, **(spec.defaults if spec is not None else {})}


def _sequence_hints(name: str, kwargs: dict) -> str:
    """"; betas needs 2 numbers, ..." for each setting whose default is a tuple of numbers and whose value is not
    a sequence of as many: the cause of an optimizer's IndexError or TypeError, named for the config."""
    try:
        defaults = optimizer_defaults(name)
    except ValueError:
        return ""
    hints = []
    for key, value in kwargs.items():
        default = defaults.get(key)
        if (isinstance(default, (tuple, list)) and default and all(_is_number(d) for d in default)
                and not (isinstance(value, (tuple, list)) and len(value) == len(default))):
            hints.append(f"{key} needs {len(default)} numbers, as its default {list(default)!r} (got {value!r})")
    return "".join(f"; {h}" for h in hints)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_setting_types(name: str, kwargs: dict) -> None:
    """Every optimizer, before it is built: a number setting (its default a number) must be one number, a
    sequence setting (its default a tuple, as betas) as many numbers as the default has, and no number given may
    be non-finite unless the default is (torch takes lr=inf and trains to NaN). Raises ValueError naming the key."""
    try:
        defaults = optimizer_defaults(name)
    except ValueError:  # an unknown name: build_optimizer says which names there are
        return
    for key, value in kwargs.items():
        default = defaults.get(key)
        shown = f"optimizer {name!r} {key}={value!r}"
        if _is_number(default) and isinstance(value, (list, tuple, dict)):
            raise ValueError(f"{shown} must be one number (its default is {default!r}); write a plain number, "
                             f"e.g. {key}: {default!r}")
        numbers_given = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if _is_number(v)]
        default_finite = all(math.isfinite(d) for d in (default if isinstance(default, (list, tuple)) else [default])
                             if _is_number(d))
        if default_finite and any(not math.isfinite(v) for v in numbers_given):
            example = f" (its default is {default!r})" if default is not None else ""
            raise ValueError(f"{shown} is not a finite number{example}: an optimizer setting of inf or nan trains "
                             f"the weights to NaN; give a finite value")


def closure_kind(name: str) -> str:
    """How a trainer must step the optimizer registered as `name`.

    ``"none"``: ``loss.backward(); optimizer.step()`` (first-order);
    ``"backward"``: ``optimizer.step(closure)``, closure = zero_grad + loss + backward + return
    loss (L-BFGS);
    ``"loss"``: ``optimizer.step(closure)``, closure returns the loss and does *not* call
    backward (NysNewton-CG differentiates the gradient again).
    """
    spec = optimizer_spec(name)
    if spec is None:
        return "none"
    if getattr(spec.resolve(), "closure_returns_loss_only", False):
        return "loss"
    return "backward" if spec.needs_closure else "none"
