"""Complex-as-real adapter: lets an optimizer that rejects complex tensors train them.

FNO spectral weights are complex; several library optimizers (SOAP, L-BFGS's flat-vector
algebra, ...) only accept real tensors. `complex_as_real(cls)` returns a subclass of `cls`
that is handed `torch.view_as_real` views of the complex parameters (leaf tensors sharing
storage, so in-place updates reach the model) and, before every step and every closure call,
points each view's `.grad` at the real view of the complex gradient. A complex entry is then
optimised as two reals, the convention torch.optim itself uses for complex Adam.
"""

from __future__ import annotations

import functools

import torch


def _real_groups(params):
    """Param groups with complex tensors replaced by real views; returns (groups, pairs)."""
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [dict(g) for g in params]
    else:
        groups = [{"params": params}]
    pairs = []
    for g in groups:
        plist = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
        new = []
        for p in plist:
            if p.is_complex():
                v = torch.view_as_real(p.detach())
                pairs.append((p, v))
                new.append(v)
            else:
                new.append(p)
        g["params"] = new
    return groups, pairs


def _sync_grads(pairs) -> None:
    for p, v in pairs:
        v.grad = None if p.grad is None else torch.view_as_real(p.grad)


@functools.lru_cache(maxsize=None)
def complex_as_real(cls: type) -> type:
    """A subclass of optimizer class `cls` that accepts complex parameters (see module doc)."""

    def __init__(self, params, *args, **kwargs):
        groups, pairs = _real_groups(params)
        self._complex_pairs = pairs
        cls.__init__(self, groups, *args, **kwargs)

    def step(self, closure=None):
        pairs = self._complex_pairs
        if closure is None:
            _sync_grads(pairs)
            return cls.step(self)

        def real_closure():
            loss = closure()
            _sync_grads(pairs)  # closure-driven methods (L-BFGS) read grads after each call
            return loss

        _sync_grads(pairs)
        return cls.step(self, real_closure)

    def zero_grad(self, set_to_none: bool = True):
        cls.zero_grad(self, set_to_none)
        for p, _ in self._complex_pairs:  # the views' grads alias these; clear the originals too
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    return type(f"ComplexAsReal{cls.__name__}", (cls,), {
        "__init__": __init__, "step": step, "zero_grad": zero_grad, "__module__": __name__,
        "__doc__": f"{cls.__name__} on real views of complex parameters (sciml.optim complex adapter).",
    })
