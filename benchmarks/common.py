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
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from sciml.utils import git_commit

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


def write_result(name: str, *, title: str, rows: list[dict[str, Any]], notes: str = "",
                 device=None, extra: dict[str, Any] | None = None) -> Path:
    """Write `results/<name>.json` atomically (and a copy under $OUT when set)."""
    payload = {"name": name, "title": title, **provenance(device), "rows": rows, "notes": notes, **(extra or {})}
    text = json.dumps(payload, indent=2, default=float)
    targets = [RESULTS_DIR / f"{name}.json"]
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "results" / f"{name}.json")
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return targets[0]
