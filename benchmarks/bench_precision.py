"""Does a faster precision policy cost accuracy? FNO on Darcy trained under fp32, TF32 and bf16.

    python benchmarks/bench_precision.py            # GPU: 1000/100 at s = 85, 100 epochs per policy
    python benchmarks/bench_precision.py --small    # CPU smoke run (tiny preset, fp32 and bf16)

Issue 5 asks that a bf16/TF32 policy used for speed be shown to match fp32's accuracy on the
benchmark. Each policy trains `configs/darcy/fno.yaml` from the same seed (same initial weights,
same data order) with `training.precision` set, for the same number of epochs; the table gives
test relative L2, the ratio to fp32, and seconds per epoch. Results: results/precision.json.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import add_dry_run, dry_run_done, median_range, paired_range, round_robin, write_result  # noqa: E402


def train_policy(precision: str, *, epochs: int, small: bool, out: str, tag: str = "") -> dict:
    from sciml.config import load_config
    from sciml.train.schema import OperatorConfig
    from sciml.train.trainer import train

    data = (["data.preset=tiny", "data.n_train=32", "data.n_test=16", "data.resolution=null", "training.batch_size=8"] if small
            else ["data.recipe_overrides=[params.resolution=85]"])  # solved at 85 directly: seconds on a GPU
    overrides = [*data, f"training.epochs={epochs}", f"training.precision={precision}", "training.plot=false",
                 "training.progress=false", f"training.eval_every={epochs}", f"output.root={out}",
                 f"output.name=darcy_fno_{precision}{tag}", "schedule.step_size=" + str(max(1, epochs // 5))]
    cfg = load_config(OperatorConfig, ROOT / "configs" / "darcy" / "fno.yaml", overrides)
    _, final = train(cfg)
    return {"precision": precision, "epochs": final["epoch"], "rel_l2": final["test_rel_l2"],
            "s_per_epoch": final["wall_time_s"] / max(final["epoch"], 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--epochs", type=int, default=None, help="per policy (default 100 on GPU, 3 with --small)")
    parser.add_argument("--out", default="runs/bench_precision")
    parser.add_argument("--rounds", type=int, default=3,
                        help="each policy trained once a round, round-robin (s_per_epoch: the median)")
    add_dry_run(parser)
    args = parser.parse_args(argv)
    if dry_run_done(args):
        return
    cuda = torch.cuda.is_available() and not args.small
    policies = ["fp32", "tf32", "bf16"] if cuda else ["fp32", "bf16"]  # TF32 is a CUDA matmul mode
    epochs = args.epochs or (3 if args.small else 100)
    round_of = {p: itertools.count() for p in policies}

    def train(p):
        run = train_policy(p, epochs=epochs, small=args.small, out=args.out, tag=f"_round{next(round_of[p])}")
        print(run, flush=True)
        return run

    def write(runs):  # after every round: a command stopped by its time limit keeps the finished ones
        nonlocal path
        rows = []
        for p in policies:
            per_epoch, per_epoch_range = median_range([r["s_per_epoch"] for r in runs[p]], ndigits=6)
            rows.append({"precision": p, "epochs": runs[p][0]["epochs"],
                         "rel_l2": statistics.median(r["rel_l2"] for r in runs[p]),
                         "rel_l2_runs": [r["rel_l2"] for r in runs[p]],
                         "s_per_epoch": per_epoch, "s_per_epoch_range": per_epoch_range,
                         "rounds": len(runs[p])})
        for r in rows:  # against fp32, the first policy
            r["vs_fp32"] = r["rel_l2"] / rows[0]["rel_l2"]
            r["speed_vs_fp32"] = rows[0]["s_per_epoch"] / r["s_per_epoch"]
        for r, p in zip(rows, policies):  # fp32's s/epoch over this one's, in the same round
            r["speed_vs_fp32_range"] = paired_range([f["s_per_epoch"] for f in runs[policies[0]]],
                                                    [x["s_per_epoch"] for x in runs[p]])
        path = write_result("precision_small" if args.small else "precision",
                            title="Precision policies: FNO on Darcy, same seed, same epochs", rows=rows,
                            notes=f"configs/darcy/fno.yaml, {epochs} epochs per policy (step schedule scaled to "
                                  "them), test relative L2; vs_fp32 = rel_l2 / fp32's. Policies trained round-robin, "
                                  "rounds as given; rel_l2 and s_per_epoch the medians over them, *_range min and max "
                                  "(speed_vs_fp32_range: fp32's s/epoch over this one's in the same round)."
                                  + (" CPU smoke run on the tiny preset." if args.small else ""))

    # round-robin over the policies, --rounds rounds: a change in machine load reaches every policy alike
    # instead of one policy's only run
    path = None
    round_robin({p: partial(train, p) for p in policies}, args.rounds, after_round=write)
    print("wrote", path)


if __name__ == "__main__":
    main()
