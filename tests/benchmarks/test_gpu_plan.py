"""Pre-flight of the GPU plan: every part's commands name rows, parts, cases, tasks and overrides that
exist, checked here (``--dry-run``) before a device minute is spent on them."""

import importlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from benchmarks.common import DRY_RUN_OK

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "benchmarks" / "gpu_plan.sh"
PARTS = [p for group in re.findall(r"^\s+([0-9a-z|]+)\)", PLAN.read_text(), flags=re.M) for p in group.split("|")]


def _plan_commands(part: str, tmp_path: Path) -> list[list[str]]:
    """The python3 commands `gpu_plan.sh PART` runs, recorded by a stub python3 instead of run."""
    stub, log = tmp_path / "bin", tmp_path / "calls.txt"
    stub.mkdir(exist_ok=True)
    (stub / "python3").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" >> {log}\necho "--END--" >> {log}\n')
    (stub / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "OUT": str(tmp_path / "out"), "CALL_SECONDS": "60"}
    work = tmp_path / "tree"  # the steps' own shell (part 11 copies results through runs/) acts here, not in the repo
    work.mkdir(exist_ok=True)
    subprocess.run(["bash", str(PLAN), part], cwd=work, env=env, check=True, capture_output=True, timeout=120)
    calls = [c.strip("\n").split("\n") for c in log.read_text().split("--END--\n") if c.strip()]
    return [c for c in calls if c[0] not in ("-c",) and c[:3] != ["-m", "pip", "install"]]


def test_the_plan_has_its_parts():
    assert {"1", "3", "4", "4b", "5", "5b", "6b", "7", "8", "10", "10b", "11"} <= set(PARTS)


@pytest.mark.parametrize("part", PARTS)
def test_every_command_of_the_part_passes_its_dry_run(part, tmp_path, capsys):
    from sciml.data.recipes import load_recipe

    commands = _plan_commands(part, tmp_path)
    assert commands, f"part {part} runs no python command"
    for argv in commands:
        if argv[:2] == ["-m", "pytest"]:
            continue
        if argv[:3] == ["-m", "sciml.cli", "generate"]:  # the recipe and its overrides resolve
            recipe, rest = argv[3], argv[4:]
            load_recipe(recipe, overrides=[a for a in rest if "=" in a and not a.startswith("--")])
            continue
        script = Path(argv[0])
        assert script.parent.name == "benchmarks" and (ROOT / script).exists(), argv
        module = importlib.import_module(f"benchmarks.{script.stem}")
        module.main([*argv[1:], "--dry-run"])
        assert DRY_RUN_OK in capsys.readouterr().out, argv
