"""results/<name>.json written in parts: rows and dict-valued extras of earlier parts are kept."""

import json

import pytest

common = pytest.importorskip("benchmarks.common")


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.delenv("OUT", raising=False)
    return tmp_path


def test_a_part_keeps_the_earlier_parts_rows_and_extras_on_the_same_device(results):
    key = lambda r: r["task"]  # noqa: E731
    common.write_result("t", title="T", rows=[{"task": "a", "v": 1}, {"task": "b", "v": 2}], device="cpu",
                        extra={"tasks": {"a": "note a", "b": "note b"}, "scale": "small"}, merge_key=key)
    common.write_result("t", title="T", rows=[{"task": "b", "v": 3}], device="cpu",
                        extra={"tasks": {"b": "note b2"}, "scale": "small"}, merge_key=key)
    out = json.loads((results / "t.json").read_text())
    assert [(r["task"], r["v"]) for r in out["rows"]] == [("a", 1), ("b", 3)]
    assert all("measured" in r for r in out["rows"])  # each row says when it was measured
    assert out["tasks"] == {"a": "note a", "b": "note b2"} and out["scale"] == "small"


def test_without_merge_key_or_on_another_device_the_file_is_replaced(results):
    common.write_result("t", title="T", rows=[{"task": "a"}], device="cpu", merge_key=lambda r: r["task"])
    common.write_result("t", title="T", rows=[{"task": "b"}], device="cpu")
    assert [r["task"] for r in json.loads((results / "t.json").read_text())["rows"]] == ["b"]
    path = results / "t.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "device": "NVIDIA H100 80GB HBM3"}))
    common.write_result("t", title="T", rows=[{"task": "c"}], device="cpu", merge_key=lambda r: r["task"])
    assert [r["task"] for r in json.loads(path.read_text())["rows"]] == ["c"]
    assert common.previous_result("t", "cpu") is not None
