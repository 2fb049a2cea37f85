"""The operator-learning trainer: dataset -> model -> optimizer/guard -> run folder.

One `Trainer` per run. It resolves the dataset (generating it from its recipe when missing),
normalises with train-split statistics, builds model, optimizer, schedule, loss and guard by name,
trains in epochs over a seeded, stateless shuffle (epoch e's order depends only on seed and e, so a
resumed run replays exactly), evaluates on the test split (and on a validation split, with data.n_val > 0,
which chooses the "best" checkpoint), and checkpoints atomically.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sciml.config import ConfigError, dump
from sciml.data.h5 import DatasetError
from sciml.data.loading import Normalizer, Split, check_selection, load_test, load_train_val_test, no_rows, time_range
from sciml.models import FNO, count_parameters
from sciml.optim import graph_optimizer_kwargs, load_optimizer_state, lrs_as_tensors, set_lr
from sciml.optim._registry import optimizer_defaults
from sciml.optim.guard import Guard, GuardError
from sciml.train.graphs import CapturedStep
from sciml.train.losses import build_loss, check_scalar_loss, relative_l2_per_sample
from sciml.train.physics import build_operator_model, check_model_fields, saves_start, spacetime_split
from sciml.train.run import RunDir
from sciml.train.schema import SPACETIME_MODELS, OperatorConfig
from sciml.utils import TrainingGridOnly, callers_rng_kept, resolve_device


def resolve_dataset(cfg: OperatorConfig, *, device: str | torch.device = "auto", progress: bool = True) -> Path:
    """The dataset file a config trains on; generated from its recipe when it does not exist yet."""
    from sciml.data.generate import dataset_path, generate, planned_info
    from sciml.data.recipes import load_recipe

    data = cfg.data
    if data.path is not None:
        return Path(data.path)
    if data.recipe is None:
        raise ConfigError("data needs either `path` (a dataset file) or `recipe` (a recipe to generate)")
    recipe = load_recipe(data.recipe, preset=data.preset, overrides=data.recipe_overrides)
    path = dataset_path(recipe, data.root)
    if not path.exists():
        try:  # the config against the file's layout first: a wrong window or grid found after a long generation
            info = planned_info(recipe, data.root)
            check_data_selection(cfg, info)
            check_model_on_layout(cfg, info)  # e.g. modes the grid cannot hold, points beyond a hard layer's block
        except (ConfigError, DatasetError) as err:
            raise type(err)(f"{err} (checked on the layout of recipe {data.recipe!r}, before generating the file)") from None
        print(f"dataset {path} not found: generating it from recipe {data.recipe!r}", flush=True)
        generate(recipe, root=data.root, device=device, progress=progress)
    return path


def resumed_dataset(cfg: OperatorConfig, recorded: str | None, *, device: str | torch.device = "auto",
                    progress: bool = True) -> Path:
    """The dataset file a resumed run goes on with: the one its checkpoint records (`recorded`, an absolute path)
    while that file exists, wherever the config's data.root or data.path (relative ones from the working folder)
    points now; where it is gone, said so, then the config's file (`resolve_dataset`: generated from the recipe
    when missing too). The file is then checked against the checkpoint's record of the one it trained on."""
    if recorded is not None and Path(recorded).exists():
        return Path(recorded)
    if recorded is not None:
        print(f"the dataset file this run trained on, {recorded}, is gone: going on with the config's file "
              f"(data.{'path' if cfg.data.path is not None else 'root'}, from {Path.cwd()}), checked against the "
              f"checkpoint's record of the one it trained on", flush=True)
    return resolve_dataset(cfg, device=device, progress=progress)


def physics_splits(cfg: OperatorConfig, info, train: Split, val: Split | None,
                   test: Split) -> tuple[Split, Split | None, Split]:
    """The splits as a physics run trains on them (the loaded ones without ``physics:``): space-time fields, the
    training split cut to physics.train_levels."""
    if cfg.physics is None:
        return train, val, test
    # trained on the space-time grid; the solutions only evaluate
    start = saves_start(info)
    train, test = spacetime_split(train, with_start=start), spacetime_split(test, with_start=start)
    if val is not None:  # validated as tested: on every level (those beyond train_levels too)
        val = spacetime_split(val, with_start=start)
    levels, window = train.y.shape[-1], cfg.physics.train_levels
    if min(levels, window or levels) < 3:  # torch.gradient's error named neither
        raise ConfigError(f"physics needs at least 3 time levels (second-order differences on every axis); the "
                          f"data give {levels} (t = 0 included)" + (f" and physics.train_levels={window}" if window
                                                                  else "") + ": train on more levels")
    if window is not None:  # trained on the first levels, tested on all: extrapolation in time
        if window >= levels:
            raise ConfigError(f"physics.train_levels={window} leaves no level to extrapolate to: the data have "
                              f"{levels} (t = 0 included); set it below {levels} or to null")
        train = Split(train.x[..., :window].contiguous(), train.y[..., :window].contiguous())
    return train, val, test


def hard_layer(model: torch.nn.Module):
    """A physics model's hard-constraint layer (its solves, their counts, its grid rule), or None."""
    from sciml.constraints import HardConstraint

    layer = getattr(model, "layer", None)
    return layer if isinstance(layer, HardConstraint) else None


def check_model_on_splits(model: torch.nn.Module, cfg: OperatorConfig, splits, device: torch.device) -> None:
    """What the splits' grids rule out of a built model, before its run begins: DeepONet sensors beyond the
    training grid, a hard-constraint layer's layout (e.g. points beyond a block) and the FNO's modes (with its
    padding) on each split's grid. `splits`: train, val, test, None for one not made."""
    from sciml.constraints import PhysicsOperator

    splits = [split for split in splits if split is not None]
    check_sensors_within_grid(model, tuple(splits[0].x.shape[2:]), cfg)
    net = model.backbone if isinstance(model, PhysicsOperator) else model
    layer = hard_layer(model)
    for split in splits:
        if isinstance(net, FNO):  # checked without a forward pass: that is a first step's error, after the setup
            try:
                net.check_grid(tuple(split.x.shape[2:]))
            except ValueError as err:
                raise ConfigError(f"model {cfg.model.name!r}: {err}") from None
        if layer is not None:  # now, not at the first step
            try:
                layer.check_grid(tuple(split.y.shape[2:]), device)
            except ValueError as err:
                raise ConfigError(f"physics: {err}") from None


def check_model_on_layout(cfg: OperatorConfig, info) -> None:
    """The config's model built on the layout `info` (a file's, read or planned from a recipe): channels and grids
    at data.resolution, as `Trainer` builds it from the loaded arrays, and checked on them (`check_model_on_splits`),
    so that what the model rules out is found before a long generation rather than after it. The weights are
    thrown away; torch's random state is left as it was (the trainer's model starts from the same seed)."""
    inputs, outputs = dataset_fields(cfg, info)
    d = cfg.data
    _, *splits = load_train_val_test(info, inputs=inputs, outputs=outputs, n_train=d.n_train, n_val=d.n_val,
                                     n_test=d.n_test, resolution=d.resolution, input_time=d.input_time,
                                     output_time=d.output_time, read=no_rows)
    train, val, test = physics_splits(cfg, info, *splits)
    with torch.random.fork_rng(devices=[]):
        model = build_operator_model(cfg, train.x.shape[1], train.y.shape[1], train.x.ndim - 2, info=info,
                                     fields=(inputs, outputs), resolution=d.resolution)
    check_model_on_splits(model, cfg, (train, val, test), torch.device("cpu"))


def dataset_fields(cfg: OperatorConfig, info) -> tuple[list[str], list[str]]:
    """The config's input/output fields, or by default every input and every output field of the file."""
    chosen = {}
    for group, given in (("inputs", cfg.data.inputs), ("outputs", cfg.data.outputs)):
        chosen[group] = given or [n for n, s in info.fields.items() if s.group == group]
        if not chosen[group]:  # the default is the group's fields, and it has none
            raise DatasetError(f"{info.path} has no field under /{group}, where data.{group} takes its fields by "
                               f"default: name them, e.g. data.{group}=[{next(iter(info.fields))}] (any field of the "
                               f"file, as a rollout's input is its output field)")
    return chosen["inputs"], chosen["outputs"]


def check_data_selection(cfg: OperatorConfig, info) -> None:
    """What the config takes from a file (`info`: read, or planned from a recipe), checked as loading checks it,
    and a rollout model's windows on its count of saved times."""
    inputs, outputs = dataset_fields(cfg, info)
    d = cfg.data
    check_selection(info, inputs=inputs, outputs=outputs, n_train=d.n_train, n_test=d.n_test, resolution=d.resolution,
                    input_time=d.input_time, output_time=d.output_time, n_val=d.n_val)
    check_model_fields(cfg, inputs, outputs, info=info)


def relative_errors(predict, split: Split, *, batch_size: int, device: torch.device,
                    beyond: int | None = None) -> dict[str, torch.Tensor]:
    """Per-sample relative L2 of `predict(x)` on a split, in batches, without gradients, each ``(n,)``: "rel_l2" over
    the whole grid; with `beyond` = K, "rel_l2_beyond" over the last axis's levels from K on (a space-time model's
    error past the time window it was trained on), from one prediction; where the split's outputs are two or more
    fields, "rel_l2_of_<field>" over each one's channels (a pooled figure hides a field ten times smaller)."""
    groups = {}
    for c, name in enumerate(split.y_fields):
        groups.setdefault(name, []).append(c)
    groups = groups if len(groups) > 1 else {}
    errors: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(split.x), batch_size):
            pred, y = predict(split.x[start:start + batch_size].to(device)), split.y[start:start + batch_size].to(device)
            parts = {"rel_l2": relative_l2_per_sample(pred, y)}
            if beyond is not None:
                parts["rel_l2_beyond"] = relative_l2_per_sample(pred[..., beyond:], y[..., beyond:])
            for name, channels in groups.items():
                parts[f"rel_l2_of_{name}"] = relative_l2_per_sample(pred[:, channels], y[:, channels])
            for key, err in parts.items():
                errors.setdefault(key, []).append(err)
    return {key: torch.cat(parts) for key, parts in errors.items()}


def error_summary(err: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean, median and max of per-sample errors (`relative_errors`; a tensor is the whole grid's), those beyond
    the training window as ``*_beyond``; per field, the mean."""
    err = {"rel_l2": err} if isinstance(err, torch.Tensor) else err
    out = {}
    for key, e in err.items():
        if key.startswith("rel_l2_of_"):
            out[key] = e.mean().item()
            continue
        tail = key[len("rel_l2"):]  # "" or "_beyond"
        # quantile, not torch.median: that is the lower of the two middle values of an even count
        out.update({f"rel_l2{tail}": e.mean().item(), f"rel_l2_median{tail}": e.double().quantile(0.5).item(),
                    f"rel_l2_max{tail}": e.max().item()})
    return out



class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training at an epoch's end, with a 'last' checkpoint: ``--resume`` goes on exactly."""

    def __init__(self, run_path: Path, epoch: int):
        super().__init__(f"interrupted after epoch {epoch}; the 'last' checkpoint of {run_path} holds it")
        self.run_path, self.epoch = run_path, epoch


@contextmanager
def _sigint_sets(flag: list[bool]):
    """While training: a first SIGINT sets ``flag[0]`` (the loop stops at the epoch's end, as for max_minutes:
    an abort mid-epoch lost the epochs since the last checkpoint), a second raises KeyboardInterrupt at once.
    Not installed off the main thread, or where SIGINT is ignored."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def handler(signum, frame):
        if flag[0]:
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        flag[0] = True
        print("\ninterrupt: stopping at the end of this epoch with a checkpoint (Ctrl-C again to abort at once, "
              "losing the epochs since the last checkpoint)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def tf32_matmuls(enabled: bool):
    """TF32 for CUDA matmuls and cuDNN convolutions while inside, restored on exit. "fp32" must
    turn cuDNN's off: torch enables it by default, so convolutions would silently run in TF32."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@contextmanager
def _precision_context(precision: str, device: torch.device, *, cache: bool = True):
    """A run's whole precision policy around a forward: TF32 exactly when "tf32" (cuDNN's default TF32
    off otherwise), bf16 autocast when "bf16"."""
    with tf32_matmuls(precision == "tf32"):
        if precision == "bf16":  # autocast's cast cache must be off inside a CUDA-graph capture
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache):
                yield
        else:
            yield


def predict_in_units(forward, x_norm: Normalizer, y_norm: Normalizer, x: torch.Tensor, *, precision: str,
                     device: torch.device, cache: bool = True) -> torch.Tensor:
    """`forward` on normalised physical inputs under a run's precision policy, decoded to physical
    units: the one way the trainer and a reloaded run (`TrainedOperator`) predict."""
    with _precision_context(precision, device, cache=cache):
        out = forward(x_norm.encode(x))
    return y_norm.decode(out.float())


# 2: warm-up then the schedule, on the run's progress fraction (plans revisable); 1: runs saved before
SCHEDULE_RULE = 2
UNDERUSE = 0.1  # a revised plan also lengthens a run projected to leave this share of its budget unused
PLAN_AFTER = 3  # epochs run before fitting the schedule to the budget (the first one is not timed)


def epochs_within_budget(done: int, seconds_per_epoch: float, seconds_left: float, planned: int) -> int:
    """Epochs a run that has finished `done` can plan in all: what `seconds_left` affords at
    `seconds_per_epoch`, less one epoch and 3% for the final evaluation and noise, never more
    than `planned` and never fewer than `done + 1`."""
    affordable = done + int(0.97 * seconds_left / seconds_per_epoch) - 1
    return max(done + 1, min(planned, affordable))


def warn_schedule_never_decays(cfg: OperatorConfig) -> None:
    """A warning, once per training run, when a step schedule's step_size is not below the run's epochs."""
    s, epochs = cfg.schedule, cfg.training.epochs
    if s.name == "step" and s.step_size >= epochs:
        warnings.warn(f"schedule.step_size={s.step_size} is not below training.epochs={epochs}: the lr never decays; "
                      f"lower schedule.step_size, or set schedule.name: none", stacklevel=4)


# the model setting (grid_embedding / coordinates) that puts a file's points where they are, per grid kind
MODEL_COORDINATES = {"periodic": "periodic", "nodes": "closed", "cells": "cells"}


def _wanted_coordinates(cfg: OperatorConfig, info) -> dict[str, str | list[str]]:
    """Per model key (FNO's grid_embedding, DeepONet's coordinates), the setting that puts the file's points where
    they are: its kind on every axis, except that a space-time model's or a physics run's last axis is time (saved
    times from t = 0 to T), which has no cell centres: on a "cells" file, a kind per axis, "closed" for t (the FNO
    takes such a list; DeepONet's trunk one kind, so none fits it there)."""
    want = MODEL_COORDINATES[info.grid_kind]
    if info.grid_kind == "cells" and (cfg.physics is not None or cfg.model.name in SPACETIME_MODELS):
        return {"grid_embedding": [want] * info.n_spatial_dims + ["closed"]}
    return {"grid_embedding": want, "coordinates": want}


def _space_kinds(cfg: OperatorConfig, setting) -> set:
    """The kinds a model's setting (one kind, or one per axis) gives the file's space axes."""
    if isinstance(setting, (list, tuple)):
        return set(setting[:-1] if cfg.physics is not None or cfg.model.name in SPACETIME_MODELS else setting)
    return {setting}


def _as_yaml(setting) -> str:
    return f"[{', '.join(setting)}]" if isinstance(setting, (list, tuple)) else str(setting)


def warn_periodic_model_on_open_grid(cfg: OperatorConfig, info) -> None:
    """A warning when a non-periodic file ("nodes" or "cells") meets a model left at its periodic
    defaults: an FNO without domain padding treats the field as periodic (its ends as neighbours),
    and periodic coordinates i/s on nodes j/(s - 1) or on cell centres (j + 1/2)/s shift with the resolution."""
    from sciml.models import MODELS
    from sciml.registry import accepted_kwargs

    if info.grid_kind == "periodic":
        return
    try:
        accepted = accepted_kwargs(MODELS.get(cfg.model.name)) or []
    except Exception:  # a model whose signature cannot be read: nothing to advise
        return
    kw, advice = cfg.model.kwargs(), []
    pads = kw.get("padding", 0)
    if "padding" in accepted and all(float(p) == 0 for p in (pads if isinstance(pads, (list, tuple)) else [pads])):
        advice.append("model.padding (e.g. 0.1 of each axis, as configs/darcy/fno.yaml)")
    wanted = _wanted_coordinates(cfg, info)
    for key, default in (("grid_embedding", True), ("coordinates", "periodic")):
        if key in wanted and key in accepted and _space_kinds(cfg, kw.get(key, default)) <= {True, "periodic"}:
            advice.append(f"model.{key}: {_as_yaml(wanted[key])}")
    if advice:
        warnings.warn(f"{info.path} holds a non-periodic grid (grid_kind {info.grid_kind!r}) and model {cfg.model.name!r} "
                      f"is set up for periodic fields: set {' and '.join(advice)}", stacklevel=3)


# per grid kind: the grid in words, and what arrays of that kind are
GRID_WORDS = {"periodic": ("a periodic grid", "are periodic"), "nodes": ("a closed grid", "include both ends"),
              "cells": ("a grid of cells", "are cell values")}


def warn_model_set_for_another_grid(cfg: OperatorConfig, info) -> None:
    """The opposite of `warn_periodic_model_on_open_grid`: a model set up for a closed grid (configs/darcy/*) or for
    cell centres, met by a file of another grid kind, e.g. a "periodic" one (write_dataset's default, so often
    arrays with both ends or cell values left at it)."""
    kw, wanted, want = cfg.model.kwargs(), _wanted_coordinates(cfg, info), MODEL_COORDINATES[info.grid_kind]
    for kind, file_kind, what in (("closed", "nodes", "a closed one"), ("cells", "cells", "cell centres")):
        keys = [k for k in wanted if k in kw and kind in _space_kinds(cfg, kw[k])]
        if kind == want or not keys:
            continue
        default = ", write_dataset's default" if info.grid_kind == "periodic" else ""
        warnings.warn(f"{info.path} holds {GRID_WORDS[info.grid_kind][0]} (grid_kind {info.grid_kind!r}{default}) and "
                      f"model {cfg.model.name!r} is set up for {what} ({', '.join(f'model.{k}: {_as_yaml(kw[k])}' for k in keys)}): "
                      f"if the arrays {GRID_WORDS[file_kind][1]}, write them with grid_kind={file_kind!r}; if they "
                      f"{GRID_WORDS[info.grid_kind][1]}, set {' and '.join(f'model.{k}: {_as_yaml(wanted[k])}' for k in keys)}",
                      stacklevel=3)


def check_channel_layout(state: dict[str, Any], cfg: OperatorConfig, info, where: Path) -> None:
    """A checkpoint from before fbdddbf (no "io") stacked the time windows of several fields field by field;
    the loader now stacks them time by time, which such a model would misread silently (rel. L2 0.05 -> 4.2)."""
    if "io" in state:
        return
    for names, selected in zip(dataset_fields(cfg, info), (cfg.data.input_time, cfg.data.output_time)):
        windowed = [n for n in names if info.field(n).time_varying and not isinstance(selected, int)]
        if len(windowed) > 1:
            raise ConfigError(f"{where} was trained before 2026-11-27, when the time windows of {windowed} were stacked "
                              f"field by field; they are stacked time by time now, which this model would misread: "
                              f"train it again")


def warn_uneven_grid(info) -> None:
    """A warning when a file's coordinates are not evenly spaced: the models see sample j at j/s (FNO's
    spectral layers and grid embedding, DeepONet's trunk; j/(s - 1) or (j + 1/2)/s as their grid_embedding or
    coordinates say), whatever coordinates the file stores."""
    import numpy as np

    uneven = [axis for axis, c in info.grid.items() if axis != "t" and len(c) > 2 and
              not np.allclose(np.diff(c), np.diff(c)[0], rtol=1e-4, atol=0)]
    if uneven:
        warnings.warn(f"{info.path} stores unevenly spaced coordinates on {', '.join(uneven)}; the models treat its "
                      f"samples as evenly spaced (FNO and DeepONet see sample j at j/s, j/(s - 1) or (j + 1/2)/s): interpolate the data onto an "
                      f"even grid first", stacklevel=3)


def check_sensors_within_grid(model: torch.nn.Module, grid: tuple[int, ...], cfg: OperatorConfig) -> None:
    """Training refuses a DeepONet with more sensors than the training grid has points on an axis: its branch
    would learn from values interpolated (before: repeated) onto the extra sensors, inputs it has no data for.
    Evaluating a trained model on a coarser grid is allowed: its input is interpolated to the sensors, with a
    warning (`DeepONet.branch_input`)."""
    from sciml.models.deeponet import DeepONet

    for module in model.modules():
        sensors = getattr(module, "sensors", None) if isinstance(module, DeepONet) else None
        if sensors is None or len(sensors) != len(grid) or all(m <= n for m, n in zip(sensors, grid)):
            continue
        given = cfg.model.kwargs().get("sensors")
        shown = lambda t: str(t[0]) if len(set(t)) == 1 else "[" + ", ".join(map(str, t)) + "]"
        raise ConfigError(f"{'model.sensors (unset: the default)' if given is None else f'model.sensors={given}'} asks for {'x'.join(map(str, sensors))} sensors and the training grid "
                          f"is {'x'.join(map(str, grid))} (data.resolution={cfg.data.resolution or 'null'}): the branch would "
                          f"see values made up between the grid points; set model.sensors: {shown(grid)} (or fewer), "
                          f"or train on a grid of at least {shown(sensors)} points (data.resolution, where the file "
                          f"stores that many)")


class Trainer:
    def __init__(self, cfg: OperatorConfig, run: RunDir, *, device: str | torch.device | None = None,
                 dataset: Path | None = None):
        """`dataset`: the file to train on (a resume's, `resumed_dataset`); by default the config's
        (`resolve_dataset`). Seeds torch's global generator with cfg.seed: `train` restores the caller's."""
        from sciml.optim import build_optimizer, closure_kind

        self.cfg, self.run = cfg, run
        self.device = resolve_device(device or cfg.device)
        torch.manual_seed(cfg.seed)
        self.loss_fn = build_loss(cfg.training.loss)

        self.dataset_path = dataset if dataset is not None else \
            resolve_dataset(cfg, device=self.device, progress=cfg.training.progress)
        self.info, train, val, test = self._load(self.dataset_path)
        # the statistics of the training rows only (never the validation or test ones)
        self.x_norm = Normalizer(cfg.data.normalize_inputs, train.x).to(self.device)
        self.y_norm = Normalizer(cfg.data.normalize_outputs, train.y).to(self.device)
        self.train_split = Split(train.x.to(self.device), train.y.to(self.device), train.y_fields)
        self.test_split = Split(test.x.to(self.device), test.y.to(self.device), test.y_fields)
        # data.n_val > 0: the rows that choose "best" (`_evaluations`), None without them
        self.val_split = None if val is None else Split(val.x.to(self.device), val.y.to(self.device), val.y_fields)

        warn_periodic_model_on_open_grid(cfg, self.info)
        warn_model_set_for_another_grid(cfg, self.info)
        warn_uneven_grid(self.info)
        self.model = build_operator_model(cfg, train.x.shape[1], train.y.shape[1], train.x.ndim - 2, info=self.info,
                                          fields=self.fields,
                                          resolution=cfg.data.resolution).to(self.device)
        check_model_on_splits(self.model, cfg, (self.train_split, self.val_split, self.test_split), self.device)
        self.n_parameters = count_parameters(self.model)  # real ones, as the FNO paper's tables count them
        if hasattr(self.model, "prepare"):  # e.g. a POD trunk fitted on the training outputs
            self.model.prepare(self.x_norm.encode(self.train_split.x), self.y_norm.encode(self.train_split.y))
        self.forward = torch.compile(self.model) if cfg.training.compile else self.model
        self.closure_kind = closure_kind(cfg.optimizer.name)  # "none" | "backward" (L-BFGS) | "loss" (Newton-CG)
        # OperatorConfig checked the optimizer, the guard and graph mode before the data was made
        self.graphed, opt_kw = cfg.training.cuda_graph, cfg.optimizer.kwargs()
        if self.graphed:
            opt_kw.update(graph_optimizer_kwargs(cfg.optimizer.name, self.device, opt_kw))
        self.optimizer = build_optimizer(self.model.parameters(), cfg.optimizer.name, **opt_kw)
        self.steps_per_epoch = math.ceil(cfg.data.n_train / cfg.training.batch_size)
        self.planned_epochs = cfg.training.epochs  # fewer when fit to the time budget; the schedule follows it
        self.schedule_rule = SCHEDULE_RULE  # 1 for a resumed run saved before (see _lr_factor_v1)
        self.plan_revisions: list[tuple[int, int]] = []  # (optimizer step, planned epochs) of each plan made
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        # after the scheduler: its base lrs stay floats, so setting the lr tensor never reads the device
        lrs_as_tensors(self.optimizer, self.graphed)
        self.guard = Guard(self.model, self.optimizer, **cfg.guard_settings())
        self._captured = CapturedStep(self._graph_step, self.device) if self.graphed else None
        if self._captured is not None:  # a rollback replaces the optimizer's tensors and the lr scale
            self.guard.on_restore(self._captured.invalidate)
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None  # the captured step's inputs
        self.epoch = 0  # epochs finished
        self.best = math.inf
        self.started = time.perf_counter()
        self._interrupt = [False]  # set by Ctrl-C while fit runs
        self.sittings_before, self.seconds_before = 0, 0.0  # a resumed run's earlier processes (checkpointed)
        self._held: dict[str, Any] | None = None  # the newest epoch-end state not on disk (see _maybe_hold_state)
        # [failed, solves] of this run by split (`_solve_totals`), checkpointed so the final warning covers every
        # sitting; the plan's timing evaluations are not counted
        self.failed_solves = {"training": [0, 0], "validation": [0, 0], "test": [0, 0]}

    # -- setup helpers -------------------------------------------------------------------------
    def _load(self, path: Path):
        from sciml.data.h5 import read_info

        info = read_info(path)
        self.fields = inputs, outputs = dataset_fields(self.cfg, info)
        check_data_selection(self.cfg, info)  # the fields against the model too, before the arrays are read
        d = self.cfg.data
        info, train, val, test = load_train_val_test(info, inputs=inputs, outputs=outputs, n_train=d.n_train,
                                                     n_val=d.n_val, n_test=d.n_test, resolution=d.resolution,
                                                     input_time=d.input_time, output_time=d.output_time)
        warn_zero_targets(test, info.n_samples - d.n_test, "test")
        if val is not None:
            warn_zero_targets(val, d.n_train, "validation")
        return (info, *physics_splits(self.cfg, info, train, val, test))

    def _lr_factor(self, step: int) -> float:
        """The schedule's factor at optimizer step `step` (SCHEDULE_RULE 2): a linear warm-up over `warmup_steps`
        to the base lr, then the configured schedule on the run's progress fraction, so a plan fit to a budget
        (and each revision of it) keeps the lr continuous and ends where the configured schedule ends. "step":
        its decays at the configured epochs mapped onto the plan, counted over the whole run (warm-up included;
        the ramp scales the first steps), the last step at gamma^((epochs - 1) // step_size); "cosine": from the
        base lr at the end of the warm-up to ~0 at the plan's last step. Runs saved before keep `_lr_factor_v1`."""
        if self.schedule_rule == 1:
            return self._lr_factor_v1(step)
        s, spe = self.cfg.schedule, self.steps_per_epoch
        configured = self.cfg.training.epochs * spe
        ramp, warm_end = self._warmup(step)
        if s.name == "step":  # the configured step index this step stands for (equal to it without a plan)
            virtual = self._progress(step, 0) * (configured - 1)
            return ramp * s.gamma ** (int(virtual / spe + 1e-9) // s.step_size)
        if s.name == "cosine":
            if step < warm_end:
                return ramp
            span = configured - s.warmup_steps
            return 0.5 * (1.0 + math.cos(math.pi * self._progress(step, warm_end) * (span - 1) / span))
        return ramp

    def _warmup(self, step: int) -> tuple[float, int]:
        """The warm-up's factor at `step` and the step it ends at (the schedule's start): linear to the base lr
        over `warmup_steps`. A plan (or revision) of no more steps than the warm-up would end on the ramp,
        un-annealed: what is left of the ramp is shortened in proportion to what is left of the run, going on
        from its value where the plan is made (the lr stays continuous), so the schedule still runs after it."""
        w = self.cfg.schedule.warmup_steps
        if not w:
            return 1.0, 0
        a, ra, end, total = -1, 0.0, w, self.cfg.training.epochs * self.steps_per_epoch  # ramp from (a, ra) to (end - 1, 1)
        for at, planned in self.plan_revisions:
            if at > step:
                break
            steps = planned * self.steps_per_epoch
            if steps <= end and at < end - 1:
                ra = ra + (1.0 - ra) * (at - a) / (end - 1 - a)
                left = int((end - 1 - at) * (steps - at) / (total - at))
                end, a = at + 1 + max(1, min(left, steps - at - 2)), at
            total = steps
        return (1.0 if step >= end - 1 else ra + (1.0 - ra) * (step - a) / (end - 1 - a)), end

    def _progress(self, step: int, start: int) -> float:
        """The fraction of the schedule from step `start` to the plan's last step that `step` stands at:
        linear between revisions, each (`plan_revisions`: optimizer step, planned epochs) going on from
        where the previous one stood, so the lr never jumps when a plan changes."""
        def along(at: int, s0: int, p0: float, total: int) -> float:
            if at <= s0:
                return p0
            span = total - 1 - s0
            return 1.0 if span <= 0 else min(1.0, p0 + (1.0 - p0) * (at - s0) / span)

        s0, p0, total = start, 0.0, self.cfg.training.epochs * self.steps_per_epoch
        for at, planned in self.plan_revisions:
            at = max(at, start)
            if at > step:
                break
            s0, p0, total = at, along(at, s0, p0, total), planned * self.steps_per_epoch
        return along(step, s0, p0, total)

    def _lr_factor_v1(self, step: int) -> float:
        """The rule of runs saved before SCHEDULE_RULE 2 (no "schedule_rule" in their state), kept so they resume
        as they ran: the warm-up multiplied into the schedule, a step size compressed as round(step_size *
        planned / epochs) (which changes the number of decays), a cosine over the planned epochs."""
        s = self.cfg.schedule
        warm = min(1.0, (step + 1) / s.warmup_steps) if s.warmup_steps else 1.0
        if s.name == "step":
            step_size = max(1, round(s.step_size * self.planned_epochs / self.cfg.training.epochs))
            return warm * s.gamma ** ((step // self.steps_per_epoch) // step_size)
        if s.name == "cosine":
            total = self.planned_epochs * self.steps_per_epoch
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        return warm

    def _set_planned(self, planned: int) -> None:
        """Plan `planned` epochs from now on; under rule 2 a revision from this step, the lr re-set to it."""
        self.planned_epochs = planned
        if self.schedule_rule == 1:  # the old rule: the next step still ran at the rate set before the plan
            return
        self.plan_revisions.append((self.epoch * self.steps_per_epoch, planned))
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            set_lr(group, lr * self._lr_factor(self.scheduler.last_epoch))

    def _device_clock(self) -> float:
        """The wall clock once the device has finished what was queued (the steps run asynchronously)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _solve_totals(self, training: bool = True, split: str = "test") -> dict[str, float]:
        """A hard-constraint layer's training (or eval) solves since the last record: failures and mean LM steps
        (its default on_failure, "record", would otherwise keep them out of sight); failures summed for the warning
        at the end of `fit`."""
        layer = hard_layer(self.model)
        totals = layer.pop_solve_totals(training) if layer is not None else {}
        if totals:
            seen = self.failed_solves["training" if training else split]
            seen[0], seen[1] = seen[0] + totals["solve_failures"], seen[1] + totals["solves"]
        return totals

    def _plan_to_budget(self, first_epoch_end: float, epochs_timed: int) -> None:
        """Shorten `planned_epochs` to what is left of `max_minutes` at the pace of the epochs timed
        since `first_epoch_end` (the first epoch of a process holds capture and compilation), plus
        each epoch's share of the evaluations and checkpoints ahead."""
        now = self._device_clock()
        per_epoch = (now - first_epoch_end) / epochs_timed + self._upkeep_per_epoch()
        now = self._device_clock()
        left = 60 * self.cfg.training.max_minutes - (self.seconds_before + now - self.started)  # earlier sittings count
        self._set_planned(epochs_within_budget(self.epoch, per_epoch, left, self.planned_epochs))
        self.run.log({"kind": "plan", "epoch": self.epoch, "s_per_epoch": per_epoch, "planned_epochs": self.planned_epochs})

    def _revise_every(self) -> int:
        """Epochs between re-estimates of the pace: whole cycles of evaluations and checkpoints (their lcm), at
        least 3 epochs, so each window holds its share of both."""
        cycle = math.lcm(self.cfg.training.eval_every, self.cfg.training.checkpoint_every)
        return cycle * math.ceil(3 / cycle)

    def _revise_plan(self, now: float, per_epoch: float) -> None:
        """Re-fit the rest of the plan at the pace of the last window (`per_epoch`, evaluations and checkpoints
        included) when the projected end overruns `max_minutes`, or leaves more than UNDERUSE of it unused while
        the config's epochs allow more; the schedule goes on from its progress fraction (the lr stays continuous)."""
        budget = 60 * self.cfg.training.max_minutes
        spent = self.seconds_before + now - self.started
        projected = spent + (self.planned_epochs - self.epoch) * per_epoch
        planned = epochs_within_budget(self.epoch, per_epoch, budget - spent, self.cfg.training.epochs)
        # lengthening holds one more epoch back: the final evaluation and checkpoint lie outside the windows
        if projected < (1 - UNDERUSE) * budget and planned - 1 > self.planned_epochs:
            planned -= 1
        elif not (projected > budget and planned < self.planned_epochs):
            return
        previous = self.planned_epochs
        self._set_planned(planned)
        self.run.log({"kind": "plan", "epoch": self.epoch, "s_per_epoch": per_epoch, "planned_epochs": planned,
                      "revised_from": previous, "projected_s": projected})

    def _upkeep_per_epoch(self) -> float:
        """One evaluation and one checkpoint, timed, as a share of an epoch: an eval every `eval_every`
        epochs, a "last" checkpoint every `checkpoint_every` and at most one "best" per eval. The epochs
        a plan times hold neither; with them left out, small epochs overran the budget by half."""
        t = self.cfg.training
        counted = copy.deepcopy(self.failed_solves)  # timing runs, not evaluations: their solves are not reported
        self._evaluations()  # untimed: a first call holds one-off costs (compilation, caches) the later ones do not
        start = self._device_clock()
        self._evaluations()
        evaluated = self._device_clock()
        self.failed_solves = counted
        self.checkpoint("last")
        saved = time.perf_counter()
        return (evaluated - start) / t.eval_every + (saved - evaluated) * (1 / t.checkpoint_every + 1 / t.eval_every)

    def forget_best_ahead(self) -> None:
        """A "best" checkpoint later than the resumed "last" is from the epochs the stop discarded (killed
        between the two writes): removed, and the next evaluation chooses anew. It had outlived its metrics."""
        path = self.run.checkpoint_path("best")
        if path.exists() and self.run.load_checkpoint("best")["epoch"] > self.epoch:
            path.unlink()
            self.best = math.inf

    # -- state -------------------------------------------------------------------------------
    def state_dict(self, *, to_host: bool = True) -> dict[str, Any]:
        """The whole state; ``to_host=False`` leaves the guard's tensors on the device (no host sync)."""
        return {
            "epoch": self.epoch, "best": self.best,
            "budget_epochs": self.planned_epochs if self.planned_epochs != self.cfg.training.epochs else None,
            "schedule_rule": self.schedule_rule, "plan_revisions": [list(r) for r in self.plan_revisions],
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "guard": self.guard.state_dict(to_host=to_host),
            "x_norm": {"kind": self.x_norm.kind, **self.x_norm.state_dict()},
            "y_norm": {"kind": self.y_norm.kind, **self.y_norm.state_dict()},
            "rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "metrics_lines": self.run.n_metrics,
            **self._sittings(),
            "dataset": str(self.dataset_path.resolve()), "config": dump(self.cfg),  # absolute: loads from any folder
            # what `sciml eval --dataset` compares another file with, where this one is gone (moved, another machine)
            "dataset_info": dataset_record(self.info),
            "solve_counts": self._solve_counts(to_host),
            # the model's shape without the data file: load_operator works where the file is gone
            "io": {"in_channels": self.train_split.x.shape[1], "out_channels": self.train_split.y.shape[1],
                   "n_dims": self.train_split.x.ndim - 2, "fields": [list(f) for f in self.fields]},
        }

    def _solve_counts(self, to_host: bool) -> dict[str, Any]:
        """The hard-constraint solves not yet in a record (the layer's pending totals) and the run's failed/solve
        counts: a resume without them lost the solves since the last eval record (epoch 3 of a run stopped there
        and evaluated at 4) from every record and from the final warning."""
        layer = hard_layer(self.model)
        pending = layer.pending_solve_totals() if layer is not None else None
        return {"pending": pending.cpu() if pending is not None and to_host else pending,
                "failed": copy.deepcopy(self.failed_solves)}

    def _load_solve_counts(self, counts: dict[str, Any] | None) -> None:
        if counts is None:  # saved before they were: counted from this sitting on, as then
            return
        for split, seen in counts["failed"].items():
            self.failed_solves[split] = list(seen)
        layer = hard_layer(self.model)
        if counts["pending"] is not None and layer is not None:
            layer.restore_solve_totals(counts["pending"])

    def _sittings(self) -> dict[str, Any]:
        """Processes this run has trained in, this one included, and their training time (s)."""
        return {"sittings": self.sittings_before + 1,
                "train_seconds_total": self.seconds_before + time.perf_counter() - self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._check_same_dataset(state.get("dataset_info"))
        check_channel_layout(state, self.cfg, self.info, self.run.path)
        self.epoch, self.best = state["epoch"], state["best"]
        if self.cfg.training.epochs < self.epoch:  # config.yaml would say fewer epochs than the weights have had
            raise ConfigError(f"training.epochs={self.cfg.training.epochs} is below the {self.epoch} epochs this run has "
                              f"trained; give at least that many to go on")
        # checkpoints before 51e930f named the time "train_seconds"
        self.sittings_before = state.get("sittings", 1)
        self.seconds_before = state.get("train_seconds_total", state.get("train_seconds", 0.0))
        # a run resumed with fit_to_budget keeps the plan it made; otherwise the config's epochs rule
        self.schedule_rule = state.get("schedule_rule", 1)  # saved before the rule was recorded: the old one
        planned = state.get("budget_epochs")
        if self.schedule_rule == 1 and planned is not None and self.cfg.training.fit_to_budget:
            self.planned_epochs = min(planned, self.cfg.training.epochs)
        if self.schedule_rule > 1 and self.cfg.training.fit_to_budget:
            self.plan_revisions = [tuple(r) for r in state.get("plan_revisions", [])]
            if self.plan_revisions:
                self.planned_epochs = self.plan_revisions[-1][1]
            if self.planned_epochs > self.cfg.training.epochs:  # a resume that lowers training.epochs
                self.plan_revisions.append((self.epoch * self.steps_per_epoch, self.cfg.training.epochs))
                self.planned_epochs = self.cfg.training.epochs
        self.model.load_state_dict(state["model"])
        # the statistics (and eps rule) the weights were trained with: a run saved under the old absolute eps keeps it
        for norm, saved in ((self.x_norm, state["x_norm"]), (self.y_norm, state["y_norm"])):
            norm.load_state_dict({k: v for k, v in saved.items() if k != "kind"})
        config_lrs = list(self.scheduler.base_lrs)
        load_optimizer_state(self.optimizer, state["optimizer"], from_config=self.cfg.optimizer.kwargs())
        lrs_as_tensors(self.optimizer, self.graphed)
        self.scheduler.load_state_dict(state["scheduler"])
        # the config's lr (a resume may lower it, as a GuardError advises) at the schedule's position
        self.scheduler.base_lrs = config_lrs
        for group, lr in zip(self.optimizer.param_groups, config_lrs):
            group["initial_lr"] = lr
            set_lr(group, lr * self._lr_factor(self.scheduler.last_epoch))
        self.guard.load_state_dict(state["guard"])
        if self._captured is not None:
            self._captured.invalidate()
        # generator states are CPU byte tensors; the checkpoint was loaded with map_location=device
        torch.set_rng_state(state["rng"].cpu())
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self._load_solve_counts(state.get("solve_counts"))
        self._refuse_a_finished_run(state["metrics_lines"])  # before the truncation below drops its final record
        self.run.truncate_metrics(state["metrics_lines"])  # drop what a crashed run logged after it
        for record in state.get("carried_metrics", []):  # a GuardError's events, kept across its resume
            self.run.log(record)

    def _refuse_a_finished_run(self, metrics_lines: int) -> None:
        """A resume of a run that finished (a final record after the checkpoint's `metrics_lines`, of its epoch, not
        stopped early) and would train no epoch: it only wrote its final record, config.yaml and environment.json
        again as a new sitting's. Refused, naming how to train further. Only the lines after the checkpoint's are
        read: a crashed sitting may have left a cut-off line there, which the resume then drops."""
        final = self.run.final_after(metrics_lines)
        if final is None or final.get("stopped_early") or final.get("epoch") != self.epoch \
                or self.epoch < self.planned_epochs:
            return
        t, path = self.cfg.training, self.run.path
        if self.planned_epochs < t.epochs:  # a plan fit to the time budget, which a resume keeps
            how = (f"it was fit to its time budget ({self.planned_epochs} of training.epochs={t.epochs}), a plan a "
                   f"resume keeps: to train further, `sciml train --resume {path} training.fit_to_budget=false "
                   f"training.epochs=N` (N > {self.epoch})")
        else:
            how = (f"to train further, raise training.epochs: `sciml train --resume {path} training.epochs=N` "
                   f"(N > {self.epoch})")
        raise ConfigError(f"{path} has finished: its last checkpoint is epoch {self.epoch} of training.epochs={t.epochs}, "
                          f"so a resume would train nothing (only write the final record, config and environment "
                          f"again); {how}; `sciml eval {path}` evaluates it")

    def _check_same_dataset(self, record: dict[str, Any] | None) -> None:
        """A resume trains on the file now at the config's path: another one put there (another seed or viscosity)
        was trained on silently. A deleted file regenerated from the run's recipe is the same and passes."""
        if record is None:  # checkpoints before 2026-11-27 record nothing to compare with
            return
        if differ := dataset_differences(record, self.info):
            d = self.cfg.data
            regenerate = (f" (delete it and the resume generates it again from the run's recipe {d.recipe!r})"
                          if d.path is None else "")
            raise ConfigError(f"{self.dataset_path} is not the file {self.run.path} trained on: {', '.join(differ)}; "
                              f"restore the run's file{regenerate}, or start a new run to train on this one")

    def checkpoint(self, which: str = "last") -> None:
        self.run.save_checkpoint(self.state_dict(), which)
        if which == "last":  # the newest consistent state is on disk now
            self._held = None

    def _maybe_hold_state(self) -> None:
        """Keep a copy of the whole state at this epoch's end, for a GuardError to save: the guard's own
        snapshot is mid-epoch (weights only, older than a later 'last'), so it matches no epoch, scheduler
        step or RNG state. Taken at most every `snapshot_every` steps, as the guard's, to bound the cost."""
        steps = self.scheduler.last_epoch
        if self._held is None or steps - self._held["scheduler"]["last_epoch"] >= self.guard.snapshot_every:
            # device copies queued on the stream, no host sync (the guard's state went through .cpu())
            self._held = copy.deepcopy(self.state_dict(to_host=False))

    def _save_after_guard_error(self, error: GuardError, failed_epoch: int) -> str:
        """Save the newest consistent good state as 'last' (unless the one on disk is newer) and say what
        it is and how to go on: every part of it from one epoch's end, never the guard's mid-epoch weights.

        The guard in it is reset as giving up resets it (a copy with its lowered scale and spent rollbacks gave
        up at the resume's first burst). A resume truncates metrics.jsonl to the state's line count, which
        erased the failure's own record: its guard events (and those of earlier failures, and a `guard_error`
        record saying which epoch training goes on from) are kept in the state as `carried_metrics` and
        written again after that point, while the epochs' other records are dropped and logged anew when
        the resume replays those epochs."""
        held, path = self._held, self.run.checkpoint_path("last")
        self._held = None
        state = held if held is not None else self.run.load_checkpoint("last") if path.exists() else None
        if state is None:  # not reached from fit (it holds the start when no 'last' exists)
            return ("no good state was saved; start again with a lower optimizer.lr" if error.lr_helps else
                    "no good state was saved; start again once the data or model is fixed")
        self.run.log({"kind": "guard_error", "epoch": failed_epoch, "resumes_from_epoch": state["epoch"],
                      "message": str(error)})
        state["carried_metrics"] = [r for r in self.run.read_metrics()[state["metrics_lines"]:]
                                    if r["kind"] in ("guard", "guard_error")]
        state["guard"] = Guard.state_to_host(Guard.afresh(state["guard"]))  # a held copy kept them on the device
        state.update(self._sittings())  # the time spent counts against a budget all the same
        self.run.save_checkpoint(state, "last")
        if held is not None:
            what = (f"'last' ({path}) now holds the state at the end of epoch {held['epoch']} (optimizer step "
                    f"{held['scheduler']['last_epoch']})" if held["epoch"] else
                    f"'last' ({path}) now holds the state before the first epoch")
        else:
            what = f"'last' ({path}) holds epoch {state['epoch']}, the newest good state"
        if not error.lr_helps:
            return f"{what}; continue from it once the data or model is fixed: `sciml train --resume {self.run.path}`"
        lrs = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        scale = getattr(self.guard, "gave_up_lr_scale", 1.0) * self.guard.lr_factor
        lower, name = float(lrs[0]) * scale, self.cfg.optimizer.name
        default = optimizer_defaults(name).get("lr") if name else None
        default = float(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else None
        if not math.isfinite(lower) or default is not None and lower > 1000 * default:
            # the guard's halvings from an lr far off the optimizer's scale: the lowered one is as far off
            start = (f"optimizer.lr={default:g}` ({name}'s default)" if default is not None and default > 0 else
                     "optimizer.lr=...` (a much lower rate)")
            return (f"{what}; the configured optimizer.lr={float(lrs[0]):g} is far too high ({name}'s default is "
                    f"{default:g}): continue from it with a rate on the optimizer's scale, e.g. `sciml train --resume "
                    f"{self.run.path} {start}" if default is not None else
                    f"{what}; the configured optimizer.lr={float(lrs[0]):g} is far too high: continue from it with "
                    f"a much lower rate, e.g. `sciml train --resume {self.run.path} {start}")
        lower = f"{lower:.3g}"
        return (f"{what}; continue from it with a lower rate, e.g. `sciml train --resume {self.run.path} "
                f"optimizer.lr={lower}` (a base lr for optimizer.lr, which the schedule scales as before: "
                f"{float(lrs[0]):g} times the guard's last lr scale {scale / self.guard.lr_factor:g} times its "
                f"lr_factor {self.guard.lr_factor:g})")

    # -- training ------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch)
        return torch.randperm(self.cfg.data.n_train, generator=gen).to(self.device)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Model output in physical units for physical inputs x (batch, in_channels, *grid)."""
        return predict_in_units(self.forward, self.x_norm, self.y_norm, x, precision=self.cfg.training.precision,
                                device=self.device, cache=not self.graphed)

    def train_epoch(self, epoch: int) -> torch.Tensor:
        self.model.train()
        order = self._epoch_order(epoch)
        total = torch.zeros((), device=self.device)
        bs = self.cfg.training.batch_size
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            if start + bs >= len(order):  # the epoch's rate as its last step used it (a tensor lr is set in place)
                lr = self.optimizer.param_groups[0]["lr"]
                self._epoch_lr = (lr.clone() if torch.is_tensor(lr) else lr, self.guard.lr_scale)
            if self._captured is not None and len(idx) == bs:  # a partial last batch runs eagerly
                loss = self._replayed_step(idx)
            else:
                loss = self._step(self.train_split.x[idx], self.train_split.y[idx])
            self.scheduler.step()
            total += loss.detach() * len(idx)  # summed on device: no host sync per step
        return total / len(order)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss on a batch: the config's loss against y, or with ``physics:`` the
        PDE's residual and conditions, which never read y."""
        pred = self.predict(x)
        if self.cfg.physics is not None:
            return self.model.loss(pred, x)
        return check_scalar_loss(self.loss_fn(pred, y), self.cfg.training.loss)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on a batch, stepped the way the optimizer needs; returns the loss."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        if self.closure_kind == "none":
            loss.backward()
            self.guard.step(loss)
            return loss

        def closure() -> torch.Tensor:
            if self.closure_kind == "loss":  # the optimizer differentiates the loss itself
                return self._loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            value = self._loss(x, y)
            value.backward()
            return value

        if self.closure_kind == "backward":
            loss.backward()
        self.guard.step(loss, closure=closure)
        return loss

    def _graph_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step `CapturedStep` captures: on the batch buffers, the guard's device part only."""
        x, y = self._batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        loss.backward()
        return loss.detach(), self.guard.update_on_device(loss)

    def _replayed_step(self, idx: torch.Tensor) -> torch.Tensor:
        """Gather the batch into the captured step's buffers, replay it (eager while the guard's
        ZClip warm-up runs), then the guard's host part."""
        if self._batch is None:
            self._batch = (self.train_split.x[idx], self.train_split.y[idx])
        else:
            torch.index_select(self.train_split.x, 0, idx, out=self._batch[0])
            torch.index_select(self.train_split.y, 0, idx, out=self._batch[1])
        loss, record = self._captured() if self.guard.capturable else self._graph_step()
        self.guard.record_step(record, replayed=self._captured.captured)
        return loss

    def _logged_lr(self) -> float:
        """The effective lr of the epoch's last step, the guard's lowered scale included: the one behind the
        record's train_loss (read after `scheduler.step()` it was the next epoch's, without the scale)."""
        lr, scale = self._epoch_lr
        return float(lr) * scale

    def _log_guard_events(self, epoch: int, judge_pending: bool = True) -> None:
        for event in self.guard.pop_events(judge_pending):
            self.run.log({"kind": "guard", "epoch": epoch, **event})

    def evaluate(self, split: Split | None = None, batch_size: int | None = None, name: str = "test") -> dict[str, float]:
        self.model.eval()
        bs = batch_size or eval_batch_size(self.cfg)
        errors = error_summary(relative_errors(self.predict, split or self.test_split, batch_size=bs, device=self.device,
                                               beyond=train_levels(self.cfg)))
        return {**errors, **self._solve_totals(training=False, split=name)}  # read with the errors: no extra host sync

    def _evaluations(self) -> dict[str, float]:
        """One evaluation's metrics: on the validation split as ``val_*`` (with data.n_val > 0) and on the test split
        as ``test_*``, both by `evaluate` (the same metric, normalisation and precision policy)."""
        val = {} if self.val_split is None else {f"val_{k}": v for k, v in self.evaluate(self.val_split, name="validation").items()}
        return {**val, **{f"test_{k}": v for k, v in self.evaluate().items()}}

    @property
    def selects_on(self) -> str:
        """The eval record's key that chooses "best" (lowest wins): the validation rel. L2 with a validation split,
        the epoch-mean training loss without one; never a test figure."""
        return "val_rel_l2" if self.val_split is not None else "train_loss"

    def fit(self) -> dict[str, float]:
        """Train to `training.epochs` (or `max_minutes`); TF32 on exactly when the policy is "tf32"."""
        self._interrupt[0] = False
        warn_schedule_never_decays(self.cfg)  # here, not in the schema: loading a trained run is no reason to warn
        with tf32_matmuls(self.cfg.training.precision == "tf32"), _sigint_sets(self._interrupt):
            final = self._fit()
        if final.get("interrupted"):
            raise TrainingInterrupted(self.run.path, self.epoch)
        return final

    def _fit(self) -> dict[str, float]:
        from tqdm.auto import tqdm

        t = self.cfg.training
        bar = tqdm(desc="train", unit="epoch", disable=not t.progress, initial=self.epoch, total=self.planned_epochs)
        stopped_early = False
        # fit to the budget once, after PLAN_AFTER epochs of this process (a resumed run keeps its plan)
        planned_before = self.plan_revisions if self.schedule_rule > 1 else self.planned_epochs != t.epochs
        plan = t.fit_to_budget and not planned_before and self.epoch + PLAN_AFTER < t.epochs
        start_epoch, first_epoch_end = self.epoch, None
        # re-estimate the pace every few epochs and re-fit the plan (SCHEDULE_RULE 2; older runs keep theirs)
        revise = self._revise_every() if t.fit_to_budget and self.schedule_rule > 1 else 0
        mark: tuple[float, int] | None = None  # (clock, epoch) where the current pace window began
        if not self.run.checkpoint_path("last").exists():  # a GuardError in the first epoch saves the start
            self._maybe_hold_state()
        while self.epoch < self.planned_epochs:
            epoch = self.epoch
            try:
                train_loss = self.train_epoch(epoch)
                # judges the epoch's buffered steps (polled mode) and the weights its last update left, before any
                # state of this epoch is kept: non-finite weights roll back or give up, never reach a checkpoint
                if epoch + 1 >= self.planned_epochs:  # the last epoch: it may not end on non-finite steps either
                    self.guard.finish()
                else:
                    self.guard.check_weights()
                self._log_guard_events(epoch + 1)  # polled mode judges the epoch's last steps here: it may give up
            except GuardError as err:
                self._log_guard_events(epoch + 1, judge_pending=False)
                raise err.with_context(f"(epoch {epoch + 1}). {self._save_after_guard_error(err, epoch + 1)}") from err
            if not self.guard.enabled and not math.isfinite(train_loss.item()):  # one host read per epoch
                raise FloatingPointError(
                    f"the training loss of epoch {epoch + 1} is non-finite and the guard is off: lower optimizer.lr, "
                    "turn the guard on (guard.enabled: true) to skip such steps, or check the data for NaN/Inf")
            self.epoch = epoch + 1
            bar.update()
            if plan and self.epoch == start_epoch + 1:
                first_epoch_end = self._device_clock()
            elif plan and self.epoch == start_epoch + PLAN_AFTER:
                self._plan_to_budget(first_epoch_end, PLAN_AFTER - 1)
                bar.total, plan, mark = self.planned_epochs, False, None  # its timing evaluated: not a window
            elif revise and self.plan_revisions and self.epoch % revise == 0 and self.epoch < self.planned_epochs:
                # windows from one boundary to the next in this process (its first epoch holds compilation)
                now = self._device_clock()
                if mark is not None and mark[1] < self.epoch:
                    self._revise_plan(now, (now - mark[0]) / (self.epoch - mark[1]))
                    bar.total = self.planned_epochs
                mark = (self._device_clock(), self.epoch)
            last = self.epoch == self.planned_epochs
            if self.epoch % t.eval_every == 0 or last:
                record = {"kind": "eval", "epoch": self.epoch, "train_loss": train_loss.item(),
                          "lr": self._logged_lr(), "time_s": time.perf_counter() - self.started,
                          **self._solve_totals(), **self._evaluations()}
                self.run.log(record)
                bar.set_postfix(train=f"{record['train_loss']:.4f}", test=f"{record['test_rel_l2']:.4f}",
                                **({"val": f"{record['val_rel_l2']:.4f}"} if "val_rel_l2" in record else {}))
                # "best" is chosen on the validation error, or without a validation split on the training loss:
                # the test split stays untouched by model selection.
                if record[self.selects_on] < self.best:
                    self.best = record[self.selects_on]
                    self.checkpoint("best")
            ended_nonfinite = self.guard.enabled and self.guard.consecutive_skips
            if ended_nonfinite:
                pass  # the epoch ended on non-finite steps: its weights may be what gives them; keep the state before
            elif self.epoch % t.checkpoint_every == 0 or last:
                self.checkpoint("last")
            else:
                self._maybe_hold_state()
            sitting = t.stop_after_minutes or t.max_minutes  # the plan spans max_minutes; this process may stop sooner
            interrupted = self._interrupt[0] and not last  # Ctrl-C: stop as for the time cap
            if interrupted or sitting is not None and time.perf_counter() - self.started > 60 * sitting and not last:
                if plan:  # a sitting shorter than PLAN_AFTER epochs: plan at its pace, first epoch included
                    self._plan_to_budget(self.started, self.epoch - start_epoch)
                if not ended_nonfinite:  # as above: a resume goes on from the state before
                    self.checkpoint("last")
                stopped_early = True
                break
        bar.close()
        # the figures are of the last weights ("weights"); "best" (what eval and load_operator read by default)
        # is named beside them, with its own test figures where it is another epoch's
        final = {"kind": "final", "epoch": self.epoch, "n_parameters": self.n_parameters, "stopped_early": stopped_early,
                 **({"interrupted": True} if stopped_early and self._interrupt[0] else {}),
                 **({"planned_epochs": self.planned_epochs} if t.fit_to_budget else {}),
                 "wall_time_s": time.perf_counter() - self.started,  # this sitting's
                 **self._sittings(), **self._solve_totals(), "weights": "last", **self._evaluations(),
                 **self._best_figures(),
                 **({"guard": self.guard.summary()} if self.guard.enabled else {})}
        if history := self.run.settings_history():  # resumed with changed settings: config.yaml alone is not the run
            final["resumed_with_changes"] = history
        self.run.log(final)
        warn_failed_solves(self.failed_solves, "this run")
        if t.plot:
            self.plot(self.run.path / "predictions.png")
        return final

    def _best_figures(self) -> dict[str, Any]:
        """The "best" checkpoint beside the final record's last weights: its epoch and what chose it, and where it
        is another epoch's, its test figures (``best_test_*``, as `_evaluations`' ``test_*``), measured with its
        weights loaded and the last ones put back (hard-constraint solves of that evaluation are not counted)."""
        path = self.run.checkpoint_path("best")
        if not path.exists():
            return {}
        state = self.run.load_checkpoint("best", map_location=self.device)
        out = {"best_epoch": state["epoch"], "best_selected_on": self.selects_on}
        if state["epoch"] == self.epoch:
            return out
        last, counted = copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.failed_solves)
        try:
            self.model.load_state_dict(state["model"])
            figures = self.evaluate()
        finally:
            self.model.load_state_dict(last)
            self.failed_solves = counted
        return {**out, **{f"best_test_{k}": v for k, v in figures.items() if k.startswith("rel_l2")}}

    @torch.no_grad()
    def plot(self, path: Path) -> None:
        self.model.eval()
        plot_first_samples(self.predict, self.test_split, self.cfg.training.n_plot, path)


def plot_first_samples(predict, split: Split, n_plot: int, path: Path) -> bool:
    """The first `n_plot` samples of `split`, truth beside `predict`'s output, saved to `path` (False when nothing
    could be plotted)."""
    from sciml.train.plots import plot_predictions

    n = min(n_plot, len(split.x))
    return plot_predictions(split.x[:n].cpu(), split.y[:n].cpu(), predict(split.x[:n]).cpu(), path, split.y_fields)


def warn_failed_solves(counts: dict[str, list[int]], what: str) -> None:
    """One warning line when any hard-constraint solve of `what` did not converge (`counts`: kind -> [failed,
    solves]); under on_failure "record" (the default) they are otherwise only in metrics.jsonl / eval.json."""
    failed = [f"{f} of {n} {kind} solves" for kind, (f, n) in counts.items() if f]
    if failed:
        warnings.warn(f"{what}: {' and '.join(failed)} did not converge (their outputs are least-squares iterates, not "
                      f"solutions); raise physics.max_steps or loosen physics.rtol/atol", RuntimeWarning, stacklevel=2)


def train_levels(cfg: OperatorConfig) -> int | None:
    """The time levels a physics run trains on (``physics.train_levels``), or None (all)."""
    return cfg.physics.train_levels if cfg.physics is not None else None


def eval_batch_size(cfg: OperatorConfig) -> int:
    """Samples per evaluation batch: at least 50, or the training batch for physics models, whose hard
    layer holds N basis fields and each of their partials on the whole grid in float64 per sample
    (1.8 GB in eval at the Navier-Stokes config's 64 x 64 x 65, measured on CPU: 50 at once would not
    fit an 80 GB GPU)."""
    return cfg.training.batch_size if cfg.physics is not None else max(cfg.training.batch_size, 50)


def eval_batch_at(cfg: OperatorConfig, trained_at: int | None, at: int, n_dims: int) -> int:
    """`eval_batch_size`, on a grid finer than the training one (`at` against `trained_at` points on the first of
    `n_dims` axes) cut to the same points per batch: 50 samples at 256^2 took a width-32 FNO 4.1 GB (643 MB at
    64^2). A sample's error does not depend on its batch but for float32 rounding (~1e-7: batched kernels sum in
    another order)."""
    base = eval_batch_size(cfg)
    if not trained_at or at <= trained_at:
        return base
    return max(1, base * trained_at ** n_dims // at ** n_dims)


def warn_zero_targets(split: Split, first_row: int, name: str) -> None:
    """Warns of samples whose target is zero everywhere: their relative L2 divides by a zero norm (clamped to
    1e-12), and one such test sample made the run's test rel. L2 8e10 without a word. `first_row`: the split's first
    row in the file."""
    y = split.y.flatten(1)
    zero = torch.nonzero((y.amax(1) == 0) & (y.amin(1) == 0)).flatten() if y.numel() else []  # no |y| temporary
    if len(zero):
        warnings.warn(f"{len(zero)} of the {len(y)} {name} samples have a target of zeros only (the first: sample "
                      f"{first_row + int(zero[0])} of the file): their relative L2 error divides by a zero norm, and "
                      f"their huge errors swamp the {name} mean; drop them from the file, or keep them out of its "
                      f"{name} rows", stacklevel=3)


def load_test_split(cfg: OperatorConfig, dataset: str | Path, *, resolution: int | None = None,
                    n_test: int | None = None, info=None, flag: str | None = None) -> Split:
    """The config's test split of `dataset` at `resolution`, as the model sees it (space-time with ``physics:``);
    `n_test` samples of it (default: the config's). `info`: the file's `read_info`, when the caller has it.
    `flag`: the option `resolution` came from, for errors."""
    from sciml.data.h5 import read_info

    info = info or read_info(dataset)
    inputs, outputs = dataset_fields(cfg, info)
    split = load_test(info, inputs=inputs, outputs=outputs, n_test=n_test or cfg.data.n_test, resolution=resolution,
                      input_time=cfg.data.input_time, output_time=cfg.data.output_time, run_windows=True, flag=flag)
    return spacetime_split(split, with_start=saves_start(info)) if cfg.physics is not None else split


class TrainedOperator(torch.nn.Module):
    """A run's trained model with its normalisers: raw inputs ``(batch, in, *grid)`` -> raw outputs, as the
    run's own evaluation computes them (its precision policy included; ``physics:`` models take and give the
    space-time layout). Carries the run's `config`, the checkpoint's `epoch`, and the dataset it was built
    on (`dataset`) and trained on (`trained_on`). Call it under ``torch.no_grad()`` to predict."""

    def __init__(self, model: torch.nn.Module, x_norm: Normalizer, y_norm: Normalizer, *, config: OperatorConfig,
                 epoch: int, dataset: Path, trained_on: Path, n_dims: int, in_channels: int | None = None):
        super().__init__()
        self.model, self.x_norm, self.y_norm = model, x_norm, y_norm
        self.config, self.epoch, self.dataset, self.trained_on = config, epoch, dataset, trained_on
        self.n_dims = n_dims  # grid axes: tells one sample (in, *grid) from a batch
        self.in_channels = in_channels

    def _check_layout(self, shape: tuple[int, ...]) -> None:
        """A batch or a sample without its channel axis (a (3, 85, 85) batch was read as one sample of 3 channels
        and the error quoted (1, 3, 85, 85)), or with channels last: said in the caller's shape, with the fix."""
        c, d = self.in_channels, self.n_dims
        if c is None or (len(shape) == d + 1 and shape[0] == c) or (len(shape) == d + 2 and shape[1] == c):
            return
        takes = f"the model takes (batch, {c}, *grid) or one sample ({c}, *grid), {d} grid axes; got {shape}"
        if c == 1 and len(shape) == d + 1:
            raise ValueError(f"{takes}: a batch of {shape[0]} without its channel axis? pass a[:, None]")
        if c == 1 and len(shape) == d:
            raise ValueError(f"{takes}: one sample without its channel axis? pass a[None]")
        if len(shape) in (d + 1, d + 2) and shape[-1] == c:
            raise ValueError(f"{takes}: channels last? np.moveaxis(a, -1, {len(shape) - d - 1}) puts them first")
        # otherwise the normalisers' and the model's own checks say what is wrong

    def forward(self, x) -> torch.Tensor:
        """x: ``(batch, in, *grid)`` or one sample ``(in, *grid)``, a tensor or numpy array of any real dtype (cast
        to the model's, on its device)."""
        param = next(self.model.parameters())
        x = torch.as_tensor(x).to(device=param.device, dtype=param.dtype)
        self._check_layout(tuple(x.shape))
        one = x.ndim == self.n_dims + 1  # channels and shapes: the normalisers and the model check them
        y = predict_in_units(self.model, self.x_norm, self.y_norm, x[None] if one else x,
                             precision=self.config.training.precision, device=x.device)
        return y[0] if one else y


def dataset_record(info) -> dict[str, Any]:
    """What a checkpoint keeps of its training file (besides its path): the family, the recipe params and the
    saved times, which another file evaluated with the run must share; and its seed and sample count, which tell
    the file from another of the same recipe put at its path (`dataset_differences`). A file of one's own has no
    seed: its content_sha256 (write_dataset's digest of the values) tells other arrays put at its path from it; one
    without (written by an older write_dataset or with h5py) is known by its fields' shapes only, all that can be
    compared without reading the whole file, so other values of the same shapes pass there."""
    times, seed = info.grid.get("t"), info.attrs.get("seed")
    record = {"family": info.family, "params": info.params,
              "times": None if times is None else [float(t) for t in times],
              "seed": None if seed is None else int(seed), "n_samples": int(info.n_samples)}
    if not info.from_recipe:
        digest = info.attrs.get("content_sha256")
        record["content_sha256"] = None if digest is None else str(digest)
        record["shapes"] = {name: list(spec.shape) for name, spec in info.fields.items()}
    return record


def dataset_differences(record: dict[str, Any], info) -> list[str]:
    """How the file `info` differs from a checkpoint's `dataset_record`, in the keys the record has (older runs
    lack seed and n_samples, and a file of one's own its content_sha256 and shapes): family, recipe params, saved
    times, seed, n_samples, and for a file of one's own its digest and fields' shapes. When and where it was made
    (created_utc, device) are not compared: a file regenerated from the same recipe differs only in those."""
    here, differ = dataset_record(info), []
    if here["family"] != record["family"]:
        differ.append(f"family {here['family']} (trained on {record['family']})")
    differ += [f"params.{d}" for d in param_differences(here["params"], record["params"])]
    a, b = record["times"], here["times"]
    if (a is None) != (b is None) or a is not None and (len(a) != len(b) or not np.allclose(a, b, rtol=1e-9, atol=0)):
        shown = lambda t: "none" if t is None else _shown_times(t)
        differ.append(f"saved times {shown(b)} (trained on {shown(a)})")
    differ += [f"{k}={here[k]} (trained on {record[k]})" for k in ("seed", "n_samples")
               if k in record and here[k] != record[k]]
    digest, trained = here.get("content_sha256"), record.get("content_sha256")
    if trained is not None and digest != trained:  # other values (a record without one: the shapes below only)
        short = lambda d: "none" if d is None else d[:12]
        differ.append(f"content_sha256={short(digest)} (trained on {short(trained)}): other values")
    if "shapes" in record and here.get("shapes") != record["shapes"]:
        shown = lambda s: "none" if s is None else ", ".join(f"{k} {tuple(v)}" for k, v in s.items())
        differ.append(f"fields {shown(here.get('shapes'))} (trained on {shown(record['shapes'])})")
    return differ


def param_differences(ours: dict[str, Any], theirs: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """``"k=ours (trained on theirs)"`` for each recipe param (but `skip`) in which two files differ."""
    return [f"{k}={ours.get(k)} (trained on {theirs.get(k)})" for k in sorted({*ours, *theirs})
            if k not in skip and ours.get(k) != theirs.get(k)]


# recipe params another file may differ in without a warning: its grids (a finer stored grid is the point of testing
# on another file) and its time span (its saved times are compared within the run's windows instead)
_FREE_PARAMS = ("resolution", "sim_resolution", "oversample", "t_end", "n_times")


def _shown_times(times) -> str:
    values = [f"{float(t):g}" for t in times]
    return f"[{', '.join(values)}]" if len(values) <= 4 else f"[{values[0]}, {values[1]}, ..., {values[-1]}]"


class _SavedRun:
    """A run's config and checkpoint, opened once, and the dataset file it is evaluated on (its own, or another
    of its family); `operator` builds the model for one split's grid."""

    replaced = False  # the file at the run's path differs from the checkpoint's record of its training file

    def __init__(self, run_path: str | Path, which: str, device: torch.device, dataset: str | Path | None,
                 n_test: int | None = None, *, need_data: bool = True):
        from sciml.config import load_config, load_yaml, reading_saved_run
        from sciml.data.h5 import read_info

        run = RunDir(run_path)
        run.checkpoint_path(which)  # an unknown `which` fails before the config is read
        run.require_config()
        if load_yaml(run.config_path).get("task") == "pinn":  # its schema errors were listed instead
            raise ConfigError(f"{run.path} is a PINN run (task: pinn), not an operator one: load it with "
                              f"sciml.train.pinn.load_pinn(run) and evaluate it with evaluate_pinn_run(run) or "
                              f"`sciml eval {run.path}`")
        with reading_saved_run():
            self.cfg = load_config(OperatorConfig, run.config_path)
        self.n_test = n_test or self.cfg.data.n_test
        self.state = run.load_checkpoint(which, map_location=device)
        self.trained_on = Path(self.state["dataset"])
        self.dataset = self.trained_on if dataset is None else Path(dataset)
        self.info = self.trained_info = None
        if not need_data and dataset is None and not self.trained_on.exists() and "io" in self.state \
                and self.cfg.physics is None:  # the checkpoint alone describes the model (a physics one needs the grid)
            return
        if self.dataset.exists() and self.trained_on.exists() and os.path.samefile(self.dataset, self.trained_on):
            self.dataset = self.trained_on  # the training file by another name (relative, ./, a link): its own rules
        # read once: the family check, the training-rows rule and `beyond` (per resolution) all need it
        self.trained_info = read_info(self.trained_on) if self.trained_on.exists() else None
        self.info = self.trained_info if self.dataset == self.trained_on and self.trained_info else read_info(self.dataset)
        record = self.state.get("dataset_info")
        if self.trained_info is not None and record is not None \
                and (differ := dataset_differences(record, self.trained_info)):
            # another file put at the run's path (another seed or viscosity) was scored as the run's own: the
            # checkpoint's record is the training file now, and this one is compared with it as any other file
            self.trained_info, self.replaced = None, True
            if self.dataset == self.trained_on:
                warnings.warn(f"{self.trained_on} is not the file the run trained on ({', '.join(differ)}): it is "
                              f"evaluated as another file, against the checkpoint's record of the training file; "
                              f"restore the run's file to evaluate on its own test rows", stacklevel=3)
        if not self.own_file:
            self._compare_with_training_file()
        if self.n_test > self.info.n_samples:
            raise ConfigError(f"{self.dataset} holds {self.info.n_samples} samples, fewer than the {self.n_test} to test on "
                              f"(data.n_test of the run): give --n-test {self.info.n_samples} or fewer")
        self._refuse_training_rows()
        check_channel_layout(self.state, self.cfg, self.info, run.path)

    @property
    def own_file(self) -> bool:
        """Evaluated on the file the run trained on (its training rows, grid and times)."""
        return self.dataset == self.trained_on and not self.replaced

    @property
    def trained(self) -> dict[str, Any] | None:
        """The training file's family, params and saved times (`dataset_record`): from the file where it matches the
        checkpoint's record (its seed then known for an older record too), else from the record (runs since
        2026-11-27); None for an older run whose file is gone."""
        return dataset_record(self.trained_info) if self.trained_info is not None else self.state.get("dataset_info")

    def _compare_with_training_file(self) -> None:
        """Another file must be of the run's family and save the training file's times within the run's windows (a
        model trained on steps of 1 fed steps of 0.5 gave a number with no warning); other recipe params (another
        viscosity, forcing) are warned of: the error then measures the model on another problem."""
        trained = self.trained
        if trained is None:
            warnings.warn(f"the run's training file {self.trained_on} is gone and its checkpoint (from before 2026-11-27) "
                          f"does not record the file's saved times and params: {self.dataset} is not compared with them",
                          stacklevel=4)
            return
        if trained["family"] != self.info.family:
            raise ConfigError(f"{self.dataset} holds {self.info.family} data and the run was trained on "
                              f"{trained['family']} ({self.trained_on}); evaluate on a file of its family")
        if self.cfg.physics is None:  # a physics model is built on the file's own space-time grid (see `beyond`)
            self._check_saved_times()
        else:
            self._check_time_levels()
        differ = param_differences(self.info.params, trained["params"], skip=_FREE_PARAMS)
        if differ:
            warnings.warn(f"{self.dataset} was made with other recipe params than the run's training file "
                          f"({self.trained_on}): {', '.join(differ)}: its error measures the model on another problem",
                          stacklevel=4)

    def _check_time_levels(self) -> None:
        """A physics model predicts the solution on the file's own space-time grid: a file saving fewer time levels
        than the run trained on (a Burgers file of the start and end only, not a trajectory) was refused as "modes[1]=8
        needs a grid of at least 15 points ... lower modes", which no setting of the finished run can follow."""
        trained = self.trained["times"]
        if trained is None:
            return
        levels = lambda times: len(times) + (float(times[0]) != 0.0) if len(times) else 0  # t = 0 saved or the input
        here = self.info.grid.get("t")
        have, need = levels(here if here is not None else []), levels(trained)
        need = min(need, train_levels(self.cfg) or need)
        if have < need:
            saved = f"saves {len(here)} time{'s' * (len(here) != 1)} ({_shown_times(here)})" if here is not None \
                else "saves no time axis"
            raise ConfigError(f"{self.dataset} {saved}: {have} time level{'s' * (have != 1)}, and the physics-informed run "
                              f"predicts the space-time solution on the file's time levels, {need} of them in training "
                              f"({self.trained_on}, times {_shown_times(trained)}); evaluate it on a file that saves the "
                              f"trajectory (at least {need} levels), e.g. one generated with the run's recipe")

    def _check_saved_times(self) -> None:
        """The times the run's windows select, here and in the training file: a model maps the steps it was trained
        on (a rollout's step, the lead time of a target), which another time grid changes."""
        record = self.trained
        trained, here = record["times"], self.info.grid.get("t")
        if trained is None or here is None:
            return
        for key, fields in zip(("input_time", "output_time"), dataset_fields(self.cfg, self.info)):
            if not any(self.info.fields[n].time_varying for n in fields if n in self.info.fields):
                continue
            select = getattr(self.cfg.data, key)
            (a, b), (c, d) = time_range(select, len(trained)), time_range(select, len(here))
            if not 0 <= c < d <= len(here):
                continue  # outside this file's times: loading says which file to give
            if b - a != d - c or not np.allclose(here[c:d], trained[a:b], rtol=1e-6, atol=1e-12):
                span = {k: record["params"][k] for k in ("t_end", "n_times") if record["params"].get(k)}
                raise ConfigError(f"{self.dataset} saves the times {_shown_times(here[c:d])} where the run's data.{key}="
                                  f"{list(select) if isinstance(select, (list, tuple)) else select} selects them, and the "
                                  f"run was trained on {_shown_times(trained[a:b])} ({self.trained_on}): "
                                  f"{self._why_fixed_times()}, so evaluate it on a file saved at those times"
                                  + (f" (its recipe's {', '.join(f'params.{k}={v}' for k, v in span.items())})"
                                     if span else "")
                                  + ("; a finer grid in space works (`sciml eval RUN --resolution N`, or --dataset a "
                                     "file stored finer at these times)" if self.cfg.model.name in SPACETIME_MODELS
                                     else ""))

    def _why_fixed_times(self) -> str:
        """Why the run's model cannot take another time grid, in its own terms."""
        if self.cfg.model.name in SPACETIME_MODELS:
            # the FNO paper (Li et al. 2021, Sec. 5.4) evaluates its FNO-3D on a finer space-time grid; ours cannot
            normalised = ", each normalised with its own training statistics" \
                if self.cfg.data.normalize_outputs != "none" else ""
            return (f"model {self.cfg.model.name!r} has no time super-resolution: it predicts a fixed count of time "
                    f"points (its output steps are channels{normalised}) and its time padding counts points")
        return "the model maps the training file's steps"

    def _refuse_training_rows(self) -> None:
        """The test rows (the file's last `n_test`) must lie past the rows the run trained on (and the validation
        rows after them, which chose its 'best', with data.n_val > 0), in its own
        file and in another generated with the training file's seed, which may draw the same samples in the
        same order (it does with the same batch size and sampling grid; the NS family draws at its simulation
        grid, so a finer stored file repeats them): refused rather than compared sample by sample."""
        n_train, n_val = self.cfg.data.n_train, self.cfg.data.n_val
        used, first_test = n_train + n_val, self.info.n_samples - self.n_test  # trained on, then validated on
        if first_test >= used:
            return
        if self.own_file:
            rows = (f"its first {n_train}" if not n_val else
                    f"its first {used}: {n_train} training rows, then {n_val} validation rows that chose its 'best'")
            raise ConfigError(f"the last {self.n_test} samples of {self.dataset} include rows the run trained on ({rows}): "
                              f"give --n-test {self.info.n_samples - used} or fewer")
        trained = self.trained  # the record's seed where the file at the run's path is another
        seed = None if trained is None else trained.get("seed")
        other_seed = self.info.attrs.get("seed")
        if seed is not None and other_seed is not None and int(seed) == int(other_seed):
            raise ConfigError(f"{self.dataset} was generated with the training file's seed ({int(seed)}): files of one "
                              f"seed share their draws wherever the family draws them alike (the same batch size and "
                              f"sampling grid; the NS family draws at its simulation grid, whatever it stores), so its "
                              f"test rows {first_test}..{self.info.n_samples - 1} may be rows the run trained on "
                              f"(0..{n_train - 1}" + (f", and validated on {n_train}..{used - 1}" if n_val else "")
                              + f"). For new draws generate it with another seed (e.g. `sciml generate "
                              f"{self.info.attrs.get('name', self.info.family)} seed=1 ...`)")

    def beyond(self) -> int | None:
        """The first test level past the run's training window (``physics.train_levels``) on this file's
        time grid: another file may save other times, and level k there is not level k of training."""
        window = train_levels(self.cfg)
        if window is None or self.own_file:
            return window
        record = self.trained
        if record is None or record["times"] is None:
            return None  # no training grid to compare with: no beyond figure
        # t = 0 is a level whether saved (`saves_start`) or the input
        level_times = lambda times: ([] if float(times[0]) == 0.0 else [0.0]) + [float(t) for t in times]
        end, here = level_times(record["times"])[window - 1], level_times(self.info.grid["t"])
        k = sum(t <= end * (1 + 1e-9) + 1e-12 for t in here)
        return k if k < len(here) else None  # no level past the window on this file: no beyond figure

    def resolution(self, given: int | None) -> int | None:
        """`given`, or by default the grid the run trained on for its own file (``data.resolution``), and the
        stored grid for another file (the point of testing on new draws stored finer)."""
        if given is not None:
            return given
        return self.cfg.data.resolution if self.own_file else None

    def operator(self, split: Split | None, resolution: int | None, device: torch.device) -> TrainedOperator:
        """The trained model for data shaped like `split` (its channels and grid) at `resolution`; with no split
        (no data file), as the checkpoint records it."""
        cfg = self.cfg
        if split is None:
            io = self.state["io"]  # written with channels time-major (fbdddbf): nothing older to reorder
            shape, fields = (io["in_channels"], io["out_channels"], io["n_dims"]), tuple(io["fields"])
        else:
            shape, fields = (split.x.shape[1], split.y.shape[1], split.x.ndim - 2), dataset_fields(cfg, self.info)
        model = build_operator_model(cfg, *shape, info=self.info, fields=fields, resolution=resolution)
        model.load_state_dict(self.state["model"])
        operator = TrainedOperator(model, _normalizer_from_state(self.state["x_norm"]),
                                   _normalizer_from_state(self.state["y_norm"]), config=cfg, epoch=self.state["epoch"],
                                   dataset=self.dataset, trained_on=self.trained_on, n_dims=shape[2],
                                   in_channels=shape[0])
        return operator.to(device).eval()


def _check_resolution(given: Any, flag: str) -> None:
    """A grid size asked for is a positive whole number: 0 was reported "at resolution 256" (the stored grid's)."""
    if given is not None and (isinstance(given, bool) or not isinstance(given, numbers.Integral) or given < 1):
        shown = f"{flag}{given!r}" if flag.endswith("=") else f"{flag} {given!r}"
        raise ConfigError(f"{shown}: a resolution is a positive grid size (points on the first axis), or None for the "
                          f"default")


def load_operator(run_path: str | Path, *, which: str = "best", device: str | torch.device = "auto",
                  resolution: int | None = None, dataset: str | Path | None = None) -> TrainedOperator:
    """A run's checkpoint (`which`: "best", the evaluated epoch of lowest validation rel. L2 with data.n_val > 0,
    otherwise of lowest epoch-mean training loss, usually the last one; or "last") as a `TrainedOperator` on
    `device`, built for the grid
    of `dataset` (default: the run's own; another must be of the run's family) at `resolution` (default: the
    training one, or another file's stored grid). Where the run's own file is gone (moved, another machine),
    the model is built from the shapes its checkpoint records (runs since 2026-11-27; physics models need it)."""
    _check_resolution(resolution, "resolution=")
    dev = resolve_device(device)
    saved = _SavedRun(run_path, which, dev, dataset, need_data=False)
    resolution = saved.resolution(resolution)
    if saved.info is None:  # the training file is gone (moved, another machine): the checkpoint's shapes
        return saved.operator(None, resolution, dev)
    probe = load_test_split(saved.cfg, saved.dataset, resolution=resolution, n_test=1, info=saved.info,
                            flag="resolution=")  # channels, grid
    return saved.operator(probe, resolution, dev)


def evaluate_run(run_path: str | Path, *, resolutions: list[int | None] = (None,), which: str = "best",
                 device: str = "auto", dataset: str | Path | None = None, n_test: int | None = None,
                 flag: str = "--resolution", batch_size: int | None = None) -> list[dict[str, Any]]:
    """Reload a run and evaluate its checkpoint on the test split at each resolution (None: the training
    one, or another file's stored grid): of its own dataset, or of `dataset`, another file of the same family with the same fields (new draws, a
    finer stored grid: a model trained at 64^2 tested at 256^2, as the PI-HC-MoE paper's NS). As the
    run's own evaluation: `TrainedOperator` predicts under its precision policy, TF32 included. `n_test`:
    the last that many samples of the file (default: the config's ``data.n_test``). Every resolution is tried;
    if any fails, `EvalFailed` carries the rows of those that did and why each other failed (`flag`: the option
    the resolutions came from, for its messages). `batch_size`: test samples per forward pass (default
    `eval_batch_at`: fewer on a grid finer than the training one)."""
    for given in resolutions:
        _check_resolution(given, flag)
    dev = resolve_device(device)
    saved = _SavedRun(run_path, which, dev, dataset, n_test=n_test)
    cfg, rows, failed = saved.cfg, [], []
    trained_at = cfg.data.resolution or (saved.trained_info.spatial_shape[0] if saved.trained_info else None)
    for resolution in map(saved.resolution, resolutions):
        at = resolution or saved.info.spatial_shape[0]
        try:
            split = load_test_split(cfg, saved.dataset, resolution=resolution, n_test=saved.n_test, info=saved.info,
                                    flag=flag)
            warn_zero_targets(split, saved.info.n_samples - saved.n_test, "test")
            at = int(split.x.shape[2])
            operator = saved.operator(split, resolution, dev)
            bs = batch_size or eval_batch_at(cfg, trained_at, at, saved.info.n_spatial_dims)
            err = relative_errors(operator, split, batch_size=bs, device=dev, beyond=saved.beyond())
            layer = hard_layer(operator.model)
            solves = layer.pop_solve_totals(training=False) if layer is not None else {}
        except (TrainingGridOnly, DatasetError, ConfigError) as error:  # these name their fix
            failed.append(f"at resolution {at}: {error}")
            continue
        except ValueError as error:  # e.g. a hard-constraint layer's points beyond a coarse grid's blocks
            if trained_at is not None and at >= trained_at:  # not too coarse: a finer grid is no fix
                advice = ")"
            else:  # a finer grid may fit; a training setting (e.g. points) cannot change
                advice = f": evaluate at a finer {flag}" + (f", e.g. {trained_at}, its training grid)" if trained_at else ")")
            failed.append(f"at resolution {at}: {error} (this run's settings are fixed{advice}")
            continue
        rows.append({"resolution": int(split.x.shape[2]), "checkpoint": which, "epoch": operator.epoch,
                     "n_parameters": count_parameters(operator.model), **error_summary(err), **solves,
                     **({} if saved.own_file else {"dataset": str(saved.dataset)})})
        if solves:
            warn_failed_solves({"test": [solves["solve_failures"], solves["solves"]]},
                               f"the evaluation at resolution {rows[-1]['resolution']}")
        if cfg.training.plot and (plot := _plot_eval(operator, split, cfg.training.n_plot, Path(run_path), rows[-1])):
            rows[-1]["plot"] = str(plot)
    if failed:
        raise EvalFailed(rows, failed)
    return rows


@torch.no_grad()
def _plot_eval(operator: "TrainedOperator", split: Split, n_plot: int, run_path: Path, row: dict[str, Any]) -> Path | None:
    """The first test samples, truth beside prediction, as training's final plot: eval_<resolution>_<checkpoint>.png
    (with the other file's name when evaluated on one)."""
    other = f"_{Path(row['dataset']).stem}" if "dataset" in row else ""
    path = run_path / f"eval_{row['resolution']}_{row['checkpoint']}{other}.png"
    return path if plot_first_samples(operator, split, n_plot, path) else None


class EvalFailed(ConfigError):
    """Some resolutions could not be evaluated: `rows` holds those that were, `failures` says why each other failed."""

    def __init__(self, rows: list[dict[str, Any]], failures: list[str]):
        done = f"evaluated at {', '.join(str(r['resolution']) for r in rows)}; " if rows else ""
        super().__init__(done + "; ".join(failures))
        self.rows, self.failures = rows, failures


def _normalizer_from_state(state: dict[str, Any]) -> Normalizer:
    norm = Normalizer(state["kind"], shape=tuple(state["mean"].shape))
    norm.load_state_dict({k: v for k, v in state.items() if k != "kind"})  # no "eps" before it was saved: the old 1e-6
    return norm


def train(cfg: OperatorConfig, *, run: RunDir | None = None, resume: bool = False) -> tuple[RunDir, dict[str, float]]:
    """Train `cfg` into a new run folder, or continue `run` from its last checkpoint."""
    if cfg.physics is not None and (unused := cfg.physics.ignored_layer_options()):
        warnings.warn(f"physics.constraint=soft has no layer: {unused} are not used (they set the hard constraint's "
                      f"layer; physics.constraint=hard uses them)", stacklevel=2)
    if cfg.physics is not None and cfg.training.loss != type(cfg.training).model_fields["loss"].default:
        # (compared with the default: a resume validates the saved config, which holds every field)
        warnings.warn(f"physics: the loss is the PDE's residual and conditions; training.loss={cfg.training.loss!r} "
                      "is not used (drop it)", stacklevel=2)
    if run is None:
        run = RunDir.create(cfg.output.root, cfg.output.name, prefix=f"{cfg.model.name.replace(':', '_')}")
    # the run seeds torch's global generator (and draws from it): the caller's state is put back on return
    with run.removed_if_left_empty(), callers_rng_kept(resolve_device(cfg.device)):
        state = dataset = resumed = None
        if resume:
            run.check_resume(dump(cfg), "operator")
            state = run.load_checkpoint("last", map_location=resolve_device(cfg.device))
            # the file the checkpoint trained on, not the config's relative data.root seen from another folder
            dataset = resumed_dataset(cfg, state.get("dataset"), device=resolve_device(cfg.device),
                                      progress=cfg.training.progress)
        trainer = Trainer(cfg, run, dataset=dataset)
        print(f"model {cfg.model.name}: {trainer.n_parameters:,} parameters", flush=True)  # beside the run folder
        if resume:
            trainer.load_state_dict(state)
            trainer.forget_best_ahead()
            # what this sitting changed, from where: the config it goes on from is the checkpoint's
            resumed = run.resume_record(state.get("config"), dump(cfg), "operator", device=trainer.device,
                                        at={"epoch": trainer.epoch, "step": trainer.scheduler.last_epoch})
        run.write_config(dump(cfg))
        run.write_environment(trainer.device, cfg.model_dump(), resumed=resumed)
        return run, trainer.fit()
