"""Each example users copy runs through its `main` at a small size and still shows what it claims.

hypergradient_ridge.py and hard_constraint_moe.py have their own tests (tests/solvers/test_hypergrad.py,
tests/regression/test_hard_constraint.py). The thresholds were measured on CPU, one thread, torch 2.13.0+cpu,
2026-11-27; the figures in each test's docstring are those measurements.
"""


def test_custom_pde_solves_helmholtz_on_the_holed_disk(load_example):
    """100 Adam + 5 L-BFGS steps on 200 + 80 points: rel. L2 0.044 (8.3e-3 at the example's size)."""
    metrics = load_example("custom_pde").main(adam_steps=100, lbfgs_steps=5, interior=200, boundary=80)
    assert metrics["rel_l2"] < 0.1, metrics


def test_custom_pde_inverse_recovers_the_diffusivity(load_example):
    """From D = 0.2 (71 % off), 60 Adam + 5 L-BFGS steps on 200 points: D = 0.69980 (rel. error 2.8e-4), u 1.7e-4."""
    metrics = load_example("custom_pde_inverse").main(adam_steps=60, lbfgs_steps=5, interior=200)
    assert metrics["param_D_rel_error"] < 2e-3, metrics
    assert metrics["rel_l2"] < 2e-3, metrics


def test_deq_implicit_backward_trains_further_than_one_step(load_example):
    """60 steps at width 16: final MSE 0.068 with the implicit backward, 0.104 with one step
    (at the example's 300 steps, width 32: 3.6e-5 against 4.7e-4)."""
    result = load_example("deq_fixed_point").main(steps=60, width=16)
    assert result["implicit"]["mse"] < 0.09, result
    assert result["implicit"]["mse"] < 0.8 * result["one_step"]["mse"], result


def test_lagrangian_pinn_follows_fast_convection_where_the_eulerian_fails(load_example):
    """beta = 30, 150 Adam steps, 300 interior points: Lagrangian 1.45e-2 (its X 7.0e-4), Eulerian 1.00."""
    ((lagrangian, eulerian),) = load_example("lagrangian_vs_eulerian").main(steps=150, betas=(30.0,), interior=300).values()
    assert lagrangian["rel_l2"] < 0.1 and lagrangian["rel_l2_X"] < 1e-2, lagrangian
    assert eulerian["rel_l2"] > 0.5, eulerian


def test_gradient_norm_weights_rescue_the_plain_pinn_on_helmholtz(load_example):
    """Plain MLP, seed 0, 300 steps on 256 interior points: rel. L2 3.44 with fixed weights, 1.49 with grad-norm ones."""
    main = load_example("pinn_net_options").main
    small = dict(steps=300, seeds=1, interior=256, variants=("plain",))
    (fixed,), (balanced,) = main(**small)["plain"], main(weights="grad_norm", **small)["plain"]
    assert fixed > 2.5 and balanced < 2.0 and balanced < 0.6 * fixed, (fixed, balanced)
