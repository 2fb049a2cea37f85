"""Shared plumbing for benchmark scripts: provenance, timing, atomic JSON results.

Each benchmark script calls `write_result(name, title=..., rows=[...])`; it lands in
`benchmarks/results/<name>.json` (and under ``$OUT`` when that is set, so a run on the device
machine brings it back). `python benchmarks/render.py` rebuilds BENCHMARKS.md from those files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import torch

from benchmarks.render import short_commit
from sciml.utils import atomic_write_text, git_commit

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device | str | None = None) -> str:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": device_name(device),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


SESSION_DEADLINE_ENV = "GPU_SESSION_DEADLINE"  # exported by gpu_session.sh: the device call's end, epoch seconds


def minutes_left_in_session(requested: float, *, reserve_s: float = 0.0) -> float:
    """``requested`` minutes, lowered to what the device call has left after ``reserve_s`` seconds
    of work that must follow (loading, evaluation, writing results).

    A step that overruns the call is killed and loses its row; one given the time that is left ends
    on its own (a row fit to its budget ends annealed) and keeps it. Outside gpu_session.sh
    the request stands.
    """
    deadline = os.environ.get(SESSION_DEADLINE_ENV)
    if not deadline:
        return requested
    return min(requested, (float(deadline) - time.time() - reserve_s) / 60)


class SessionTimeShort(RuntimeError):
    """Too little of the device call is left for a row or variant: skipped, nothing recorded (an earlier
    measured row of it stays)."""


def session_budget(requested: float, *, reserve_s: float, at_least: float, what: str) -> float:
    """`minutes_left_in_session(requested, reserve_s=...)`, or SessionTimeShort naming `what` when the device
    call's deadline cut it under `at_least` minutes (a short budget asked for outside a device call stands)."""
    budget = minutes_left_in_session(requested, reserve_s=reserve_s)
    if budget < at_least and budget < requested:
        raise SessionTimeShort(f"{what}: {budget:.1f} min left in this device call after the {reserve_s:.0f} s "
                               "reserve; run it in a call of its own")
    return budget


DRY_RUN_OK = "dry run: arguments OK"


def add_threads(parser) -> None:
    """``--threads``: CPU torch threads for a timed benchmark (`use_threads`)."""
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: on a shared CPU, OpenMP oversubscription is 10x slower)")


def use_threads(args, device: torch.device) -> None:
    if device.type == "cpu":
        torch.set_num_threads(args.threads)


def add_dry_run(parser) -> None:
    """``--dry-run``: check the arguments (the names of rows, parts, cases, tasks, overrides) and stop,
    so a GPU plan's commands are checked here before a device minute is spent on them."""
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and stop (a GPU plan's pre-flight)")


def dry_run_done(args) -> bool:
    """True (having said so) when this is a dry run: call it once the arguments are checked."""
    if args.dry_run:
        print(DRY_RUN_OK, flush=True)
    return args.dry_run


def sync(device: torch.device | str | None = None) -> None:
    if torch.device(device or "cpu").type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], *, device=None, warmup: int = 3, repeat: int = 10) -> float:
    """Median wall time of `fn()` in seconds, synchronising the device around each call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


K = TypeVar("K")
T = TypeVar("T")


def round_robin(measures: Mapping[K, Callable[[], T]], rounds: int,
                after_round: Callable[[dict[K, list[T]]], Any] | None = None) -> dict[K, list[T]]:
    """Each measure once per round, in order: a change in machine load reaches all alike (instead of one
    measure's every repeat). Returns each one's results, a round each; `after_round(runs)`, when given, runs
    after every round with the results so far (so a run stopped by a time limit can keep the finished rounds)."""
    runs: dict[K, list[T]] = {k: [] for k in measures}
    for _ in range(rounds):
        for k, measure in measures.items():
            runs[k].append(measure())
        if after_round is not None:
            after_round(runs)
    return runs


def median_range(xs, ndigits: int = 3) -> tuple[float, list[float]]:
    """The upper median of `xs` (``sorted(xs)[len(xs) // 2]``, unrounded) and their [min, max], rounded to
    `ndigits`."""
    xs = sorted(xs)
    return xs[len(xs) // 2], [round(xs[0], ndigits), round(xs[-1], ndigits)]


def paired_range(num, den, ndigits: int = 3) -> list[float]:
    """[min, max] of ``num[i] / den[i]`` (the same round's pair), rounded to `ndigits`."""
    ratios = [a / b for a, b in zip(num, den)]
    return [round(min(ratios), ndigits), round(max(ratios), ndigits)]


THREADS = re.compile(r", (\d+) threads")


def same_device(a, b) -> bool:
    """Two device names from `device_name`, ignoring CPU thread counts (they vary per part of a run:
    each row records its own, see `write_result`)."""
    strip = lambda name: re.sub(r", (\d+ threads|threads per row)", "", str(name))  # noqa: E731
    return strip(a) == strip(b)


def _threads(device: str) -> int | None:
    found = THREADS.search(str(device))
    return int(found.group(1)) if found else None


def previous_result(name: str, device=None) -> dict[str, Any] | None:
    """The existing `results/<name>.json` if it was measured on this device, else None."""
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    return old if same_device(old.get("device"), device_name(device)) else None


def previous_row(name: str, keep: Callable[[dict[str, Any]], bool], device=None) -> dict[str, Any] | None:
    """The first row of `results/<name>.json` measured on this device for which `keep(row)` holds, else None
    (e.g. a measured row a failed or shortened run must not replace)."""
    return next((row for row in (previous_result(name, device) or {}).get("rows", []) if keep(row)), None)


def write_result(name: str, *, title: str, rows: list[dict[str, Any]], notes: str = "",
                 device=None, extra: dict[str, Any] | None = None,
                 merge_key: Callable[[dict], Any] | None = None,
                 derived: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None) -> Path:
    """Write `results/<name>.json` atomically (and a copy under $OUT when set).

    merge_key: for a benchmark run in parts (one device command each, or a write after every
    row): rows of the existing file measured on this device whose key `rows` do not replace are
    kept, each stamped with the date and commit it was measured at, and so are the entries of
    its dict-valued extras that `extra` does not replace.

    derived: entries computed from the rows as written (after the merge), e.g. a summary over every part.

    On CPU every row records the torch threads it was measured with (``threads``): rows merged from runs
    with other counts keep theirs (unknown, None, for rows of an older file written in several runs), and the header's device then says "threads per row" instead of one count.
    """
    here = provenance(device)
    threads = _threads(here["device"])
    if threads is not None:
        for r in rows:  # stamped in the caller's rows: a script rewriting its rows later keeps the count they ran with
            r.setdefault("threads", threads)
    old = previous_result(name, device) if merge_key is not None else None
    if old is not None:
        replaced = {merge_key(r) for r in rows}
        # an old file's header count is its rows' only where one run wrote them all (no row stamped)
        single_run = not any("measured" in r for r in old.get("rows", []))
        old_threads = _threads(old.get("device")) if single_run else None
        kept = [{**r, "measured": r.get("measured", f"{old['date']} {short_commit(old['commit'], 10)}"),
                 **({"threads": r.get("threads", old_threads)} if threads is not None else {})}
                for r in old.get("rows", []) if merge_key(r) not in replaced]
        if kept:
            rows = kept + [{**r, "measured": f"{here['date']} {short_commit(here['commit'], 10)}"} for r in rows]
            extra = {k: ({**old.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in (extra or {}).items()}
    if threads is not None and any(r.get("threads") != threads for r in rows):
        here["device"] = THREADS.sub(", threads per row", here["device"])
    payload = {"name": name, "title": title, **here, "rows": rows, "notes": notes, **(extra or {}),
               **(derived(rows) if derived is not None else {})}
    return write_result_file(f"{name}.json", json.dumps(payload, indent=2, default=float))


def write_result_file(filename: str, text: str) -> Path:
    """Write `results/<filename>` atomically, and a copy under $OUT when set (the device machine
    brings back only what is there); returns the first."""
    targets = [RESULTS_DIR / filename]
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "results" / filename)
    for path in targets:
        atomic_write_text(path, text)
    return targets[0]


def cuda_graph(step: Callable[[], Any], device, warmup: int = 3) -> Callable[[], Any]:
    """`step` captured as one CUDA graph by the trainers' own `CapturedStep`, already warmed up
    and captured, so that every timed call is a replay. `step` zeroes the gradients
    (set_to_none) and runs forward and backward, then steps an optimizer built with
    ``capturable=True`` (a training step) or returns the loss (an L-BFGS evaluation)."""
    from sciml.train.graphs import CapturedStep

    captured = CapturedStep(step, device, warmup=warmup)
    while not captured.captured:
        captured()
    return captured
