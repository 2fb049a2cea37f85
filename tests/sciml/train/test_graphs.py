"""CUDA-graph training steps, checked off CUDA: `sciml.train.graphs.SIMULATE` runs each step eagerly
and fails when a replay of the first captured step would differ from it (stale tensors, changed
numbers, host reads). With it on, graph-mode PINN training must equal eager training."""

import pytest
import torch

import sciml.train.pinn as pinn
from sciml.config import ConfigError
from sciml.optim.guard import Guard
from sciml.pde import get_problem
from sciml.optim import LBFGS, graph_optimizer_kwargs, lrs_as_tensors
from sciml.train.graphs import CapturedStep, StaleGraphError
from sciml.train.pinn import fit

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
# `device` (conftest): on a GPU machine the tests taking it also capture and replay real CUDA graphs


def _quadratic_step(opt, p, scale=1.0):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = (scale * p.square()).sum()
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def _adam(p):
    opt = torch.optim.Adam([p], lr=1e-2, **graph_optimizer_kwargs("adam", "cpu"))
    lrs_as_tensors(opt, True)
    return opt


def test_captured_step_warms_up_captures_once_and_replays(simulate, captures):
    p = torch.nn.Parameter(torch.arange(1.0, 4.0))
    ref = p.detach().clone().requires_grad_()
    ref_opt = torch.optim.Adam([ref], lr=1e-2)
    step = CapturedStep(_quadratic_step(_adam(p), p), "cpu", warmup=2)
    for i in range(6):
        step()
        _quadratic_step(ref_opt, ref)()
        assert step.captured == (i >= 2)
    assert len(captures) == 1
    torch.testing.assert_close(p.detach(), ref.detach(), rtol=1e-6, atol=0)


def test_simulated_replay_catches_what_a_real_graph_would_get_wrong(simulate):
    p = torch.nn.Parameter(torch.ones(3))
    opt = _adam(p)
    step = CapturedStep(_quadratic_step(opt, p), "cpu", warmup=1)
    step()
    step()
    opt.param_groups[0]["lr"].fill_(1e-3)  # in place: the graph reads it
    step()
    opt.param_groups[0]["lr"] = torch.tensor(1e-3)  # rebound: the graph would read the old tensor
    with pytest.raises(StaleGraphError, match="lives elsewhere"):
        step()
    step.invalidate()
    step()
    step()

    opt.load_state_dict(opt.state_dict())  # a rollback's reload makes new state tensors
    with pytest.raises(StaleGraphError, match="lives elsewhere"):
        step()

    holder = {"scale": 1.0}  # a Python number baked into a kernel
    fresh = CapturedStep(lambda: _quadratic_step(opt, p, holder["scale"])(), "cpu", warmup=1)
    fresh()
    fresh()
    holder["scale"] = 2.0
    with pytest.raises(StaleGraphError, match="baked"):
        fresh()

    host = CapturedStep(lambda: _quadratic_step(opt, p, float(p.sum()))(), "cpu", warmup=1)
    host()  # the warm-up runs eagerly, anything goes
    with pytest.raises(StaleGraphError, match="host"):
        host()

    # a loss kept undetached from an eager step: on CUDA its graph pins p's gradient accumulator
    # to the default stream, and the capture fails
    kept = (p * p).sum()
    pinned = CapturedStep(_quadratic_step(opt, p), "cpu", warmup=1)
    pinned()
    with pytest.raises(StaleGraphError, match="still alive"):
        pinned()
    del kept
    pinned.invalidate()
    pinned()
    pinned()  # captured with no live graph: fine
    pinned()


# settings that cross every step-dependent branch within 30 steps: SPAM's resets, clip delay and
# re-warm-ups, AdEMAMix's alpha and beta3 warm-ups
_GRAPH_SAFE = {
    "adabelief": {}, "mars": {}, "fadam": {}, "subset_norm": {}, "clip_radagradd": {},
    "spam": {"reset_interval": 8, "warmup_steps": 3, "clip_delay": 2, "threshold": 1.5},
    "ademamix": {"alpha_warmup": 12, "beta3_warmup": 12},
    "grokfast": {"base": "adabelief"}, "perpgrad": {"base": "spam", "reset_interval": 8},
}


def _regression_run(name, *, capture=False, tensor_lr=False, device="cpu", **optimizer_kwargs):
    """30 steps of a tiny float64 regression whose large gradients make SPAM clip: (losses, weights)."""
    from sciml.optim import build_optimizer

    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 30, dtype=torch.float64, device=device).reshape(10, 3)
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double().to(device)
    opt = build_optimizer(net.parameters(), name, lr=1e-2, **_GRAPH_SAFE[name], **optimizer_kwargs)
    lrs_as_tensors(opt, tensor_lr)  # the trainers' graph mode steps with a tensor lr

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (net(x) - x[:, :2].sin()).square().mean() * 1e3
        loss.backward()
        opt.step()
        return loss.detach()

    run = CapturedStep(step, device) if capture else step
    losses = torch.stack([run().clone() for _ in range(30)])
    return losses, [q.detach().clone() for q in net.parameters()], opt


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float_lr", "tensor_lr"])
@pytest.mark.parametrize("name", list(_GRAPH_SAFE))
def test_our_optimizers_replay_their_steps_like_eager_steps(simulate, captures, name, tensor_lr, device):
    graph_kwargs = graph_optimizer_kwargs(name, device, _GRAPH_SAFE[name])
    eager, captured = (_regression_run(name, capture=capture, tensor_lr=tensor_lr, device=device, **graph_kwargs)
                       for capture in (False, True))
    assert captured[2].graph_capturable and len(captures) == 1  # captured once, then 27 replays checked
    torch.testing.assert_close(captured[0], eager[0], rtol=1e-12, atol=0)
    for captured_w, eager_w in zip(captured[1], eager[1]):
        torch.testing.assert_close(captured_w, eager_w, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(_GRAPH_SAFE))
def test_the_capturable_step_follows_the_same_rule_as_the_eager_one(name):
    # the paper-rule tests check the default (int step count) path; this ties the tensor path to it
    int_path, tensor_path = (_regression_run(name, capturable=capturable) for capturable in (False, True))
    assert not int_path[2].graph_capturable and tensor_path[2].graph_capturable
    for tensor_w, int_w in zip(tensor_path[1], int_path[1]):
        torch.testing.assert_close(tensor_w, int_w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, kwargs, reason", [
    ("spam", {"density": 0.5}, "sparse momentum"),
    ("subset_norm", {"momentum_rank": 1}, "subspace"),
    ("grokfast", {"base": "soap"}, "'soap' cannot run inside a CUDA graph"),
    ("diffgrad", {}, "cannot run inside a CUDA graph"),
])
def test_steps_that_read_the_host_are_refused_in_graph_mode(name, kwargs, reason):
    from sciml.optim import check_optimizer

    check_optimizer(name, kwargs)  # fine eagerly
    with pytest.raises(ValueError, match=reason):
        check_optimizer(name, kwargs, graph=True)


def test_graph_mode_trains_a_pinn_with_spam_like_eager_mode(simulate, device):
    cfg = {**TINY, "phases": [{"optimizer": {"name": "spam", "lr": 1e-2, "reset_interval": 9, "warmup_steps": 3},
                               "steps": 30, "decay_every": 10, "decay_rate": 0.5}]}
    eager, graph = _trajectories(cfg, device)
    _assert_same(eager, graph)


def test_only_graph_safe_optimizers_and_a_polled_guard_may_run_in_a_graph():
    with pytest.raises(ValueError, match="adam, adamw"):
        graph_optimizer_kwargs("soap", "cpu")
    assert graph_optimizer_kwargs("adamw", "cuda") == {"fused": True, "capturable": True}
    base = {**TINY, "cuda_graph": True}
    with pytest.raises(ConfigError, match="phases\\[0\\].*soap"):
        fit(get_problem("diffusion_reaction"), {**base, "phases": [{"optimizer": {"name": "soap", "lr": 1e-3}, "steps": 2}]})
    with pytest.raises(ConfigError, match="check_every"):
        fit(get_problem("diffusion_reaction"), {**base, "phases": [{**base["phases"][0], "guard": {"check_every": 1}}]})


def test_a_phase_that_cannot_run_fails_before_any_training(monkeypatch):
    import sciml.train.pinn as pinn

    steps = []
    monkeypatch.setattr(pinn, "loss_terms", lambda *a, **k: steps.append(1) or pytest.fail("trained"))
    adam_first = {"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 5}
    with pytest.raises(ConfigError, match=r"phases\[1\]: optimizer 'soap' cannot run inside a CUDA graph"):
        fit(get_problem("diffusion_reaction"), {**TINY, "cuda_graph": True,
                                               "phases": [adam_first, {"optimizer": {"name": "soap"}, "steps": 5}]})
    for second, message in [({"optimizer": {"name": "soapp"}}, r"unknown optimizer 'soapp' \(did you mean 'soap'"),
                            ({"optimizer": {"name": "lbfgs", "max_iters": 5}}, r"'max_iters' \(did you mean 'max_iter'"),
                            ({"optimizer": {"name": "lbfgs"}, "guard": {"spike_factr": 5}}, r"no setting 'spike_factr'")]:
        with pytest.raises(ConfigError, match=r"phases\[1\]: .*" + message):
            fit(get_problem("diffusion_reaction"), {**TINY, "phases": [adam_first, {**second, "steps": 5}]})
    assert not steps


def test_a_zclip_guard_is_captured_once_its_warm_up_is_over(simulate, captures):
    def train(capture):
        net = torch.nn.Linear(3, 1)
        torch.nn.init.ones_(net.weight), torch.nn.init.zeros_(net.bias)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2, **graph_optimizer_kwargs("adam", "cpu"))
        lrs_as_tensors(opt, True)
        guard = Guard(net, opt, clip="zclip", clip_warmup=3, check_every=4)
        x = torch.linspace(-1, 1, 24).reshape(8, 3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = (net(x) - 1).square().mean()
            loss.backward()
            return guard.update_on_device(loss)

        captured = CapturedStep(step, "cpu")
        for _ in range(12):  # the ZClip statistics are updated in place, where a replay writes them
            record = captured() if capture and guard.capturable else step()
            guard.record_step(record, replayed=True)
        return net.weight.detach()

    captured_w = train(True)
    assert len(captures) == 1
    eager_w = train(False)
    torch.testing.assert_close(captured_w, eager_w, rtol=0, atol=0)


TINY = {"problem": "diffusion_reaction", "task": "pinn", "device": "cpu", "dtype": "float64", "constraints": "hard",
        "net": {"width": 8, "depth": 2}, "points": {"interior": 64, "resample_every": 4, "adaptive": "rad", "candidates": 256},
        "log_every": 5, "eval_every": 0, "checkpoint_every": 0,
        "phases": [{"optimizer": {"name": "adam", "lr": 1e-2}, "steps": 40, "decay_every": 10, "decay_rate": 0.5},
                   {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 5, "line_search_fn": "strong_wolfe"}, "steps": 2}]}


def _trajectories(cfg, device="cpu"):
    """Final weights and logged losses of the config trained eagerly and in graph mode."""
    out = []
    for graph in (False, True):
        res = fit(get_problem(cfg["problem"]), {**cfg, "device": device, "cuda_graph": graph})
        out.append(({k: v.cpu() for k, v in res.model.state_dict().items()}, [h["loss"] for h in res.history]))
    return out


def _loss_factor(monkeypatch, factor_at, device="cpu"):
    factor = torch.ones((), dtype=torch.float64, device=device)  # on the device: a CPU scalar would be baked in
    real_terms, real_schedule = pinn.loss_terms, pinn._lr_schedule

    def scaled_terms(*args, **kwargs):
        return {k: v * factor for k, v in real_terms(*args, **kwargs).items()}

    def schedule(opt, base_lrs, ph, step):
        factor.fill_(factor_at(step))
        real_schedule(opt, base_lrs, ph, step)

    monkeypatch.setattr(pinn, "loss_terms", scaled_terms)
    monkeypatch.setattr(pinn, "_lr_schedule", schedule)


def _assert_same(eager, graph):
    # not bit-equal: graph mode steps with a float32 lr tensor (what fused CUDA Adam reads), ~1e-8 off
    for k in eager[0]:
        torch.testing.assert_close(graph[0][k], eager[0][k], rtol=1e-6, atol=1e-7, msg=k)
    assert graph[1] == pytest.approx(eager[1], rel=1e-6)


def test_graph_mode_trains_like_eager_mode_through_decay_and_resampling(simulate, device):
    eager, graph = _trajectories(TINY, device)
    _assert_same(eager, graph)


def test_graph_mode_trains_the_modified_factorised_net_through_a_warm_up_like_eager_mode(simulate, device):
    """The gated, factorised net (its weights recomputed from log-scales inside the step) and a warm-up
    (the learning rate moved every step, through the captured tensor) replay like eager steps."""
    net = {**TINY["net"], "modified": True, "weight_factorization": {"mean": 1.0, "std": 0.1}}
    first = {**TINY["phases"][0], "warmup_steps": 8}
    eager, graph = _trajectories({**TINY, "net": net, "phases": [first, TINY["phases"][1]]}, device)
    assert any("log_scale" in k for k in eager[0]) and any("encoders" in k for k in eager[0])
    _assert_same(eager, graph)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a real capture: the CPU simulation cannot replay jvps")
def test_graph_mode_trains_a_hard_jet_problem_through_resampling_like_eager_mode():
    """Eager steps reuse the hard transform's jets kept per point set; a capture recomputes them inside the graph
    from the static points (gpu_plan.sh 3 runs this: parts 3b, 7 and 8 rest on it)."""
    eager, graph = _trajectories({**TINY, "derivatives": "jet"}, "cuda")
    _assert_same(eager, graph)


def test_graph_mode_replays_the_lbfgs_evaluations_like_eager_mode(simulate, captures, device):
    # an L-BFGS phase alone, float64, 3 steps of up to 8 evaluations: one capture, the rest replays
    cfg = {**TINY, "points": {"interior": 64}, "phases": [
        {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 8, "line_search_fn": "strong_wolfe"}, "steps": 3}]}
    calls = []
    real_step = LBFGS.step
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LBFGS, "step", lambda self, closure: real_step(self, lambda: calls.append(1) or closure()))
        eager, graph = _trajectories(cfg, device)
    assert len(captures) == 1 and len(calls) > 2 * 6  # both runs evaluated many times, graph mode captured once
    _assert_same(eager, graph)


def test_a_phase_chooses_its_own_graph_mode(simulate, captures):
    from sciml.config import ConfigError, validate
    from sciml.train.pinn import PINNConfig

    soap_then_lbfgs = [{"optimizer": {"name": "soap", "lr": 1e-3}, "steps": 6},
                       {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 5, "line_search_fn": "strong_wolfe"}, "steps": 2}]
    with pytest.raises(ConfigError, match=r"phases\[0\].*set phases.0.cuda_graph: false"):  # SOAP steps on the host
        validate(PINNConfig, {**TINY, "cuda_graph": True, "phases": soap_then_lbfgs})
    cfg = {**TINY, "points": {"interior": 64},
           "phases": [{**soap_then_lbfgs[0], "cuda_graph": False}, {**soap_then_lbfgs[1], "cuda_graph": True}]}
    validate(PINNConfig, {**cfg, "cuda_graph": True})
    fit(get_problem(cfg["problem"]), cfg)  # the run's flag off, the L-BFGS phase's on
    assert len(captures) == 1


@pytest.mark.parametrize("change", [
    {"points": {"interior": 64, "resample_every": 4, "adaptive": "rar", "rar_add": 8, "candidates": 256}},  # more points
    {"constraints": "soft", "points": {"interior": 64}, "loss": {"adaptive": "grad_norm", "update_every": 6}},  # new weights
])
def test_graph_mode_recaptures_after_new_points_count_or_new_loss_weights(simulate, change, device):
    eager, graph = _trajectories({**TINY, **change}, device)
    _assert_same(eager, graph)


def test_graph_mode_rolls_back_after_spikes_like_eager_mode(simulate, monkeypatch, device):
    cfg = {**TINY, "points": {"interior": 64}, "phases": TINY["phases"][:1]}
    _loss_factor(monkeypatch, lambda step: 1e4 if 21 <= step <= 26 else 1.0, device)
    events = []
    real_pop = Guard.pop_events

    def keep(self, *args, **kwargs):
        popped = real_pop(self, *args, **kwargs)
        events.extend(e["event"] for e in popped)
        return popped

    monkeypatch.setattr(Guard, "pop_events", keep)
    eager, graph = _trajectories(cfg, device)
    assert events.count("rollback") == 2, events  # one in each mode
    _assert_same(eager, graph)


# on CUDA the checkpoint loads onto the device, CPU generator states too
@pytest.mark.parametrize("first,then", [(True, False), (False, True), (True, True)])
def test_a_run_stopped_in_one_mode_resumes_in_the_other(simulate, tmp_path, first, then, device):
    from sciml.train.run import RunDir

    cfg = {**TINY, "checkpoint_every": 3, "device": device}
    full = fit(get_problem("diffusion_reaction"), {**cfg, "cuda_graph": then})
    run = RunDir.create(tmp_path, "r")
    stopped = fit(get_problem("diffusion_reaction"), {**cfg, "cuda_graph": first, "max_minutes": 1e-9}, run=run)
    assert stopped.metrics["stopped_early"]
    resumed = fit(get_problem("diffusion_reaction"), {**cfg, "cuda_graph": then}, run=run, resume=True)
    assert resumed.metrics["rel_l2"] == pytest.approx(full.metrics["rel_l2"], rel=1e-6)


@pytest.mark.parametrize("guard", [None, {"enabled": False}])
def test_graph_mode_without_a_guard_captures_and_trains_like_eager_mode(simulate, captures, guard):
    cfg = {**TINY, "points": {"interior": 64}, "phases": [{**TINY["phases"][0], "guard": guard}]}
    eager, graph = _trajectories(cfg)
    assert len(captures) == 1  # captured once, then replayed
    _assert_same(eager, graph)
