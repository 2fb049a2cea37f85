"""PI-HC learns an operator from the PDE alone (examples/hard_constraint_moe.py at a CPU size)."""

import pytest
import torch

SMALL = dict(n_train=32, n_test=8, batch=4, n_basis=8, width=16, modes=(8, 6), points=60, grid={"nx": 32, "nt": 17})


@pytest.fixture(scope="module")
def example(load_example):
    return load_example("hard_constraint_moe")


def test_hard_constraint_operator_learns_burgers_from_the_residual_alone(example):
    """Burgers at 32 x 17, no solution data: test rel. L2 0.909 after one step, 0.297 after 150
    (measured 2026-11-26, CPU, one thread, 4 s; 0.305 on the previous session's CPU; 0.294 on another), against
    persistence's 0.495 (u0 copied forward to every time, from the same test samples)."""
    from sciml.train.losses import relative_l2_per_sample

    result = example.train("hard", steps=150, **SMALL)
    assert result["solve_failures"] == 0
    data = example.burgers(**SMALL["grid"]).make_data(SMALL["n_train"] + SMALL["n_test"], 0)  # train()'s data, seed 0
    test = slice(SMALL["n_train"], None)
    assert torch.equal(data.x, data.x[..., :1].expand_as(data.x))  # the input is u0 at every time: persistence
    persistence = relative_l2_per_sample(data.x[test], data.y[test]).mean().item()
    # measured 0.59 to 0.62 of persistence: the bar asks for a clear win over copying u0 forward
    assert result["test_rel_l2"] < min(0.40, 0.7 * persistence), (result, persistence)
