"""bench_implicit: the backward is timed on its own (never a clamped difference of two noisy medians), and a
run cut short keeps the rows of the existing file it did not measure."""

import json
import types

import pytest
import torch

import benchmarks.bench_implicit as bi
import benchmarks.common as common


def test_the_backward_is_timed_apart_from_the_forward_under_drift(monkeypatch):
    """A fake clock: the machine gets faster during the run (each forward 20 % faster than the one before), a
    backward costs 3 ms: a later forward + backward minus an earlier forward is negative."""
    now, forwards, depth = [0.0], [0], [0]
    clock = types.SimpleNamespace(perf_counter=lambda: now[0], time=lambda: now[0])
    monkeypatch.setattr(common, "time", clock)
    monkeypatch.setattr(bi, "time", clock, raising=False)
    real_fp, real_grad = bi.fixed_point, torch.autograd.grad

    def fixed_point(*args, **kw):
        forwards[0] += 1
        now[0] += 0.010 * 0.8 ** forwards[0]
        return real_fp(*args, **kw)

    def grad(*args, **kw):  # only the outer call costs: the implicit backward calls grad inside
        depth[0] += 1
        try:
            if depth[0] == 1:
                now[0] += 0.003
            return real_grad(*args, **kw)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(bi, "fixed_point", fixed_point)
    monkeypatch.setattr(torch.autograd, "grad", grad)
    rows = bi.fixed_point_rows(torch.device("cpu"), batch=4, width=8, iters=(3,), repeat=2)
    assert [r["mode"] for r in rows] == ["implicit", "unrolled"]
    for r in rows:
        assert r["backward_ms"] == pytest.approx(3.0)
        assert r["backward_over_forward"] > 0 and r["backward_ms_range"] == [3.0, 3.0]


def test_a_run_cut_short_keeps_the_rows_it_did_not_measure(results_dir, monkeypatch):
    def fp_row(mode, K):
        return {"part": "fixed_point", "mode": mode, "iterations": K, "batch": 32, "width": 128, "forward_ms": 1.0}

    lm_row = {"part": "lm", "jacobian": "analytic", "problems": 16, "N": 16, "m": 2000, "solve_ms": 1.0}
    common.write_result("implicit_small", title="T", device="cpu", rows=[fp_row("implicit", 25), lm_row])
    monkeypatch.setattr(bi, "fixed_point_rows", lambda *a, **k: [fp_row("implicit", 25)])
    monkeypatch.setattr(bi, "lm_rows", lambda *a, **k: [])  # killed before its first LM row
    bi.main(["--small", "--threads", "1"])
    rows = json.loads((results_dir / "implicit_small.json").read_text())["rows"]
    assert sorted(r["part"] for r in rows) == ["fixed_point", "lm"]
    assert all(r["threads"] == 1 for r in rows)
