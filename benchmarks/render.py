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
(`--small`); they show the scripts work and give CPU ratios, not the issues' GPU bars. Still to be
measured on one H100, each in one device command:

| issue | command | bar |
|---|---|---|
| 3 | `python -m benchmarks.bench_burgers` | rel L2 <= 0.003 at s = 1024, generation + training < 10 min |
| 4 | `PYTHONPATH=. python benchmarks/bench_datagen.py` | Darcy 1024 x 421^2 <= 10 s; NS 1200 x T50 at 256^2 <= 15 min; NS vs CN dt=1e-4 <= 1e-3 |
| 5 | `python benchmarks/bench_fno_speed.py`, `python benchmarks/bench_operators.py` | step time <= 1/3 of neuralop's; the FNO paper's accuracy rows in <= 10 min each |
| 6 | `PYTHONPATH=. python benchmarks/bench_pinn.py` | Burgers <= 1e-3, Allen-Cahn <= 1e-2, convection <= 1e-2; step time <= 1/10 of DeepXDE's |
| 7 | `PYTHONPATH=. python benchmarks/bench_implicit.py` | implicit backward memory flat in iterations; LM throughput at hard-constraint sizes |
| 8 | `PYTHONPATH=. python benchmarks/bench_optimizers.py` | full grid in one session; best convection <= 1.94e-3 |
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
