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


def _plan_steps(part: str, tmp_path: Path) -> tuple[int, list[str]]:
    """(seconds, steps) that `gpu_plan.sh PART` hands gpu_session.sh, recorded by a stub session script."""
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir(exist_ok=True)
    (plan_dir / "gpu_plan.sh").write_text(PLAN.read_text())
    log = tmp_path / "steps.bin"
    (plan_dir / "gpu_session.sh").write_text(f'printf "%s\\0" "$@" > {log}\n')
    env = {k: v for k, v in os.environ.items() if k != "CALL_SECONDS"}
    subprocess.run(["bash", str(plan_dir / "gpu_plan.sh"), part], env=env, check=True, capture_output=True, timeout=60)
    seconds, *steps = log.read_text().rstrip("\0").split("\0")
    return int(seconds), steps


def test_parts_3b_and_4c_exist_and_the_usage_line_names_every_part(tmp_path):
    assert {"3b", "4c"} <= set(PARTS)
    usage = re.search(r"gpu_plan\.sh \{([^}]*)\}", PLAN.read_text()).group(1).split(",")
    assert sorted(usage) == sorted(PARTS)


def test_part_3b_runs_sciml_time_to_target_in_every_mode_at_one_commit_and_part_3_leaves_eager_to_it(tmp_path):
    """3b remeasures graph mode beside eager and compiled: its row of record came from a commit before the hard
    transform's jets changed both the code path and the trajectory."""
    _, steps3 = _plan_steps("3", tmp_path)
    _, steps3b = _plan_steps("3b", tmp_path)
    assert steps3b == ["python3 benchmarks/bench_pinn.py --parts time_to_target --ttt graph,eager,compile_graph"]
    assert not any("eager" in s or "compile_graph" in s for s in steps3)


def test_a_part_and_its_follow_up_fit_one_session_with_the_machines_start(tmp_path):
    """5 + 5b, 6 + 6b and 10 + 10b run on one warm machine: with ~90 s of start they must fit 15 device-minutes
    (10 + 10b asked 300 + 580 s)."""
    for first, second in (("5", "5b"), ("6", "6b"), ("10", "10b")):
        total = _plan_steps(first, tmp_path)[0] + _plan_steps(second, tmp_path)[0]
        assert total + 90 <= 900, (first, second, total)


def test_a_part_with_several_operator_rows_fits_every_row_and_its_reserve_in_its_call(tmp_path):
    """A part whose rows are budgeted in full (more than one row): the rows' minutes and bench_operators'
    reserve per row must fit the call, or the last rows are starved or skipped (old part 4: 9.5 minutes)."""
    from benchmarks.bench_operators import RESERVE_S

    checked = []
    for part in PARTS:
        seconds, steps = _plan_steps(part, tmp_path)
        ops = [s for s in steps if "bench_operators.py" in s]
        rows = [(len(re.search(r"--rows (\S+)", s).group(1).split(",")),
                 float(re.search(r"--max-minutes (\S+)", s).group(1))) for s in ops]
        if sum(n for n, _ in rows) < 2:  # one row: its budget is what the call has left
            continue
        assert len(ops) == len(steps), f"part {part}: operator rows share their call with other steps"
        assert sum(n * (60 * minutes + RESERVE_S) for n, minutes in rows) <= seconds, (part, rows, seconds)
        checked.append(part)
    assert {"4", "4c"} <= set(checked)


def _run_step_interrupted(step: str, tree: Path, python_body: str, after_s: float) -> None:
    stub = tree / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "python3").write_text("#!/bin/bash\n" + python_body)
    (stub / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    # as gpu_session.sh runs a step: the deadline's SIGINT to the whole group, KILL 15 s later
    subprocess.run(["timeout", "--signal=INT", "--kill-after=15", str(after_s), "bash", "-c", step], cwd=tree, env=env,
                   capture_output=True, timeout=60)


def test_part_11_hands_its_results_on_through_runs_even_when_the_deadline_interrupts_it(tmp_path):
    _, (step,) = _plan_steps("11", tmp_path)
    tree = tmp_path / "tree"
    (tree / "benchmarks" / "results").mkdir(parents=True)
    (tree / "runs").mkdir()
    (tree / "runs" / "optimizers.json").write_text('{"rows": ["first call"]}')
    # the benchmark reads the first call's file, writes its own, then is stopped by the deadline mid-row
    body = ('grep -q "first call" benchmarks/results/optimizers.json || exit 3\n'
            'echo \'{"rows": ["first call", "second call"]}\' > benchmarks/results/optimizers.json\n'
            'exec sleep 30\n')
    _run_step_interrupted(step, tree, body, after_s=2)
    assert "second call" in (tree / "runs" / "optimizers.json").read_text()
    # and when it ends on its own
    _run_step_interrupted(step, tree, 'echo \'{"rows": ["third"]}\' > benchmarks/results/optimizers.json\n', after_s=20)
    assert "third" in (tree / "runs" / "optimizers.json").read_text()
