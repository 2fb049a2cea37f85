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
