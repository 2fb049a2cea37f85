"""Run folders: everything a training run leaves behind, written so that nothing is half-written.

    runs/<name>/
        config.yaml        the resolved config (defaults included); after a resume, the values it went on
                           with, headed by a comment when a resume changed settings (`history_note`)
        environment.json   versions, device, git commit, command of the latest sitting (process), and
                           "sittings": every sitting's, oldest first, a resumed one with "resumed_at" and "changed"
        metrics.jsonl      one JSON object per line, each with a "kind": "eval" (operators, per
                           evaluation), "step" (PINNs, per logged step), "guard" (a guard event:
                           "event", "step" and its details), "resume" (a resumed sitting: where it went
                           on from, the settings it changed with their old and new values, its command,
                           commit and environment; `resume_record`), "final"
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
from sciml.registry import close_matches, user_modules
from sciml.utils import NoSpaceLeft, atomic_path, atomic_write_text, environment, no_space_left, out_of_space

CHECKPOINTS = ("best", "last")


# run folders (device, inode) this process holds (`RunDir.held`), with how many holds: a second lock on another
# descriptor would be refused as another process's
_HELD: dict[tuple[int, int], int] = {}


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
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            raise
        except OSError as err:  # a bare "[Errno 2] No such file or directory: '/proc/foo'" named neither key nor fix
            raise ConfigError(f"cannot make the run folder {path} under output.root={str(root)!r} "
                              f"({err.strerror or err}): choose a writable folder, output.root=...") from None
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
        with self.held():
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
    def held(self):
        """The folder held against a second process training it (`removed_if_left_empty`, a PINN's `fit`); a hold
        this process has already (the command line's around `run_pinn`) is taken again, not refused."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)  # a PINN's `fit` may be given a folder to make
        fd = os.open(self.path, os.O_RDONLY)  # a lock on the folder itself: no file to leave behind
        key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        try:
            if key not in _HELD:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ConfigError(f"{self.path} is being trained by another process; wait for it, or stop it and "
                                      f"resume") from None
            _HELD[key] = _HELD.get(key, 0) + 1
            try:
                yield
            finally:
                _HELD[key] -= 1
                if not _HELD[key]:
                    del _HELD[key]
        finally:
            os.close(fd)  # the outermost hold's descriptor: its lock goes with it

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

        return _changed_keys(_with_added_keys(load_yaml(self.config_path)), yaml.safe_load(resolved))

    def resume_record(self, before: str | None, after: str, task: str, at: dict[str, int],
                      device: torch.device | None = None) -> dict[str, Any]:
        """Append this sitting's ``kind: resume`` record to metrics.jsonl and return it (for `write_environment`):
        `at`, where the run goes on from (operators: "epoch" and optimizer "step"; PINNs: "phase" and "step"),
        from which point the new values apply; "changed": each key in which ``after`` (the config this sitting
        trains with) differs from ``before`` (the config of the checkpoint it goes on from; None: config.yaml),
        with its "old" and "new" value; "changes_result": those of them that can change what the run computes
        (`changes_result`: not `NO_EFFECT_ON_RESULT`, nor `NO_EFFECT_WHEN` in the case at hand); the sitting's command
        (and working folder), commit and environment. Appended after the checkpoint's metric lines, so a later resume
        keeps it: the run folder's history of its settings."""
        import yaml

        old = _with_added_keys(yaml.safe_load(before) if before is not None else load_yaml(self.config_path))
        new = yaml.safe_load(after)
        changed = {k: {"old": _dotted_value(old, k), "new": _dotted_value(new, k)} for k in _changed_keys(old, new)}
        env = environment(device)
        record = {"kind": "resume", **at, "changed": changed,
                  "changes_result": [k for k in changed if changes_result(task, k, old, new, at)],
                  "command": env["command"], "cwd": os.getcwd(), "git_commit": env["git_commit"], "environment": env}
        self.log(record)
        return record

    def settings_history(self) -> list[dict[str, Any]]:
        """The resumes that changed what the run computes (`resume_record`'s with "changes_result"), oldest first,
        each as where it went on from and its changes ``{key: {"old", "new"}}``: what a final record carries."""
        out = []
        for r in self.read_metrics():
            if r.get("kind") == "resume" and r.get("changes_result"):
                at = {k: r[k] for k in ("phase", "epoch", "step") if k in r}
                out.append({**at, "changed": {k: r["changed"][k] for k in r["changes_result"]}})
        return out

    def history_note(self) -> str:
        """The comment heading config.yaml once a resume changed what the run may compute (empty before): the file
        holds the values the run went on with, which alone may not reproduce it, and where its history is."""
        history = self.settings_history()
        if not history:
            return ""
        lines = ["# This run was resumed with changed settings that can change what it computes. This file holds the",
                 "# values it went on with (what the next resume starts from), not the ones every epoch used: trained",
                 "# from this file alone, the run may not be reproduced. The history is in metrics.jsonl (its \"resume\"",
                 "# records: every changed key with old and new values, where they apply from, each sitting's command",
                 "# and commit) and in environment.json (\"sittings\"). The changes that can change the result:"]
        for entry in history:
            where = (f"from phase {entry['phase']} step {entry['step']}" if "phase" in entry else
                     f"from epoch {entry['epoch']} (optimizer step {entry['step']})")
            lines += [f"#   {k}: {json.dumps(v['old'])} -> {json.dumps(v['new'])}, {where}"
                      for k, v in entry["changed"].items()]
        return "\n".join(lines) + "\n"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def checkpoint_path(self, which: str = "last") -> Path:
        if which not in CHECKPOINTS:  # which="bset" said "no bset checkpoint ...; use the last one"
            raise ConfigError(f"unknown checkpoint {which!r}: use which='best' or 'last' (--checkpoint best / last)"
                              + close_matches(str(which), list(CHECKPOINTS)))
        return self.path / "checkpoints" / f"{which}.pt"

    def require_config(self, what: str = "a run folder") -> None:
        """A clear error where the folder holds no run (a missing folder said "config file .../config.yaml does
        not exist")."""
        if self.config_path.exists():
            return
        if self.path.is_dir() and not any(self.path.iterdir()):
            raise ConfigError(f"{self.path} is an empty run folder: its run stopped before training began (while making "
                              f"its data, say); start it again with `sciml train CONFIG`")
        missing = "" if self.path.is_dir() else " (no such folder)" if not self.path.exists() else " (a file)"
        raise ConfigError(f"{self.path} is not {what}{missing}: it holds no config.yaml; give a folder `sciml train` "
                          f"made")

    def write_config(self, text: str) -> None:
        """`text` (as `sciml.config.dump` writes it), headed by `history_note` once a resume changed settings."""
        atomic_write_text(self.config_path, self.history_note() + text)

    def write_environment(self, device: torch.device | None = None, config: dict[str, Any] | None = None,
                          resumed: dict[str, Any] | None = None) -> None:
        """Versions, device and commit, and the path and source hash of each user's module `config` names: this
        sitting's at the top level, and under "sittings" every sitting's, oldest first. `resumed`: this sitting's
        `resume_record` (its environment is this sitting's), which keeps the earlier sittings and adds where it went
        on from ("resumed_at") and what it changed; without it (a new run) the file starts afresh."""
        info = dict(resumed["environment"]) if resumed is not None else environment(device)
        if config is not None and (modules := user_modules(config)):
            info["user_modules"] = modules
        sittings = []
        path = self.path / "environment.json"
        if resumed is not None and path.exists():
            try:
                before = json.loads(path.read_text())
            except ValueError:  # cut off: what it held is lost, this sitting's is still written
                before = {}
            # a run written before sittings were kept: its file was its latest sitting's
            sittings = before.get("sittings", [before] if before else [])
        this = dict(info)
        if resumed is not None:
            this["resumed_at"] = {k: resumed[k] for k in ("phase", "epoch", "step") if k in resumed}
            this["changed"] = resumed["changed"]
        info["sittings"] = [*sittings, this]
        atomic_write_text(path, json.dumps(info, indent=2))

    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line (non-finite floats are written as strings so the file stays JSON)."""
        clean = {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        try:
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(clean, default=_to_builtin) + "\n")
        except OSError as err:
            if not out_of_space(err):
                raise
            how = (f"go on from the last checkpoint with `sciml train --resume {self.path}`"
                   if self.checkpoint_path("last").exists() else "start the run again")
            raise no_space_left(self.metrics_path, err, f": free space on that disk and {how}") from err
        if self._n_metrics is not None:
            self._n_metrics += 1

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def final_record(self) -> dict[str, Any] | None:
        """The last ``kind: final`` record of metrics.jsonl (a finished sitting), or None (`final_after`: a line a
        kill cut off, which a crashed run leaves until its resume drops it, does not stop `sciml eval` reading it)."""
        return self.final_after(0)

    def final_after(self, lines: int) -> dict[str, Any] | None:
        """The last ``kind: final`` record among the metric lines after the first `lines` (a checkpoint's
        "metrics_lines"/"metric_lines": whether the sitting that wrote the checkpoint finished, its final record
        being the line right after the last checkpoint's lines), or None. A line that does not parse (the last one,
        cut off by a kill or a full disk) is skipped, not an error: a resume reads this before it drops that line."""
        if not self.metrics_path.exists():
            return None
        final = None
        for line in self.metrics_path.read_text().splitlines()[lines:]:
            try:
                record = json.loads(line)
            except ValueError:  # a torn write: what the resume drops
                continue
            if isinstance(record, dict) and record.get("kind") == "final":
                final = record
        return final

    def truncate_metrics(self, keep: int) -> None:
        """Keep the first `keep` metric lines: a resumed run drops what was logged after its checkpoint."""
        lines = self.metrics_path.read_text().splitlines(keepends=True) if self.metrics_path.exists() else []
        atomic_write_text(self.metrics_path, "".join(lines[:keep]))
        self._n_metrics = min(keep, len(lines))

    def save_checkpoint(self, state: dict[str, Any], which: str = "last") -> Path:
        path = self.checkpoint_path(which)
        try:
            return save_checkpoint(state, path)
        except NoSpaceLeft as err:  # the file at `path` is untouched (written to a temporary name, then renamed)
            kept = path.exists()
            how = (f"go on from the last one with `sciml train --resume {self.path}`"
                   if self.checkpoint_path("last").exists() else "start the run again")
            raise no_space_left(path, err, f": {'the one from before is kept' if kept else 'none was written'}; free "
                                           f"space on that disk and {how}") from err

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
        # written through a Python file, whose full disk raises ENOSPC: torch's own writer, given the path, failed
        # with "[enforce fail at inline_container.cc:672] . unexpected pos 28416 vs 28308"
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
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


# Settings a resume may change that cannot change what the run computes (its weights, checkpoints and figures): how
# it shows progress, when a sitting stops (the run goes on exactly from its checkpoint), where its folder is. A resume
# record lists every change; config.yaml's note and the final record, those that can change the result: outside
# these, and outside `NO_EFFECT_WHEN` in the case at hand (each checked: resumed with the change, the run's weights
# are bit for bit those of a run trained from the new config alone).
NO_EFFECT_ON_RESULT = {
    "operator": ("training.progress", "training.plot", "training.n_plot", "training.stop_after_minutes", "output.*"),
    "pinn": ("max_minutes", "output.*"),
}

# Operator schedules whose lr at an optimizer step does not depend on training.epochs (without a plan fit to the
# budget): "step" decays at the configured epochs, "none" holds the lr, and their warm-up is of warmup_steps;
# "cosine" anneals over the whole length, which a changed training.epochs moves.
LENGTH_FREE_SCHEDULES = ("none", "step")


def _fits_to_budget(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return bool(_dotted_value(old, "training.fit_to_budget") or _dotted_value(new, "training.fit_to_budget"))


def _epochs_change_nothing(old: dict[str, Any], new: dict[str, Any], at: dict[str, int]) -> bool:
    """training.epochs changes no weight where the schedule does not depend on the length and no plan is fit to the
    budget; the run also evaluated its last epoch, so one that stopped there (at.epoch == the old epochs) off the
    eval_every cycle holds an evaluation a run of the new length would not make, which may have chosen "best"."""
    schedule = _dotted_value(new, "schedule.name") or "step"
    epoch, epochs, every = at.get("epoch"), _dotted_value(old, "training.epochs"), _dotted_value(old, "training.eval_every")
    extra_eval = epoch is not None and epoch == epochs and bool(every) and epoch % every != 0
    return schedule in LENGTH_FREE_SCHEDULES and not _fits_to_budget(old, new) and not extra_eval


def _pinn_checkpoints_on_logged_steps(old: dict[str, Any], new: dict[str, Any], at: dict[str, int]) -> bool:
    """A PINN checkpoint polls a polled guard (the PINN default, check_every 10), which moves its snapshots (what a
    rollback goes back to); a logged step polls it anyway: no effect where every checkpoint step is a logged one."""
    def on_logged(config: dict[str, Any]) -> bool:
        every, log = _dotted_value(config, "checkpoint_every"), _dotted_value(config, "log_every") or 1
        return not every or every % log == 0

    return on_logged(old) and on_logged(new)


# Settings that change nothing the run computes in some cases only: key -> (old config, new config, where the resume
# goes on from) -> True where it changes nothing
NO_EFFECT_WHEN = {
    "operator": {
        # without fit_to_budget, a time cap only stops a sitting; with it, it sets the plan and so the schedule
        "training.max_minutes": lambda old, new, at: not _fits_to_budget(old, new),
        # with fit_to_budget the pace is re-estimated over windows of lcm(eval_every, checkpoint_every) epochs
        "training.checkpoint_every": lambda old, new, at: not _fits_to_budget(old, new),
        "training.epochs": _epochs_change_nothing,
    },
    "pinn": {"checkpoint_every": _pinn_checkpoints_on_logged_steps},
}


def changes_result(task: str, key: str, old: dict[str, Any], new: dict[str, Any], at: dict[str, int]) -> bool:
    """Whether a resume's change of `key` from config `old` to `new` (from `at`: its epoch or phase, and step) can make
    the run compute other weights than a run trained from `new` alone (listed in config.yaml's note and the final
    record): not for `NO_EFFECT_ON_RESULT`, nor for `NO_EFFECT_WHEN` where its rule holds."""
    import fnmatch

    if any(fnmatch.fnmatchcase(key, pattern) for pattern in NO_EFFECT_ON_RESULT[task]):
        return False
    rule = NO_EFFECT_WHEN[task].get(key)
    return rule is None or not rule(old, new, at)


# Keys added to a schema after runs were saved, with the value those runs had: compared as such on resume (the
# comparison skips other keys a saved config lacks, as fields an older version did not write)
ADDED_KEYS = {"data.n_val": 0}


# Free mappings: their keys are the user's (a factory's arguments), not the schema's, so a key the run's config
# lacks is a new argument, not a field an older version did not write.
FREE_DICTS = ("problem_args", "*.problem_args")


def _with_added_keys(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with `ADDED_KEYS` it lacks at their old values (a run saved before a key existed had it)."""
    for dotted, value in ADDED_KEYS.items():
        *parents, key = dotted.split(".")
        section = saved
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.setdefault(key, value)
    return saved


def _dotted_value(config: Any, dotted: str) -> Any:
    """The value at a dotted key of `_changed_keys` (list items by index), None where it is absent."""
    for name in dotted.split("."):
        if isinstance(config, dict):
            config = config.get(name)
        elif isinstance(config, list) and name.isdigit() and int(name) < len(config):
            config = config[int(name)]
        else:
            return None
    return config


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
