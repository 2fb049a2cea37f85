"""PINN speed rows: every row with a speed-up over DeepXDE (the trainer's included) is timed once per round,
round-robin with DeepXDE's runs, and records its runs and the spread of its speed-up."""

import json

import pytest

import benchmarks.bench_pinn as pinn


def test_every_speedup_row_is_interleaved_with_deepxde_and_repeated(results_dir, monkeypatch):
    calls = []

    def dde(n_steps, warm, threads, gpu):
        calls.append("dde")
        return {"ms_per_step": 10.0 + len(calls), "device": "cpu"}

    def ours(n_steps, warm, device, mode, **kw):
        calls.append(f"step {mode}")
        return 4.0

    def trainer(n_steps, device, mode, **kw):
        calls.append(f"trainer {mode}")
        return 5.0

    monkeypatch.setattr(pinn, "deepxde_ms_per_step", dde)
    monkeypatch.setattr(pinn, "sciml_ms_per_step", ours)
    monkeypatch.setattr(pinn, "sciml_trainer_ms_per_step", trainer)
    pinn.main(["--small", "--parts", "speed", "--steps", "2", "--speed-rounds", "3", "--no-compile"])
    rows = [r for r in json.loads((results_dir / "pinn_small.json").read_text())["rows"] if "speedup_vs_deepxde" in r]
    assert {r["library"] for r in rows} >= {"sciml trainer (jet)", "sciml (jet)", "sciml (reverse)"}
    for r in rows:
        assert len(r["ms_runs"]) == 3, r
    # between two DeepXDE runs, every other row runs once
    between = [set(calls[i + 1:j]) for i, j in zip(*[[k for k, c in enumerate(calls) if c == "dde"][n:] for n in (0, 1)])]
    assert between and all(b == {"step jet", "step reverse", "trainer jet"} for b in between)
    dde_ms = sum(10.0 + i for i, c in enumerate(calls, 1) if c == "dde") / 3
    trainer_row = next(r for r in rows if r["library"] == "sciml trainer (jet)")
    assert trainer_row["speedup_vs_deepxde"] == pytest.approx(dde_ms / 5.0)
    assert trainer_row["speedup_range"][0] < trainer_row["speedup_range"][1]
