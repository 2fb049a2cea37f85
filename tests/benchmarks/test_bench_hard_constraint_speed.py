"""Hard-constraint speed: the variants are timed round-robin, so a drifting machine reaches each alike, and
each row records the spread of its time and of its ratio to hc."""

import json

import torch

import benchmarks.bench_hard_constraint as hc


def test_variants_are_timed_round_robin_under_drift(results_dir, monkeypatch):
    """Two equally fast variants on a machine that gets 10 % faster with every call: timed in sequence, the
    first looked 1.5x slower."""
    order = []

    class Layer:
        def __init__(self, name):
            self.name = name
            self.last_stats = {"num_steps": torch.tensor([3]), "status": torch.tensor([0])}

        def __call__(self, basis, data):
            order.append(self.name)
            return basis[..., :1] * 1.0

    def time_call(fn, *, device=None, warmup=3, repeat=10):
        for _ in range(warmup):
            fn()
        fn()
        return 0.010 * 0.9 ** len(order)

    monkeypatch.setattr(hc, "layer_for", lambda pde, variant, n, grid: Layer(variant))
    monkeypatch.setattr(hc, "time_call", time_call)
    hc.speed("burgers", ["hc", "moe"], [400], (16, 5), 2, 4, small=True)
    timed = [name for i, name in enumerate(order) if i not in (0, 2)]  # the first round's warm-ups left out
    assert timed == ["hc", "moe"] * hc.SPEED_ROUNDS
    rows = json.loads((results_dir / "hard_constraint_small.json").read_text())["rows"]
    moe = next(r for r in rows if r["variant"] == "moe")
    assert 1.0 <= moe["hc_over_this"] < 1.2 and len(moe["hc_over_this_range"]) == 2
    assert all(r["step_ms_range"][0] <= r["step_ms"] <= r["step_ms_range"][1] for r in rows)
