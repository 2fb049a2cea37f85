"""Your own arrays as a sciml dataset file, so that every trainer, `sciml train` and `sciml eval` read them.

    from sciml.data import write_dataset
    write_dataset("mine.h5", inputs={"a": a}, outputs={"u": u}, spatial_dims=2,   # a, u: (n, s, s)
                  grid_kind="nodes")   # both ends, as Darcy's (the default "periodic" is x_j = j/s)
    # sciml train configs/darcy/fno.yaml data.path=mine.h5 data.n_train=800 data.n_test=200
"""

from __future__ import annotations

import hashlib
import json
import math

import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sciml.data.h5 import GRID_KINDS, DatasetError, FieldSpec, Writer, read_info

SPATIAL_AXES = ("x", "y", "z")


def _as_array(name: str, value: Any, check_finite: bool = True) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except ValueError as err:  # a ragged list: numpy's "inhomogeneous shape" named no field
        raise DatasetError(f"field {name!r} is not a rectangular array ({err}); give an array (numpy or torch) of one "
                           f"shape, e.g. np.stack(...) of equal-shaped parts") from None
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise DatasetError(f"field {name!r} must hold real numbers, got dtype {array.dtype}")
    if check_finite and not np.isfinite(array).all():
        _refuse_non_finite(name)
    return array


def _refuse_non_finite(name: str):
    raise DatasetError(f"field {name!r} holds NaN or infinite values; clean them before writing")


def _as_field(name: str, value: Any) -> np.ndarray:
    """A field's values, which files store as float32 (coordinates and times stay float64)."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise DatasetError(f"field name {name!r} cannot name an HDF5 dataset: use a non-empty name without '/'")
    array = _as_array(name, value, check_finite=False)  # max and min below carry NaN and inf: no isfinite pass
    big, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)  # compared as float64
    hi, lo = float(array.max(initial=0)), float(array.min(initial=0))
    if not (math.isfinite(hi) and math.isfinite(lo)):
        _refuse_non_finite(name)
    top = max(abs(hi), abs(lo))  # max |v|, no |array| temporary
    if top > big:  # would be stored as inf
        raise DatasetError(f"field {name!r} holds values beyond float32's range (|v| up to {top:.3g} > "
                           f"{big:.3g}), and files store float32: rescale it (and record the scale in params)")
    if 0 < top < tiny:  # all of it subnormal or flushed to 0; tiny values beside normal ones lose nothing that counts
        raise DatasetError(f"field {name!r} holds values below float32's normal range (|v| at most {top:.3g} < "
                           f"{tiny:.3g}): files store float32, where they would be zeros or subnormals of few digits. "
                           f"Rescale it (and record the scale in params)")
    return array


def _check_samples_and_grid(shapes: Mapping[str, tuple[int, ...]], spatial_dims: int) -> None:
    """Every field's samples (first axis) and grid (last `spatial_dims` axes) agree. No field is the reference:
    the error shows them all (the first field's shape was, and a samples-last first field blamed the others)."""
    key = lambda s: (s[0], s[-spatial_dims:])
    if len({key(s) for s in shapes.values()}) <= 1:
        return
    # an axis misplaced in a field, named where moving it makes the field agree with another one: (move, whether
    # only a field with a time axis can have it, hint); the time moves of a static field would transpose its grid
    moves = [(lambda s: (s[-1], *s[:-1]), False, "samples last in {}? np.moveaxis({}, -1, 0) puts them first"),
             (lambda s: (s[0], s[-1], *s[1:-1]), True, "time last in {}? np.moveaxis({}, -1, 1) puts it second, "
                                                       "(n, T, *grid)"),
             (lambda s: (s[1], s[0], *s[2:]), True, "time first in {}? np.swapaxes({}, 0, 1) puts the samples first, "
                                                    "(n, T, *grid)")]
    hints = []
    for move, timed, hint in moves:
        names = [k for k, s in shapes.items() if not timed or len(s) == 2 + spatial_dims
                 if any(key(move(s)) == key(o) != key(s) for j, o in shapes.items() if j != k)]
        if names:
            hints.append(hint.format(" or ".join(map(repr, names)), names[0] if names[0].isidentifier() else "a"))
    hint = "".join(f"; {h}" for h in hints)
    raise DatasetError(f"fields differ in samples or grid: {', '.join(f'{k!r} {tuple(s)}' for k, s in shapes.items())}. "
                       f"Each is (n, *grid) or (n, T, *grid), samples on the first axis: every field needs the same "
                       f"samples and grid (spatial_dims={spatial_dims}){hint}")


def _check_grid_axes(name: str, shape: tuple[int, ...], spatial_dims: int, declared: Mapping[str, Any]) -> None:
    """No channel axis taken for a grid axis: channels last, (n, *grid, C), has 2 + spatial_dims axes and was stored
    as a time series on a grid ending in C points, and training then ran on one image row. A small last axis whose
    coordinates are `declared` (write_dataset's coords) is a grid axis the user named."""
    grid, last = shape[-spatial_dims:], shape[-1]
    axis = SPATIAL_AXES[spatial_dims - 1]
    named = axis in declared  # coordinates of another length are refused by their own check, naming both
    channels_last = len(shape) >= 3 and last <= 4 and last != shape[-2] and not named  # small, unlike the one before
    if 1 not in grid and not channels_last:
        return
    split = ", ".join(f"{f'{name}{c}'!r}: x[..., {c}]" for c in range(min(last, 2))) + (", ..." if last > 2 else "")
    one = f"{{{name!r}: x[..., 0]}}" if last == 1 else f"{{{split}}}"
    declare = f" (a grid axis of {last} points: give its coordinates, coords={{{axis!r}: ...}})" \
        if channels_last and last > 1 else ""
    hint = f"channels last? store each channel as its own field: {one}{declare}" if channels_last or grid[-1] == 1 else \
        "drop a size-1 axis with np.squeeze(x, axis)"
    what = f"its last axis, of {last} point{'s' * (last > 1)} beside {shape[-2]}, looks like channels" if channels_last else \
        "a grid axis of 1 point is no grid"
    raise DatasetError(f"field {name!r} has shape {shape}, read as grid {grid} (the last spatial_dims={spatial_dims} "
                       f"axes; a field is (n, *grid) or (n, T, *grid)): {what}. {hint[0].upper()}{hint[1:]}; a time "
                       f"axis goes second, (n, T, *grid)")


def unit_coordinates(n: int, grid_kind: str) -> np.ndarray:
    """Coordinates of `n` nodes on [0, 1] as the loaders and models assume them for `grid_kind`."""
    j = np.arange(n, dtype=np.float64)
    return {"periodic": j / n, "nodes": j / max(n - 1, 1), "cells": (j + 0.5) / n}[grid_kind]


def content_digest(fields: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray]) -> str:
    """The sha256 of the values a file stores (each field's path, shape and float32 values, and the grid's
    coordinates): the root attribute content_sha256 of write_dataset's files. A file of one's own has no seed or
    recipe that tells other arrays written at its path from the ones a run trained on; this does, and costs one
    pass over arrays being written anyway."""
    digest = hashlib.sha256()
    for key in sorted(fields):
        values = fields[key]
        digest.update(f"{key} {tuple(values.shape)} {values.dtype.str};".encode())
        block = max(1, 2 ** 26 // max(values[:1].nbytes, 1))  # ~64 MB at a time: a strided field is copied by blocks
        for start in range(0, len(values), block):
            digest.update(np.ascontiguousarray(values[start:start + block]).data)
    for axis in sorted(grid):
        digest.update(f"grid/{axis};".encode())
        digest.update(np.ascontiguousarray(grid[axis], dtype=np.float64).data)
    return digest.hexdigest()


def write_dataset(path: str | Path, *, inputs: Mapping[str, Any], outputs: Mapping[str, Any], spatial_dims: int,
                  times: Any = None, coords: Mapping[str, Any] | None = None, grid_kind: str = "periodic",
                  params: Mapping[str, Any] | None = None, family: str = "user", name: str | None = None,
                  descriptions: Mapping[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write arrays as one complete dataset file (to ``<path>.partial``, renamed when complete).

    inputs, outputs: name -> array (numpy or torch) of shape ``(n, *grid)`` (a static field) or
    ``(n, T, *grid)`` (a time-varying one), with `spatial_dims` grid axes (named x, y, z) and the same
    n and grid in every field; fields are scalar (channels last, ``(n, *grid, C)``, is refused: write one field per
    channel, ``{"a0": x[..., 0], ...}``; a last grid axis of 2-4 points passes with its `coords`). times: the T saved times, required when a field has a time axis (so that an extra grid axis is never
    taken for time; every time-varying field has the same T). coords: per axis its coordinates (default `unit_coordinates`). grid_kind:
    "periodic" (x_j = j/s), "nodes" (both ends) or "cells" (centres); it decides how the grid may be
    subsampled, and training warns when the model's settings treat a non-periodic grid as periodic
    (set the FNO's ``padding`` and ``grid_embedding: closed`` for "nodes", as configs/darcy/fno.yaml, or
    ``grid_embedding: cells`` for "cells"; a DeepONet's ``coordinates`` likewise). params: the PDE's parameters (what a physics-informed
    run reads as the dataset's). Values are stored as float32, like generated data.
    """
    path = Path(path)
    if path.is_dir():  # overwrite=True met a raw IsADirectoryError at the rename, after writing <path>.partial
        raise DatasetError(f"{path} is a directory; write_dataset writes one file: give a file path, e.g. "
                           f"{path / 'data.h5'}")
    if path.exists() and not overwrite:
        raise DatasetError(f"{path} exists; pass overwrite=True or choose another path")
    if grid_kind not in GRID_KINDS:
        raise DatasetError(f"grid_kind must be one of {GRID_KINDS}, got {grid_kind!r}")
    if not 1 <= spatial_dims <= len(SPATIAL_AXES):
        raise DatasetError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    if not inputs or not outputs:
        raise DatasetError("write_dataset needs at least one input and one output field")
    clash = set(inputs) & set(outputs)
    if clash:
        raise DatasetError(f"field names must differ between inputs and outputs: {sorted(clash)} appear in both")
    try:
        json.dumps(dict(params or {}), default=float)  # as the file stores them
    except (TypeError, ValueError) as err:
        raise DatasetError(f"params must be numbers, strings or lists of them (stored as JSON): {err}") from None
    axes = SPATIAL_AXES[:spatial_dims]
    arrays = {(group, k): _as_field(k, v) for group, fields in (("inputs", inputs), ("outputs", outputs))
              for k, v in fields.items()}
    n, grid, n_times = None, None, None
    specs = []
    for (group, k), a in arrays.items():
        if a.ndim not in (1 + spatial_dims, 2 + spatial_dims):
            raise DatasetError(f"field {k!r} has shape {a.shape}: expected (n, *grid) or (n, T, *grid) with "
                               f"{spatial_dims} grid axes (spatial_dims={spatial_dims})")
        _check_grid_axes(k, a.shape, spatial_dims, coords or {})
        timed = a.ndim == 2 + spatial_dims
        if a.shape[0] == 0:
            raise DatasetError(f"field {k!r} has no samples (shape {a.shape}); a dataset needs at least one")
        n = a.shape[0] if n is None else n
        grid = a.shape[-spatial_dims:] if grid is None else grid
        if a.shape[0] != n or a.shape[-spatial_dims:] != grid:
            _check_samples_and_grid({k: a.shape for (_, k), a in arrays.items()}, spatial_dims)
        if timed:
            n_times = a.shape[1] if n_times is None else n_times
            if a.shape[1] != n_times:
                raise DatasetError(f"field {k!r} has {a.shape[1]} times, another field {n_times}: time-varying "
                                   f"fields share one time axis")
        dims = (("t",) if timed else ()) + axes
        specs.append(FieldSpec(group, k, dims, tuple(a.shape[1:]), (descriptions or {}).get(k, "")))
    grid_coords = {}
    for axis, size in zip(axes, grid):
        c = unit_coordinates(size, grid_kind) if coords is None or axis not in coords else _as_array(axis, coords[axis])
        if c.shape != (size,):
            raise DatasetError(f"coords[{axis!r}] has shape {c.shape}, the grid has {size} points on {axis}")
        grid_coords[axis] = c.astype(np.float64)
    unknown = set(coords or {}) - set(axes)
    if unknown:
        raise DatasetError(f"coords names axes {sorted(unknown)} that the grid does not have ({list(axes)})")
    if n_times is not None and times is None:  # an extra axis read as time unasked: a 2-D grid trained as 1-D on one row
        timed = {k: a.shape for (_, k), a in arrays.items() if a.ndim == 2 + spatial_dims}
        grid_fix = f"spatial_dims={spatial_dims + 1}" if spatial_dims < len(SPATIAL_AXES) else "at most 3 grid axes"
        raise DatasetError(
            f"{', '.join(f'field {k!r} {s}' for k, s in timed.items())}: with spatial_dims={spatial_dims} axis 1 "
            f"({n_times} points) would be a time axis, but no times were given. If it is a grid axis, pass {grid_fix}; "
            f"if it is time, pass times= (its {n_times} saved times, e.g. times=np.arange({n_times}))")
    if n_times is not None:
        t = _as_array("times", times).astype(np.float64)
        if t.shape != (n_times,):
            raise DatasetError(f"times has shape {t.shape}; the time-varying fields have {n_times} times")
        grid_coords["t"] = t
    elif times is not None:
        raise DatasetError("times given, but no field has a time axis ((n, T, *grid))")

    from sciml.utils import environment

    attrs = {"name": name or path.stem, "family": family, "description": "arrays written by sciml.data.write_dataset",
             "spatial_shape": list(grid), "grid_kind": grid_kind, "params": dict(params or {}),
             **{k: v for k, v in environment().items() if k != "command"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh key: a .partial left by an interrupted call is never mistaken for this one's
    writer = Writer(path, attrs=attrs, fields=specs, grid=grid_coords, n_samples=n, batch_size=n,
                    resume_key=uuid.uuid4().hex)
    try:
        # copy=False: float32 arrays are written as they are (a copy of every field made the call hold them twice)
        batch = {f"{group}/{k}": a.astype(np.float32, copy=False) for (group, k), a in arrays.items()}
        digest = content_digest(batch, grid_coords)
        writer.write_batch(0, batch, {})
    except BaseException:
        writer.close()
        writer.partial.unlink(missing_ok=True)
        raise
    out = writer.finish({"wall_time_s": writer.seconds, "content_sha256": digest})
    try:
        read_info(out)  # what every reader will check, checked now
    except BaseException:
        out.unlink(missing_ok=True)  # not left under the name a retry would be refused for
        raise
    return out
