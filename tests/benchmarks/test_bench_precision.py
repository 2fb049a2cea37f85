"""Precision policies' speed: trained round-robin over several rounds, not one sequential run each."""

import json

import pytest

import benchmarks.bench_precision as bp


def test_policies_are_trained_round_robin_and_the_speed_is_a_median_with_its_range(results_dir, monkeypatch):
    """Equally fast policies on a machine that gets faster with every run: one run each made bf16 look faster."""
    order = []

    def train_policy(precision, *, epochs, small, out, tag=""):
        order.append(precision)
        return {"precision": precision, "epochs": epochs, "rel_l2": 0.1, "s_per_epoch": 1.0 * 0.9 ** len(order)}

    monkeypatch.setattr(bp, "train_policy", train_policy)
    bp.main(["--small", "--rounds", "3"])
    assert order == ["fp32", "bf16"] * 3
    rows = {r["precision"]: r for r in json.loads((results_dir / "precision_small.json").read_text())["rows"]}
    assert rows["bf16"]["rounds"] == 3 and len(rows["bf16"]["speed_vs_fp32_range"]) == 2
    assert rows["bf16"]["speed_vs_fp32"] == pytest.approx(1 / 0.9)  # each round's drift only, not the run's
