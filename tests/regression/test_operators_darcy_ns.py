"""Accuracy regressions at CPU scale for the operator configs of issue 5: Darcy (FNO, DeepONet)
and Navier-Stokes (autoregressive FNO-2D). Data are generated in the tests; thresholds are pinned
from measured runs (2026-11-25, CPU, 1 thread, torch 2.13) with about 2x headroom.
"""

import pytest

from sciml.config import validate
from sciml.train.schema import OperatorConfig
from sciml.train.trainer import train

DARCY_DATA = {"recipe": "darcy", "recipe_overrides": ["n_samples=140", "batch_size=70", "params.resolution=29"],
              "n_train": 100, "n_test": 40}
DARCY_MODELS = {
    # measured 0.0366 after 60 epochs (2026-11-27, at 7471d7b; 0.0365 on 2026-11-25)
    "fno": ({"name": "fno", "modes": 8, "width": 24, "padding": 0.1, "grid_embedding": "closed"}, 0.07),
    # measured 0.0892 after 60 epochs (CNN branch, POD trunk)
    "deeponet": ({"name": "deeponet", "sensors": 29, "basis": 64, "width": 64, "depth": 2, "branch": "cnn",
                  "trunk": "pod", "coordinates": "closed"}, 0.18),
}


def _train(tmp_path, data, model, epochs, batch_size):
    cfg = validate(OperatorConfig, {
        "seed": 0, "data": {**data, "root": str(tmp_path / "data")}, "model": model,
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4}, "schedule": {"name": "cosine"},
        "training": {"epochs": epochs, "batch_size": batch_size, "eval_every": 10, "progress": False, "plot": False},
        "output": {"root": str(tmp_path / "runs")},
    })
    return train(cfg)[1]["test_rel_l2"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(DARCY_MODELS))
def test_darcy_operator_accuracy(tmp_path, kind):
    model, threshold = DARCY_MODELS[kind]
    err = _train(tmp_path, DARCY_DATA, model, epochs=60, batch_size=10)
    print(f"Darcy {kind} test rel L2: {err:.4f} (threshold {threshold})")
    assert err < threshold


@pytest.mark.slow
def test_darcy_fno_trained_coarse_is_best_on_a_finer_grid_with_its_own_padding(tmp_path, monkeypatch):
    # trained at 15 from a set stored at 29, the FNO evaluates at 29 (as Darcy's 85 -> 421 row does);
    # padding 0.2 gives 2 points at 15 and 5 at 29 (one period, 17/14 = 34/28 domain lengths), and
    # the error at 29 must be lowest there: one point more or less moves the kernel and the error
    from sciml.models.fno import FNO
    from sciml.train.trainer import evaluate_run

    cfg = validate(OperatorConfig, {
        "seed": 0, "data": {**DARCY_DATA, "resolution": 15, "root": str(tmp_path / "data")},
        "model": {"name": "fno", "modes": 6, "width": 24, "padding": 0.2, "grid_embedding": "closed"},
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4}, "schedule": {"name": "cosine"},
        "training": {"epochs": 60, "batch_size": 10, "eval_every": 20, "progress": False, "plot": False},
        "output": {"root": str(tmp_path / "runs")}})
    run, final = train(cfg)
    own = FNO.pad_sizes

    def err_at_29(shift):
        monkeypatch.setattr(FNO, "pad_sizes", lambda self, grid: tuple(p + shift * (n == 29) for p, n in
                                                                       zip(own(self, grid), grid)))
        return evaluate_run(run.path, resolutions=[29], which="last", device="cpu")[0]["rel_l2"]

    errs = {shift: err_at_29(shift) for shift in (-1, 0, 1)}
    print(f"Darcy FNO trained at 15 ({final['test_rel_l2']:.4f}), at 29 with its own padding -1 / +0 / +1 points: "
          + " / ".join(f"{e:.4f}" for e in errs.values()))
    assert errs[0] < min(errs[-1], errs[1])  # measured 0.0945 / 0.0806 / 0.1204
    assert errs[0] < 2.5 * final["test_rel_l2"]  # measured 0.0806 vs 0.0439 at 15


@pytest.mark.slow
def test_navier_stokes_fno2d_rollout_accuracy(tmp_path):
    # nu = 1e-3 at 32^2 (simulated at 64^2): w at t = 1..10 -> rollout of t = 11..15
    data = {"recipe": "navier_stokes", "preset": "small", "recipe_overrides": ["n_samples=48", "batch_size=24"],
            "n_train": 24, "n_test": 8, "inputs": ["w"], "outputs": ["w"], "input_time": [0, 10],
            "output_time": [10, 15], "normalize_inputs": "none", "normalize_outputs": "none"}
    err = _train(tmp_path, data, {"name": "fno2d_time", "modes": 8, "width": 20}, epochs=30, batch_size=4)
    print(f"Navier-Stokes FNO-2D test rel L2: {err:.4f} (threshold 0.06)")
    assert err < 0.06  # measured 0.0314 after 30 epochs
