"""The hard-constraint layer's cost: one expert (PI-HC) against four (PI-HC-MoE), by collocation nodes.

One step = the layer's forward (the batched Levenberg-Marquardt solve) and backward (implicit
gradient to the basis) on a fixed smooth random basis, with the viscous Burgers residual and an
initial condition, float64 inside. Per row: total collocation nodes per sample, the variant
("hc": one expert with all the nodes; "moe": 4 x-blocks with a quarter each; "moe_overlap": the
same blocks overlapping by 1/8 of a block per side), median step time, LM steps. The paper
(Chalapathi et al. 2024) reports MoE's training step up to 12.8x faster than PI-HC's at 10^4 nodes
on NS with JAX solvers; here every expert of every sample is one batched solve, so the ratio
says what the split itself buys.

    python benchmarks/bench_hard_constraint.py            # paper-like sizes (GPU): 1024 x 101 grid, batch 6, N 16
    python benchmarks/bench_hard_constraint.py --small    # CPU: 128 x 33 grid, batch 2
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import add_dry_run, dry_run_done, time_call, write_result  # noqa: E402
from sciml.constraints import GridCondition, HardConstraint  # noqa: E402

VARIANTS = ("hc", "moe", "moe_overlap")
EXPERTS = 4


def smooth_basis(batch: int, n_basis: int, nx: int, nt: int, device, generator) -> torch.Tensor:
    """Low Fourier modes in x times low-order polynomials in t, randomly mixed (float32, as a backbone's output)."""
    x = torch.arange(nx, device=device) / nx
    t = torch.linspace(0, 1, nt, device=device)
    modes = torch.stack([f(2 * math.pi * k * x) for k in range(1, 5) for f in (torch.sin, torch.cos)])
    shapes = (modes[:, None, :, None] * torch.stack([t ** j for j in range(3)])[None, :, None, :]).flatten(0, 1)
    mix = torch.randn(batch, n_basis, shapes.shape[0], generator=generator).to(device)
    return torch.einsum("bnk,kxt->bnxt", mix, shapes)


def layer_for(variant: str, nodes: int, nx: int, nt: int) -> HardConstraint:
    block = nx // EXPERTS
    experts, points, overlap = ((1, 1), nodes, 0) if variant == "hc" else ((EXPERTS, 1), nodes // EXPERTS, 0)
    if variant == "moe_overlap":
        overlap = max(1, block // 8)
    return HardConstraint(lambda d, p: d.u_t + d.u * d.u_x - 0.01 * d.u_xx, coords=("x", "t"),
                          spacing=(1 / nx, 1 / (nt - 1)), periodic=("x",), data_fields=("u0",),
                          conditions=[GridCondition(lambda d: d.u - d.u0, at={"t": 0})], experts=experts,
                          points=points, overlap=(overlap, 0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU sizes")
    parser.add_argument("--nodes", default=None, help="total collocation nodes per sample, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    add_dry_run(parser)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: choose from {VARIANTS}")
    nx, nt, batch, n_basis = (128, 33, 2, 16) if args.small else (1024, 101, 6, 16)
    default_nodes = "400,1600,4000" if args.small else "400,4000,20000,80000"
    nodes = [int(n) for n in (args.nodes or default_nodes).split(",")]
    if any(n // EXPERTS > (nx // EXPERTS) * nt for n in nodes):
        parser.error(f"--nodes: at most {nx * nt} on the {nx} x {nt} grid")
    if dry_run_done(args):
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    basis = smooth_basis(batch, n_basis, nx, nt, device, gen).requires_grad_()
    u0 = basis[:, 0, :, :1].detach().expand(batch, nx, nt).contiguous()
    rows = []
    for n in nodes:
        times = {}
        for variant in variants:
            layer = layer_for(variant, n, nx, nt)

            def step():
                basis.grad = None
                layer(basis, {"u0": u0}).square().mean().backward()

            times[variant] = 1e3 * time_call(step, device=device, warmup=1, repeat=3)
            rows.append({"nodes_per_sample": n, "variant": variant, "step_ms": times[variant],
                         "lm_steps": float(layer.last_stats["num_steps"].double().mean()),
                         "unconverged": int((layer.last_stats["status"] != 0).sum())})
            if "hc" in times and variant != "hc":
                rows[-1]["hc_over_this"] = times["hc"] / times[variant]
            print(rows[-1], flush=True)
        write_result("hard_constraint_small" if args.small else "hard_constraint",
                     title=f"Hard-constraint layer step, PI-HC vs PI-HC-MoE ({'CPU, reduced' if args.small else 'paper-like sizes'})",
                     rows=rows, device=device,
                     notes=f"Grid {nx} x {nt}, batch {batch}, {n_basis} basis fields, float64 solve; one step = "
                           f"forward (batched LM) + implicit backward to the basis; median of 3. `hc_over_this` > 1: "
                           f"the experts are faster.")


if __name__ == "__main__":
    main()
