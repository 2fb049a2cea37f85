"""sciml's HDF5 dataset files: layout, crash-safe writer, validating reader.

Layout (documented for users in ``datasets/README.md``)::

    /                 attrs: schema="sciml.dataset", schema_version, name, family, equation,
                      n_samples, spatial_shape, grid_kind, domain (JSON), boundary_conditions (JSON),
                      params (JSON), recipe_yaml, seed, batch_size, rng, solver, solver_options (JSON),
                      sciml_version, git_commit, torch, device, created_utc, wall_time_s,
                      complete (False until the last write), batches_done; content_sha256 (files of
                      `write_dataset`: a digest of the stored values, which a resume checks)
    /grid/<axis>      float64 coordinates: x, y, ... and t (exactly as long as the time axis)
    /inputs/<field>   float32 [N, (T,) *grid]   (dims attribute names the axes)
    /outputs/<field>  float32 [N, (T,) *grid]
    /diagnostics/<name>  per-sample solver health [N] (residuals, iterations, ...)

Files are written as ``<name>.h5.partial`` and renamed when complete; an interrupted write is
resumed batch by batch (`batches_done`), and readers refuse incomplete files.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sciml.utils import NoSpaceLeft, WriteFailed, durable_replace, no_space_left, out_of_space, size_text

SCHEMA = "sciml.dataset"
SCHEMA_VERSION = "1.0"
# On the domain [0, L] (the root's domain attribute; L = 1 but for KdV and KS): periodic: x_j = L j/s (right end
# excluded); nodes: x_j = L j/(s-1) (both ends); cells: x_j = L (j + 1/2)/s
GRID_KINDS = ("periodic", "nodes", "cells")
GROUPS = ("inputs", "outputs")
REQUIRED_ATTRS = ("schema", "complete", "n_samples", "spatial_shape")  # at the root; the others have defaults
# where a reader's error sends a user whose own file does not follow the layout (the section's title, tested)
HOW_TO_WRITE = ("; write arrays with sciml.data.write_dataset, which makes a valid file, or see the layout in "
                "datasets/README.md, section 'File schema'")


class DatasetError(ValueError):
    """A missing, incomplete or malformed dataset file."""


@dataclass(frozen=True)
class FieldSpec:
    """One stored field: its group, axes and per-sample shape."""

    group: str
    name: str
    dims: tuple[str, ...]  # axes after the sample axis, e.g. ("t", "x") or ("x", "y")
    shape: tuple[int, ...]
    description: str = ""

    @property
    def time_varying(self) -> bool:
        return "t" in self.dims


@dataclass(frozen=True)
class DatasetInfo:
    """Everything a reader needs to know about a file, read once from its attributes."""

    path: Path
    name: str
    family: str
    n_samples: int
    spatial_shape: tuple[int, ...]
    grid_kind: str
    fields: dict[str, FieldSpec]
    grid: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(repr=False)

    @property
    def n_spatial_dims(self) -> int:
        return len(self.spatial_shape)

    @property
    def from_recipe(self) -> bool:
        """Made (or planned) by `sciml generate`, which can make it again, larger or finished; not arrays of one's
        own (`write_dataset`, h5py)."""
        return "recipe_yaml" in self.attrs

    @property
    def params(self) -> dict[str, Any]:
        """The recipe parameters the file was made with."""
        return json.loads(self.attrs.get("params", "{}"))

    def field(self, name: str) -> FieldSpec:
        try:
            return self.fields[name]
        except KeyError:
            raise DatasetError(f"{self.path} has no field {name!r}; fields: {', '.join(self.fields)}") from None

    def coarse_shape(self, stride: int) -> tuple[int, ...] | None:
        """The grid every `stride`-th point (cell block) gives, one stride on every axis (a non-square grid keeps
        its aspect ratio); None where the stride does not fit an axis."""
        if self.grid_kind in ("periodic", "cells"):
            fits, size = (lambda s: s % stride == 0), (lambda s: s // stride)
        else:  # nodes: both ends kept
            fits, size = (lambda s: (s - 1) % stride == 0), (lambda s: (s - 1) // stride + 1)
        return tuple(size(s) for s in self.spatial_shape) if all(map(fits, self.spatial_shape)) else None

    def resolutions(self) -> list[int]:
        """The sizes of the first grid axis this file can be subsampled to (one stride on every axis)."""
        least = 4 if self.grid_kind in ("periodic", "cells") else 3
        shapes = (self.coarse_shape(k) for k in range(1, self.spatial_shape[0] + 1))
        return [shape[0] for shape in shapes if shape is not None and shape[0] >= least]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=float)


def _attr(key: str, value: Any) -> Any:
    """An HDF5-storable attribute: mappings and lists as JSON text, str subclasses as plain str."""
    if key == "spatial_shape":
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, (dict, list, tuple)) or value is None:
        return _json(value)
    if isinstance(value, str):
        return str(value)  # e.g. torch.__version__ is a str subclass h5py cannot map
    return value


METADATA_ROOM = 2 ** 16  # bytes a write may add besides its data (chunk index nodes, attributes): `_check_room`


SITTING_KEYS = ("git_commit", "sciml_version", "torch", "numpy", "host", "device", "created_utc")  # in "resumed"


class Writer:
    """Streams batches into ``<path>.partial``; `finish` marks it complete and renames it to `path`.

    Re-opening a partial file written with the same recipe resumes after its last finished batch.
    """

    def __init__(self, path: str | Path, *, attrs: Mapping[str, Any], fields: Sequence[FieldSpec],
                 grid: Mapping[str, np.ndarray], n_samples: int, batch_size: int, resume_key: str):
        import h5py

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.n_samples, self.batch_size = n_samples, batch_size
        self.failed = False  # a write failed: HDF5 holds what it could not write (`close`)
        self.batches_done = 0
        self._open: dict[str, Any] = {}  # datasets written to (`_dataset`)
        if self.partial.exists():
            try:
                self.file = h5py.File(self.partial, "a")
            except OSError as err:
                if _locked(err):  # HDF5's file lock: a live writer holds it; deleting it would lose both
                    raise DatasetError(f"{self.partial} is being written by another process (the same dataset generated "
                                       "twice at once?): wait for it to finish, or stop it and run again to resume "
                                       "it") from None
                self.partial.unlink()  # unreadable: start over
            else:
                begun = self.file.attrs.get("resume_key")
                if begun != resume_key:  # from another recipe, device, torch, code or thread count: start over
                    done = int(self.file.attrs.get("batches_done", 0))
                    self.file.close()
                    self.partial.unlink()
                    if done:  # finished batches go: say why, or a rerun looks like a resume that lost them
                        warnings.warn(f"{self.partial}: its {done} finished batch(es) are discarded and it is started "
                                      f"over, since it was begun {_key_change(str(begun), resume_key)}; a partial is "
                                      f"finished only as it was begun (same recipe, device type, torch, sample code "
                                      f"and, on a CPU, thread count: OMP_NUM_THREADS, MKL_NUM_THREADS and CPU "
                                      f"affinity set it)", RuntimeWarning, stacklevel=2)
                elif int(self.file.attrs["batches_done"]):  # name each later sitting: other code may write its batches
                    sitting = {"from_batch": int(self.file.attrs["batches_done"]),
                               **{k: attrs[k] for k in SITTING_KEYS if k in attrs}}
                    self.file.attrs["resumed"] = _json(json.loads(self.file.attrs.get("resumed", "[]")) + [sitting])
        if not self.partial.exists():
            self.file = None
            try:
                self._create(h5py, attrs, fields, grid, resume_key)
            except BaseException as err:  # e.g. an attribute HDF5 cannot store: no half-made file left behind
                if self.file is None:  # not ours: another process made it between the check and the create
                    if isinstance(err, OSError) and (err.errno == errno.EEXIST or _locked(err)
                                                     or "file exists" in str(err)):
                        raise DatasetError(f"{self.partial} is being written by another process (the same dataset "
                                           "generated twice at once?): wait for it to finish, or stop it and run "
                                           "again to resume it") from None
                    raise
                if self.file.id.valid:
                    _drop_unwritten(self.file)  # the file goes: nothing need reach it (after a failed write, a close
                    self.file.close()           # that wrote it failed again and left the process to crash)
                self.partial.unlink(missing_ok=True)
                if isinstance(err, (OSError, RuntimeError)) and out_of_space(err):
                    raise self._write_failed(err) from err
                raise
        self.batches_done = int(self.file.attrs["batches_done"])
        self._clock = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Wall time spent on the finished batches, summed over every run that wrote to this file."""
        return float(self.file.attrs.get("generation_seconds", 0.0))

    def _create(self, h5py, attrs, fields, grid, resume_key) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_room(sum(np.asarray(c).nbytes for c in grid.values()))
        # "x": fail if it exists. "w" truncated a file another writer had just made, before HDF5's lock refused,
        # and the clean-up then deleted it: two generations started together left no file at all
        self.file = f = h5py.File(self.partial, "x")
        f.attrs.update({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "complete": False,
                        "batches_done": 0, "resume_key": resume_key, "n_samples": self.n_samples,
                        "batch_size": self.batch_size})
        for key, value in attrs.items():
            f.attrs[key] = _attr(key, value)
        for axis, coords in grid.items():
            f.create_dataset(f"grid/{axis}", data=np.asarray(coords, dtype=np.float64))
        for spec in fields:
            # One sample per chunk: the loader reads contiguous sample ranges.
            dset = f.create_dataset(f"{spec.group}/{spec.name}", shape=(self.n_samples, *spec.shape),
                                    dtype=np.float32, chunks=(1, *spec.shape))
            dset.attrs["dims"] = _json(["sample", *spec.dims])
            dset.attrs["description"] = spec.description
        f.flush()

    def write_batch(self, index: int, arrays: Mapping[str, np.ndarray], diagnostics: Mapping[str, np.ndarray]) -> None:
        """Write batch `index` (all its fields), then record it as done.

        The data are flushed and fsynced before `batches_done` is set, so the counter on disk never
        runs ahead of them (set before a single flush, a disk-full flush that lost the batch's chunks
        still wrote the counter, and the resume kept a batch of zeros). A failed write leaves the
        counter at this batch, which a resume writes again."""
        if index != self.batches_done:
            raise RuntimeError(f"batch {index} written out of order (next is {self.batches_done})")
        start = index * self.batch_size
        self._check_room(sum(v.nbytes for v in (*arrays.values(), *diagnostics.values())))
        try:
            for key, value in arrays.items():
                self._dataset(key)[start:start + len(value)] = value
            for name, value in diagnostics.items():
                self._dataset(f"diagnostics/{name}", (self.n_samples,))[start:start + len(value)] = value
            self.file.flush()  # the batch's data to the OS ...
            _fsync(self.partial)  # ... and to the disk, before anything says it is there
            self.file.attrs["batches_done"] = index + 1
            now = time.perf_counter()  # this batch's share: since the file was opened or the last batch
            self.file.attrs["generation_seconds"] = self.seconds + (now - self._clock)
            self.file.flush()
        except (OSError, RuntimeError) as err:  # what h5py raises for a failed write
            raise self._write_failed(err) from err
        self.batches_done = index + 1
        self._clock = now

    def _check_room(self, nbytes: int) -> None:
        """Refuse a write the disk has no room for, before HDF5 starts it: a write HDF5 fails part way can leave the
        file in a state it cannot close ("slist already enabled?"), which crashed the process as it was freed.
        `nbytes` of data, and room for the metadata it adds; a disk that fills up meanwhile fails in the write."""
        try:
            free = shutil.disk_usage(self.partial.parent).free
        except OSError:  # no figure (some network filesystems): the write says it
            return
        need = nbytes + METADATA_ROOM
        if free < need:
            raise NoSpaceLeft(f"no space left on device to write {self.partial} ({size_text(free)} free, the next "
                              f"write needs about {size_text(need)}){self._kept(failed=False)}; free space on that disk "
                              f"and run again", self.partial)

    def _kept(self, failed: bool = True) -> str:
        unreadable = " (or starts over, where the failed write left the file unreadable)" if failed else ""
        return (f": the {self.batches_done} batch(es) finished before are kept in it, which a run of the same command "
                f"goes on from{unreadable}" if self.batches_done else "")

    def _write_failed(self, err: BaseException) -> WriteFailed:
        """The error for a write that failed, naming the file, the cause and what is kept; `close` then drops what
        HDF5 could not write."""
        self.failed = True
        kept = self._kept()
        if out_of_space(err):
            return no_space_left(self.partial, err, f"{kept}; free space on that disk and run again")
        # h5py's RuntimeError went past the command line's errors as a traceback (e.g. a file size limit)
        return WriteFailed(f"cannot write {self.partial}: {_write_error(err)}{kept}", self.partial,
                           getattr(err, "errno", None) or errno.EIO)

    def _dataset(self, key: str, shape: tuple[int, ...] | None = None):
        """The dataset `key` (made with `shape` where missing), kept open until the file closes: a dataset object
        released after each write flushed its chunks as it was freed, where a full disk's error could not be caught
        (h5py prints "Exception ignored") and left an id HDF5 could not close, which crashed the process at exit."""
        if key not in self._open:
            if key not in self.file and shape is not None:
                self.file.create_dataset(key, shape=shape, dtype=np.float64)
            self._open[key] = self.file[key]
        return self._open[key]

    def finish(self, final_attrs: Mapping[str, Any]) -> Path:
        try:
            for key, value in final_attrs.items():
                self.file.attrs[key] = _attr(key, value)
            self.file.attrs["complete"] = True
            self.file.flush()  # a full disk fails here, where `close` can recover; a close that failed cannot
        except (OSError, RuntimeError) as err:
            raise self._write_failed(err) from err
        self.file.close()
        durable_replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close without completing (the partial file stays for a later resume)."""
        if self.file.id.valid:
            if self.failed:
                _drop_unwritten(self.file)
            self.file.close()


def _key_change(begun: str, now: str) -> str:
    """What differs between two resume keys (recipe-device-torch-code[-threadsN]), in words."""
    names = ("recipe", "device type", "torch", "sample code", "thread count")
    old, new = begun.split("-"), now.split("-")
    if len(old) != len(new) and len(old) == 4:
        old.append("threads?")
    diffs = [f"{n} {a} (now {b})" for n, a, b in zip(names, old + [""] * 5, new + [""] * 5) if a != b and (a or b)]
    return "with " + ", ".join(diffs) if diffs else f"with key {begun!r} (now {now!r})"


def _locked(err: OSError) -> bool:
    """Whether HDF5 failed to open a file because another process holds its lock: its flock/fcntl
    fails with EAGAIN/EWOULDBLOCK (h5py raises BlockingIOError, errno 11 on Linux), and HDF5 says
    "unable to lock file". Not any text with "lock" in it: a truncated file's "sblock->base_addr"
    was taken for a live writer, and the partial was never started over."""
    return err.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "unable to lock file" in str(err)


def _write_error(err: BaseException) -> str:
    """HDF5's failed write in a few words: the system's message and h5py's, e.g. "File too large (Unable to
    synchronously flush file)"; its own text runs over lines of buffer addresses and offsets."""
    text = str(err)
    system = re.search(r"error message = '([^']*)'", text)
    head = text.split(" (")[0].strip()
    return f"{system.group(1)} ({head})" if system else text.splitlines()[0] if text else type(err).__name__


def _drop_unwritten(file) -> None:
    """Let HDF5 close a file a write to which failed (a full disk) by pointing its descriptor at /dev/null. Each close
    retried the flush that had failed, failed again and left a half-closed handle, whose release then crashed the
    process (a segfault, exit 139, after the error had been printed). What a resume reads is on disk already (a
    batch's counter is written only after its data is fsynced); what HDF5 still holds is the failed batch's, which a
    resume writes again: dropping it loses nothing."""
    if os.name != "posix":
        return
    try:
        fd = file.id.get_vfd_handle()  # the sec2 driver's descriptor
    except Exception:  # another driver: nothing to point elsewhere
        return
    if not isinstance(fd, int):
        return
    sink = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(sink, fd)  # closes the file's own description, which releases HDF5's lock on it too
    finally:
        os.close(sink)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # Windows flushes only a handle opened for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dims(path: Path, group: str, name: str, dset) -> tuple[str, ...]:
    """A field's `dims` attribute: JSON text (what sciml writes) or a 1-D array of strings (what h5py
    writes for a Python list), either naming every axis of the dataset, sample first."""
    where = f"{path}:/{group}/{name}"
    example = json.dumps(["sample", "x", "y", "z"][:dset.ndim] if dset.ndim <= 4 else ["sample"] + [f"axis{i}" for i in range(1, dset.ndim)])
    fix = (f"set its dims attribute to JSON text naming every axis, sample first, then t for a time-varying "
           f"field, then space, e.g. f[{f'{group}/{name}'!r}].attrs['dims'] = '{example}' for its {dset.ndim} axes")
    raw = dset.attrs.get("dims")
    if raw is None:
        raise DatasetError(f"{where} has no dims attribute (which axis is which): {fix}")
    if isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.dtype.kind in "OSU":  # a list written by h5py
        dims = [v.decode() if isinstance(v, bytes) else v for v in raw.tolist()]
    else:
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            dims = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            dims = None
    if not (isinstance(dims, list) and all(isinstance(d, str) for d in dims)):
        raise DatasetError(f"{where} has dims={raw!r}, not a list of axis names: {fix}")
    if len(dims) != dset.ndim:
        raise DatasetError(f"{where} has {dset.ndim} axes {tuple(dset.shape)} but dims names {len(dims)}, {dims}: {fix}")
    return tuple(dims)


def read_info(path: str | Path) -> DatasetInfo:
    """Open and validate a dataset file; errors name the HDF5 path and what was expected."""
    import h5py

    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = " (an interrupted generation left a .partial file: run `sciml generate` again to resume it)" if partial.exists() else ""
        raise DatasetError(f"dataset {str(path)!r} does not exist{hint}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path} is not a readable HDF5 file ({err}): check the path; a generated dataset cut off "
                           f"by a crash can be deleted and generated again") from err
    with f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if attrs.get("schema") != SCHEMA:
            raise DatasetError(f"{path} is not a sciml dataset (root attribute schema={attrs.get('schema')!r}, expected "
                               f"{SCHEMA!r}){HOW_TO_WRITE}")
        missing = [key for key in REQUIRED_ATTRS if key not in attrs]
        if missing:  # a file written by hand: a KeyError traceback, or "its generation did not finish"
            raise DatasetError(f"{path} lacks the root attribute(s) {', '.join(missing)} (required: "
                               f"{', '.join(REQUIRED_ATTRS)}; e.g. f.attrs['n_samples'] = N, f.attrs['spatial_shape'] "
                               f"= [s1, s2], f.attrs['complete'] = True){HOW_TO_WRITE}")
        if not attrs["complete"]:
            if "recipe_yaml" in attrs:  # made by `sciml generate`
                raise DatasetError(f"{path} is incomplete (its generation did not finish); run `sciml generate` again")
            raise DatasetError(f"{path} is incomplete (root attribute complete={attrs['complete']}): set it to True "
                               f"once all its data is written (a reader refuses a file still being written)")
        n = int(attrs["n_samples"])
        spatial_shape = tuple(int(s) for s in np.atleast_1d(attrs["spatial_shape"]))
        grid = {axis: f[f"grid/{axis}"][()] for axis in f.get("grid", {})}
        fields: dict[str, FieldSpec] = {}
        for group in GROUPS:
            for name, dset in f.get(group, {}).items():
                dims = _dims(path, group, name, dset)[1:]
                if dset.shape[0] != n:
                    raise DatasetError(f"{path}:/{group}/{name} has {dset.shape[0]} samples, root says n_samples={n}")
                spatial = tuple(s for d, s in zip(dims, dset.shape[1:]) if d != "t")
                if spatial != spatial_shape:
                    raise DatasetError(f"{path}:/{group}/{name} has grid {spatial}, expected {spatial_shape}")
                if "t" in dims and "t" in grid and dset.shape[1 + dims.index("t")] != len(grid["t"]):
                    raise DatasetError(f"{path}:/{group}/{name} has {dset.shape[1 + dims.index('t')]} times, /grid/t has {len(grid['t'])}")
                if name in fields:
                    raise DatasetError(f"{path}: field name {name!r} appears in both inputs and outputs")
                fields[name] = FieldSpec(group, name, dims, tuple(dset.shape[1:]), str(dset.attrs.get("description", "")))
        if not fields:  # read as a file of no fields, it failed later with messages about something else
            loose = [k for k in f if k not in (*GROUPS, "grid", "diagnostics")]
            at_root = f" (at the root: {', '.join(loose)}; move them, e.g. f.move({loose[0]!r}, " \
                      f"'inputs/{loose[0]}'))" if loose else ""
            # one group may be empty: a rollout takes its inputs from the outputs' fields by name (data.inputs)
            raise DatasetError(f"{path} has no field under /inputs or /outputs{at_root}: a dataset holds its fields "
                               f"there, /inputs/<name> and /outputs/<name>{HOW_TO_WRITE}")
    grid_kind = attrs.get("grid_kind", "periodic")
    if grid_kind not in GRID_KINDS:
        raise DatasetError(f"{path}: grid_kind={grid_kind!r}, expected one of {GRID_KINDS}")
    return DatasetInfo(path, str(attrs.get("name", path.stem)), str(attrs.get("family", "")), n, spatial_shape,
                       grid_kind, fields, grid, attrs)


def subsample_stride(info: DatasetInfo, resolution: int | None, *, flag: str | None = None) -> int:
    """The stride that takes the stored grid to `resolution` points per axis (1 for None). Errors name the
    config key data.resolution, or the option `resolution` came from (`flag`: "--resolution" for `sciml
    eval`, "resolution=" for Python)."""
    s = info.spatial_shape[0]
    if resolution is None or resolution == s:
        return 1
    if resolution < 1:
        raise DatasetError(f"resolution={resolution} must be a positive grid size; available: {info.resolutions()}")
    for stride in range(2, s + 1):
        shape = info.coarse_shape(stride)
        if shape is not None and shape[0] == resolution:
            return stride
    stored = f"at {s} points per axis" if len(set(info.spatial_shape)) == 1 else \
        f"on a {'x'.join(map(str, info.spatial_shape))} grid (resolution counts the first axis; one stride on every axis)"
    if flag is None:
        fix = "set data.resolution to one of them, or to null for the stored grid"
    else:  # evaluation: another file of the family may be stored finer
        other = "--dataset" if flag.startswith("--") else "dataset="
        fix = f"give {flag} one of them, or {other} a file of the run's family stored at that grid"
    as_nodes = replace(info, grid_kind="nodes").resolutions() if info.grid_kind == "periodic" else []
    if resolution in as_nodes:  # write_dataset's default kind: arrays with both ends (Darcy's) are nodes
        fix += (f"; or, if the grid includes both ends, the file was written with the default grid_kind 'periodic': "
                f"write it with grid_kind='nodes', which subsamples to {as_nodes}")
    raise DatasetError(f"{info.path} is stored {stored} and cannot be subsampled to {resolution}; available: "
                       f"{info.resolutions()} ({fix})")


def field_index(spec: FieldSpec, time: int | slice | None) -> tuple:
    """The index of a field's non-sample axes that takes `time` (an index or window) on its time axis."""
    return tuple(slice(None) if time is None or dim != "t" else time for dim in spec.dims)


def read_field(info: DatasetInfo, name: str, *, samples: slice, stride: int = 1,
               time: int | slice | None = None) -> np.ndarray:
    """Samples `samples` of one field as float32 [n, (T,) *grid], coarsened in space by `stride`
    (every stride-th point; on a "cells" grid the mean of each block of stride cells, since every
    stride-th cell would sit (stride - 1)/2 fine cells off the coarse centre), optionally one time
    index or window."""
    import h5py

    spec = info.field(name)
    index = field_index(spec, time)
    with h5py.File(info.path, "r") as f:
        dset = f[f"{spec.group}/{name}"]
        start, stop, _ = samples.indices(dset.shape[0])
        if stride == 1 or start >= stop:
            return np.asarray(dset[(slice(start, stop), *index)], dtype=np.float32)
        # HDF5's strided selection reads ~10x slower than whole rows sliced in memory: rows in blocks of ~256 MB
        per_sample = 4 * math.prod(len(range(*i.indices(n))) if isinstance(i, slice) else 1
                                   for i, n in zip(index, dset.shape[1:]))
        block = max(1, 2 ** 28 // max(per_sample, 1))
        return np.concatenate([_coarsen(np.asarray(dset[(slice(a, min(a + block, stop)), *index)], dtype=np.float32),
                                        info, stride) for a in range(start, stop, block)])


def _coarsen(values: np.ndarray, info: DatasetInfo, stride: int) -> np.ndarray:
    """The last `info.n_spatial_dims` axes of `values` taken to every stride-th point, or for cells
    averaged over blocks of stride."""
    for axis in range(values.ndim - info.n_spatial_dims, values.ndim):
        if info.grid_kind == "cells":
            shape = values.shape
            values = values.reshape(*shape[:axis], shape[axis] // stride, stride, *shape[axis + 1:]).mean(axis + 1)
        else:
            values = values[(slice(None),) * axis + (slice(None, None, stride),)]
    return np.ascontiguousarray(values)
