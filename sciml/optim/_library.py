"""Adapters for library optimizer classes (pytorch-optimizer) whose step differs from torch's conventions.

`per_parameter_steps(cls)`: torch's optimizers and ours count steps per parameter (``state["step"]``);
pytorch-optimizer's DiffGrad, Grams, SOAP and Gravity keep one count per parameter group
(``group["step"]``), which every parameter's bias correction (SOAP: its initialisation step and
preconditioner refresh; Gravity: β_t) reads. A parameter that first gets a gradient at the group's
step 5 then takes a first step with the corrections of step 5 (Grams: 0.55·lr instead of lr). The
subclass keeps a per-parameter count in ``state["step"]`` and steps the parameters of a group in
sets of equal count, each as a group of its own whose ``"step"`` is that count: one library call
per group when every parameter has the same count, as in the usual case.

`gravity_adapter(cls)`: Gravity draws its initial velocity V₀ ~ N(0, α/η) at a parameter's first
step. With η the group's current lr a warm-up from 0 divided by zero; η is the paper's (constant)
learning rate, so the draw uses the rate the group was built with (``group["velocity_lr"]``), which
a schedule scales but does not replace: a warm-up then starts with displacements η_t·V₀ below α.
The draw uses torch's global RNG, so it depends on every draw made before it; a parameter group with
a ``"velocity_seed"`` key (an int) draws its parameters' V₀ instead from a CPU generator of its own,
seeded with it when the group is added (its parameters draw in the order they start; the same V₀ on
every device): an ensemble member's V₀ then depends on its seed alone, not on the members before it.
"""

from __future__ import annotations

import functools

import torch

from ._base import check_range


def _count(state: dict, group: dict) -> int:
    """A parameter's step count: its own, 0 before its first step; a parameter stepped before
    counts were kept per parameter (an older checkpoint) takes its group's."""
    if "step" in state:
        return int(state["step"])
    return int(group.get("step", 0)) if state else 0


@functools.lru_cache(maxsize=None)
def per_parameter_steps(cls: type) -> type:
    """A subclass of library optimizer `cls` that counts steps per parameter (see module doc)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        try:
            for group in groups:
                by_count: dict[int, list] = {}
                for p in group["params"]:
                    if p.grad is not None:
                        by_count.setdefault(_count(self.state[p] if p in self.state else {}, group), []).append(p)
                for count, params in sorted(by_count.items()):
                    self.param_groups = [{**group, "params": params, "step": count}]
                    cls.step(self)
                    for p in params:
                        self.state[p]["step"] = count + 1
                    group["step"] = max(int(group.get("step", 0)), count + 1)
        finally:
            self.param_groups = groups
        return loss

    return type(f"PerParameterStep{cls.__name__}", (cls,), {
        "step": step, "__module__": __name__,
        "__doc__": f"{cls.__name__} with its step count kept per parameter (sciml.optim per-parameter-step adapter).",
    })


@functools.lru_cache(maxsize=None)
def gravity_adapter(cls: type) -> type:
    """pytorch-optimizer's Gravity with a positive lr required and V₀ scaled by the built rate (module doc)."""

    def __init__(self, params, *args, **kwargs):
        cls.__init__(self, params, *args, **kwargs)
        for group in self.param_groups:
            check_range("gravity lr", group["lr"], 0.0, lo_open=True,
                        fix="Gravity draws its initial velocity with standard deviation alpha/lr: use a positive rate "
                            "(a schedule may still start at 0: the draw uses this rate)")
            group.setdefault("velocity_lr", float(group["lr"]))

    def init_group(self, group, **kwargs):
        for p in group["params"]:
            if p.grad is not None and not self.state[p]:
                rate = float(group.get("velocity_lr", group["lr"]))
                if not rate > 0:
                    raise ValueError(f"gravity: the initial velocity's standard deviation alpha/lr needs a positive lr, "
                                     f"got {rate!r} for a parameter group added without one; give the group a positive lr "
                                     "(or start its warm-up above 0)")
                std = group["alpha"] / rate
                # the group's own stream where it has one (module doc); `group` may be a per-count copy
                gen = self.__dict__.get("_velocity_streams", {}).get(p)
                if gen is None:
                    self.state[p]["v"] = torch.empty_like(p).normal_(mean=0.0, std=std)
                else:
                    v = torch.empty(p.shape, dtype=p.dtype).normal_(mean=0.0, std=std, generator=gen)
                    self.state[p]["v"] = v.to(p.device)
        return cls.init_group(self, group, **kwargs)

    def add_param_group(self, param_group):
        cls.add_param_group(self, param_group)
        group = self.param_groups[-1]
        if group.get("velocity_seed") is not None:  # one generator per group, shared by its parameters
            gen = torch.Generator().manual_seed(int(group["velocity_seed"]))
            self.__dict__.setdefault("_velocity_streams", {}).update({p: gen for p in group["params"]})

    return type(f"Sciml{cls.__name__}", (cls,), {
        "__init__": __init__, "init_group": init_group, "add_param_group": add_param_group, "__module__": __name__,
        "__doc__": f"{cls.__name__} with a checked lr and the initial velocity scaled by the built rate (sciml.optim).",
    })
