"""Burgers PINN on CPU, small budget: hard Dirichlet + initial condition, float64, Adam → L-BFGS."""

import math

import torch

from sciml.pde import get_problem
from sciml.train.pinn import fit

CONFIG = {
    "seed": 0, "device": "cpu", "dtype": "float64", "constraints": "hard", "derivatives": "jet",
    "net": {"width": 20, "depth": 3},
    "points": {"interior": 1000, "method": "sobol"},
    "log_every": 1000, "eval_every": 0,
    "phases": [
        {"optimizer": {"name": "adam", "lr": 2e-3}, "steps": 200},
        {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "history_size": 50, "line_search_fn": "strong_wolfe",
                       "tolerance_grad": 1e-12, "tolerance_change": 0.0}, "steps": 20},
    ],
}


def test_burgers_pinn_small_budget():
    torch.manual_seed(0)
    result = fit(get_problem("burgers"), CONFIG)
    rel_l2 = result.metrics["rel_l2"]
    print(f"measured rel_l2={rel_l2:.4e} in {result.metrics['seconds']:.1f} s")
    assert math.isfinite(rel_l2)
    assert rel_l2 < PINNED, f"Burgers PINN rel. L2 {rel_l2:.3e} above the pinned {PINNED:.1e}"


# measured 2026-11-25, CPU (2 shared cores, torch 2.13, float64): rel. L2 1.74e-1 after 200 Adam +
# 20x20 L-BFGS iterations, 204 s of training on a machine loaded ~4x over its cores (an idle
# 2-core box is several times faster); 300 Adam + 30x20 L-BFGS gave 1.18e-1. 1.5x headroom.
PINNED = 0.26
