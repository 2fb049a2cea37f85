"""An operator row fixes its training budget after its data is there, and an error never replaces a result."""

import json
import types

import pytest

import benchmarks.bench_operators as ops
import benchmarks.common as common


@pytest.fixture
def clock(monkeypatch):
    """A fake wall clock for the device call's deadline: [now]; the call ends 10 minutes + the reserve from now."""
    import time

    now = [1_000_000.0]
    monkeypatch.setattr(common, "time", types.SimpleNamespace(time=lambda: now[0], perf_counter=time.perf_counter))
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(now[0] + ops.RESERVE_S + 600))
    return now


def _data_takes(monkeypatch, clock, seconds, made):
    import sciml.train.trainer as trainer

    def resolve(cfg, **_):  # a missing set made in `seconds` of the call
        clock[0] += seconds
        made.append(cfg.data.recipe)
        return "data.h5"

    monkeypatch.setattr(trainer, "resolve_dataset", resolve)


class _Trained(Exception):
    pass


def test_the_budget_is_what_is_left_after_the_data_is_made(results_dir, clock, monkeypatch):
    import sciml.train.trainer as trainer

    made, budgets = [], []
    _data_takes(monkeypatch, clock, 300, made)  # 5 of the call's 10 minutes go to the data

    def train(cfg, **_):
        budgets.append(cfg.training.max_minutes)
        raise _Trained

    monkeypatch.setattr(trainer, "train", train)
    with pytest.raises(_Trained):
        ops.run_row("darcy_fno", max_minutes=8, small=False, extra=[], out_root=str(results_dir / "runs"))
    assert made and budgets == [5.0]  # not the 8 minutes there were before the data was made


def test_a_row_whose_data_leaves_too_little_of_the_call_is_skipped_and_the_measured_row_kept(
        results_dir, clock, monkeypatch, capsys):
    import sciml.train.trainer as trainer

    common.write_result("operators", title="T", rows=[{"row": "darcy_fno", "rel_l2": 0.009}],
                        merge_key=lambda r: r["row"])
    made = []
    _data_takes(monkeypatch, clock, 570, made)  # 30 s of training would be left
    monkeypatch.setattr(trainer, "train", lambda cfg, **_: pytest.fail("trained past the call's end"))
    ops.main(["--rows", "darcy_fno", "--max-minutes", "8", "--out", str(results_dir / "runs")])
    assert made
    out = capsys.readouterr().out
    assert "skipped darcy_fno: 0.5 min left in this device call" in out
    rows = json.loads((results_dir / "operators.json").read_text())["rows"]
    assert [(r["row"], r.get("rel_l2")) for r in rows] == [("darcy_fno", 0.009)]


def test_a_row_with_too_little_left_from_the_start_makes_no_data(results_dir, clock, monkeypatch):
    made = []
    _data_takes(monkeypatch, clock, 0, made)
    clock[0] += 570
    with pytest.raises(ops.SessionTimeShort):
        ops.run_row("darcy_fno", max_minutes=8, small=False, extra=[], out_root=str(results_dir / "runs"))
    assert made == []


def test_a_failed_row_is_printed_and_does_not_replace_a_measured_row(results_dir, monkeypatch, capsys):
    common.write_result("operators", title="T", rows=[{"row": "darcy_fno", "rel_l2": 0.009},
                                                      {"row": "burgers_fno", "error": "an earlier failure"}],
                        merge_key=lambda r: r["row"])

    def fails(name, **_):
        raise RuntimeError(f"{name} broke")

    monkeypatch.setattr(ops, "run_row", fails)
    ops.main(["--rows", "darcy_fno,burgers_fno,darcy_deeponet", "--out", str(results_dir / "runs")])
    out = capsys.readouterr().out
    assert "darcy_fno broke" in out and "kept the measured row 'darcy_fno'" in out
    rows = {r["row"]: r for r in json.loads((results_dir / "operators.json").read_text())["rows"]}
    assert rows["darcy_fno"]["rel_l2"] == 0.009 and "error" not in rows["darcy_fno"]  # the result stays
    assert rows["burgers_fno"]["error"] == "RuntimeError: burgers_fno broke"  # an error replaces only an error
    assert rows["darcy_deeponet"]["error"] == "RuntimeError: darcy_deeponet broke"  # or stands where there was none


@pytest.mark.parametrize("row", ["burgers_fno", "burgers_deeponet", "darcy_fno", "darcy_deeponet"])
def test_a_small_rows_step_schedule_decays_within_its_epochs(row, tmp_path):
    """--small rows train 5 epochs; the configs' step_size of 100 never decayed the lr (and warned)."""
    cfg, _ = ops.row_config(row, ["training.max_minutes=1"], label=row, out_root=str(tmp_path), small=True, extra=[])
    assert cfg.schedule.name != "step" or cfg.schedule.step_size < cfg.training.epochs


@pytest.mark.parametrize("row, grid", [("burgers_deeponet", 256), ("darcy_deeponet", 29)])
def test_a_small_deeponet_rows_sensors_are_its_tiny_grid(row, grid, tmp_path):
    """--small trained the configs' 1024 (85) sensors on the tiny presets' 256 (29) points, values repeated;
    training now refuses more sensors than grid points."""
    cfg, _ = ops.row_config(row, ["training.max_minutes=1"], label=row, out_root=str(tmp_path), small=True, extra=[])
    assert cfg.model.kwargs()["sensors"] == grid
