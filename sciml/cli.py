"""The `sciml` command: generate | train | eval | list.

    sciml generate datasets/burgers.yaml [--preset small] [key=value ...]
    sciml train configs/burgers/fno.yaml [key=value ...]
    sciml train --resume runs/fno-20261125-120000 [key=value ...]
    sciml eval runs/fno-20261125-120000 [--resolution 256 1024 ...]
    sciml list [models|optimizers|datasets|problems|grid_problems|families|losses]
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from sciml.config import ConfigError
from sciml.paths import DATASETS_DIR




def _cmd_generate(args: argparse.Namespace) -> int:
    from sciml.data.generate import generate
    from sciml.data.h5 import read_info
    from sciml.data.recipes import load_recipe

    from sciml.utils import resolve_device

    recipe = load_recipe(args.recipe, preset=args.preset, overrides=args.overrides)
    device = resolve_device(args.device, flag="--device")  # its errors name the flag, not a config key
    path = generate(recipe, root=args.root, device=device, progress=not args.quiet, max_minutes=args.max_minutes)
    if path.suffix == ".partial":
        print(f"{path}: stopped after --max-minutes {args.max_minutes:g}; run the same command again to go on")
        return 0
    info = read_info(path)
    print(f"{path}: {info.n_samples} samples on a {'x'.join(map(str, info.spatial_shape))} grid, "
          f"fields {', '.join(info.fields)}")
    return 0


def _task_of(config: dict[str, Any]) -> str:
    task = config.get("task", "operator")
    if task not in ("operator", "pinn"):
        raise ConfigError(f"bad value for 'task': {task!r}; use 'operator' (datasets) or 'pinn' (physics-informed)")
    return task


def _run_folder(path: str):
    from sciml.train.run import RunDir

    run = RunDir(path)
    if not run.config_path.exists():
        if run.path.is_dir() and not any(run.path.iterdir()):
            raise ConfigError(f"{path} is an empty run folder: its run stopped before training began (while making its "
                              f"data, say); start it again with `sciml train CONFIG`")
        raise ConfigError(f"{path} is not a run folder (no config.yaml); give a folder `sciml train` made")
    return run


def _print_guard_summary(final: dict | None, file=None) -> None:
    """The guard's one-line summary of a run's final record, when it skipped, clipped or rolled back anything."""
    from sciml.optim.guard import Guard

    line = Guard.describe((final or {}).get("guard"))
    if line:
        print(line, file=file)


def _print_test_figures(final: dict) -> None:
    """An operator run's test figure and which weights it is of (the last), and the "best" checkpoint's beside it
    where that is another epoch's: `sciml eval` and `load_operator` read "best" by default."""
    best = final.get("best_epoch")
    also = ", also the 'best' checkpoint" if best == final["epoch"] else ""
    print(f"test relative L2: {final['test_rel_l2']:.5f} (the last weights, epoch {final['epoch']}{also})")
    if "best_test_rel_l2" in final:
        print(f"test relative L2 of the 'best' checkpoint (epoch {best}, lowest {final['best_selected_on']}): "
              f"{final['best_test_rel_l2']:.5f}; `sciml eval` and load_operator read 'best' unless told "
              f"--checkpoint last / which=\"last\"")


def _cmd_train(args: argparse.Namespace) -> int:
    from sciml.config import apply_overrides, load_yaml, validate
    from sciml.train.run import RunDir

    if args.resume:
        run = _run_folder(args.resume)
        overrides = ([args.config] if args.config else []) + list(args.overrides)  # `--resume DIR k=v` parses k=v as config
        raw = apply_overrides(load_yaml(run.config_path), overrides)  # what may change is checked by train / fit
    else:
        if not args.config:
            raise ConfigError("give a config file (e.g. configs/burgers/fno.yaml) or --resume RUN_DIR")
        raw = apply_overrides(load_yaml(args.config), args.overrides)
        run = None
    source = str(run.config_path if run else args.config)

    if _task_of(raw) == "pinn":
        from sciml.train.pinn import PINNConfig, run_pinn

        validate(PINNConfig, raw, source=source)  # before a run folder is named (a bad key's folder was removed)
        if run is None:
            out = raw.get("output", {}) or {}
            run = RunDir.create(out.get("root", "runs"), out.get("name"), prefix=f"pinn-{raw.get('problem', 'custom')}".replace(":", "_"))
        print(f"run folder: {run.path}", flush=True)  # where a stopped run resumes from
        args.run_path = run.path  # for the message if Ctrl-C stops it
        with run.removed_if_left_empty():
            final = run_pinn(raw, run_dir=run.path, resume=bool(args.resume), source=source)
    else:
        from sciml.train.schema import OperatorConfig
        from sciml.train.trainer import train

        cfg = validate(OperatorConfig, raw, source=source)
        if run is None:
            run = RunDir.create(cfg.output.root, cfg.output.name, prefix=cfg.model.name.replace(":", "_"))
        print(f"run folder: {run.path}", flush=True)  # where a stopped run resumes from
        args.run_path = run.path  # for the message if Ctrl-C stops it
        run, final = train(cfg, run=run, resume=bool(args.resume))
        if "planned_epochs" in final:
            print(f"fit to the time budget: {final['planned_epochs']} of {cfg.training.epochs} epochs, "
                  "the schedule compressed to them")
    if "test_rel_l2" in final:
        _print_test_figures(final)
    elif "rel_l2" in final:
        print(f"relative L2 vs reference: {final['rel_l2']:.5e}")
    if _task_of(raw) == "pinn":
        from sciml.train.pinn import describe_unknowns

        for line in describe_unknowns(final):  # an inverse problem's result
            print(line)
    _print_guard_summary(final)
    if final.get("stopped_early"):
        pinn = _task_of(raw) == "pinn"
        cap = "max_minutes" if pinn else "training.max_minutes"
        sitting = "" if pinn else ", or this sitting's training.stop_after_minutes"
        print(f"stopped by the time cap ({cap}{sitting}), with a checkpoint: "
              f"go on with `sciml train --resume {run.path}` (add {cap}=... to change the cap for that run)")
    return 0


def _train_interrupted(err: KeyboardInterrupt, run_path: Path | None, argv: list[str] | None) -> str:
    """What a Ctrl-C left of a run and how to go on: `--resume` reads only checkpoints/last.pt."""
    from sciml.train.trainer import TrainingInterrupted

    if isinstance(err, TrainingInterrupted):  # the operator trainer stopped at an epoch's end and saved it
        return (f"interrupted after epoch {err.epoch}, with a checkpoint: go on with "
                f"`sciml train --resume {err.run_path}`")
    again = f"`sciml {shlex.join(sys.argv[1:] if argv is None else argv)}`"
    if run_path is not None and (run_path / "checkpoints" / "last.pt").exists():
        return (f"interrupted: go on from the last checkpoint with `sciml train --resume {run_path}` (the epochs or "
                f"steps after it are trained again)")
    if run_path is not None and run_path.is_dir():
        return (f"interrupted before the run's first 'last' checkpoint, which `--resume` needs: start again with "
                f"{again} (and delete {run_path})")
    return (f"interrupted before training started: start again with {again}; a dataset it was making goes on from "
            f"its finished batches")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive count, got {value}")
    return value


def _positive_minutes(text: str) -> float:
    """--max-minutes -1 stopped after the first batch with exit status 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def _cmd_eval(args: argparse.Namespace) -> int:
    from sciml.config import load_yaml
    from sciml.utils import atomic_write_text

    raw = load_yaml(_run_folder(args.run).config_path)
    if _task_of(raw) == "pinn":
        from sciml.train.pinn import evaluate_pinn_run

        if args.dataset or args.n_test or args.resolution or args.batch_size:
            raise ConfigError("--dataset, --n-test, --batch-size and --resolution are for operator runs; a PINN run is "
                              "evaluated against its problem's reference at its own points")

        rows = [evaluate_pinn_run(Path(args.run), which=args.checkpoint)]
        from sciml.train.pinn import describe_unknowns

        lines = describe_unknowns(rows[0])
        if "rel_l2" not in rows[0] and not lines:
            print(f"{args.run}: problem {rows[0]['problem']!r} has no reference solution and no unknowns: nothing to "
                  f"measure (give Problem(reference=...) to measure errors)", file=sys.stderr)
        for line in lines:
            print(line, file=sys.stderr)
    else:
        from sciml.train.trainer import EvalFailed, evaluate_run
        from sciml.utils import resolve_device

        try:
            rows = evaluate_run(args.run, resolutions=args.resolution or [None], which=args.checkpoint,
                                device=resolve_device(args.device, flag="--device"),
                                dataset=args.dataset, n_test=args.n_test, flag="--resolution",
                                batch_size=args.batch_size)
        except EvalFailed as failed:  # the resolutions that worked are reported; then each failure (exit 2)
            for row in failed.rows:
                print(json.dumps(row))
            if failed.rows:
                atomic_write_text(Path(args.run) / "eval.json", json.dumps(failed.rows, indent=2))
            raise ConfigError("\n".join(["some resolutions could not be evaluated:" if failed.rows else
                                          "no resolution could be evaluated:", *failed.failures])) from None
    for row in rows:
        print(json.dumps(row))
    atomic_write_text(Path(args.run) / "eval.json", json.dumps(rows, indent=2))
    _print_guard_summary(_run_folder(args.run).final_record(), file=sys.stderr)  # stdout holds the JSON rows
    return 0


def _registry_rows(kind: str) -> list[tuple[str, str, str]]:
    if kind == "models":
        from sciml.models import MODELS as reg
    elif kind == "optimizers":
        from sciml.optim import OPTIMIZERS as reg
    elif kind == "losses":
        from sciml.train.losses import LOSSES as reg
    elif kind == "families":
        from sciml.data.recipes import FAMILIES as reg
    elif kind == "problems":
        from sciml.pde import PROBLEMS as reg
    elif kind == "grid_problems":
        from sciml.constraints import GRID_PROBLEMS as reg
    else:
        from sciml.data.recipes import list_recipes

        return [(name, desc, "datasets/" + name + ".yaml") for name, desc in list_recipes()]
    rows = [(e.name, e.description, e.source) for e in reg.entries()]
    if kind == "optimizers":  # which ones cuda_graph: true can capture (a filter: over its default base)
        from sciml.optim import graph_safe

        rows = [(name, desc + ("  (cuda_graph)" if graph_safe(name) else ""), source) for name, desc, source in rows]
    return rows


LIST_KINDS = ("models", "optimizers", "datasets", "problems", "grid_problems", "families", "losses")


def _cmd_list(args: argparse.Namespace) -> int:
    from sciml.registry import close_matches

    for kind in args.kinds:
        if kind not in LIST_KINDS:
            raise ConfigError(f"nothing to list as {kind!r}{close_matches(kind, LIST_KINDS)}; choose from {', '.join(LIST_KINDS)}")
    for kind in args.kinds or LIST_KINDS:
        rows = _registry_rows(kind)
        print(f"{kind}:")
        width = max((len(r[0]) for r in rows), default=0)
        for name, desc, source in rows:
            print(f"  {name:<{width}}  {desc}" + (f"  [{source}]" if source else ""))
        print()
    if not args.kinds or set(args.kinds) - {"datasets"}:
        print("Each kind but datasets also takes your own object as 'package.module:Attribute' (e.g. model: "
              "mynets:MyNet), imported from the working directory or sys.path.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sciml", description="PDE surrogates: generate data, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="make a dataset file from a recipe")
    p.add_argument("recipe", help="recipe name (e.g. burgers) or path to a recipe .yaml")
    p.add_argument("overrides", nargs="*", help="recipe overrides, key=value (e.g. n_samples=64 params.resolution=512)")
    p.add_argument("--preset", help="a preset defined in the recipe (e.g. small)")
    p.add_argument("--root", help=f"folder for the file, relative to the working directory (default: {DATASETS_DIR}, "
                                  "the folder of the built-in recipes, whatever the recipe's path or the working directory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--max-minutes", type=_positive_minutes, help="stop after the batch that passes this wall time (resumable)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config", nargs="?", help="config .yaml (omit with --resume)")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. training.epochs=20)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run's checkpoint on its test split")
    p.add_argument("run", help="run folder")
    p.add_argument("--resolution", type=_positive_int, nargs="*", help="grid sizes to evaluate at, points on the first axis (default: the training one; with --dataset, "
                        "that file's stored grid)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="best: the evaluated epoch of lowest validation rel. L2 (val_rel_l2) with data.n_val > 0, otherwise of lowest "
                        "training loss (usually last)")
    p.add_argument("--dataset", help="another dataset file of the run's family to test on, its last n_test samples (new draws: generate it "
                        "with another seed=; a finer grid), saved at the training file's times within the run's windows "
                        "(other recipe params, e.g. nu, are warned of)")
    p.add_argument("--n-test", type=_positive_int, help="test on the last N samples of the file (default: the run's data.n_test)")
    p.add_argument("--batch-size", type=_positive_int,
                   help="test samples per forward pass (default: 50, or training.batch_size where larger or for a "
                        "physics model, cut in proportion on a grid finer than the training one); lower it if "
                        "memory runs out: the errors change only by float32 rounding")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("list", help="show registered components")
    p.add_argument("kinds", nargs="*", metavar="KIND", help=f"what to list: {', '.join(LIST_KINDS)} (default: all)")
    p.set_defaults(func=_cmd_list)
    return parser


def _write_hint(args: argparse.Namespace, err: BaseException) -> str:
    """Where the command may write instead, for an error writing a folder: no permission, not a folder, a read-only
    filesystem (EROFS, which Python raises as a plain OSError) or a full disk; "" for other errors. Each command is
    named what applies to it: `sciml train` takes data.root=, a resume and `sciml eval` write into their run folder."""
    from sciml.utils import NoSpaceLeft, out_of_space

    code = getattr(err, "errno", None)
    unwritable = isinstance(err, (PermissionError, NotADirectoryError, IsADirectoryError)) or code == errno.EROFS
    full = isinstance(err, OSError) and out_of_space(err)
    if not (unwritable or full):
        return ""
    disk = "another disk" if full else "a writable disk"
    if args.command == "train" and args.resume:  # output.root does not move a run folder that exists
        why, fix = "a resume writes into its run folder", f"copy {args.resume} to {disk} and resume the copy"
    elif args.command == "eval":
        why, fix = "`sciml eval` writes eval.json into the run folder", f"copy {args.run} to {disk} and evaluate the copy"
    else:
        why = None
        fix = ("--root ... for the dataset file" if args.command == "generate" else
               "output.root=... for the run folder, data.root=... for a dataset it generates")
        fix = f"choose a folder on another disk: {fix}" if full else f"choose a writable folder: {fix}"
    if unwritable:
        return f" ({why}: {fix})" if why else f" ({fix})"
    if isinstance(err, NoSpaceLeft):  # its message names the file and says to free space
        run_path = getattr(args, "run_path", None)  # a run with a checkpoint goes on where it is (its message says so)
        started = run_path is not None and (Path(run_path) / "checkpoints" / "last.pt").exists()
        return "" if why or started else f" (or {fix})"
    # the bare "[Errno 28] No space left on device" of a write names no file
    where = f" writing {err.filename}" if getattr(err, "filename", None) else ""
    return f" (no space left{where}: free space on that disk, or {fix}{f'; {why}' if why else ''})"


def main(argv: list[str] | None = None) -> int:
    from sciml.registry import user_code_traceback
    from sciml.data.h5 import DatasetError
    from sciml.optim.guard import GuardError
    from solvers.solution import SolveError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting `overrides` at the first option: `generate ks --preset small k=v` leaves k=v over
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ConfigError, DatasetError, GuardError, ValueError, OSError, SolveError, FloatingPointError) as err:
        if os.environ.get("SCIML_DEBUG"):
            raise
        hint = _write_hint(args, err)
        where = user_code_traceback(err)
        if where:  # the error came out of the user's own module (a model, problem or optimizer): show where
            print(where, file=sys.stderr, end="")
        print(f"sciml {args.command}: error: {err}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if args.command == "generate":
            print(f"interrupted: the batches finished so far are kept in the dataset's .partial file (none if it stopped "
                  f"in its first); run the same command, `sciml {shlex.join(sys.argv[1:] if argv is None else argv)}`, "
                  f"again to resume from them", file=sys.stderr)
        elif args.command == "train":
            print(_train_interrupted(err, getattr(args, "run_path", None), argv), file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
