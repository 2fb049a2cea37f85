"""PINNs on CPU at small budgets (configs/<problem>/pinn_small.yaml) against pinned relative L2."""

import math
from pathlib import Path

import pytest
import torch

from sciml.config import load_yaml
from sciml.pde import get_problem
from sciml.train.pinn import fit

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Budgets that learn the problems (configs/<problem>/pinn_small.yaml; earlier budgets stopped at 1.95e-1 and 8.8e-2,
# pins 0.26 / 0.13 that only caught a net learning nothing). Measured 2026-11-26, CPU, float64, one thread a run, with
# torch's fused Adam step (`python benchmarks/bench_pinn.py --small --parts accuracy --seeds 3`): burgers 9.57e-3
# (seed 0, as here; seeds 1 / 2: 3.26e-3 / 5.96e-3), pinned at 2x the worst seed, since L-BFGS paths part with
# rounding (with 2000 points a seed ended at 7.2e-2); poisson_lshape 3.46e-2 (seeds 1 / 2: 2.93e-2 / 2.36e-2),
# pinned at 1.4x the worst. Since the hard transform's jets follow Leibniz's rule (2026-11-27, same values to 1e-16,
# another rounding path; the same bench command, --out runs/bench_pinn_s18): burgers 7.13e-3 (seed 0) / 4.34e-3 /
# 5.59e-3 in 53 s a run (77 s before), poisson_lshape unchanged (soft) 3.46e-2.
PINNED = {"burgers": 0.02, "poisson_lshape": 0.05}


@pytest.mark.parametrize("problem", sorted(PINNED))
def test_pinn_small_budget(problem):
    torch.manual_seed(0)
    result = fit(get_problem(problem), load_yaml(CONFIGS / problem / "pinn_small.yaml"))
    rel_l2 = result.metrics["rel_l2"]
    print(f"{problem}: measured rel_l2={rel_l2:.4e} in {result.metrics['seconds']:.1f} s")
    assert math.isfinite(rel_l2)
    assert rel_l2 < PINNED[problem], f"{problem} PINN rel. L2 {rel_l2:.3e} above the pinned {PINNED[problem]:.1e}"
