"""Hard-constraint accuracy variants compared in one table train equally long: the call's time is split
evenly at the start, and a variant that would get less is skipped, said so, not trimmed."""

import json
import types

import pytest

import benchmarks.bench_hard_constraint as hc
import benchmarks.common as common
VARIANTS = ["soft", "hc", "moe", "moe_overlap"]


@pytest.fixture
def fake(results_dir, monkeypatch):
    """A fake clock and a fake trainer: each variant 'trains' its budget plus `overhead[variant]` seconds."""
    import time

    import sciml.train.trainer as trainer

    now, made, trained, overhead, metrics = [1_000_000.0], [], {}, {}, {}
    monkeypatch.setattr(common, "time", types.SimpleNamespace(time=lambda: now[0], perf_counter=time.perf_counter))

    def resolve(cfg, **_):
        if not made:
            now[0] += 60  # the first config makes the data (~1 minute)
        made.append(cfg.output.name)
        return "data.h5"

    def train(cfg):
        name = cfg.output.name
        trained[name] = cfg.training.max_minutes
        now[0] += 60 * cfg.training.max_minutes + overhead.get(name, 10)
        records = metrics.get(name, [{"kind": "eval", "epoch": 3, "train_loss": 1.0}])
        run = types.SimpleNamespace(read_metrics=lambda: records)
        return run, {"test_rel_l2": 0.1, "test_rel_l2_max": 0.2, "epoch": 3, "train_seconds_total": 1.0,
                     "stopped_early": True}

    monkeypatch.setattr(trainer, "resolve_dataset", resolve)
    monkeypatch.setattr(trainer, "train", train)
    monkeypatch.setattr(hc, "persistence", lambda cfg, levels=None: {"variant": "persistence"})
    return types.SimpleNamespace(now=now, made=made, trained=trained, overhead=overhead, metrics=metrics, dir=results_dir)


def test_variants_share_what_the_call_has_left_evenly(fake, monkeypatch):
    # 560 s call (part 12b), 4 variants of 2 minutes asked: 60 s for the data, 4 x 30 s reserve, 95 s each
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(fake.now[0] + 560))
    hc.accuracy("burgers", VARIANTS, small=False, minutes=2.0)
    assert len(fake.made) == 4 and set(fake.trained) == set(VARIANTS)
    assert len(set(fake.trained.values())) == 1  # every variant the same budget, the last one not trimmed
    assert fake.trained["soft"] == pytest.approx((560 - 60 - 4 * hc.VARIANT_RESERVE_S) / 4 / 60, abs=0.01)
    rows = json.loads((fake.dir / "hard_constraint_accuracy.json").read_text())["rows"]
    assert {r.get("budget_min") for r in rows if r["variant"] != "persistence"} == {round(fake.trained["soft"], 2)}


def test_with_time_enough_every_variant_gets_what_it_asked(fake, monkeypatch):
    monkeypatch.delenv(common.SESSION_DEADLINE_ENV, raising=False)
    hc.accuracy("burgers", VARIANTS, small=False, minutes=2.0)
    assert set(fake.trained.values()) == {2.0}


def test_a_variant_left_short_by_an_earlier_overrun_is_skipped_not_trimmed(fake, monkeypatch, capsys):
    monkeypatch.setenv(common.SESSION_DEADLINE_ENV, str(fake.now[0] + 560))
    fake.overhead["hc"] = 120  # its loading and evaluation took 4x the reserve (the others: a third)
    hc.accuracy("burgers", VARIANTS, small=False, minutes=2.0)
    assert list(fake.trained) == ["soft", "hc", "moe"] and len(set(fake.trained.values())) == 1
    assert "skipping moe_overlap" in capsys.readouterr().out


def test_a_variant_capped_before_its_first_evaluation_is_recorded_as_such(fake, monkeypatch, capsys):
    # --small, a slow variant: its --minutes cap came before epoch eval_every, so no eval record was logged
    fake.metrics["moe_small"] = [{"kind": "plan", "epoch": 1}]
    hc.accuracy("burgers", VARIANTS, small=True, minutes=2.0)
    assert set(fake.trained) == {f"{v}_small" for v in VARIANTS}  # the part went on past it
    rows = {r["variant"]: r for r in json.loads((fake.dir / "hard_constraint_accuracy_small.json").read_text())["rows"]}
    assert set(rows) == {"persistence", *VARIANTS}
    moe = rows["moe"]
    assert moe["final_physics_loss"] is None and moe["epochs"] == 3 and moe["test_rel_l2"] == 0.1
    assert "stopped at epoch 3, before its first evaluation (every 10 epochs)" in moe["note"]
    assert rows["soft"]["final_physics_loss"] == 1.0 and "note" not in rows["soft"]
