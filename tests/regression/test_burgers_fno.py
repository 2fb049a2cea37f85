"""Accuracy regression: FNO on Burgers (nu = 0.1, the FNO benchmark's physics) at CPU scale.

Data are generated in the test (96 samples at s = 256, trained at s = 128); the threshold is
pinned from a measured run with about 2x headroom, so a real accuracy drop fails it.
"""

import pytest

from sciml.config import validate
from sciml.train.schema import OperatorConfig
from sciml.train.trainer import train

# Measured 2026-11-27 (at 7471d7b), CPU (1 thread), torch 2.13: test rel L2 = 0.00739 after 30 epochs
# (0.00771 on 2026-11-25).
THRESHOLD = 0.015


@pytest.mark.slow
def test_burgers_fno_small_scale_accuracy(tmp_path):
    cfg = validate(OperatorConfig, {
        "seed": 0,
        "data": {"recipe": "burgers", "preset": "tiny", "root": str(tmp_path / "data"),
                 "n_train": 64, "n_test": 32, "resolution": 128},
        "model": {"name": "fno", "modes": 16, "width": 32},
        "optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine"},
        "training": {"epochs": 30, "batch_size": 8, "eval_every": 10, "progress": False, "plot": False},
        "output": {"root": str(tmp_path / "runs")},
    })
    _, final = train(cfg)
    print(f"Burgers FNO small-scale test rel L2: {final['test_rel_l2']:.5f} (threshold {THRESHOLD})")
    assert final["test_rel_l2"] < THRESHOLD
