"""results/<name>.json written in parts: rows and dict-valued extras of earlier parts are kept."""

import json

import pytest
import torch

import benchmarks.common as common


def test_a_part_keeps_the_earlier_parts_rows_and_extras_on_the_same_device(results_dir):
    key = lambda r: r["task"]  # noqa: E731
    common.write_result("t", title="T", rows=[{"task": "a", "v": 1}, {"task": "b", "v": 2}], device="cpu",
                        extra={"tasks": {"a": "note a", "b": "note b"}, "scale": "small"}, merge_key=key)
    common.write_result("t", title="T", rows=[{"task": "b", "v": 3}], device="cpu",
                        extra={"tasks": {"b": "note b2"}, "scale": "small"}, merge_key=key)
    out = json.loads((results_dir / "t.json").read_text())
    assert [(r["task"], r["v"]) for r in out["rows"]] == [("a", 1), ("b", 3)]
    assert all("measured" in r for r in out["rows"])  # each row says when it was measured
    assert out["tasks"] == {"a": "note a", "b": "note b2"} and out["scale"] == "small"


def test_without_merge_key_or_on_another_device_the_file_is_replaced(results_dir):
    common.write_result("t", title="T", rows=[{"task": "a"}], device="cpu", merge_key=lambda r: r["task"])
    common.write_result("t", title="T", rows=[{"task": "b"}], device="cpu")
    assert [r["task"] for r in json.loads((results_dir / "t.json").read_text())["rows"]] == ["b"]
    path = results_dir / "t.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "device": "NVIDIA H100 80GB HBM3"}))
    common.write_result("t", title="T", rows=[{"task": "c"}], device="cpu", merge_key=lambda r: r["task"])
    assert [r["task"] for r in json.loads(path.read_text())["rows"]] == ["c"]
    assert common.previous_result("t", "cpu") is not None


def test_rows_merged_from_runs_with_other_thread_counts_keep_their_own(results_dir, monkeypatch):
    key = lambda r: r["task"]  # noqa: E731
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    common.write_result("t", title="T", rows=[{"task": "a"}], device="cpu", merge_key=key)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    common.write_result("t", title="T", rows=[{"task": "b"}], device="cpu", merge_key=key)
    out = json.loads((results_dir / "t.json").read_text())
    assert {r["task"]: r["threads"] for r in out["rows"]} == {"a": 2, "b": 1}
    assert "threads per row" in out["device"] and "1 threads" not in out["device"]  # no one count claimed
    common.write_result("t", title="T", rows=[{"task": "a"}], device="cpu", merge_key=key)  # a at 1 too now
    out = json.loads((results_dir / "t.json").read_text())
    assert [r["threads"] for r in out["rows"]] == [1, 1] and out["device"].endswith("1 threads)")


def test_gpu_rows_carry_no_thread_count(results_dir, monkeypatch):
    monkeypatch.setattr(common, "device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    common.write_result("t", title="T", rows=[{"task": "a"}], merge_key=lambda r: r["task"])
    common.write_result("t", title="T", rows=[{"task": "b"}], merge_key=lambda r: r["task"])
    out = json.loads((results_dir / "t.json").read_text())
    assert out["device"] == "NVIDIA H100 80GB HBM3" and [r["task"] for r in out["rows"]] == ["a", "b"]
    assert not any("threads" in r for r in out["rows"])


def test_a_budget_inside_a_device_call_is_lowered_to_what_the_call_has_left(monkeypatch):
    import time

    monkeypatch.delenv(common.SESSION_DEADLINE_ENV, raising=False)
    assert common.minutes_left_in_session(8.0, reserve_s=60) == 8.0  # outside gpu_session.sh: as asked
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(int(time.time()) + 300))
    assert 3.9 < common.minutes_left_in_session(8.0, reserve_s=60) <= 4.0  # 300 s left, 60 s kept back
    assert common.minutes_left_in_session(2.0, reserve_s=60) == 2.0


def test_an_operator_row_with_too_little_call_left_is_skipped_and_the_measured_row_kept(results_dir, monkeypatch):
    import time

    import benchmarks.bench_operators as ops
    common.write_result("operators", title="T", rows=[{"row": "darcy_fno", "rel_l2": 0.009}], device="cpu",
                        merge_key=lambda r: r["row"])
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(int(time.time()) + ops.RESERVE_S + 20))
    ops.main(["--rows", "darcy_fno", "--out", str(results_dir / "runs")])  # would train for 20 s: skipped instead
    rows = json.loads((results_dir / "operators.json").read_text())["rows"]
    assert [(r["row"], r["rel_l2"]) for r in rows] == [("darcy_fno", 0.009)]
    assert not (results_dir / "runs").exists()


def test_pinn_accuracy_runs_start_only_with_time_left_in_the_call(tmp_path, monkeypatch):
    import time

    import benchmarks.bench_pinn as pinn
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(int(time.time()) + 50))  # 50 s, 45 of them kept back
    assert pinn.accuracy(["poisson_lshape"], [0], small=True, device="cpu", max_minutes=5, jobs=1,
                         out=str(tmp_path)) == []
    assert not any(tmp_path.iterdir())  # no run folder was started


def test_pinn_accuracy_keeps_the_finished_runs_when_one_fails(tmp_path, monkeypatch):
    """pool.map raised on the first failed run and rows were saved only once all nine had returned: one failure,
    or the call's end, lost the whole part's ~8.5 device-minutes."""
    import benchmarks.bench_pinn as pinn

    def run(problem, seed, *rest):
        if seed == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return {"problem": problem, "seed": seed, "rel_l2": 0.01 * (seed + 1), "seconds": 5.0, "cuda_graph": False}

    monkeypatch.setattr(pinn, "accuracy_run", run)
    seen = []
    rows = pinn.accuracy(["wave"], [0, 1, 2], small=True, device="cpu", max_minutes=5, jobs=1, out=str(tmp_path),
                         on_rows=lambda r: seen.append([dict(x) for x in r]))
    assert [(r["seeds"], r["failed_runs"]) for r in rows] == [(2, 1)]
    assert rows[0]["rel_l2_min"] == 0.01 and rows[0]["rel_l2_max"] == 0.03
    assert rows[0]["rel_l2_by_seed"] == "0: 0.01, 2: 0.03"
    assert [s[0]["seeds"] if s else 0 for s in seen] == [1, 1, 2]  # saved after every finished run
    monkeypatch.setattr(pinn, "accuracy_run", lambda *a: (_ for _ in ()).throw(RuntimeError("out of memory")))
    (row,) = pinn.accuracy(["wave"], [0, 1], small=True, device="cpu", max_minutes=5, jobs=1, out=str(tmp_path))
    assert (row["seeds"], row["failed_runs"], row["rel_l2_mean"]) == (0, 2, None)  # not left to an older row


def test_a_short_budget_asked_for_outside_a_device_call_stands(monkeypatch):
    """Outside gpu_session.sh, --max-minutes 0.5 skipped every operator row with a message about a
    device call that did not exist."""
    from benchmarks.common import SESSION_DEADLINE_ENV, SessionTimeShort, session_budget

    monkeypatch.delenv(SESSION_DEADLINE_ENV, raising=False)
    assert session_budget(0.5, reserve_s=75, at_least=1.0, what="row") == 0.5
    import time

    monkeypatch.setenv(SESSION_DEADLINE_ENV, str(time.time() + 60))  # one minute left, 75 s reserved
    with pytest.raises(SessionTimeShort, match="left in this device call"):
        session_budget(5.0, reserve_s=75, at_least=1.0, what="row")


def test_a_pinn_speed_run_replaces_every_speed_row():
    """A kept compile row showed its speed-up over a DeepXDE time no longer in the table (0.913 beside
    a DeepXDE row that made it 0.49)."""
    from benchmarks.bench_pinn import _merge_key

    speed = "Burgers Adam step, 3x20 tanh, 2540+80+160 points"
    assert _merge_key({"benchmark": speed, "library": "DeepXDE"}) == _merge_key({"benchmark": speed, "library": "sciml (jet)"})
    assert _merge_key({"benchmark": "accuracy: burgers", "library": None}) != _merge_key({"benchmark": "accuracy: wave"})


def test_fno_profiles_of_several_runs_share_one_file(tmp_path, monkeypatch):
    """Part 1's profiles in one file (a device call returns 8 files; it wrote 10), and part 1q run after it keeps
    part 1's cases (a per-process table rewrote the file with its own cases only)."""
    import benchmarks.bench_fno_speed as speed
    monkeypatch.setattr(speed, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(speed, "write_result_file", lambda name, text: (tmp_path / name).write_text(text) and tmp_path / name)
    monkeypatch.setattr(speed, "_PROFILES", {})
    step = {"sciml": lambda: torch.ones(4).sum()}
    speed.write_profile("darcy_85", step, torch.device("cpu"), n_steps=1)
    speed.write_profile("ns2d_64", step, torch.device("cpu"), n_steps=1)
    monkeypatch.setattr(speed, "_PROFILES", {})  # the next process
    speed.write_profile("burgers_1024", step, torch.device("cpu"), n_steps=1)
    text = (tmp_path / "fno_profiles.txt").read_text()
    assert [line for line in text.splitlines() if line.startswith("#### ")] == \
        ["#### darcy_85", "#### ns2d_64", "#### burgers_1024"]


def test_round_robin_runs_each_measure_once_a_round_in_order_and_reports_after_each():
    order, seen = [], []
    measures = {k: (lambda k=k: order.append(k) or len(order)) for k in ("a", "b")}
    runs = common.round_robin(measures, 3, after_round=lambda r: seen.append({k: list(v) for k, v in r.items()}))
    assert order == ["a", "b"] * 3 and runs == {"a": [1, 3, 5], "b": [2, 4, 6]}
    assert seen[0] == {"a": [1], "b": [2]} and seen[-1] == runs


def test_median_range_is_the_upper_median_with_the_rounded_min_and_max():
    assert common.median_range([3.0, 1.00004, 2.0, 4.12345]) == (3.0, [1.0, 4.123])
    assert common.paired_range([2.0, 3.0], [1.0, 4.0]) == [0.75, 2.0]
