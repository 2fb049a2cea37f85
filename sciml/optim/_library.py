"""Adapters for library optimizer classes (pytorch-optimizer) whose step differs from torch's conventions.

`per_parameter_steps(cls)`: torch's optimizers and ours count steps per parameter (``state["step"]``);
pytorch-optimizer's DiffGrad, Grams, SOAP and Gravity keep one count per parameter group
(``group["step"]``), which every parameter's bias correction (SOAP: its initialisation step and
preconditioner refresh; Gravity: β_t) reads. A parameter that first gets a gradient at the group's
step 5 then takes a first step with the corrections of step 5 (Grams: 0.55·lr instead of lr). The
subclass keeps a per-parameter count in ``state["step"]`` and steps the parameters of a group in
sets of equal count, each as a group of its own whose ``"step"`` is that count: one library call
per group when every parameter has the same count, as in the usual case.
"""

from __future__ import annotations

import functools

import torch


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

