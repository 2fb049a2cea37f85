"""The model configs this package owns parse with the trainer's schema and build their model."""

from pathlib import Path

import pytest
import torch

from sciml.config import load_config
from sciml.models import build_model, count_parameters
from sciml.train.schema import OperatorConfig

CONFIGS = Path(__file__).resolve().parents[3] / "configs"

# config -> (in_channels, out_channels, grid) of the data it is meant for
CASES = {
    "burgers/deeponet.yaml": (1, 1, (1024,)),
    "darcy/fno.yaml": (1, 1, (85, 85)),
    "darcy/deeponet.yaml": (1, 1, (85, 85)),
    "navier_stokes/fno2d.yaml": (10, 40, (24, 24)),  # 64x64 in the config; smaller here for time
    "navier_stokes/fno3d.yaml": (10, 40, (16, 16)),
    "ks/fno.yaml": (10, 20, (256,)),  # the autoregressive FNO in 1D, 20 steps from 10
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_builds_its_model(name):
    cfg = load_config(OperatorConfig, CONFIGS / name)
    cin, cout, grid = CASES[name]
    torch.manual_seed(0)
    model = build_model(cfg.model.name, in_channels=cin, out_channels=cout, n_dims=len(grid), **cfg.model.kwargs())
    if name.endswith("fno3d.yaml"):
        assert count_parameters(model) == 6_558_377, "paper FNO-3D: 6,558,537 parameters"
    x = torch.randn(1, cin, *grid)
    if hasattr(model, "prepare"):
        model.prepare(torch.randn(130, cin, *grid), torch.randn(130, cout, *grid))
    assert model(x).shape == (1, cout, *grid)


def test_pinn_mlp_is_built_by_name_and_equals_the_pinn_net():
    from sciml.pde.nets import MLP

    model = build_model("pinn_mlp", in_channels=2, out_channels=1, n_dims=1, width=16, depth=2, seed=3)
    ref = MLP(2, 1, width=16, depth=2, seed=3)
    x = torch.rand(5, 2)
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
