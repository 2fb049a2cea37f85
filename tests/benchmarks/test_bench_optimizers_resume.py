"""The optimizer grid runs in parts: written after every (task, optimizer), continued with --skip-done."""

import json

import pytest
import torch

bench = pytest.importorskip("benchmarks.bench_optimizers")
common = pytest.importorskip("benchmarks.common")


def _toy_task(cfg):
    x = torch.linspace(-1, 1.3, 16, dtype=cfg.dtype)[:, None]
    y = torch.sin(3 * x) + 0.2

    def loss(f):
        return ((f(x.expand(f.members, *x.shape)) - y) ** 2).mean(dim=(-1, -2))

    def error(f):
        with torch.no_grad():
            return (f(x.expand(f.members, *x.shape)) - y).flatten(1).norm(dim=-1) / y.norm()

    return bench.TaskSpec("toy", lambda: bench.MLP([1, 4, 1]), loss, error, steps=cfg.steps or 5)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.setitem(bench.TASKS, "toy", _toy_task)
    return tmp_path / "grid.json"


def _run(*extra):
    bench.main(["--small", "--tasks", "toy", "--seeds", "1", "--steps", "5", "--device", "cpu", "--name", "grid", *extra])


def _pairs(path):
    return {(r["task"], r["optimizer"], r["lr"]): r for r in json.loads(path.read_text())["rows"]}


def test_skip_done_continues_the_grid_without_rerunning_finished_pairs(results, capsys):
    _run("--merge", "--optimizers", "adam")
    first = _pairs(results)
    assert {k[1] for k in first} == {"adam"}
    _run("--merge", "--skip-done", "--optimizers", "adam,sgd")
    assert "adam" in capsys.readouterr().out.split("(--skip-done)")[0]
    second = _pairs(results)
    assert {k[1] for k in second} == {"adam", "sgd"}
    for key, row in first.items():  # the finished pair was kept as measured, not rerun
        assert second[key]["rel_l2_median"] == row["rel_l2_median"]


def test_max_minutes_starts_no_new_pair_after_the_deadline(results, capsys):
    _run("--merge", "--optimizers", "adam")
    before = results.read_text()
    _run("--merge", "--skip-done", "--optimizers", "sgd", "--max-minutes", "0")
    assert "stopped by --max-minutes before toy / sgd" in capsys.readouterr().out
    assert {k[1] for k in _pairs(results)} == {"adam"}
    unstamped = lambda rows: [{k: v for k, v in r.items() if k != "measured"} for r in rows]  # noqa: E731
    assert unstamped(json.loads(results.read_text())["rows"]) == unstamped(json.loads(before)["rows"])


def test_skip_done_needs_merge(results):
    with pytest.raises(SystemExit):
        _run("--skip-done")


def test_a_pair_whose_capture_fails_is_run_eagerly_and_the_grid_goes_on(results, capsys, monkeypatch):
    from sciml.train import graphs

    def broken_capture(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.CapturedStep, "_capture", broken_capture)
    _run("--graph", "--optimizers", "adabelief,soap")
    out = capsys.readouterr().out
    assert "toy                adabelief                  CUDA-graph run failed (RuntimeError" in out
    rows = _pairs(results)
    assert {k[1] for k in rows} == {"adabelief", "soap"}
    assert not any(r["cuda_graph"] for r in rows.values())  # the eager rerun's rows; soap never captures
