"""`sciml generate`: fill one HDF5 file from a recipe, batch by batch, resumably."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sciml.data.h5 import DatasetError, DatasetInfo, Writer, read_info
from sciml.data.recipes import DATASETS_DIR, SEED_STRIDE, Recipe, batch_seed
from sciml.utils import environment, resolve_device


def dataset_path(recipe: Recipe, root: str | Path | None = None) -> Path:
    return Path(root or DATASETS_DIR) / recipe.filename()


def recipe_text(recipe: Recipe) -> str:
    """The resolved recipe as a file stores it (root attribute recipe_yaml): re-runnable, and the mark of a file
    `sciml generate` made (`DatasetInfo.from_recipe`)."""
    return recipe.model_dump_json(exclude={"presets"})


def planned_info(recipe: Recipe, root: str | Path | None = None) -> DatasetInfo:
    """The `DatasetInfo` of the file `generate` would write for `recipe`, from the family's layout alone (no
    sample made): a config's fields, sample counts, grid and time windows are checked on it before a long
    generation rather than after."""
    params = recipe.typed_params()
    layout = recipe.family_obj().layout(params)
    attrs = {"name": recipe.name, "family": recipe.family, "seed": recipe.seed,
             "params": json.dumps(params.model_dump(mode="json")), "recipe_yaml": recipe_text(recipe), **layout.attrs}
    return DatasetInfo(dataset_path(recipe, root), recipe.name, recipe.family, recipe.n_samples,
                       tuple(layout.spatial_shape), layout.grid_kind, {spec.name: spec for spec in layout.fields},
                       {axis: np.asarray(coords, dtype=np.float64) for axis, coords in layout.grid.items()}, attrs)


def sample_code_hash(family: object) -> str:
    """A short hash of the source that makes a family's samples: its module, the numerical solvers
    and this module's seeding. A partial file begun by other code is started over, not finished
    by a second version (unrelated commits leave it resumable)."""
    import solvers

    files = [Path(inspect.getsourcefile(type(family))), Path(__file__),
             *sorted(Path(solvers.__file__).parent.rglob("*.py"))]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def resume_key(recipe: Recipe, family: object, device: torch.device) -> str:
    """What a partial file must have been begun with to be finished: the recipe, the device type, torch,
    the sample code and, on a CPU, the thread count. Sums split across threads round differently: two
    navier_stokes files made with 1 and 2 threads differ in the last bits (rel. 1e-7), and a resume
    with the other count mixed the two in one file; it starts over now. The file's name does not
    change (the recipe's fingerprint)."""
    key = f"{recipe.fingerprint()}-{device.type}-{torch.__version__}-{sample_code_hash(family)}"
    return key + (f"-threads{torch.get_num_threads()}" if device.type == "cpu" else "")


def batch_generator(device: torch.device, seed: int, batch: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(batch_seed(seed, batch))
    return gen


def generate(recipe: Recipe, *, root: str | Path | None = None, device: str | torch.device = "auto",
             progress: bool = True, max_batches: int | None = None, max_minutes: float | None = None) -> Path:
    """Make (or finish) the file for `recipe` and return its path; a complete file is reused.

    `max_batches` (new batches) or `max_minutes` (wall time; checked after each batch) stop early,
    leaving a resumable ``.partial`` file, which is returned: a long generation split across runs.
    The complete file's ``wall_time_s`` attribute sums the time of every run that wrote to it.
    A process that needs a file another one is making waits for it (`_generating`).
    """
    if max_minutes is not None and not (isinstance(max_minutes, (int, float)) and max_minutes > 0):
        raise ValueError(f"max_minutes must be a positive number of minutes (or None for no limit), got {max_minutes!r}")
    path = dataset_path(recipe, root)
    if path.exists():
        read_info(path)  # a complete, valid file: nothing to do
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a bare "[Errno 2] No such file or directory: '/proc/nope'" named neither key nor fix
        raise DatasetError(f"cannot make the dataset folder {path.parent} ({err.strerror or err}): choose a writable "
                           f"folder (`sciml generate --root DIR`, or data.root in a training "
                           f"config)") from None
    with _generating(path):
        # again, with the lock: made by the process this one waited for, or by one that renamed its partial between
        # the check above and the lock (a second process regenerated it from scratch and replaced the finished file)
        if path.exists():
            read_info(path)
            return path
        return _generate(recipe, path, device=device, progress=progress, max_batches=max_batches,
                         max_minutes=max_minutes)


def _say_waiting(path: Path) -> None:
    print(f"{path} is being generated by another process: waiting for it to finish, then using its file (or, if it "
          f"stops first, going on from its finished batches)", flush=True)


@contextlib.contextmanager
def _generating(path: Path):
    """Held while this process makes `path`: a lock on ``<file>.lock`` beside it. A second process needing the same
    file waits here (saying so once), then finds the finished file, or takes over the partial from its finished
    batches if the first stopped (a lock dies with its process). It stopped with "is being written by another
    process" before. The holder removes the lock file; a waiter that then holds a removed one locks anew."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (HDF5's own on the partial still refuses a second writer)
        yield
        return
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    _say_waiting(path)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C stops the wait
            try:
                current = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # its holder removed it when done: lock the file now at that name
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still held
        os.close(fd)


def _generate(recipe: Recipe, path: Path, *, device: str | torch.device, progress: bool, max_batches: int | None,
              max_minutes: float | None) -> Path:
    from tqdm.auto import tqdm

    device = resolve_device(device)
    family = recipe.family_obj()
    params = recipe.typed_params()
    layout = family.layout(params)
    n_batches = -(-recipe.n_samples // recipe.batch_size)
    attrs = {
        "name": recipe.name, "family": recipe.family, "description": recipe.description,
        "spatial_shape": list(layout.spatial_shape), "grid_kind": layout.grid_kind,
        "params": params.model_dump(mode="json"), "seed": recipe.seed,
        "rng": f"torch.Generator({device.type}), batch b seeded with seed * {SEED_STRIDE} + b",
        "recipe_yaml": recipe_text(recipe),
        **layout.attrs,
        **{k: v for k, v in environment(device).items() if k not in ("command",)},
    }
    writer = Writer(path, attrs=attrs, fields=layout.fields, grid=layout.grid, n_samples=recipe.n_samples,
                    batch_size=recipe.batch_size, resume_key=resume_key(recipe, family, device))
    deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
    try:
        todo = range(writer.batches_done, n_batches if max_batches is None else min(n_batches, writer.batches_done + max_batches))
        for b in tqdm(todo, desc=f"generate {recipe.name}", unit="batch", disable=not progress,
                      initial=writer.batches_done, total=n_batches):
            n = min(recipe.batch_size, recipe.n_samples - b * recipe.batch_size)
            arrays, diagnostics = family.generate(params, n, generator=batch_generator(device, recipe.seed, b), device=device)
            nonfinite = [k for k, v in {**arrays, **diagnostics}.items() if not torch.isfinite(v).all()]
            if nonfinite:
                raise FloatingPointError(f"batch {b} of {recipe.name} has non-finite values in {nonfinite}; "
                                         f"the solver diverged: reduce dt or check the parameters")
            writer.write_batch(b, {k: v.float().cpu().numpy() for k, v in arrays.items()},
                               {k: v.double().cpu().numpy() for k, v in diagnostics.items()})
            if deadline is not None and time.perf_counter() > deadline:
                break
        if writer.batches_done < n_batches:
            writer.close()
            return writer.partial
        return writer.finish({"wall_time_s": writer.seconds})
    except BaseException:
        # keep the finished batches for a resume; after a failed write (a full disk) the close can fail
        # too: the first error is the one to report, and the counter on disk names only batches on disk
        with contextlib.suppress(Exception):
            writer.close()
        if writer.batches_done == 0:  # nothing to resume (e.g. a setting the solver refused): no .partial left
            writer.partial.unlink(missing_ok=True)
        raise
