"""PINN time to target inside a device call: every variant capped at what the call has left, a capped or
interrupted run still writes its row, and DeepXDE's capped figure is its own last check, not the cap."""

import json
import subprocess
import time

import pytest

import benchmarks.bench_pinn as pinn
import benchmarks.common as common
BENCH = "Burgers wall time to rel. L2 <= 0.01"
EAGER = "sciml, configs/burgers/pinn.yaml"


def test_the_cap_is_what_the_call_has_left(monkeypatch):
    monkeypatch.delenv(common.SESSION_DEADLINE_ENV, raising=False)
    assert pinn.ttt_cap(None) is None and pinn.ttt_cap(240) == 240  # outside a device call: as asked
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + pinn.TTT_RESERVE_S + 100))
    assert 98 < pinn.ttt_cap(None) <= 100 and pinn.ttt_cap(60) == 60
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + pinn.TTT_RESERVE_S + 10))
    with pytest.raises(pinn.SessionTimeShort):
        pinn.ttt_cap(None)


def _fake_fit(monkeypatch, *, records, end):
    """sciml.train.pinn.fit replaced: reports `records` (seconds, rel_l2) to `progress`, then `end()`."""
    import sciml.train.pinn as trainer

    seen = {}

    def fit(problem, cfg, progress=None, **_):
        seen["max_minutes"] = cfg.max_minutes
        for i, (seconds, err) in enumerate(records):
            progress({"phase": 0, "step": 25 * (i + 1), "seconds": seconds, "rel_l2": err})
        return end()

    monkeypatch.setattr(trainer, "fit", fit)
    monkeypatch.setattr(trainer, "load_problem", lambda cfg: None)
    return seen


def test_a_capped_sciml_run_says_not_reached_by_its_time_with_the_error_at_the_cap(monkeypatch):
    from types import SimpleNamespace

    seen = _fake_fit(monkeypatch, records=[(10.0, 0.5), (59.0, 0.05)],
                     end=lambda: SimpleNamespace(metrics={"seconds": 60.2, "rel_l2": 0.04, "stopped_early": True}))
    row = pinn.sciml_time_to_target(1e-2, "cpu", cap_seconds=60.0)
    assert seen["max_minutes"] == 1.0
    assert row["reached"] is False and row["stopped_at_cap"] and row["cap_s"] == 60.0
    assert row["rel_l2"] == 0.04 and row["note"].startswith("not reached by 60 s")


def test_the_cap_really_stops_the_trainer(monkeypatch):
    # configs/burgers/pinn.yaml on the CPU for 2 s: far from 1e-2, stopped by the cap with an error to report
    row = pinn.sciml_time_to_target(1e-2, "cpu", cap_seconds=2.0)
    assert row["reached"] is False and row["stopped_at_cap"] and 0 < row["rel_l2"] < 10
    assert row["seconds"] < 30


def test_an_interrupted_variant_writes_its_row_and_the_command_still_stops(results_dir, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    _fake_fit(monkeypatch, records=[(10.0, 0.5), (20.0, 0.2)], end=interrupted)
    with pytest.raises(KeyboardInterrupt):
        pinn.main(["--parts", "time_to_target", "--ttt", "eager,compile_graph"])
    rows = json.loads((results_dir / "pinn.json").read_text())["rows"]
    assert [r["library"] for r in rows] == [EAGER]  # the next variant did not start
    assert rows[0]["interrupted"] and rows[0]["seconds"] == 20.0 and rows[0]["rel_l2"] == 0.2
    assert "not reached by 20 s" in rows[0]["note"]


def test_a_variant_with_too_little_call_left_is_skipped_and_its_row_kept(results_dir, monkeypatch, capsys):
    common.write_result("pinn", title="T", rows=[{"benchmark": BENCH, "library": EAGER, "seconds": 300.0, "reached": True}],
                        device="cpu", merge_key=lambda r: (r["benchmark"], r.get("library")))
    _fake_fit(monkeypatch, records=[], end=lambda: pytest.fail("ran with no time left"))
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + pinn.TTT_RESERVE_S + 5))
    pinn.main(["--parts", "time_to_target", "--ttt", "eager"])
    assert "skipped sciml, configs/burgers/pinn.yaml" in capsys.readouterr().out
    rows = json.loads((results_dir / "pinn.json").read_text())["rows"]
    assert [(r["library"], r["seconds"]) for r in rows] == [(EAGER, 300.0)]


def test_a_capped_row_does_not_replace_a_row_that_reached_the_target_later_than_the_cap(results_dir, monkeypatch):
    from types import SimpleNamespace

    common.write_result("pinn", title="T", rows=[{"benchmark": BENCH, "library": EAGER, "seconds": 300.0, "reached": True}],
                        device="cpu", merge_key=lambda r: (r["benchmark"], r.get("library")))
    _fake_fit(monkeypatch, records=[(50.0, 0.05)],
              end=lambda: SimpleNamespace(metrics={"seconds": 60.0, "rel_l2": 0.04, "stopped_early": True}))
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + pinn.TTT_RESERVE_S + 60))
    pinn.main(["--parts", "time_to_target", "--ttt", "eager"])
    rows = json.loads((results_dir / "pinn.json").read_text())["rows"]
    assert [(r["library"], r["seconds"], r["reached"]) for r in rows] == [(EAGER, 300.0, True)]


def test_deepxde_stopped_at_its_cap_reports_its_last_check_not_the_cap(monkeypatch):
    progress = [{"seconds": 101.5, "rel_l2": 0.03, "adam_steps": 15000},
                {"seconds": 180.25, "rel_l2": 0.0215, "adam_steps": 15000, "lbfgs_iters": 500}]
    text = "".join(f"PROGRESS {json.dumps(p)}\n" for p in progress)

    def stopped(script, args, gpu, timeout):
        raise subprocess.TimeoutExpired(["python"], timeout, output=text.encode())

    monkeypatch.setattr(pinn, "_run_deepxde", stopped)
    row = pinn.deepxde_time_to_target(1e-2, 15000, gpu=False, cap_seconds=240)
    assert row["seconds"] == 180.25 and row["cap_s"] == 240 and row["last_rel_l2"] == 0.0215
    assert row["reached"] is False and row["stopped_at_cap"] and row["lbfgs_iters"] == 500
    assert "start-up" in row["note"] and "not reached by 180 s" in row["note"]
    monkeypatch.setattr(pinn, "_run_deepxde", lambda *a, **k: (_ for _ in ()).throw(
        subprocess.TimeoutExpired(["python"], 240, output=b"")))
    row = pinn.deepxde_time_to_target(1e-2, 15000, gpu=False, cap_seconds=240)
    assert row["seconds"] is None and "no check within the 240 s cap" in row["note"]


def test_deepxde_speed_keeps_the_device_it_reports(monkeypatch):
    monkeypatch.setattr(pinn, "_run_deepxde", lambda *a, **k: {"ms_per_step": 1.5, "device": "cuda:0"})
    assert pinn.deepxde_ms_per_step(10, 1, 1, gpu=True) == {"ms_per_step": 1.5, "device": "cuda:0"}
    assert '"device": str(torch.get_default_device())' in pinn.DDE_TARGET_SCRIPT
