"""The PINN net's options on Wang, Teng & Perdikaris's Helmholtz benchmark (SISC 2021, the paper of the modified MLP).

    Δu + u = q on [−1, 1]², u = sin(πx) sin(4πy) on the boundary (soft), q from that exact solution.

A plain MLP, the modified (gated) MLP, random weight factorisation, and both; 3 × 50 tanh, 1024 interior points
redrawn every step and 256 fixed boundary points, Adam 1e-3 (× 0.9 every 1000 steps), three seeds each.

Run: python examples/pinn_net_options.py [--steps 3000] [--weights fixed|grad_norm] [--variants plain,modified_rwf] [--seeds 3]
Measured (CPU, one thread, torch 2.13.0+cpu, 2026-11-27, at d59db97; rel. L2, seeds 0 / 1 / 2; the default run is
5 minutes of CPU, 8.5 minutes on a shared machine; the grad_norm one 8 minutes):
  --steps 3000 --weights fixed:      plain 2.77 / 1.01 / 1.28; modified 0.333 / 0.537 / 0.771;
                                     factorised 1.27 / 0.579 / 0.519; modified + factorised 0.265 / 0.25 / 0.309
  --steps 10000 --weights grad_norm --variants plain,modified_rwf:
                                     plain 0.0143 / 0.0112 / 0.0203; modified + factorised 0.0156 / 0.00709 / 0.00598
With fixed loss weights the gated, factorised net gets furthest in this budget (0.25-0.31 against the plain net's
1.0-2.8, still far from solved: the residual's gradients swamp the boundary's, the failure the paper describes); once
the same paper's gradient-norm weights balance the terms, both reach about 1e-2, the plain net at half the cost per
step (2.5-3.4 s of CPU per 500 steps against 5.7-6.4 s).
"""

import argparse
import math
import time

import torch

from sciml.pde import Dirichlet, Problem, Rectangle
from sciml.train.pinn import fit

A1, A2 = 1.0, 4.0
VARIANTS = {
    "plain": {},
    "modified": {"modified": True},
    "factorized": {"weight_factorization": {"mean": 1.0, "std": 0.1}},
    "modified_rwf": {"modified": True, "weight_factorization": {"mean": 1.0, "std": 0.1}},
}


def exact(x):
    return torch.sin(A1 * math.pi * x[:, 0]) * torch.sin(A2 * math.pi * x[:, 1])


def source(x):
    return (1 - (A1 * math.pi) ** 2 - (A2 * math.pi) ** 2) * exact(x)


problem = Problem(domain=Rectangle([-1, -1], [1, 1]),
                  residual=lambda d, p: d.laplacian("u") + d.u - source(torch.stack([d.x, d.y], -1)),
                  conditions=[Dirichlet(exact)], reference=exact, name="helmholtz")


def main(steps: int = 3000, weights: str = "fixed", variants=tuple(VARIANTS), seeds: int = 3, interior: int = 1024) -> dict:
    """{variant: [rel. L2 per seed]}; steps, seeds and interior shrink the run (tests/test_examples.py)."""
    errors = {}
    for name in variants:
        start = time.perf_counter()
        errors[name] = [fit(problem, {
            "seed": seed, "constraints": "soft", "derivatives": "jet", "loss": {"adaptive": weights},
            "net": {"width": 50, "depth": 3, **VARIANTS[name]},
            "points": {"interior": interior, "boundary": 256, "resample_every": 1, "method": "uniform"},
            "eval_every": steps, "log_every": steps,
            "phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": steps,
                        "decay_every": 1000, "decay_rate": 0.9}]}).metrics["rel_l2"] for seed in range(seeds)]
        print(f"{name:>13}: rel. L2 " + " / ".join(f"{e:.3g}" for e in errors[name])
              + f"   ({(time.perf_counter() - start) / seeds:.0f} s per seed)", flush=True)
    return errors


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--weights", choices=["fixed", "grad_norm"], default="fixed")
    ap.add_argument("--variants", default=",".join(VARIANTS), type=lambda s: s.split(","))
    ap.add_argument("--seeds", type=int, default=3)
    main(**vars(ap.parse_args()))
