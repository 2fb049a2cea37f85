"""Operator configs with ``physics:``: the space-time grid from a trajectory dataset, and the model."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from sciml.config import ConfigError
from sciml.data.h5 import DatasetInfo, subsample_stride
from sciml.data.loading import Split
from sciml.train.schema import ROLLOUT_MODELS, OperatorConfig, check_rollout_windows, check_spacetime_outputs


def saves_start(info: DatasetInfo) -> bool:
    """Whether the dataset's trajectories hold t = 0 as their first saved level (diffusion-sorption's
    do; Burgers' and Navier-Stokes' start at the first step, the initial value being an input)."""
    check_trajectory(info)
    return float(info.grid["t"][0]) == 0.0


def check_trajectory(info: DatasetInfo) -> None:
    """A physics run needs data saved over time: checked before anything reads the times."""
    if "t" not in info.grid:  # else a KeyError: 't' from the first reader of the times
        raise ConfigError(f"physics: the data must be a trajectory (saved over time) and {info.path} (family "
                          f"{info.family!r}) has no time axis; use a time-dependent recipe (e.g. burgers_spacetime) "
                          "or drop physics: for a steady operator")


def check_family(name: str, problem: Any, info: DatasetInfo) -> None:
    """A problem that declares the data families it models refuses a file of another: its residual would be
    trained on another equation's trajectories with default parameters, silently."""
    from sciml.constraints.operator import problems_for_family

    if not problem.families or info.family in problem.families:
        return
    fits = [p for p in problems_for_family(info.family) if p != name]
    fix = (f"set physics.problem: {fits[0]} (it models {info.family!r})" if fits else
           f"no built-in grid problem models {info.family!r}: write one (physics.problem: 'module:attr', a "
           f"GridProblem) or use data of family {' or '.join(map(repr, problem.families))}")
    raise ConfigError(f"physics.problem {name!r} models data of family {' or '.join(map(repr, problem.families))} "
                      f"and {info.path} is of family {info.family!r}; {fix}")


def spacetime_split(split: Split, *, with_start: bool = False) -> Split:
    """A trajectory split as one space-time field: inputs ``(n, c, *grid)`` broadcast over the
    time levels, solutions ``(n, T, *grid)`` (times as channels) as ``(n, 1, *grid, levels)``.
    Without `with_start` the first input (the initial value) is put in front (T + 1 levels);
    with it the solutions already start at t = 0 (`saves_start`)."""
    y = split.y if with_start else torch.cat([split.x[:, :1], split.y], dim=1)
    x = split.x.unsqueeze(-1).expand(*split.x.shape, y.shape[1]).contiguous()
    return Split(x, y.movedim(1, -1).unsqueeze(1).contiguous())


def spacetime_spacing(info: DatasetInfo, coords: tuple[str, ...], resolution: int | None,
                      output: str) -> tuple[float, ...]:
    """Grid steps of the problem's coordinates (space axes, then "t") on the grid of the dataset's
    field `output` at `resolution`, with t = 0 as the first level: the saved times must be uniform
    steps from 0."""
    spec = info.field(output)
    if not spec.time_varying:
        raise ConfigError(f"physics: the output field {output!r} of {info.path} must be a trajectory (saved over time)")
    space = tuple(d for d in spec.dims if d != "t")
    if coords != space + ("t",):
        raise ConfigError(f"physics: the problem's coordinates {coords} must be the data's axes {space + ('t',)}")
    stride = subsample_stride(info, resolution)
    steps = [float(info.grid[name][1] - info.grid[name][0]) * stride for name in space]
    times = np.asarray(info.grid["t"], dtype=np.float64)
    times = times if saves_start(info) else np.concatenate([[0.0], times])
    dt = np.diff(times)
    if not np.allclose(dt, dt[0], rtol=1e-6):
        raise ConfigError(f"physics: {info.path} saves times {times[1:].tolist()}; the PDE's grid needs uniform steps "
                          "from t = 0 (e.g. the burgers1d family's n_times snapshots)")
    return (*steps, float(dt[0]))


def spacetime_origin(info: DatasetInfo, coords: tuple[str, ...], resolution: int | None) -> tuple[float, ...]:
    """The first coordinate of each of the problem's axes (space axes, then "t" at 0) on the dataset's grid at
    `resolution`, as `spacetime_spacing` steps it: a residual reading ``d.x`` must see where the data lie (a
    "cells" grid starts half a cell in, not at 0). Coarsening keeps every stride-th point (from the first)
    of a "periodic" or "nodes" grid and averages blocks of stride cells of a "cells" grid, whose first
    coarse centre is then the mean of the first stride fine centres (h/2 of the coarse grid on [0, 1])."""
    stride = subsample_stride(info, resolution)
    first = [np.asarray(info.grid[name], dtype=np.float64)[:stride if info.grid_kind == "cells" else 1].mean()
             for name in coords if name != "t"]
    return (*(float(v) for v in first), 0.0)


def build_operator_model(cfg: OperatorConfig, in_channels: int, out_channels: int, n_dims: int, *,
                         info: DatasetInfo | None = None, fields: tuple[list[str], list[str]] | None = None,
                         resolution: int | None = None) -> torch.nn.Module:
    """The config's model for data of this shape; with ``physics:`` (which needs the dataset's `info`
    and the selected input and output `fields`) the backbone inside a `PhysicsOperator` on the
    dataset's grid, its PDE parameters those the dataset was made with. Built in float32, the data's dtype, whatever
    torch's default (a float64 default made float64 weights that failed on the float32 batches)."""
    from sciml.utils import default_dtype

    with default_dtype(torch.float32):
        return _build_operator_model(cfg, in_channels, out_channels, n_dims, info=info, fields=fields,
                                     resolution=resolution)


def _build_operator_model(cfg: OperatorConfig, in_channels: int, out_channels: int, n_dims: int, *,
                          info: DatasetInfo | None, fields: tuple[list[str], list[str]] | None,
                          resolution: int | None) -> torch.nn.Module:
    if cfg.physics is None:
        if fields is not None:
            check_model_fields(cfg, *fields, info=info)
        return _backbone(cfg, in_channels, out_channels, n_dims)
    from sciml.constraints import PhysicsOperator, get_grid_problem
    from sciml.constraints.operator import GRID_PROBLEMS
    from sciml.registry import checked_problem_args

    ph = cfg.physics
    try:
        args = checked_problem_args(GRID_PROBLEMS, f"grid problem {ph.problem!r}", ph.problem, ph.problem_args,
                                    "physics.problem_args")
        problem = get_grid_problem(ph.problem, **args)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"physics.problem {ph.problem!r}: {err}") from err
    if info is None or fields is None:
        raise ValueError("a physics model is built on a dataset: pass its info and the selected fields")
    check_family(ph.problem, problem, info)
    inputs, outputs = fields
    if tuple(inputs) != problem.inputs:  # the model's input channels become the problem's data fields, in order
        absent = [n for n in problem.inputs if n not in info.fields]
        fix = (f"set data.inputs: {list(problem.inputs)}" if not absent else  # only a hint the file can follow
               f"{info.path} has no field {absent[0]!r} (fields: {', '.join(info.fields)}); set physics.problem to "
               f"one that reads this file's fields")
        raise ConfigError(f"physics: the problem {ph.problem!r} reads the input fields {list(problem.inputs)} and the "
                          f"data gives {list(inputs)}; {fix}")
    if len(outputs) != 1:
        raise ConfigError(f"physics: the problem solves for one field and the data gives {list(outputs)}; set "
                          f"data.outputs to the one it solves for")
    problem = problem.with_params(_dataset_params(info, problem, ph.problem, ph.problem_args))
    if ph.constraint == "hard" and ph.initial == "exact":  # before the model: the problem's reason, in config terms
        try:
            problem.initial_field()
        except ValueError as err:
            raise ConfigError(f"physics.initial: exact with physics.problem {ph.problem!r}: {err}") from None
    backbone = _backbone(cfg, in_channels, ph.n_basis if ph.constraint == "hard" else 1, n_dims)
    return PhysicsOperator(backbone, problem, spacetime_spacing(info, problem.coords, resolution, outputs[0]),
                           origin=spacetime_origin(info, problem.coords, resolution),
                           constraint=ph.constraint, **ph.layer_options())


def check_model_fields(cfg: OperatorConfig, inputs: list[str], outputs: list[str],
                       info: DatasetInfo | None = None) -> None:
    """The selected fields against what the model can take: a space-time model one output field
    (`check_spacetime_outputs`, here for data.outputs: null, which takes every output field of the file), a rollout
    model its state (`check_rollout_fields`)."""
    try:
        check_spacetime_outputs(cfg.model.name, outputs, given="" if cfg.data.outputs is not None else
                                f" (null: every output field of {info.path if info is not None else 'the file'})")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_rollout_fields(cfg, inputs, outputs, info=info)


def check_rollout_fields(cfg: OperatorConfig, inputs: list[str], outputs: list[str],
                          info: DatasetInfo | None = None) -> None:
    """An autoregressive model's state is the output fields at one time, fed back as the newest input step; its
    output window starts where its input window stops (checked on the config, and with `info` on the file's
    count of saved times, which a negative index or null needs)."""
    if cfg.model.name not in ROLLOUT_MODELS:
        return
    if list(inputs) != list(outputs):
        raise ConfigError(f"model {cfg.model.name!r} feeds its predictions back as inputs: data.inputs {list(inputs)} "
                          f"must be data.outputs {list(outputs)}, in the same order")
    state = cfg.model.kwargs().get("state_channels", 1)
    if state != len(outputs):
        raise ConfigError(f"model {cfg.model.name!r} steps a state of {state} channel(s) (model.state_channels) and the "
                          f"data give {len(outputs)} field(s) {list(outputs)} per time: set model.state_channels: "
                          f"{len(outputs)}")
    spec = info.fields.get(outputs[0]) if info is not None and outputs else None
    if spec is not None and spec.time_varying:
        try:
            check_rollout_windows(cfg.model.name, cfg.data.input_time, cfg.data.output_time,
                                  n_times=spec.shape[spec.dims.index("t")])
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _backbone(cfg: OperatorConfig, in_channels: int, out_channels: int, n_dims: int) -> torch.nn.Module:
    """The config's model; a value it rejects (e.g. modes: 0, or one mode per axis of another grid) is a
    ConfigError naming the model."""
    from sciml.models import build_model

    try:
        return build_model(cfg.model.name, in_channels=in_channels, out_channels=out_channels, n_dims=n_dims,
                           **cfg.model.kwargs())
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model {cfg.model.name!r} (a {n_dims}-d grid, {in_channels} input and {out_channels} output "
                          f"channels): {err}; fix model.* in the config") from err


def _dataset_params(info: DatasetInfo, problem: Any, name: str, given: dict[str, Any]) -> dict[str, float]:
    """The dataset's values of the problem's parameters; one set in problem_args to another value is an error,
    and one neither the file nor problem_args gives (it keeps the problem's default) is warned of."""
    made_with, params = info.params, problem.params
    shared = {k: float(made_with[k]) for k in params if k in made_with}
    defaulted = {k: v for k, v in params.items() if k not in made_with and k not in given}
    if defaulted:
        unchecked = "" if problem.families else (f"; it declares no data families (GridProblem.families), so "
                                                 f"that the file's family {info.family!r} fits it is not checked")
        warnings.warn(f"physics.problem {name!r}: {info.path} was not made with its parameter(s) "
                      f"{', '.join(f'{k}={v:g}' for k, v in defaulted.items())}, which keep the problem's defaults"
                      f"{unchecked}; set physics.problem_args to the values the data were made with", stacklevel=2)
    for k, v in shared.items():
        if k in given and not np.isclose(float(given[k]), v):
            raise ConfigError(f"physics.problem_args.{k}={given[k]} contradicts the dataset, made with {k}={v}; drop it "
                              "(the dataset's value is used) or generate data with that value")
    return shared
