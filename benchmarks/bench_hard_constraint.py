"""The hard-constraint layer's cost: one expert (PI-HC) against four (PI-HC-MoE), by collocation nodes.

One step = the layer's forward (the batched Levenberg-Marquardt solve) and backward (implicit
gradient to the basis) on a fixed smooth random basis, with the viscous Burgers residual and an
initial condition, float64 inside. Per row: total collocation nodes per sample, the variant
("hc": one expert with all the nodes; "moe": 4 x-blocks with a quarter each; "moe_overlap": the
same blocks overlapping by 1/8 of a block per side), median step time, LM steps. The paper
(Chalapathi et al. 2024) reports MoE's training step up to 12.8x faster than PI-HC's at 10^4 nodes
on NS with JAX solvers; here every expert of every sample is one batched solve, so the ratio
says what the split itself buys.

Part "accuracy" trains a PDE's physics config (`--pde burgers`: configs/burgers/pi_hc.yaml;
`navier_stokes`, `diffusion_sorption`: their configs/<pde>/pi_hc.yaml) through the operator trainer (`sciml
train`'s path) once per variant, from the PDE alone, equal steps: "soft" (the FNO outputs u;
PI-SC), "hc" (one expert), "moe" (four), "moe_overlap"; per row the test rel. L2 against the
solver's trajectories, the final training (physics) loss and the training time, and a
"persistence" row (u(t) = u0) that says how much of the dynamics a model has learnt.

    python benchmarks/bench_hard_constraint.py            # paper-like sizes (GPU): 1024 x 101 grid, batch 6, N 16;
                                                          # accuracy: the config as it is (1000 trajectories)
    python benchmarks/bench_hard_constraint.py --small    # CPU: 128 x 33 grid, batch 2; accuracy: 64 trajectories
    python benchmarks/bench_hard_constraint.py --parts accuracy --pde navier_stokes [--small]   # or diffusion_sorption
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (add_dry_run, dry_run_done, median_range, minutes_left_in_session, paired_range,  # noqa: E402
                               round_robin, time_call, write_result)
from sciml.constraints import HardConstraint, get_grid_problem  # noqa: E402

VARIANTS = ("hc", "moe", "moe_overlap")
SPEED_ROUNDS = 3  # speed: each variant timed once a round, round-robin
PARTS = ("speed", "accuracy")
EXPERTS = 4
ROOT = Path(__file__).resolve().parent.parent
# the accuracy part: per PDE its config, the variants as overrides of it and the CPU sizes
PDES = {
    "burgers": {
        "config": "configs/burgers/pi_hc.yaml",  # its default is "hc"
        "variants": {"soft": ["physics.constraint=soft"], "hc": [],
                     "moe": [f"physics.experts=[{EXPERTS},1]", "physics.points=200"],
                     "moe_overlap": [f"physics.experts=[{EXPERTS},1]", "physics.points=200", "physics.overlap=[4,0]"]},
        "small": ["data.preset=small", "data.n_train=64", "data.n_test=16", "training.epochs=50",
                  "training.eval_every=10", "training.checkpoint_every=10"],
        "small_size": "64 trajectories, 50 epochs",
        "result": "hard_constraint_accuracy",
        "title": "Burgers operator from the PDE alone: PI-SC, PI-HC, PI-HC-MoE",
        "setting": "batch 8, Adam 2e-3 cosine, norm clip 1; test rel. L2 over the 26-level space-time grid against the "
                   "spectral solver's trajectories (nu = 0.02, 64 points, T = 0.5)",
    },
    "navier_stokes": {
        # its default is "moe" (2 x 2 experts, 20 000 nodes each); PI-HC as the paper: one expert, 20 000 nodes
        "config": "configs/navier_stokes/pi_hc.yaml",
        "variants": {"soft": ["physics.constraint=soft", "physics.experts=null", "physics.points=null"],
                     "hc": ["physics.experts=null"], "moe": [], "moe_overlap": ["physics.overlap=[4,4,0]"]},
        "small": ["data.preset=small", "data.n_train=64", "data.n_test=16", "physics.n_basis=16", "physics.points=1000",
                  "model.modes=[8,8,6]", "model.width=16", "training.epochs=30", "training.eval_every=10",
                  "training.checkpoint_every=10"],
        "small_size": "64 trajectories at 32 x 32 x 17, 30 epochs, 16 basis fields, 1000 nodes per expert, FNO modes 8/8/6 width 16",
        "result": "hard_constraint_accuracy_ns",
        "title": "Navier-Stokes operator from the PDE alone: PI-SC, PI-HC, PI-HC-MoE",
        "setting": "batch 4, Adam 1e-3 cosine, norm clip 1; test rel. L2 over the space-time grid against the "
                   "pseudo-spectral solver's trajectories (unforced, nu = 1e-4, T = 5)",
    },
    "diffusion_sorption": {
        # its default is "moe" (4 experts along x, 20 000 nodes each, every expert fitting every initial and
        # boundary node as the paper's code); PI-HC as the paper: one expert, 20 000 nodes
        "config": "configs/diffusion_sorption/pi_hc.yaml",
        "variants": {"soft": ["physics.constraint=soft", "physics.experts=null", "physics.points=null",
                              "physics.shared_conditions=false"],
                     "hc": ["physics.experts=null", "physics.shared_conditions=false"], "moe": [],
                     "moe_overlap": ["physics.overlap=[4,0]"], "moe_own_conditions": ["physics.shared_conditions=false"]},
        "small": ["data.preset=small", "data.recipe_overrides=[]", "data.n_train=64", "data.n_test=16",
                  "physics.n_basis=8", "physics.points=2000", "model.modes=[12,12]", "model.width=16",
                  "training.epochs=30", "training.eval_every=10", "training.checkpoint_every=10"],
        "small_size": "64 trajectories at 256 x 101, 30 epochs, 8 basis fields, 2000 nodes per expert, FNO modes 12/12 width 16",
        "result": "hard_constraint_accuracy_ds",
        "title": "Diffusion-sorption operator from the PDE alone: PI-SC, PI-HC, PI-HC-MoE",
        "setting": "batch 6, Adam 1e-3 halved every 5 epochs, norm clip 1; test rel. L2 over the space-time grid "
                   "against the finite-volume solver's trajectories (PDEBench's constants, t to 500 s)",
    },
}
TRAINED = tuple(PDES["burgers"]["variants"])

# the speed part: per PDE its grid (space axes, then t), batch, basis fields, the experts' split and the node counts
SPEED = {
    "burgers": {"problem": ("burgers", {"nu": 0.01}), "t_end": 1.0, "experts": (EXPERTS, 1), "data": "u0",
                "full": ((1024, 101), 6, 16, "400,4000,20000,80000"), "small": ((128, 33), 2, 16, "400,1600,4000"),
                "result": "hard_constraint"},
    # the paper's NS sizes: 64^3, 64 basis fields, 2 x 2 experts, batch 4; its 12.8x was at 10^4 nodes
    "navier_stokes": {"problem": ("navier_stokes", {"nu": 1e-4}), "t_end": 5.0, "experts": (2, 2, 1), "data": "w0",
                      "full": ((64, 64, 64), 4, 64, "4000,10000,20000,80000"), "small": ((32, 32, 17), 2, 16, "400,1600,4000"),
                      "result": "hard_constraint_ns"},
}


def smooth_basis(batch: int, n_basis: int, grid: tuple[int, ...], device, generator) -> torch.Tensor:
    """Low Fourier modes on the (periodic) space axes times low-order polynomials in t, randomly mixed (float32, as a
    backbone's output): (batch, n_basis, *grid)."""
    shapes = None
    for n in grid[:-1]:
        x = torch.arange(n, device=device) / n
        modes = torch.stack([f(2 * math.pi * k * x) for k in range(1, 5 if len(grid) == 2 else 3) for f in (torch.sin, torch.cos)])
        shapes = modes if shapes is None else (shapes[:, None, ..., None] * modes[None, :, None]).flatten(0, 1)
    t = torch.linspace(0, 1, grid[-1], device=device)
    powers = torch.stack([t ** j for j in range(3)])
    shapes = (shapes[:, None, ..., None] * powers.view(1, 3, *[1] * (len(grid) - 1), -1)).flatten(0, 1)
    mix = torch.randn(batch, n_basis, shapes.shape[0], generator=generator).to(device)
    return torch.einsum("bnk,k...->bn...", mix, shapes)


def layer_for(pde: str, variant: str, nodes: int, grid: tuple[int, ...]) -> HardConstraint:
    spec = SPEED[pde]
    one = (1,) * len(grid)
    experts, points = (one, nodes) if variant == "hc" else (spec["experts"], nodes // math.prod(spec["experts"]))
    overlap = tuple(max(1, n // e // 8) if variant == "moe_overlap" and e > 1 else 0 for n, e in zip(grid, experts))
    spacing = (*(1 / n for n in grid[:-1]), spec["t_end"] / (grid[-1] - 1))
    name, args = spec["problem"]
    return get_grid_problem(name, **args).layer(spacing, experts=experts, points=points, overlap=overlap)


def variant_config(pde: str, variant: str, small: bool, minutes: float, train_levels: int | None = None):
    """The PDE's config as the accuracy part trains `variant`, validated (on the first `train_levels` time levels)."""
    from sciml.config import load_config
    from sciml.train.schema import OperatorConfig

    spec, tag = PDES[pde], ("_small" if small else "") + (f"_levels{train_levels}" if train_levels else "")
    overrides = spec["variants"][variant] + (spec["small"] if small else []) + [
        "training.progress=false", "training.plot=false", f"training.max_minutes={minutes:.2f}",
        f"output.root=runs/bench_hard_constraint/{pde}", f"output.name={variant}{tag}"]
    if train_levels:
        overrides.append(f"physics.train_levels={train_levels}")
    return load_config(OperatorConfig, ROOT / spec["config"], overrides)


VARIANT_RESERVE_S = 30  # a variant's loading, evaluation and the results' write, beside its training budget
MIN_VARIANT_MINUTES = 0.5


def variant_budget(minutes: float, n_variants: int) -> float:
    """Every variant's training budget: `minutes`, or an even share of what the device call has left for
    `n_variants` (VARIANT_RESERVE_S each kept back), so variants compared in one table train equally long."""
    left = minutes_left_in_session(float("inf"), reserve_s=n_variants * VARIANT_RESERVE_S)
    return min(minutes, left / n_variants)


def accuracy(pde: str, variants: list[str], small: bool, minutes: float, train_levels: int | None = None) -> None:
    """Train the PDE's config once per variant, each for the same budget: `minutes`, or, inside a device
    call, an even share of what it has left once the data is there (fixed at the start, not trimmed for the
    last variant); a variant that would not end in its share is skipped, said so, not trimmed. With
    `train_levels`, on the first time levels only, the error beyond them reported as well."""
    from sciml.train.trainer import resolve_dataset, train
    from sciml.utils import resolve_device

    spec = PDES[pde]
    rows, device = [], torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for variant in variants:  # the data first (made by the first variant's config): its time is no variant's
        cfg = variant_config(pde, variant, small, minutes, train_levels)
        resolve_dataset(cfg, device=resolve_device(cfg.device), progress=False)
    budget = variant_budget(minutes, len(variants))
    if budget < MIN_VARIANT_MINUTES:
        print(f"skipping {', '.join(variants)}: {budget:.2f} minutes each left in this device call; "
              "run the part in a call of its own", flush=True)
        return
    if budget < minutes:
        print(f"each variant trains {budget:.2f} minutes (an even share of what the call has left)", flush=True)
    for variant in variants:
        left = minutes_left_in_session(budget, reserve_s=VARIANT_RESERVE_S)
        if left < 0.98 * budget:  # an earlier variant's loading or evaluation overran its reserve
            print(f"skipping {variant}: {left:.2f} of its {budget:.2f} minutes left in this device call; "
                  "trained shorter it would not compare (rerun it with --variants)", flush=True)
            continue
        cfg = variant_config(pde, variant, small, budget, train_levels)
        run, final = train(cfg)
        evals = [r for r in run.read_metrics() if r["kind"] == "eval"]
        # stopped by its cap before its first eval epoch: no training loss logged; the test errors are the
        # final record's (the trainer evaluates once at the end)
        unevaluated = {} if evals else {"note": f"stopped at epoch {final['epoch']}, before its first evaluation "
                                                f"(every {cfg.training.eval_every} epochs): no physics loss logged; "
                                                "test errors from the final evaluation"}
        beyond = {"test_rel_l2_beyond": final["test_rel_l2_beyond"]} if train_levels else {}
        rows.append({"variant": variant, "test_rel_l2": final["test_rel_l2"], "test_rel_l2_max": final["test_rel_l2_max"],
                     **beyond, "final_physics_loss": evals[-1]["train_loss"] if evals else None,
                     "budget_min": round(budget, 2), "epochs": final["epoch"],
                     "steps": final["epoch"] * -(-cfg.data.n_train // cfg.training.batch_size),
                     "train_s": final["train_seconds_total"], "stopped_by_cap": final["stopped_early"], **unevaluated})
        print(rows[-1], flush=True)
        if not any(r["variant"] == "persistence" for r in rows):
            rows.insert(0, persistence(cfg, train_levels))
        size = spec["small_size"] if small else f"{cfg.data.n_train} trajectories, {cfg.training.epochs} epochs"
        window = (f" Trained on the first {train_levels} time levels only (t = 0 included); `test_rel_l2_beyond` is the "
                  "error on the later levels, extrapolation in time." if train_levels else "")
        write_result(spec["result"] + ("_small" if small else "") + (f"_levels{train_levels}" if train_levels else ""),
                     title=f"{spec['title']} ({'CPU, reduced' if small else 'full config'})"
                           + (f", trained on {train_levels} time levels" if train_levels else ""),
                     rows=rows, device=device, merge_key=lambda r: r["variant"],
                     notes=f"`sciml train {spec['config']}` per variant ({size}; {spec['setting']}): no solution data "
                           "in training. Variants: " + "; ".join(f"{k}: {' '.join(v) or 'the config'}"
                                                                for k, v in spec["variants"].items()) + "." + window)


def persistence(cfg, train_levels: int | None = None) -> dict:
    """The baseline row u(t) = u0 on the same test split: what a model must beat to have learnt the dynamics."""
    from sciml.train.trainer import error_summary, load_test_split, relative_errors, resolve_dataset

    # the run's own test split (made by the run, at its training grid); inputs: u0 at every level
    split = load_test_split(cfg, resolve_dataset(cfg, progress=False), resolution=cfg.data.resolution)
    errors = error_summary(relative_errors(lambda x: x[:, :1], split, batch_size=len(split.x), device=split.x.device,
                                           beyond=train_levels))
    return {"variant": "persistence", **{f"test_{k}": v for k, v in errors.items() if k in ("rel_l2", "rel_l2_max", "rel_l2_beyond")},
            "final_physics_loss": None, "epochs": 0, "steps": 0, "train_s": 0.0, "stopped_by_cap": False}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="CPU sizes")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--nodes", default=None, help="total collocation nodes per sample, comma-separated")
    parser.add_argument("--variants", default=None, help=f"speed: {VARIANTS}; accuracy: the PDE's, e.g. {TRAINED} "
                        "(default: all)")
    parser.add_argument("--minutes", type=float, default=3.0, help="accuracy: training cap per variant")
    parser.add_argument("--pde", default="burgers", choices=tuple(PDES), help="accuracy: which PDE's config")
    parser.add_argument("--train-levels", type=int, default=None,
                        help="accuracy: train on the first K time levels, report the error beyond them (extrapolation)")
    add_dry_run(parser)
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if any(p not in PARTS for p in parts):
        parser.error(f"--parts: choose from {PARTS}")
    names = {"speed": VARIANTS, "accuracy": tuple(PDES[args.pde]["variants"])}
    given = args.variants.split(",") if args.variants else None
    known = {v for p in parts for v in names[p]}
    if given and any(v not in known for v in given):
        parser.error(f"--variants: choose from {sorted(known)} for parts {parts}")
    chosen = {p: [v for v in (given or names[p]) if v in names[p]] for p in parts}
    if "speed" in parts and args.pde not in SPEED:
        parser.error(f"--parts speed: --pde must be one of {tuple(SPEED)}")
    speed_pde = args.pde if args.pde in SPEED else "burgers"
    grid, batch, n_basis, default_nodes = SPEED[speed_pde]["small" if args.small else "full"]
    nodes = [int(n) for n in (args.nodes or default_nodes).split(",")]
    if any(n > math.prod(grid) for n in nodes):
        parser.error(f"--nodes: at most {math.prod(grid)} on the {' x '.join(map(str, grid))} grid")
    for variant in chosen.get("accuracy", []):  # the overrides make a valid config (checked before any training)
        variant_config(args.pde, variant, args.small, args.minutes, args.train_levels)
    if dry_run_done(args):
        return
    if chosen.get("speed"):
        speed(speed_pde, chosen["speed"], nodes, grid, batch, n_basis, args.small)
    if chosen.get("accuracy"):
        accuracy(args.pde, chosen["accuracy"], args.small, args.minutes, args.train_levels)


def speed(pde: str, variants: list[str], nodes: list[int], grid: tuple[int, ...], batch: int, n_basis: int,
          small: bool) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    basis = smooth_basis(batch, n_basis, grid, device, gen).requires_grad_()
    data = {SPEED[pde]["data"]: basis[:, 0, ..., :1].detach().expand(batch, *grid).contiguous()}
    rows = []
    for n in nodes:
        layers = {variant: layer_for(pde, variant, n, grid) for variant in variants}

        def step_of(layer):
            def step():
                basis.grad = None
                layer(basis, data).square().mean().backward()
            return step

        def measure_of(layer):
            first = [True]  # warm-up in the first round only

            def measure():
                torch.manual_seed(0)  # the same node draws whatever ran before: rows (LM steps) reproducible
                warmup, first[0] = int(first[0]), False
                return 1e3 * time_call(step_of(layer), device=device, warmup=warmup, repeat=1)
            return measure

        # round-robin over the variants, SPEED_ROUNDS rounds: a change in machine load reaches every variant
        # alike instead of one variant's three repeats
        runs = round_robin({variant: measure_of(layer) for variant, layer in layers.items()}, SPEED_ROUNDS)
        times = {v: median_range(t) for v, t in runs.items()}  # (median, [min, max])
        for variant, layer in layers.items():
            rows.append({"nodes_per_sample": n, "variant": variant, "step_ms": times[variant][0],
                         "step_ms_range": times[variant][1],
                         "lm_steps": float(layer.last_stats["num_steps"].double().mean()),
                         "unconverged": int((layer.last_stats["status"] != 0).sum())})
            if "hc" in times and variant != "hc":
                rows[-1]["hc_over_this"] = times["hc"][0] / times[variant][0]
                rows[-1]["hc_over_this_range"] = paired_range(runs["hc"], runs[variant])  # the same round's
            print(rows[-1], flush=True)
        write_result(SPEED[pde]["result"] + ("_small" if small else ""),
                     title=f"Hard-constraint layer step, PI-HC vs PI-HC-MoE, {pde} "
                           f"({'CPU, reduced' if small else 'paper-like sizes'})",
                     rows=rows, device=device, merge_key=lambda r: (r["nodes_per_sample"], r["variant"]),
                     notes=f"Grid {' x '.join(map(str, grid))}, batch {batch}, {n_basis} basis fields, the {pde} residual, "
                           f"experts {SPEED[pde]['experts']}, float64 solve; one step = forward (batched LM) + implicit "
                           f"backward to the basis; the variants round-robin, median of {SPEED_ROUNDS} rounds, *_range: min and max "
                           f"(hc_over_this_range: hc's time over this one's in the same round). `hc_over_this` > 1: the "
                           f"experts are faster (given where both ran in one command).")


if __name__ == "__main__":
    main()
