"""Gradient filters in front of any registered optimizer: Grokfast and ⊥Grad.

``build_optimizer(params, "grokfast", base="adam", lr=1e-3, alpha=0.98, lamb=2.0)``: the filter's
own keywords are taken, the rest go to the base optimizer (checked there). `base` is a name or
a mapping ``{"name": "adam", ...}``. The filter runs on the gradients at the start of every
``step`` and keeps its state in ``state_dict()["grad_filter"]`` (by parameter index).
"""

from __future__ import annotations

import functools

import torch

from ._base import check_range, real_view
from ._complex import complex_as_real
from sciml.registry import check_kwargs, signature_kwargs

from ._registry import OPTIMIZERS, OptimizerSpec, _has_complex


def grokfast_ema(grad: torch.Tensor, state: dict, alpha: float, lamb: float) -> None:
    """Grokfast-EMA (Lee et al. 2024, arXiv:2405.20233): h ← αh + (1−α)g (h₁ = g₁); g ← g + λh."""
    if "ema" not in state:
        state["ema"] = grad.detach().clone()
    else:
        state["ema"].lerp_(grad, 1 - alpha)
    grad.add_(state["ema"], alpha=lamb)


def perpgrad(grad: torch.Tensor, param: torch.Tensor, eps: float = 1e-30) -> None:
    """⊥Grad (Prieto et al. 2025, arXiv:2501.04697): g⊥ = g − (θ·g/θ·θ)θ, rescaled to ‖g‖.

    Where g⊥ vanishes to rounding (‖g⊥‖ ≤ √eps_mach·‖g‖: a one-element tensor, or g ∥ θ) the
    filtered gradient is 0, its exact value; the reference code would rescale the rounding
    noise to ‖g‖, a step in a random direction.
    """
    w, g = param.reshape(-1), grad.reshape(-1)
    proj = torch.dot(w, g) / (torch.dot(w, w) + eps)
    g_orth = g - proj * w
    g_norm, o_norm = torch.linalg.vector_norm(g), torch.linalg.vector_norm(g_orth)
    tiny = o_norm <= torch.finfo(g.dtype).eps ** 0.5 * g_norm
    g_orth.mul_(torch.where(tiny, torch.zeros_like(o_norm), g_norm / (o_norm + eps)))
    grad.copy_(g_orth.view_as(grad))


_FILTERS = {
    "grokfast": {"alpha": 0.98, "lamb": 2.0},
    "perpgrad": {},
}


@functools.lru_cache(maxsize=None)
def filtered(base_cls: type, kind: str) -> type:
    """A subclass of `base_cls` whose ``step`` first filters the gradients in place."""

    def __init__(self, params, *args, filter_options: dict, **kwargs):
        base_cls.__init__(self, params, *args, **kwargs)
        self._filter_options = dict(filter_options)
        self._filter_state: dict[int, dict] = {}

    def _apply(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and group.get("filtered", True):  # a group may opt out (a PINN's unknowns)
                    g, w = real_view(p.grad), real_view(p.detach())
                    if kind == "grokfast":
                        grokfast_ema(g, self._filter_state.setdefault(i, {}), **self._filter_options)
                    else:
                        perpgrad(g, w)
                i += 1

    def step(self, closure=None):
        if closure is not None:
            raise ValueError(f"the {kind} filter needs a first-order base optimizer stepped without a closure")
        with torch.no_grad():
            self._apply()
        return base_cls.step(self)

    def state_dict(self):
        sd = base_cls.state_dict(self)
        sd["grad_filter"] = {i: {k: v.clone() for k, v in s.items()} for i, s in self._filter_state.items()}
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        fs = sd.pop("grad_filter", {})
        base_cls.load_state_dict(self, sd)
        dev = {i: p for i, p in enumerate(q for g in self.param_groups for q in g["params"])}
        self._filter_state = {int(i): {k: v.to(real_view(dev[int(i)]).device) for k, v in s.items()} for i, s in fs.items()}

    return type(f"{kind.capitalize()}{base_cls.__name__}", (base_cls,), {
        "__init__": __init__, "_apply": _apply, "step": step, "state_dict": state_dict,
        "load_state_dict": load_state_dict, "__module__": __name__,
        "__doc__": f"{base_cls.__name__} with the {kind} gradient filter (sciml.optim).",
    })


class FilterSpec:
    """Registry entry for a gradient filter over a base optimizer chosen by name."""

    takes_registry_name = True  # build_optimizer passes the name for error messages

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self):
        return f"FilterSpec({self.kind!r})"

    @staticmethod
    def base_name(kwargs: dict) -> str:
        """The name of the base optimizer that `kwargs` (a config's) choose."""
        base = kwargs.get("base", "adam")
        return base.get("name", "") if isinstance(base, dict) else base

    def __call__(self, params, _name: str | None = None, base="adam", **kwargs):
        opts = dict(_FILTERS[self.kind])
        for k in list(kwargs):
            if k in opts:
                opts[k] = kwargs.pop(k)
        if self.kind == "grokfast":
            check_range("alpha", opts["alpha"], 0.0, 1.0, hi_open=True, fix="EMA factor, the paper uses 0.98")
            check_range("lamb", opts["lamb"], 0.0, fix="amplification, the paper uses 2")
        if isinstance(base, dict):
            base = dict(base)
            base_name = base.pop("name", None)
            if base_name is None:
                raise ValueError(f"{self.kind} base mapping needs a 'name', got {base!r}")
            kwargs = {**base, **kwargs}
        else:
            base_name = base
        if base_name in _FILTERS:
            raise ValueError(f"{self.kind}: base={base_name!r} is itself a filter; name a base optimizer such as 'adam'")
        spec = OPTIMIZERS.get(base_name)
        if isinstance(spec, OptimizerSpec):
            if spec.needs_closure:
                raise ValueError(f"{self.kind}: base={base_name!r} needs a closure; use a first-order base such as 'adam'")
            cls = spec.resolve()
            valid = spec.valid_kwargs() + sorted(opts)
            check_kwargs(f"optimizer {_name or self.kind!r}", kwargs, valid)
            kw = {**spec.defaults, **kwargs, **spec.fixed}
            complex_native = spec.complex_native
        else:
            cls = spec
            check_kwargs(f"optimizer {_name or self.kind!r}", kwargs, signature_kwargs(cls) + sorted(opts))
            kw, complex_native = kwargs, False
        params = list(params)
        cls = filtered(cls, self.kind)
        if not complex_native and _has_complex(params):
            cls = complex_as_real(cls)
        return cls(params, filter_options=opts, **kw)
