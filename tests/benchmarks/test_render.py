"""BENCHMARKS.md from results/*.json: the commit's -dirty marker survives, and no cell breaks a table."""

import json

import benchmarks.common as common
import benchmarks.render as render

DIRTY = "e13a56cd980f61b782fb0aaae69d531217ef0b47-dirty"


def test_a_short_commit_keeps_the_dirty_marker():
    assert render.short_commit(DIRTY) == "e13a56cd980f-dirty"
    assert render.short_commit(DIRTY, 10) == "e13a56cd98-dirty"
    assert render.short_commit("e13a56cd980f61b782fb0aaae69d531217ef0b47") == "e13a56cd980f"
    assert render.short_commit("unknown") == "unknown"


def test_the_table_line_shows_a_dirty_tree(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"title": "T", "command": "python3 x.py", "device": "cpu",
                                                 "date": "2026-11-26", "commit": DIRTY, "rows": [{"a": 1}]}))
    assert "commit `e13a56cd980f-dirty`" in render.render(tmp_path)


def test_rows_are_stamped_with_the_dirty_marker_when_merged(results_dir, monkeypatch):
    monkeypatch.setattr(common, "git_commit", lambda: DIRTY)
    key = lambda r: r["k"]  # noqa: E731
    common.write_result("t", title="T", rows=[{"k": "a"}], device="cpu", merge_key=key)
    common.write_result("t", title="T", rows=[{"k": "b"}], device="cpu", merge_key=key)
    rows = json.loads((results_dir / "t.json").read_text())["rows"]
    assert [r["measured"].split()[1] for r in rows] == ["e13a56cd98-dirty"] * 2


def test_a_cell_with_a_pipe_or_a_line_break_stays_in_its_cell(tmp_path):
    error = "RuntimeError: a | b\nsecond line\r\nthird"
    (tmp_path / "t.json").write_text(json.dumps({"title": "T", "rows": [{"row": "x|y", "error": error, "v": 0.5}]}))
    lines = render.render(tmp_path).splitlines()
    start = lines.index("## T")
    table = [ln for ln in lines[start:] if ln.startswith("|")]
    assert len(table) == 3  # header, rule, the one row: nothing spilled onto a line of its own
    assert table[2] == r"| x\|y | RuntimeError: a \| b<br>second line<br>third | 0.5 |"
    # every line of the table has as many unescaped separators as the header
    count = lambda ln: len(ln.replace(r"\|", "")) - len(ln.replace(r"\|", "").replace("|", ""))  # noqa: E731
    assert {count(ln) for ln in table} == {count(table[0])}


def test_the_rendered_page_names_the_plan_parts_that_exist():
    import re
    from pathlib import Path

    plan = (Path(render.__file__).parent / "gpu_plan.sh").read_text()
    parts = {p for group in re.findall(r"^\s+([0-9a-z|]+)\)", plan, flags=re.M) for p in group.split("|")}
    named = set(re.findall(r"^\| [^|]+ \| `([0-9a-z]+)`", render.HEADER, flags=re.M))
    assert {"3b", "4c"} <= named and named <= parts
