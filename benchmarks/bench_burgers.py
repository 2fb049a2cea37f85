"""FNO paper protocol on Burgers, end to end: generate the set, train, evaluate; timed per part.

    python -m benchmarks.bench_burgers            # GPU: 2048 x 8192 set, 1000/200 at s=1024, 500 epochs
    python -m benchmarks.bench_burgers --small    # CPU: reduced scale, shows the pipeline works

Bar (issue 3): test relative L2 <= 0.003 at s = 1024 (paper: 0.0160), generation plus training
in one run under 10 minutes on one H100. Writes benchmarks/results/burgers_fno.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.common import write_result  # noqa: E402
from sciml.config import validate
from sciml.data.generate import generate
from sciml.data.recipes import load_recipe
from sciml.train.schema import OperatorConfig
from sciml.train.trainer import train
from sciml.utils import resolve_device

PAPER = {"fno_2021_rel_l2": 0.0160, "modern_fno_rel_l2": 0.0025, "bar": 0.003}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU-sized run (400 samples, s=256, 30 epochs)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--root", default=None, help="where data and runs go (default: a temporary folder)")
    parser.add_argument("--max-minutes", type=float, default=8.5, help="training wall-time cap (checkpointed)")
    args = parser.parse_args()
    device = resolve_device("auto")
    root = Path(args.root or tempfile.mkdtemp(prefix="bench_burgers_"))

    recipe = load_recipe("burgers", preset="small" if args.small else None)
    t0 = time.perf_counter()
    path = generate(recipe, root=root / "data", device=device, progress=False)
    gen_s = time.perf_counter() - t0

    raw = {
        "data": {"path": str(path), "n_train": 300 if args.small else 1000, "n_test": 100 if args.small else 200,
                 "resolution": 256 if args.small else 1024},
        "model": {"name": "fno", "modes": 16, "width": 64},
        "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine"},
        "training": {"epochs": args.epochs or (30 if args.small else 500), "batch_size": 20, "eval_every": 50,
                     "checkpoint_every": 50, "progress": False, "max_minutes": args.max_minutes},
        "output": {"root": str(root / "runs")},
    }
    t1 = time.perf_counter()
    run, final = train(validate(OperatorConfig, raw))
    train_s = time.perf_counter() - t1
    row = {
        "scale": "small (CPU)" if args.small else "paper",
        "n_samples": recipe.n_samples, "stored_res": recipe.typed_params().resolution,
        "train_res": raw["data"]["resolution"], "n_train": raw["data"]["n_train"], "n_test": raw["data"]["n_test"],
        "epochs_done": final["epoch"], "test_rel_l2": final["test_rel_l2"],
        "generation_s": round(gen_s, 1), "training_s": round(train_s, 1), "total_s": round(gen_s + train_s, 1),
        **({} if args.small else PAPER),
    }
    notes = ("Paper protocol: 1000 train / 200 test at s = 1024 subsampled from 8192, FNO modes 16 width 64, "
             "Adam 1e-3 (wd 1e-4), batch 20, 500 epochs (cosine schedule). Bar: rel L2 <= 0.003, total < 10 min on one H100.")
    out = write_result("burgers_fno" + ("_small" if args.small else ""), title="Burgers FNO end to end (issue 3)",
                       rows=[row], notes=notes, device=device)
    print(row)
    print(f"wrote {out}; run folder {run.path}")


if __name__ == "__main__":
    main()
