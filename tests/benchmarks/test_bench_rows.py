"""Every paper-scale benchmark row resolves before a GPU minute is spent on it."""

from pathlib import Path

import pytest

from benchmarks.bench_operators import ROOT, ROWS
from sciml.config import load_config
from sciml.data.recipes import load_recipe
from sciml.train.schema import OperatorConfig


def _stop(window, default):
    if window is None:
        return default
    return window[1] if isinstance(window, (tuple, list)) else (window % default) + 1


@pytest.mark.parametrize("row", sorted(ROWS))
def test_operator_row_config_and_recipe_resolve(row):
    config, overrides, *_ = ROWS[row]
    cfg = load_config(OperatorConfig, ROOT / "configs" / config, [*overrides, "training.max_minutes=10"])
    recipe = load_recipe(cfg.data.recipe, preset=cfg.data.preset, overrides=cfg.data.recipe_overrides)
    assert recipe.n_samples >= cfg.data.n_train + cfg.data.n_test, (recipe.n_samples, cfg.data.n_train, cfg.data.n_test)
    t_end = recipe.typed_params().model_dump().get("t_end")
    if t_end is not None:  # trajectories: the time windows must lie inside the saved times
        for window in (cfg.data.input_time, cfg.data.output_time):
            assert _stop(window, t_end) <= t_end, (row, window, t_end)


def test_nu_1e5_row_generates_the_nu_1e5_set():
    config, overrides, *_ = ROWS["ns_fno2d_nu1e-5"]
    cfg = load_config(OperatorConfig, Path(ROOT) / "configs" / config, overrides)
    params = load_recipe(cfg.data.recipe, overrides=cfg.data.recipe_overrides).typed_params()
    assert (params.nu, params.t_end) == (1e-5, 20)


def test_ns_generate_row_reports_partial_then_complete(tmp_path):
    from benchmarks.bench_datagen import ns_generate_rows

    tiny = dict(preset="tiny", overrides=("batch_size=4",))  # two batches
    first = ns_generate_rows("cpu", str(tmp_path), max_minutes=1e-9, **tiny)[0]
    assert "partial: 1/2" in first["metric"] and first["value"] > 0
    done, floor = ns_generate_rows("cpu", str(tmp_path), max_minutes=60, **tiny)
    assert done["note"].startswith("complete") and done["value"] > first["value"]
    # the floor counts the steps each batch took (recorded per sample in the file's diagnostics)
    import h5py
    with h5py.File(next(tmp_path.glob("*.h5")), "r") as f:
        steps = f["diagnostics/time_steps"][:]
    assert len(steps) == 8 and (steps[:4] == steps[0]).all() and (steps[4:] == steps[4]).all() and steps.min() > 0
    assert floor["task"] == "ns_generate_floor" and f"{(steps[0] + steps[4]) / 2:.0f} CFL steps per batch" in floor["note"]
    assert floor["value"] > 0  # not compared with the generation's time: two timings on a shared machine (it flaked)


def test_lbfgs_part_replays_the_loss_and_gradient_as_eager_mode_evaluates_it(simulate):
    # the GPU step of `gpu_plan.sh 3`: off CUDA every replay is checked against the captured call
    import torch

    from benchmarks.bench_pinn import lbfgs_ms_per_iteration
    from sciml.optim import LBFGS

    eager, graph = (lbfgs_ms_per_iteration(LBFGS, torch.device("cpu"), graph=g, warm=1, steps=1) for g in (False, True))
    assert graph["iterations"] == eager["iterations"] == 20
    assert graph["evaluations_per_iteration"] == eager["evaluations_per_iteration"]


@pytest.mark.parametrize("problem", ["burgers", "allen_cahn", "convection", "diffusion_reaction", "poisson_lshape", "wave"])
def test_gpu_accuracy_runs_replay_every_phase_but_the_soap_ones(problem):
    from benchmarks.bench_pinn import _graph_phases
    from sciml.config import load_yaml

    raw = load_yaml(ROOT / "configs" / problem / "pinn.yaml")
    names = [ph["optimizer"]["name"] for ph in raw["phases"]]
    assert _graph_phases(raw) == [name != "soap" for name in names]  # SOAP (pytorch-optimizer) steps on the host


def test_a_longer_run_than_one_call_plans_for_its_total_and_finishes_in_a_second_sitting(results_dir, monkeypatch):
    import json
    import time

    import benchmarks.bench_operators as ops
    import benchmarks.common as common

    tmp_path = results_dir
    monkeypatch.setattr(ops, "MIN_ROW_MINUTES", 0.0)
    args = ["--small", "--rows", "burgers_fno", "--out", str(tmp_path / "runs"), "--total-minutes", "10",
            "training.epochs=60"]
    # first call: 2 s of training left after the reserve once the data is made (the row makes it before it
    # fixes its budget), of a 10-minute plan that affords all 60 epochs
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + ops.RESERVE_S + 600))
    real_ensure = ops.ensure_dataset

    def data_then_2s_left(cfg, label):
        path = real_ensure(cfg, label)
        monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(time.time() + ops.RESERVE_S + 2))
        return path

    monkeypatch.setattr(ops, "ensure_dataset", data_then_2s_left)
    ops.main(args)
    first = json.loads((tmp_path / "operators_small.json").read_text())["rows"][0]
    assert first["row"] == "burgers_fno_10min" and first["stopped_early"] and first["epochs"] < 60
    assert first["planned_epochs"] == 60 and first["sittings"] == 1
    monkeypatch.setattr(ops, "ensure_dataset", real_ensure)
    monkeypatch.delenv(common.SESSION_DEADLINE_ENV)  # the next call: time enough
    ops.main([*args, "--resume"])
    second = json.loads((tmp_path / "operators_small.json").read_text())["rows"][0]
    assert not second["stopped_early"] and second["epochs"] == 60 and second["sittings"] == 2
    assert second["run_dir"] == first["run_dir"]


def test_small_runs_every_small_row_by_default_and_names_the_rows_without_one(capsys):
    """--small without --rows raised a RuntimeError traceback at the first Navier-Stokes row."""
    from benchmarks.bench_operators import main

    main(["--small", "--dry-run"])
    with pytest.raises(SystemExit):
        main(["--small", "--dry-run", "--rows", "burgers_fno,ns_fno2d_nu1e-3"])
    assert "rows ['ns_fno2d_nu1e-3'] have no --small variant" in capsys.readouterr().err
