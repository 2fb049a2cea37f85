"""From a dataset file to training tensors: field selection, subsampling, splits, normalisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sciml.data.h5 import DatasetError, DatasetInfo, _coarsen, field_index, read_field, read_info, subsample_stride
from sciml.utils import TrainingGridOnly


@dataclass
class Split:
    x: torch.Tensor  # (n, in_channels, *grid)
    y: torch.Tensor  # (n, out_channels, *grid)
    y_fields: tuple[str, ...] = ()  # the field of each output channel, where known (per-field errors)


def _split(info: DatasetInfo, inputs: list[str], outputs: list[str], rows: slice, stride: int,
           tin: int | slice | None, tout: int | slice | None, read=read_field) -> Split:
    x, _ = _stack(info, inputs, rows, stride, tin, read)
    y, names = _stack(info, outputs, rows, stride, tout, read)
    return Split(x, y, names)


def no_rows(info: DatasetInfo, name: str, *, samples: slice, stride: int = 1,
            time: int | slice | None = None) -> np.ndarray:
    """What `read_field` returns, without a row: its shape from the layout alone (a file not made yet). As the
    `read` of `load_train_val_test`, splits of ``(0, channels, *grid)`` to build and check a model on."""
    spec = info.field(name)
    values = np.zeros((0, *spec.shape), dtype=np.float32)[(slice(None), *field_index(spec, time))]
    return values if stride == 1 else _coarsen(values, info, stride)


def _check_finite(info: DatasetInfo, spec, values: np.ndarray, samples: slice) -> None:
    """Loaded rows hold finite values only: one NaN made the normaliser's statistics NaN, and training 'finished'
    with a NaN test error (a file written by hand, or by h5py, is not checked as `write_dataset` checks). Per-sample
    sums in float64 (buffered, no full-size temporary; NaN and inf propagate, finite float32 values cannot overflow)."""
    bad = np.flatnonzero(~np.isfinite(values.sum(tuple(range(1, values.ndim)), dtype=np.float64)))
    if bad.size:
        first = samples.indices(info.n_samples)[0] + int(bad[0])
        raise DatasetError(f"{info.path}:/{spec.group}/{spec.name} holds NaN or infinite values (or values beyond "
                           f"float32's range, which loading makes infinite) in {bad.size} of the {len(values)} samples "
                           f"loaded, the first at sample {first}: drop or repair those samples in every field "
                           f"(np.isfinite(u).all(axis=tuple(range(1, u.ndim))) marks the clean ones) and rewrite the "
                           f"file, e.g. with sciml.data.write_dataset, which refuses such values")


def _stack(info: DatasetInfo, fields: list[str], samples: slice, stride: int,
           time: int | slice | None, read=read_field) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Fields as channels, and each channel's field: a time window of a time-varying field contributes one
    channel per step (`check_selection` checked `time` against the file)."""
    channels, windows, at = [], [], None  # channels: (array, field) pairs
    for name in fields:
        spec = info.field(name)
        arr = read(info, name, samples=samples, stride=stride, time=time if spec.time_varying else None)
        _check_finite(info, spec, arr, samples)
        if arr.ndim == info.n_spatial_dims + 2:  # (n, T, *grid): a time window, one channel per time
            at = len(channels) if at is None else at
            windows.append((arr, name))
        else:
            channels.append((arr, name))
    if windows:
        # time-major, [u_t, v_t, u_t+1, v_t+1, ...], at the first window's place: a rollout model reads and
        # writes its state one time at a time (field-major stacking fed it v_t as u_t+1)
        steps = [(w[:, k], n) for k in range(windows[0][0].shape[1]) for w, n in windows] \
            if len({w.shape[1] for w, _ in windows}) == 1 else [(w[:, k], n) for w, n in windows for k in range(w.shape[1])]
        channels[at:at] = steps
    names = tuple(n for _, n in channels)
    if len(channels) == 1:  # a view (np.stack would copy the whole split once more)
        return torch.from_numpy(np.ascontiguousarray(channels[0][0][:, None])), names
    return torch.from_numpy(np.stack([c for c, _ in channels], axis=1)), names


TimeSelect = int | tuple[int, int] | list[int] | None


def time_selector(select: TimeSelect) -> int | slice | None:
    """An index (one saved time), ``[start, stop)`` (a window, one channel per time) or None (all)."""
    if select is None or isinstance(select, int):
        return select
    if len(select) != 2:
        raise DatasetError(f"time window {select!r} must be [start, stop)")
    return slice(int(select[0]), int(select[1]))


def time_range(select: TimeSelect, n_times: int | None = None) -> tuple[int, int] | None:
    """The saved times `select` takes, as a window ``(start, stop)``: an index i is (i, i + 1), None all of them.
    None where that depends on the file's count of saved times and `n_times` is not given (a negative index, null)."""
    if select is None:
        return None if n_times is None else (0, n_times)
    if isinstance(select, int):
        if select < 0 and n_times is None:
            return None
        start = select + n_times if select < 0 else select
        return start, start + 1
    window = time_selector(select)
    return window.start, window.stop


def _check_times(info: DatasetInfo, fields: list[str], time: int | slice | None, key: str, run_windows: bool) -> None:
    """`time` (the config setting `key`) selects saved times that every time-varying field of `fields` holds."""
    static = [name for name in fields if not info.field(name).time_varying]
    if len(static) == len(fields) and time not in (None, -1):  # -1, the default: the last time of a trajectory
        asked = time if isinstance(time, int) else [time.start, time.stop]
        raise DatasetError(f"{key}={asked} selects saved times, but {static} in {info.path} have no time axis; drop "
                           f"{key} (or set it to null)")
    for name in fields:
        spec = info.field(name)
        if spec.time_varying:
            _check_time(info, spec, time, key, run_windows)


def _check_time(info: DatasetInfo, spec, time: int | slice | None, key: str, run_windows: bool) -> None:
    """An index or window inside the field's (`spec`) saved times; HDF5 would clip a window silently (a
    window [10, 50) of 20 saved times would train on 10 channels, not 40). With `run_windows` the window
    is a trained run's, which the error cannot ask to change: it names the file to give instead."""
    if time is None:
        return
    n_times, name = spec.shape[spec.dims.index("t")], spec.name
    if isinstance(time, int):
        ok, asked, need = -n_times <= time < n_times, time, time + 1 if time >= 0 else -time
    else:
        ok, asked, need = 0 <= time.start < time.stop <= n_times, [time.start, time.stop], time.stop
    if ok:
        return
    more = _more_times(info, need) if need > n_times else None
    if run_windows:
        raise DatasetError(f"{info.path}:/{name} has {n_times} saved times; the run's data.{key}={asked} is outside "
                           f"them, and the run was trained on that window: evaluate it on a file that saves at least "
                           f"{need} times" + (f" (e.g. generated with {more})" if more else ""))
    raise DatasetError(f"{info.path}:/{name} has {n_times} saved times; {key}={asked} is outside them: give an "
                       f"index in [{-n_times}, {n_times}) or a window [start, stop) with 0 <= start < stop <= {n_times}"
                       + (f"; more saved times come from the recipe: {more} (in data.recipe_overrides) saves {need}"
                          if more else ""))


def _more_times(info: DatasetInfo, need: int) -> str | None:
    """The recipe params that would save `need` times at the file's spacing (every family saves uniform steps
    ending at params.t_end, params.n_times of them where the recipe sets the count); None for a file made
    without a recipe's t_end."""
    params, times = info.params, np.asarray(info.grid.get("t", []), dtype=np.float64)
    if params.get("t_end") is None or len(times) == 0:
        return None
    step = times[1] - times[0] if len(times) > 1 else times[0]  # one saved time: the one step from t = 0
    if step <= 0:
        return None
    t_end = float(times[-1] + (need - len(times)) * step)
    return ", ".join([f"params.t_end={t_end:.12g}"] + ([f"params.n_times={need}"] if params.get("n_times") is not None
                                                    else []))


def check_selection(info: DatasetInfo, *, inputs: list[str], outputs: list[str], n_train: int | None, n_test: int,
                    resolution: int | None = None, input_time: TimeSelect = -1, output_time: TimeSelect = -1,
                    run_windows: bool = False, flag: str | None = None,
                    n_val: int = 0) -> tuple[int, int | slice | None, int | slice | None]:
    """What `load_splits` (or `load_test`: `n_train` None) takes from a file, checked on its layout alone (no data
    read, so a file a recipe is about to make can be checked before it is): the fields, the sample counts (the
    training, validation and test rows disjoint: n_train + n_val + n_test at most the file's samples), the
    grid and the saved times. Returns the grid's stride and the input and output time selectors. `run_windows`:
    the windows are a trained run's (see `_check_time`); `flag`: the option `resolution` came from, for errors."""
    for name in [*inputs, *outputs]:
        info.field(name)
    if n_val < 0:
        raise DatasetError(f"n_val={n_val} must be 0 (no validation split) or more")
    # a file a recipe made (or is about to) can be generated larger; one's own file cannot
    larger = "generate a larger dataset" if info.from_recipe else "use a file with more samples"
    if n_train is None:
        if n_test > info.n_samples:
            raise DatasetError(f"{info.path} holds {info.n_samples} samples, fewer than n_test = {n_test}")
    elif n_train < 1 or n_test < 1:
        raise DatasetError(f"n_train={n_train} and n_test={n_test} must both be at least 1")
    elif n_val and n_train + n_val + n_test > info.n_samples:
        raise DatasetError(f"{info.path} holds {info.n_samples} samples, fewer than n_train + n_val + n_test = "
                           f"{n_train} + {n_val} + {n_test} = {n_train + n_val + n_test} (the training, validation and "
                           f"test rows may not overlap): lower them or {larger}")
    elif n_train + n_test > info.n_samples:
        raise DatasetError(f"{info.path} holds {info.n_samples} samples, fewer than n_train + n_test = {n_train + n_test}: "
                           f"lower them or {larger}")
    stride = subsample_stride(info, resolution, flag=flag)
    tin, tout = time_selector(input_time), time_selector(output_time)
    _check_times(info, inputs, tin, "input_time", run_windows)
    _check_times(info, outputs, tout, "output_time", run_windows)
    return stride, tin, tout


def load_splits(path: str | Path, *, inputs: list[str], outputs: list[str], n_train: int, n_test: int,
                resolution: int | None = None, input_time: TimeSelect = -1,
                output_time: TimeSelect = -1) -> tuple[DatasetInfo, Split, Split]:
    """The first `n_train` samples for training and the last `n_test` for testing (disjoint, fixed).

    `resolution` subsamples the stored grid (e.g. 8192 -> 1024 by stride 8). `input_time` and
    `output_time` select saved times of time-varying fields: one index, a window ``[start, stop)``
    whose times become channels (e.g. Navier-Stokes: inputs [0, 10), outputs [10, 50)), or None
    for all. With a validation split, `load_train_val_test`.
    """
    info, train, _, test = load_train_val_test(path, inputs=inputs, outputs=outputs, n_train=n_train, n_val=0,
                                               n_test=n_test, resolution=resolution, input_time=input_time,
                                               output_time=output_time)
    return info, train, test


def load_train_val_test(source: str | Path | DatasetInfo, *, inputs: list[str], outputs: list[str], n_train: int,
                        n_val: int, n_test: int, resolution: int | None = None, input_time: TimeSelect = -1,
                        output_time: TimeSelect = -1, read=read_field) -> tuple[DatasetInfo, Split, Split | None, Split]:
    """As `load_splits`, with a validation split of the `n_val` samples right after the training ones (rows
    ``[n_train, n_train + n_val)``), None when `n_val` is 0; the test split stays the file's last `n_test` rows,
    and the three may not overlap (`check_selection`). `source`: the file, or its `DatasetInfo` already read (or
    planned from a recipe, with ``read=no_rows``: the splits' shapes without their rows)."""
    info = source if isinstance(source, DatasetInfo) else read_info(source)
    stride, tin, tout = check_selection(info, inputs=inputs, outputs=outputs, n_train=n_train, n_test=n_test,
                                        resolution=resolution, input_time=input_time, output_time=output_time,
                                        n_val=n_val)
    train_rows = slice(0, n_train)
    test_rows = slice(info.n_samples - n_test, info.n_samples)
    train = _split(info, inputs, outputs, train_rows, stride, tin, tout, read)
    val = _split(info, inputs, outputs, slice(n_train, n_train + n_val), stride, tin, tout, read) if n_val else None
    test = _split(info, inputs, outputs, test_rows, stride, tin, tout, read)
    return info, train, val, test


def load_test(source: str | Path | DatasetInfo, *, inputs: list[str], outputs: list[str], n_test: int,
              resolution: int | None = None, input_time: TimeSelect = -1, output_time: TimeSelect = -1,
              run_windows: bool = False, flag: str | None = None) -> Split:
    """Only the test split (the last `n_test` samples), e.g. for evaluation at another resolution; `source`: the
    file or its `DatasetInfo` already read; `run_windows`: the time windows are a trained run's (see `_check_time`);
    `flag`: the option `resolution` came from, for errors (default the config key data.resolution)."""
    info = source if isinstance(source, DatasetInfo) else read_info(source)
    stride, tin, tout = check_selection(info, inputs=inputs, outputs=outputs, n_train=None, n_test=n_test,
                                        resolution=resolution, input_time=input_time, output_time=output_time,
                                        run_windows=run_windows, flag=flag)
    rows = slice(info.n_samples - n_test, info.n_samples)
    return _split(info, inputs, outputs, rows, stride, tin, tout)


def _moments(data: torch.Tensor, groups: list[tuple[int, ...]],
             block: int = 2 ** 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mean and (unbiased) std over each tuple of dims in `groups` (the sample axis 0 among them), in float64 as
    ``data.double().mean(dims)`` / ``.std(dims)`` give them up to the summation order (bit-identical on the generated
    sets measured; a float32 ulp in a few points of a large-mean, small-spread field), without that float64 copy of
    the whole split (twice the float32 split, on top of it): two passes over blocks of rows, `block` float64
    elements at a time (two passes: no cancellation, unlike a sum of squares)."""
    blocks = data.split(max(1, block // max(1, data[0].numel())))
    counts = [data.numel() // math.prod(data.shape[d] for d in range(data.ndim) if d not in dims) for dims in groups]
    sums = [0.0] * len(groups)
    for b in blocks:
        b = b.double()
        sums = [s + b.sum(dims, keepdim=True) for s, dims in zip(sums, groups)]
    means = [s / n for s, n in zip(sums, counts)]
    squares = [0.0] * len(groups)
    for b in blocks:  # deviations from the mean, not E[x^2] - E[x]^2 (which cancels for a large mean)
        b = b.double()
        squares = [q + (b - m).square().sum(dims, keepdim=True) for q, m, dims in zip(squares, means, groups)]
    return [(m, (q / (n - 1)).sqrt()) for m, q, n in zip(means, squares, counts)]


class Normalizer(torch.nn.Module):
    """z-scoring with train-split statistics: per channel (any resolution) or per grid point.

    ``kind="channel"`` keeps one mean/std per channel, so a model trained at one resolution can be
    evaluated at another; ``"pointwise"`` (the FNO scripts' UnitGaussianNormalizer) keeps one per
    grid point and only applies at the training resolution; ``"none"`` is the identity.

    Encoding divides by ``std + eps``. The guard ``eps`` is ``rel_eps`` times the channel's overall
    std (over samples and grid), so it scales with the field's units: a field in other units encodes
    to the same values (an absolute 1e-6 left a field of std 1e-7 at std ~0.1). A channel constant
    over the whole split falls back to its ``|mean|`` (1 where that is 0); ``eps=`` gives an absolute guard
    instead (the keyword's meaning before ``rel_eps``). ``eps`` is a buffer, saved
    with the state; states saved before it existed load with the old absolute 1e-6 (LEGACY_EPS), so
    they decode as they did.
    """

    KINDS = ("none", "channel", "pointwise")
    LEGACY_EPS = 1e-6

    def __init__(self, kind: str, data: torch.Tensor | None = None, *, rel_eps: float = 1e-6,
                 eps: float | None = None, shape: tuple[int, ...] | None = None):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"normalizer kind {kind!r} is not one of {self.KINDS}")
        self.kind, absolute_eps = kind, eps
        if data is not None and kind != "none":
            if kind == "pointwise" and data.shape[0] < 2:
                raise ValueError(f"pointwise normalisation needs at least 2 training samples (a spread per grid point), "
                                 f"got {data.shape[0]}: train on more or use channel")
            whole = (0,) + tuple(range(2, data.ndim))  # a channel over samples and grid
            dims = whole if kind == "channel" else (0,)
            moments = _moments(data, [dims] if dims == whole else [dims, whole])
            (mean, std), (level, scale) = moments[0], moments[-1]
            level = level.abs()
            fallback = torch.where(level > 0, level, torch.ones_like(level))
            eps = torch.where(scale > 0, rel_eps * scale, fallback).expand_as(std).clone()
            if absolute_eps is not None:  # the keyword's old meaning, for callers that pass it
                eps = torch.full_like(std, absolute_eps)
        elif data is not None or kind == "none":
            mean, std = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
            eps = torch.zeros_like(std)  # the identity, exactly
        else:  # shapes for load_state_dict
            mean = torch.zeros(shape or (1,), dtype=torch.float64)
            std, eps = torch.ones_like(mean), torch.zeros_like(mean)
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.register_buffer("eps", eps.float())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "std" in state_dict and prefix + "eps" not in state_dict:  # saved before eps was stored
            state_dict = {**state_dict, prefix + "eps": torch.full_like(state_dict[prefix + "std"], self.LEGACY_EPS)}
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check(self, x: torch.Tensor) -> None:
        # shape checks only (no host sync): the statistics would broadcast one channel onto two, silently
        if self.kind == "channel" and (x.ndim != self.mean.ndim or x.shape[1] != self.mean.shape[1]):
            raise ValueError(f"channel normalizer fitted on {self.mean.shape[1]} channel(s) of {self.mean.ndim - 2}-d "
                             f"fields cannot apply to shape {tuple(x.shape)}: inputs are (batch, channels, *grid), the "
                             f"data's fields as channels")
        if self.kind == "pointwise" and x.shape[1:] != self.mean.shape[1:]:
            raise TrainingGridOnly(f"pointwise normalizer fitted on grid {tuple(self.mean.shape[2:])} cannot apply to "
                             f"{tuple(x.shape[2:])}: a run evaluated at other resolutions must be trained with "
                             f"data.normalize_inputs / data.normalize_outputs: channel (or none)")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return (x - self.mean) / (self.std + self.eps)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return x * (self.std + self.eps) + self.mean
