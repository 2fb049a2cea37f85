"""Small shared helpers: device choice, atomic writes, provenance."""

from __future__ import annotations

import datetime as _dt
import errno
import os
import platform
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from sciml.paths import REPO_ROOT


class TrainingGridOnly(ValueError):
    """A trained part that applies at its training grid only (a POD trunk, a pointwise normaliser): no other
    resolution, finer or coarser, helps."""


def tracing() -> bool:
    """Inside a torch.compile trace or a CUDA-graph capture, where a host read or a kept tensor breaks the graph."""
    return torch.compiler.is_compiling() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


def resolve_device(device: str | torch.device = "auto", *, flag: str | None = None) -> torch.device:
    """``"auto"`` picks CUDA when present; anything else is passed to `torch.device`. Errors name the
    config key ``device=``, or the command-line `flag` (e.g. ``"--device"``) the value came from."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    given, fix = (f"device {device!r}", "device=auto or cpu") if flag is None else \
        (f"{flag} {device}", f"{flag} auto or {flag} cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{given} is not valid: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{given} asked for CUDA but none is available: use {fix}")
    return resolved


def compile_jet_loss(fn):
    """``torch.compile(fn)`` for a PINN loss built on jet derivatives, with AOT autograd's cache off.

    torch 2.13 replays a warm cache entry for this graph (its outputs are views of its inputs)
    with corrupt view metadata: the second run of the same compiled PINN on a machine failed with
    garbage shapes ("shape '[94772623364408, ...]' is invalid"). The flag is process-wide and
    only costs the warm-start speed-up of that cache; Inductor's own caches stay on.
    """
    import torch._functorch.config as functorch_config

    functorch_config.enable_autograd_cache = False
    return torch.compile(fn)


def durable_replace(tmp: str | Path, path: str | Path) -> None:
    """Rename the finished file `tmp` onto `path`, its bytes and the rename both on disk first.

    Without the fsyncs a power loss soon after the rename can leave `path` empty or truncated
    (the rename reaches the disk before the data on common filesystems): the old copy gone too.
    """
    fd = os.open(tmp, os.O_RDWR)  # Windows flushes only a handle opened for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if os.name == "posix":  # the directory entry; Windows cannot open a directory for fsync
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to `dtype` inside the block, the caller's restored after."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextmanager
def callers_rng_kept(device: str | torch.device | None = None) -> Iterator[None]:
    """Torch's global generators (CPU, and every CUDA device's, which `torch.manual_seed` seeds too) put back on exit
    as they were on entry: a training run seeds them and draws from them, and its caller's random state is its own.
    What happens inside is unchanged (the states are only saved and restored).

    `device`: the run's (None: it may use CUDA). Reading a CUDA generator initialises CUDA (a context on the GPU:
    seconds and hundreds of MB), which a CPU run never needed: where CUDA is not initialised yet, a CPU run reads none,
    and the seed its `torch.manual_seed` queued for CUDA's initialisation (in place of the caller's) is taken back.
    A CUDA run initialises CUDA anyway, and once it is, `torch.manual_seed` seeds every device's generator, whose
    state is then read from the host: all of them are kept."""
    uses_cuda = torch.cuda.is_available() and (
        torch.cuda.is_initialized() or device is None or resolve_device(device).type == "cuda")
    devices = list(range(torch.cuda.device_count())) if uses_cuda else []
    queued = None if uses_cuda else _queued_cuda_seeds()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if queued is not None and not torch.cuda.is_initialized():
            queued[0].__dict__.update(queued[1])


def _queued_cuda_seeds():
    """torch's tracker of the seeds `torch.manual_seed` queues while CUDA is not initialised, and a copy of what it
    holds (None where this torch has none)."""
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    if tracker is None or not hasattr(tracker, "__dict__"):
        return None
    return tracker, {k: list(v) if isinstance(v, list) else v for k, v in vars(tracker).items()}


class WriteFailed(OSError):
    """A write that failed, its message naming the file, the cause and what to do (shown as it is, without the
    "[Errno N]" of an OSError)."""

    def __init__(self, message: str, path: str | Path, code: int = errno.EIO):
        super().__init__(code, message, str(path))
        self.message = message

    def __str__(self) -> str:
        return self.message


class NoSpaceLeft(WriteFailed):
    """A write that failed for want of disk space (errno ENOSPC): the bare "[Errno 28] No space left on device" named
    no file, and torch's "unexpected pos 28416 vs 28308" not even the cause."""

    def __init__(self, message: str, path: str | Path):
        super().__init__(message, path, errno.ENOSPC)


_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # a full disk, or a full quota


def out_of_space(err: BaseException, folder: str | Path | None = None) -> bool:
    """Whether `err` (or an error it was raised from) is a write that failed for want of space: its errno, also as
    HDF5 writes it into its message ("errno = 28"); or, for an error that carries none (torch's zip writer given a
    path fails with "unexpected pos ..."), no room left on the disk of `folder`."""
    seen, e = set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) in _NO_SPACE or any(f"errno = {code}," in str(e) for code in _NO_SPACE):
            return True
        e = e.__cause__ or e.__context__
    if folder is None or getattr(err, "errno", None) is not None:  # an errno that is not ENOSPC: another failure
        return False
    try:
        return shutil.disk_usage(folder).free < 2 ** 20  # what a failed write leaves: (next to) nothing
    except OSError:
        return False


def size_text(nbytes: float) -> str:
    """A size in words: "512 bytes", "12.0 KiB", ..."""
    for unit in ("bytes", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def free_space(folder: str | Path) -> str:
    """The space left on the disk of `folder`, in words ("12.0 KiB free"), or "" where it cannot be read."""
    try:
        return f"{size_text(shutil.disk_usage(folder).free)} free"
    except OSError:
        return ""


def no_space_left(path: str | Path, err: BaseException, what: str = "") -> NoSpaceLeft:
    """The error for a write of `path` that failed for want of space (`out_of_space`), naming it and the space left;
    `what` says what was kept and how to go on (default: free space on that disk)."""
    free = free_space(Path(path).parent)
    return NoSpaceLeft(f"no space left on device to write {path}{f' ({free})' if free else ''}"
                       f"{what or ': free space on that disk and run again'}", path)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary sibling of `path`; move it onto `path` (durably) only if the block succeeds. The file at
    `path` is untouched by a block that fails; a full disk is said so, naming `path` (`NoSpaceLeft`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        durable_replace(tmp, path)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch.save's zip writer, given a path
        if isinstance(err, NoSpaceLeft) or not out_of_space(err, path.parent):
            raise
        tmp.unlink(missing_ok=True)  # first: the space it names is what is left without it
        raise no_space_left(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def git_commit(root: Path = REPO_ROOT) -> str:
    """The commit of the source tree (``-dirty`` when tracked files changed), or ``"unknown"``.

    Benchmark results and their rendered page are outputs, not source: a benchmark that has
    already written one of its rows would otherwise call its own tree dirty."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results",
                                ":!benchmarks/BENCHMARKS.md"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, device and commit: what a run folder and a dataset file record."""
    import numpy

    from sciml import __version__

    info: dict[str, Any] = {
        "sciml_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda or "none",
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device is not None:
        info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return info
