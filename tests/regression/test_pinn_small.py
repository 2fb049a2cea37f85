"""PINNs on CPU at small budgets (configs/<problem>/pinn_small.yaml) against pinned relative L2."""

import math
from pathlib import Path

import pytest
import torch

from sciml.config import load_yaml
from sciml.pde import get_problem
from sciml.train.pinn import fit

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# measured 2026-11-25, CPU (2 shared cores, torch 2.13, float64), with 1.5x headroom:
# burgers 1.74e-1 after 200 Adam + 20x20 L-BFGS (300 Adam + 30x20 L-BFGS gave 1.18e-1);
# poisson_lshape 8.52e-2 after 300 Adam + 30x20 L-BFGS.
# 2026-11-26, sciml's L-BFGS (torch's iterates to rounding): burgers 1.95e-1 (its loss 1.82e-2 against
# torch's 2.83e-2: the two runs agree to 1e-11 for 60 iterations, then rounding grows ~30x per 20),
# poisson_lshape 8.75e-2; pins unchanged.
# 2026-11-26, a budget that learns the shock (4 x 20 net, 4000 points, 500 Adam + 100x20 L-BFGS; the old one
# stopped at 1.95e-1): burgers 1.02e-2 (seed 0, as here; seeds 1 / 2: 3.7e-3 / 9.8e-3), pinned at 2x the worst
# seed, since L-BFGS paths part with rounding (with 2000 points a seed ended at 7.2e-2). poisson_lshape with
# 150x20 L-BFGS iterations (was 30x20): 3.22e-2 (seed 0; seeds 1 / 2: 2.8e-2 / 2.1e-2), pinned at 1.5x the worst.
PINNED = {"burgers": 0.02, "poisson_lshape": 0.05}


@pytest.mark.parametrize("problem", sorted(PINNED))
def test_pinn_small_budget(problem):
    torch.manual_seed(0)
    result = fit(get_problem(problem), load_yaml(CONFIGS / problem / "pinn_small.yaml"))
    rel_l2 = result.metrics["rel_l2"]
    print(f"{problem}: measured rel_l2={rel_l2:.4e} in {result.metrics['seconds']:.1f} s")
    assert math.isfinite(rel_l2)
    assert rel_l2 < PINNED[problem], f"{problem} PINN rel. L2 {rel_l2:.3e} above the pinned {PINNED[problem]:.1e}"
