"""Every registered optimizer, with its source paper (shown by `sciml list`)."""

from __future__ import annotations

import torch

from ._registry import OPTIMIZERS, OptimizerSpec


def _add(name: str, spec: OptimizerSpec, description: str, source: str) -> None:
    OPTIMIZERS.add(name, spec, description=description, source=source)


# torch.optim: reference quality and complex-aware (except L-BFGS's flat-vector algebra).
_add("adam", OptimizerSpec(torch.optim.Adam, complex_native=True),
     "Adam (torch.optim)", "Kingma & Ba 2015, arXiv:1412.6980")
_add("adamw", OptimizerSpec(torch.optim.AdamW, complex_native=True),
     "AdamW, decoupled weight decay (torch.optim)", "Loshchilov & Hutter 2019, arXiv:1711.05101")
_add("radam", OptimizerSpec(torch.optim.RAdam, complex_native=True),
     "Rectified Adam (torch.optim)", "Liu et al. 2020, arXiv:1908.03265")
_add("nadam", OptimizerSpec(torch.optim.NAdam, complex_native=True),
     "Nesterov Adam (torch.optim)", "Dozat 2016, ICLR workshop")
_add("sgd", OptimizerSpec(torch.optim.SGD, complex_native=True),
     "SGD with optional (Nesterov) momentum (torch.optim)", "Robbins & Monro 1951; Sutskever et al. 2013")
_add("lbfgs", OptimizerSpec(torch.optim.LBFGS, needs_closure=True),
     "L-BFGS, optional strong-Wolfe line search (torch.optim); step(closure)", "Liu & Nocedal 1989")
