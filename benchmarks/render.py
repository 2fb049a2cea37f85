"""Render benchmarks/BENCHMARKS.md from benchmarks/results/*.json.

    python benchmarks/render.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = """# Benchmarks

Rendered by `python benchmarks/render.py` from `benchmarks/results/*.json`; each table says how
it was measured (command, device, date, commit). Do not edit by hand: rerun the script named in
the table and render again.

**Status (2026-11-25):** every table below was measured on a shared 2-core CPU at reduced scale
(`--small`); they show the scripts work and give CPU ratios, not the issues' GPU bars.

### GPU run plan (one H100; 30 device-minutes per session, 10 per command)

PINN accuracy runs share the GPU 9 at a time (a PINN step leaves an H100 mostly idle); a run the
cap stops is reported as such and resumes on the next call.

Each line is one device command, prefixed with `pip install -q --no-deps -e . &&`. After each
call, copy the returned `results/*.json` into `benchmarks/results/` (a later part of the same
script merges with it), then `python benchmarks/render.py`. The machine stays warm only 30 s
after a call: lines marked "warm" need the file the previous line left in `datasets/`, so issue
them back to back.

| session | command | est. min | issue: bar |
|---|---|---|---|
| A | `python -m benchmarks.bench_burgers` | 6 | 3: rel L2 <= 0.003 at s = 1024; generation + training < 10 min |
| A | `python benchmarks/bench_fno_speed.py --compile` | 8 | 5: step <= 1/3 of neuralop's, peak memory no higher |
| A | `PYTHONPATH=. python benchmarks/bench_datagen.py --parts darcy,ns_step,burgers,ns_accuracy` | 6 | 4: Darcy 1024 x 421^2 <= 10 s; NS vs CN dt=1e-4 <= 1e-3 at T = 50 |
| A | `PYTHONPATH=. python benchmarks/bench_pinn.py --parts speed,time_to_target` | 6 | 6: step <= 1/10 of DeepXDE's; time to 1e-2 |
| B | `PYTHONPATH=. python benchmarks/bench_datagen.py --parts ns_generate` (repeat until "complete") | 5-10 | 4: NS 1200 x T50 at 256^2 <= 15 min (stretch 10) |
| B (warm) | `python benchmarks/bench_operators.py --rows ns_fno2d_nu1e-3 --max-minutes 9` | 10 | 5: FNO-2D <= 0.0128 |
| B (warm) | `python benchmarks/bench_operators.py --rows ns_fno3d_nu1e-3 --max-minutes 9` | 10 | 5: FNO-3D <= 0.0086 |
| C | `python benchmarks/bench_operators.py --rows burgers_fno --max-minutes 9` | 10 | 5: Burgers <= 0.003 |
| C | `python benchmarks/bench_operators.py --rows darcy_fno --max-minutes 9` | 10 | 5: Darcy s = 85 <= 0.0108, at 421 <= 0.0098 |
| C | `python benchmarks/bench_operators.py --rows darcy_deeponet --max-minutes 9` | 10 | 5: DeepONet beside FNO |
| D | `PYTHONPATH=. python benchmarks/bench_pinn.py --parts accuracy --problems burgers,allen_cahn,convection --jobs 9 --max-minutes 9` | 10 | 6: Burgers <= 1e-3, Allen-Cahn <= 1e-2, convection <= 1e-2 (3 seeds each) |
| D | `PYTHONPATH=. python benchmarks/bench_pinn.py --parts accuracy --problems diffusion_reaction,poisson_lshape,wave --jobs 9 --max-minutes 9` | 10 | 6: the others, beside published figures |
| D | `python benchmarks/bench_operators.py --rows burgers_deeponet --max-minutes 9` | 10 | 5: DeepONet beside FNO |
| E | `sciml generate navier_stokes params.nu=1e-5 params.t_end=20 --max-minutes 9` (repeat until done) | 5-10 | 5: the nu = 1e-5 set |
| E (warm) | `python benchmarks/bench_operators.py --rows ns_fno2d_nu1e-5 --max-minutes 9` | 10 | 5: FNO-2D <= 0.1556 |
| E | `PYTHONPATH=. python benchmarks/bench_implicit.py` | 3 | 7: implicit memory flat in iterations; LM throughput |
| E | `python benchmarks/bench_precision.py` | 2 | 5: bf16 / TF32 accuracy equal to fp32's (Darcy FNO, same seed and epochs) |
| F | `PYTHONPATH=. python benchmarks/bench_optimizers.py --merge --tasks pinn_convection` (then the other tasks, one call each) | 25 | 8: full grid; best convection <= 1.94e-3 |

Operator rows are capped at 9 minutes of training so that loading, evaluation and start-up fit the
command's 10; a row that misses its bar records what a longer run reaches by resuming. A row stopped by its cap resumes: rerun the same command (PINN runs and `sciml train --resume`
continue from their checkpoints; `ns_generate` from its last finished batch).
"""


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def render_one(result: dict) -> str:
    lines = [f"## {result['title']}", ""]
    lines.append(
        f"`{result.get('command', '?')}` on {result.get('device', '?')}, {result.get('date', '?')}, "
        f"commit `{str(result.get('commit', '?'))[:12]}`, torch {result.get('torch', '?')}"
    )
    lines.append("")
    rows = result.get("rows", [])
    if rows:
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
        lines.append("")
    if result.get("notes"):
        lines += [result["notes"].strip(), ""]
    return "\n".join(lines)


def render(results_dir: Path = HERE / "results") -> str:
    parts = [HEADER]
    for path in sorted(results_dir.glob("*.json")):
        parts.append(render_one(json.loads(path.read_text())))
    return "\n".join(parts)


if __name__ == "__main__":
    (HERE / "BENCHMARKS.md").write_text(render())
    print(f"wrote {HERE / 'BENCHMARKS.md'}")
