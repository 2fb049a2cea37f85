"""Run folders: everything a training run leaves behind, written so that nothing is half-written.

    runs/<name>/
        config.yaml        the resolved config (defaults included)
        environment.json   versions, device, git commit, command
        metrics.jsonl      one JSON object per line, each with a "kind": "eval" (operators, per
                           evaluation), "step" (PINNs, per logged step), "guard" (a guard event:
                           "event", "step" and its details), "final"
        checkpoints/last.pt, checkpoints/best.pt   (each written to a temporary name, then renamed)
        predictions.png    a few test samples, prediction vs truth
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from sciml.config import ConfigError, load_yaml
from sciml.registry import user_modules
from sciml.utils import atomic_path, atomic_write_text, environment


class RunDir:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._n_metrics: int | None = None  # lines in metrics.jsonl, counted once, then kept by log()
        self.made_here = False  # set by `create`: only a folder this process made is removed when its run fails

    @property
    def n_metrics(self) -> int:
        if self._n_metrics is None:
            self._n_metrics = len(self.read_metrics())
        return self._n_metrics

    @classmethod
    def create(cls, root: str | Path, name: str | None, *, prefix: str = "run") -> "RunDir":
        """A new folder under `root`; a timestamped name when `name` is None. Never reuses a folder."""
        root = Path(root)
        if name is None:
            name = f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        path = root / name
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / f"{name}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path)
        run.made_here = True
        return run

    @contextmanager
    def removed_if_left_empty(self):
        """Around a run's set-up and training: holds the folder against a second process (two resumes
        of one run interleaved their checkpoints and metric lines), and when the run fails before
        writing any work (a bad value found only once the data is loaded, a model that fails its first
        forward, an import error), its folder goes too, not left in runs/ with only its config and
        environment, which neither eval nor a resume can use. A folder this process did not make (a
        resume's) is never removed: its config.yaml may be the only record of the run."""
        with self._held():
            try:
                yield self
            except BaseException:
                if self.path.is_dir() and self.made_here and self._holds_no_work():
                    import shutil

                    shutil.rmtree(self.path)
                elif self.path.is_dir() and not any(self.path.iterdir()):
                    self.path.rmdir()
                raise

    def _holds_no_work(self) -> bool:
        """Only what a run writes before its first step: config.yaml, environment.json, an empty checkpoints/."""
        for entry in self.path.iterdir():
            if entry.name in ("config.yaml", "environment.json") and entry.is_file():
                continue
            if entry.name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
                continue
            return False
        return True

    @contextmanager
    def _held(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fd = os.open(self.path, os.O_RDONLY)  # a lock on the folder itself: no file to leave behind
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"{self.path} is being trained by another process; wait for it, or stop it and "
                                  f"resume") from None
            yield
        finally:
            os.close(fd)

    @classmethod
    def latest(cls, root: str | Path, name: str) -> "RunDir | None":
        """The newest folder `create(root, name)` made (``name``, ``name-2``, ...), or None."""
        root, found, suffix = Path(root), None, 1
        path = root / name
        while path.exists():
            found, suffix = path, suffix + 1
            path = root / f"{name}-{suffix}"
        return None if found is None else cls(found)

    def check_resume(self, resolved: str, task: str) -> list[str]:
        """A resume may change how the run goes on, not what it trains (RESUMABLE[task]): ``resolved`` is the
        config it goes on with, as `sciml.config.dump` writes it. Returns the keys it changes (all allowed)."""
        import fnmatch

        allowed, changed = RESUMABLE[task], self.changed_keys(resolved)
        refused = [k for k in changed
                   if not any(fnmatch.fnmatchcase(k, pattern) for pattern in allowed) or k.endswith("optimizer.name")]
        if refused:
            # the optimizer's name is refused under optimizer.*: the saved state is that optimizer's
            may = [f"{p} except {p[:-2]}.name" if p.endswith("optimizer.*") else p for p in allowed]
            raise ConfigError(f"a resume goes on with what {self.path} trains; these overrides would change it: "
                              f"{', '.join(refused)}. Start a new run for that (`sciml train CONFIG ...`, or without "
                              f"resume in Python); a resume may change {', '.join(may)}")
        return changed

    def changed_keys(self, resolved: str) -> list[str]:
        """The dotted keys in which ``resolved`` (as `sciml.config.dump` writes a config) differs from the run's."""
        import yaml

        saved = load_yaml(self.config_path)
        for dotted, value in ADDED_KEYS.items():  # a run saved before a key existed had its old value
            *parents, key = dotted.split(".")
            section = saved
            for name in parents:
                section = section.get(name) if isinstance(section, dict) else None
            if isinstance(section, dict):
                section.setdefault(key, value)
        return _changed_keys(saved, yaml.safe_load(resolved))

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint_path(self, which: str = "last") -> Path:
        return self.path / "checkpoints" / f"{which}.pt"

    def write_config(self, text: str) -> None:
        atomic_write_text(self.config_path, text)

    def write_environment(self, device: torch.device | None = None, config: dict[str, Any] | None = None) -> None:
        """Versions, device and commit, and the path and source hash of each user's module `config` names."""
        info = environment(device)
        if config is not None and (modules := user_modules(config)):
            info["user_modules"] = modules
        atomic_write_text(self.path / "environment.json", json.dumps(info, indent=2))

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (non-finite floats are written as strings so the file stays JSON)."""
        clean = {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(clean, default=_to_builtin) + "\n")
        if self._n_metrics is not None:
            self._n_metrics += 1

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def final_record(self) -> dict[str, Any] | None:
        """The last ``kind: final`` record of metrics.jsonl (a finished sitting), or None."""
        finals = [r for r in self.read_metrics() if r.get("kind") == "final"]
        return finals[-1] if finals else None

    def truncate_metrics(self, keep: int) -> None:
        """Keep the first `keep` metric lines: a resumed run drops what was logged after its checkpoint."""
        lines = self.metrics_path.read_text().splitlines(keepends=True) if self.metrics_path.exists() else []
        atomic_write_text(self.metrics_path, "".join(lines[:keep]))
        self._n_metrics = min(keep, len(lines))

    def save_checkpoint(self, state: dict[str, Any], which: str = "last") -> Path:
        return save_checkpoint(state, self.checkpoint_path(which))

    def load_checkpoint(self, which: str = "last", map_location: Any = "cpu") -> dict[str, Any]:
        path = self.checkpoint_path(which)
        if not path.exists():
            if which != "last" and self.checkpoint_path("last").exists():
                raise FileNotFoundError(f"no {which} checkpoint in {self.path} (the run stopped before writing one); "
                                        f"use the last one (`sciml eval RUN --checkpoint last`)")
            raise FileNotFoundError(f"no checkpoint {path}: the run stopped before its first '{which}' checkpoint; start it "
                                    f"again")
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except (RuntimeError, EOFError, OSError) as err:  # e.g. cut off by a full disk
            raise ConfigError(f"checkpoint {path} cannot be read ({str(err).splitlines()[0]}); start from another one "
                              f"(--checkpoint best / last) or start the run again") from None


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def _to_builtin(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics")


# What a resume may change: how long and how the run goes on, not what it trains (data, model, problem,
# points, seeds, the phases' optimizers and dtypes): those would mix two runs in one folder.
RESUMABLE = {
    "operator": ("training.epochs", "training.max_minutes", "training.stop_after_minutes", "training.fit_to_budget",
                 "training.progress", "training.plot", "training.n_plot", "training.eval_every",
                 "training.checkpoint_every", "training.compile", "training.cuda_graph", "training.precision",
                 "optimizer.*", "guard", "guard.*", "device", "output.*"),
    "pinn": ("max_minutes", "eval_every", "log_every", "checkpoint_every", "device", "compile", "cuda_graph",
             "output.*", "phases.*.optimizer.*", "phases.*.steps", "phases.*.guard", "phases.*.guard.*",
             "phases.*.decay_every", "phases.*.decay_rate", "phases.*.warmup_steps", "phases.*.cuda_graph"),
}


# Keys added to a schema after runs were saved, with the value those runs had: compared as such on resume (the
# comparison skips other keys a saved config lacks, as fields an older version did not write)
ADDED_KEYS = {"data.n_val": 0}


# Free mappings: their keys are the user's (a factory's arguments), not the schema's, so a key the run's config
# lacks is a new argument, not a field an older version did not write.
FREE_DICTS = ("problem_args", "*.problem_args")


def _changed_keys(before: Any, after: Any, prefix: str = "", free: bool = False) -> list[str]:
    """Dotted keys whose values differ; keys the run's config lacks (saved by an older version) are skipped,
    except anywhere inside a free mapping (`FREE_DICTS`, e.g. problem_args, at any depth: problem_args.opts.D),
    where a new key changes what is trained."""
    import fnmatch

    if isinstance(before, dict) and isinstance(after, dict):
        free = free or any(fnmatch.fnmatchcase(prefix.rstrip("."), pattern) for pattern in FREE_DICTS)
        return [k for key in sorted(set(before) | set(after), key=str) if key in before or free
                for k in _changed_keys(before.get(key), after.get(key), f"{prefix}{key}.", free)]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [k for i, (b, a) in enumerate(zip(before, after)) for k in _changed_keys(b, a, f"{prefix}{i}.", free)]
    return [] if before == after else [prefix.rstrip(".")]
