"""PINN training: minimise Σ_k λ_k mean r_k² over collocation points, phase by phase (Adam → L-BFGS).

From Python::

    from sciml.train.pinn import fit
    result = fit(problem, {"phases": [{"optimizer": {"name": "adam", "lr": 1e-3}, "steps": 5000}]})
    result.metrics["rel_l2"], result.model   # rel_l2 where the problem has a reference solution

From the CLI: ``sciml train configs/burgers/pinn.yaml`` calls `run_pinn` (``task: pinn``).

Each step: (optionally) redraw or RAD-resample the interior points, evaluate the loss terms
(`sciml.pde.losses.loss_terms`; causal weights on the residual for time-dependent problems),
update adaptive loss weights every few steps, and step the phase's optimizer (closure for L-BFGS),
under `sciml.optim.guard.Guard` (on by default, see `PINN_GUARD`). With ``cuda_graph: true`` a
first-order step is captured once and replayed (`sciml.train.graphs.CapturedStep`), and so is each
L-BFGS evaluation (loss and gradient; the line search stays on the host); resampling copies the new
points into the captured ones, and a rollback, new loss weights or a new number of points trigger a
fresh capture. Phases use the ``sciml.optim.phases`` format
(``{optimizer: {name, ...}, steps, dtype, guard}``, plus ``warmup_steps``, ``decay_every`` and ``decay_rate``
for the learning rate) but run in this loop, which also resamples,
evaluates and checkpoints mid-phase so that ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
from torch import nn
from pydantic import Field, model_validator

from sciml.config import ConfigError, StrictModel, WholeInt, checks_training_components, dump, validate
from sciml.optim import (build_optimizer, check_optimizer, closure_kind, graph_optimizer_kwargs, load_optimizer_state,
                         lrs_as_tensors, set_lr)
from sciml.optim.guard import Guard, GuardError
from sciml.optim.phases import cast_model
from sciml.pde.losses import (CausalWeights, CollocationSet, LossWeights, condition_name, loss_terms, residual_magnitude,
                              sample_collocation)
from sciml.pde.conditions import Data, Dirichlet, Initial, Periodic
from sciml.pde.jet import JET_ACTIVATIONS, jet_carries
from sciml.pde.nets import MLP
from sciml.pde.problem import PINNModel, Problem
from sciml.pde.problems import get_problem
from sciml.pde.sampling import rad_sample, rar_add
from sciml.registry import close_matches
from sciml.train.graphs import CapturedStep
from sciml.train.schema import GuardSettings

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------------------------------------
# config
class WeightFactorizationConfig(StrictModel):
    mean: float = 1.0
    std: float = Field(0.1, ge=0)


class NetConfig(StrictModel):
    """`sciml.pde.nets.MLP`'s options."""

    width: WholeInt = Field(20, ge=1)
    depth: WholeInt = Field(3, ge=1)
    activation: str = "tanh"
    fourier_features: WholeInt = Field(0, ge=0)
    fourier_scale: float = Field(1.0, gt=0)
    harmonics: WholeInt = Field(1, ge=1)
    modified: bool = False  # gated hidden layers (modified MLP)
    weight_factorization: WeightFactorizationConfig | None = None  # {mean, std}: random weight factorisation


class PointsConfig(StrictModel):
    interior: WholeInt = Field(2540, ge=1)
    boundary: WholeInt = Field(80, ge=1)
    initial: WholeInt = Field(160, ge=1)
    method: Literal["uniform", "pseudo", "sobol", "lhs", "halton"] = "sobol"  # the first draw; redraws are pseudo-random
    resample_every: WholeInt = Field(0, ge=0)  # redraw / RAD-resample every k first-order steps (L-BFGS keeps one objective); 0: fixed
    adaptive: Literal["none", "rad", "rar"] = "none"
    rad_k: float = Field(1.0, ge=0)
    rad_c: float = Field(1.0, ge=0)
    candidates: WholeInt = Field(20000, ge=1)
    rar_add: WholeInt = Field(10, ge=1)

    @model_validator(mode="after")
    def _adaptive_needs_a_period(self) -> "PointsConfig":
        if self.adaptive != "none" and self.resample_every == 0:  # it would never run
            raise ValueError(f"points.adaptive: {self.adaptive} samples every points.resample_every steps, which is 0 "
                             f"(points fixed); set points.resample_every (e.g. 100) or points.adaptive: none")
        return self


class CausalConfig(StrictModel):
    enabled: bool = False
    eps: float = Field(1.0, ge=0)
    bins: WholeInt = Field(32, ge=2)


class LossConfig(StrictModel):
    weights: dict[str, float] = {}  # by term name: residual, dirichlet_0, initial_1, ...
    adaptive: Literal["fixed", "grad_norm", "ntk"] = "fixed"
    update_every: WholeInt = Field(100, ge=1)
    alpha: float = Field(0.9, ge=0, lt=1)
    causal: CausalConfig = CausalConfig()

    @model_validator(mode="after")
    def _weights_are_non_negative(self) -> "LossConfig":
        # a negative weight makes training maximise its term; 0 leaves the term out
        bad = {k: w for k, w in self.weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"loss.weights {bad}: each weight must be finite and >= 0 (0 leaves the term out)")
        return self


# The guard is on by default, as in the operator trainer, with PINN defaults: no clipping (a healthy
# run is bit-identical to an unguarded one), a poll every 10 steps (no host sync per step; a
# non-finite gradient is zeroed on device) and a spike only at 100x the running loss: a PINN loss
# on freshly drawn points can climb 10-30x for a few steps (Allen-Cahn, 2048 points redrawn every
# 100 steps: seven climbs in 15000 Adam steps; at factor 10 four were rolled back, each halving the rate).
# A phase's `guard:` mapping overrides these keys; `guard: null` turns it off.
PINN_GUARD = {"clip": None, "check_every": 10, "spike_factor": 100.0}


class PhaseConfig(StrictModel):
    optimizer: dict[str, Any]
    steps: WholeInt = Field(ge=1)
    dtype: Literal["float32", "float64"] | None = None
    guard: GuardSettings = {}
    decay_every: WholeInt = Field(0, ge=0)  # exponential LR decay: lr · rate^(step / decay_every)
    decay_rate: float = Field(1.0, gt=0, le=1)
    warmup_steps: WholeInt = Field(0, ge=0)  # linear warm-up over the first steps: lr · min(1, step / warmup_steps)
    cuda_graph: bool | None = None  # this phase's graph mode; None: the run's `cuda_graph`


class OutputConfig(StrictModel):
    root: str = "runs"
    name: str | None = None


def _default_phases() -> list[PhaseConfig]:
    return [PhaseConfig(optimizer={"name": "adam", "lr": 1e-3}, steps=10000),
            PhaseConfig(optimizer={"name": "lbfgs", "lr": 1.0, "max_iter": 20, "history_size": 100,
                                   "line_search_fn": "strong_wolfe", "tolerance_grad": 1e-9, "tolerance_change": 0.0},
                        steps=500)]


class PINNConfig(StrictModel):
    """A PINN run: ``task: pinn`` + problem + net + points + loss + phases."""

    task: Literal["pinn"] = "pinn"
    problem: str
    problem_args: dict[str, Any] = {}
    seed: WholeInt = 0
    device: str = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    constraints: Literal["soft", "hard"] = "soft"
    # with constraints: hard, conditions (by loss-term name, e.g. initial_2) left as loss terms: a hard
    # initial velocity makes the net fit (u − u0 − t·v0)/t², which is ill-scaled for fast waves
    keep_soft: list[str] = []
    derivatives: Literal["reverse", "forward", "jet"] = "reverse"
    compile: bool = False  # torch.compile the loss of first-order steps (derivatives: jet only; for GPU)
    # first-order steps (forward, backward, guard, optimizer) captured as one CUDA graph and replayed;
    # graph_safe optimizers (adam, adamw, ours), the guard polled; L-BFGS's loss-and-gradient
    # evaluations replayed too (Newton-CG runs eagerly); off CUDA the same steps run eagerly
    # (`sciml.train.graphs`). A phase's own `cuda_graph` overrides it (e.g. SOAP eager, then L-BFGS replayed).
    cuda_graph: bool = False
    net: NetConfig = NetConfig()
    points: PointsConfig = PointsConfig()
    loss: LossConfig = LossConfig()
    phases: list[PhaseConfig] = Field(default_factory=_default_phases)
    log_every: WholeInt = Field(100, ge=1)
    eval_every: WholeInt = Field(1000, ge=0)
    checkpoint_every: WholeInt = Field(1000, ge=0)
    max_minutes: float | None = Field(None, gt=0)  # stop (with a checkpoint) after this wall time; --resume goes on
    output: OutputConfig = OutputConfig()

    def phase_graph(self, phase: PhaseConfig) -> bool:
        """Whether `phase` runs in graph mode: its own `cuda_graph`, else the run's."""
        return self.cuda_graph if phase.cuda_graph is None else phase.cuda_graph

    @staticmethod
    def phase_guard(phase: PhaseConfig) -> dict[str, Any] | None:
        """The guard settings of `phase`: `PINN_GUARD` with the phase's own on top; None: no guard (``guard: null``
        or ``enabled: false``)."""
        if phase.guard is None or phase.guard.get("enabled") is False:
            return None
        return {**PINN_GUARD, **phase.guard}

    @model_validator(mode="after")
    def _phases_can_run(self) -> "PINNConfig":
        """Every phase's optimizer and guard settings build, and with cuda_graph its step can be
        captured: checked before any training, not when a later phase starts after hours of the
        earlier ones."""
        if not self.phases:  # it trained 0 steps and reported the untrained net's error
            raise ValueError("phases is empty: give at least one training phase, e.g. phases: [{optimizer: {name: adam, "
                             "lr: 0.001}, steps: 1000}]")
        if not checks_training_components():  # a saved run, to evaluate or load: no phase runs again
            return self
        for i, ph in enumerate(self.phases):
            if ph.optimizer.get("lr", 1) == 0 and not isinstance(ph.optimizer.get("lr"), bool):
                raise ValueError(f"phases.{i}.optimizer.lr=0 never moves the weights (warm-up and decay scale it); "
                                 "give a positive lr")
            kwargs = dict(ph.optimizer)
            name = kwargs.pop("name", None)
            graphed = False
            try:
                if name is None:
                    raise ValueError("the optimizer needs a name (e.g. adam, lbfgs)")
                graphed = self.phase_graph(ph) and closure_kind(name) == "none"  # the optimizer inside the graph
                check_optimizer(name, kwargs, graph=graphed)
                guard = self.phase_guard(ph)
                if guard is not None:
                    Guard.check_settings(guard)
                    if graphed and Guard.syncs_with(**guard):
                        raise ValueError("cuda_graph needs the guard's polled mode (a host check every step cannot be "
                                         "captured): set guard.check_every > 1 (the PINN default is 10) or guard: null")
            except ValueError as err:
                hint = (f" (or keep graph mode for the other phases and set phases.{i}.cuda_graph: false for this one)"
                        if graphed and ph.cuda_graph is None and len(self.phases) > 1 else "")
                raise ValueError(f"phases[{i}]: {err}{hint}") from None
        return self


# ----------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    model: PINNModel
    metrics: dict[str, Any]
    history: list[dict[str, Any]]


def _condition_indices(problem: Problem, names: list[str]) -> tuple[int, ...]:
    known = {condition_name(i, c): i for i, c in enumerate(problem.conditions)}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"keep_soft names {unknown}{close_matches(unknown[0], known)}, not conditions of "
                          f"{problem.name!r}; its conditions are {sorted(known)}")
    return tuple(known[n] for n in names)


def build_model(problem: Problem, cfg: PINNConfig) -> tuple[PINNModel, tuple[int, ...]]:
    """The network + transform + unknowns for a problem, and the conditions made exact (not trained)."""
    net_kw = cfg.net.model_dump()
    keep_soft = _condition_indices(problem, cfg.keep_soft)
    if keep_soft and cfg.constraints != "hard" and problem.output_transform is None:
        raise ConfigError("keep_soft only applies where conditions are made exact: with constraints: hard or a problem's "
                          "own output_transform (otherwise every condition is already a loss term); remove keep_soft or "
                          "set constraints: hard")
    if problem.network is not None:  # the problem's own net owns its constraints
        return PINNModel(_own_net(problem, net_kw, cfg.seed), None, problem.unknowns), ()
    model, covered, periodic = _assemble(problem, cfg, net_kw, keep_soft)
    if periodic:
        # the embedding makes the net periodic, not the transform's offset around it: a boundary value g(x, y) that
        # is periodic on its face but not off it (g = x y on y = lo) broke u's periodicity by O(1), for good. Values
        # only: a u0 whose slope is not periodic (Allen-Cahn's x^2 cos(pi x)) is the data's own mismatch at t0.
        values = replace(problem, conditions=[replace(c, order=0) if isinstance(c, Periodic) else c
                                              for c in problem.conditions])
        gaps = values.conditions_held(model, sorted(problem.periodic_covered(periodic)))
        broken = tuple(i for i, gap in gaps.items() if gap > 1e-4)
        if broken:
            warnings.warn(f"constraints: hard: the transform of problem {problem.name!r} is not periodic where "
                          f"{[condition_name(i, problem.conditions[i]) for i in broken]} ask it to be (an initial or "
                          f"boundary value that is not periodic off its face), so they stay loss terms and the net's "
                          f"input there is not embedded periodically", stacklevel=2)
            keep_soft = tuple(sorted(set(keep_soft) | set(broken)))
            model, covered, periodic = _assemble(problem, cfg, net_kw, keep_soft)
    if cfg.constraints == "hard":
        _warn_left_soft(problem, covered, keep_soft)
    return model, tuple(sorted(covered))


def _own_net(problem: Problem, net_kw: dict, seed: int) -> nn.Module:
    """`problem.network(**net options, seed=...)`, checked to be a module with weights that takes the domain's points:
    a builder returning a function met "'function' object has no attribute 'parameters'", and a net of another
    input width torch's "mat1 and mat2 shapes cannot be multiplied" at the first step."""
    net = problem.network(**net_kw, seed=seed)
    if not isinstance(net, nn.Module):
        raise TypeError(f"problem {problem.name!r}: its network builder must return a torch.nn.Module mapping (n, "
                        f"{problem.domain.dim}) points to (n, {len(problem.outputs)}) outputs, got "
                        f"{type(net).__name__}{' (wrap a function in an nn.Module)' if callable(net) else ''}")
    first = next(net.parameters(), None)
    if first is None:
        raise ValueError(f"problem {problem.name!r}: its network has no parameters to train")
    probe = torch.zeros(2, problem.domain.dim, dtype=first.dtype if first.is_floating_point() else None,
                        device=first.device)
    training = net.training
    try:
        with torch.no_grad():
            net.eval()  # no batch-norm statistics taken from the probe
            net(probe)
    except RuntimeError as err:
        width = next((m.in_features for m in net.modules() if isinstance(getattr(m, "in_features", None), int)), None)
        hint = f": its first layer takes {width} input{'s' * (width != 1)}" if width not in (None, problem.domain.dim) else ""
        raise ValueError(f"problem {problem.name!r}: its network must take (n, {problem.domain.dim}) points, one column "
                         f"per coordinate {problem.coords}{hint}; on (2, {problem.domain.dim}) points it failed: "
                         f"{str(err).splitlines()[0]}") from err
    finally:
        net.train(training)
    return net


def _assemble(problem: Problem, cfg: PINNConfig, net_kw: dict, keep_soft: tuple[int, ...]):
    """The model with the conditions outside `keep_soft` built in, those it covers, and its periodic embedding."""
    transform, covered, periodic = None, set(), {}
    if cfg.constraints == "hard":
        periodic = problem.periodic_inputs(keep_soft)
        transform, candidates = problem.hard_transform(keep_soft=keep_soft)
        covered = set(candidates) | problem.periodic_covered(periodic)
    elif problem.output_transform is not None:
        transform, candidates = problem.hard_transform(keep_soft=keep_soft)
        covered = set(candidates)
    net = MLP(problem.domain.dim, len(problem.outputs), periodic=periodic, seed=cfg.seed, **net_kw)
    model = PINNModel(net, transform, problem.unknowns)
    if problem.output_transform is not None:
        covered = _met_by_user_transform(problem, model, covered)
    return model, covered, periodic


def _met_by_user_transform(problem: Problem, model: PINNModel, candidates: set[int]) -> set[int]:
    """The candidate conditions a user's output transform meets, judged on the fresh net, which is off
    by O(1) wherever the transform does not build a condition in (an ADF × net transform for the
    boundary leaves the initial condition to the loss); the others stay loss terms."""
    gaps = problem.conditions_held(model, sorted(i for i in candidates if not isinstance(problem.conditions[i], Periodic)))
    return {i for i in candidates if gaps.get(i, 0.0) <= 1e-4}


def _probe_residual(problem: Problem, model: PINNModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The residual's named terms at a few points, with their graph (one evaluation for the checks before training)."""
    ref = next(model.parameters())
    with torch.enable_grad():
        return problem.named_residual_terms(problem.derivatives(model, x.to(ref.device, ref.dtype)), model.params(problem))


def _check_weight_names(problem: Problem, terms: dict[str, torch.Tensor], weights: dict[str, float],
                        covered: tuple[int, ...]) -> None:
    """Every name in loss.weights is a loss term of the problem: a misspelt one, or one of a condition the
    constraints make exact, would be ignored without a word."""
    if not weights:
        return
    known = list(terms)
    known += [condition_name(i, c) for i, c in enumerate(problem.conditions) if i not in covered]
    exact = [condition_name(i, problem.conditions[i]) for i in covered if condition_name(i, problem.conditions[i]) in weights]
    if exact:  # a config's weights outlive an override that makes the condition exact (poisson_lshape hard=true)
        warnings.warn(f"loss.weights names {exact}, conditions the constraints make exact: there is no loss term to "
                      f"weigh (list them in keep_soft to train them as weighted loss terms)", stacklevel=3)
    unknown = [k for k in weights if k not in known and k not in exact]
    if unknown:
        raise ConfigError(f"loss.weights names {unknown}{close_matches(unknown[0], known)}, which are not loss terms of "
                          f"{problem.name!r}; its terms are {known} (residual terms are residual for one, residual_0, "
                          f"residual_1, ... for a list, residual_<key> for a dict)")


def _check_unknowns_used(problem: Problem, model: PINNModel, terms: dict[str, torch.Tensor]) -> None:
    """Every Unknown moves the residual: one it never reads (or reads detached, as a float) gets no gradient, stays at
    its init and was reported as inferred. Probed once, at a few points, before any training."""
    if not len(model.unknowns):
        return
    total = sum(t.sum() for t in terms.values()) if terms else None
    names = list(model.unknowns)
    if total is None or not total.requires_grad:
        grads = [None] * len(names)
    else:
        grads = torch.autograd.grad(total, [model.unknowns[k] for k in names], allow_unused=True)
    unused = [k for k, g in zip(names, grads) if g is None]
    if unused:
        raise ConfigError(f"Unknown {', '.join(repr(k) for k in unused)} of problem {problem.name!r} is not used by the "
                          f"residual (no gradient reaches it): it would stay at its init "
                          f"({', '.join(f'{k}={float(problem.unknowns[k].init):g}' for k in unused)}) and be reported as "
                          f"inferred. Read it in the residual as a tensor (p.{unused[0]}, not float(p.{unused[0]})), or make "
                          f"it a known parameter / drop it from params")


def _warn_left_soft(problem: Problem, covered: set[int], keep_soft: tuple[int, ...]) -> None:
    left = [condition_name(i, c) for i, c in enumerate(problem.conditions)
            if isinstance(c, (Dirichlet, Initial, Periodic)) and i not in covered and i not in keep_soft]
    if left:
        warnings.warn(f"constraints: hard leaves {left} of problem {problem.name!r} as loss terms: the automatic transform "
                      "builds in one Dirichlet value per output on whole faces of a box (× time), Initial values and "
                      "velocities, and Periodic conditions that every output has; for other shapes or values give "
                      "Problem(output_transform=...) (on a polygon, e.g. polygon.adf(x) * net), or list them in keep_soft to silence "
                      "this", stacklevel=3)


class _Evaluator:
    """Relative L2 vs the reference on the problem's eval points (reference computed once)."""

    def __init__(self, problem: Problem, device):
        self.problem = problem
        self.x = problem.default_eval_points() if problem.reference is not None else None
        self.ref = problem.reference_values(self.x).to(device) if self.x is not None else None
        if self.x is not None:
            self.x = self.x.to(device)
        names = problem.eval_outputs or problem.outputs
        self.cols = [problem.outputs.index(n) for n in names]
        if self.ref is not None:
            if problem.eval_outputs and max(self.cols) >= self.ref.shape[1]:
                raise ConfigError(f"problem {problem.name!r}: eval_outputs {list(names)} asks for outputs its reference "
                                  f"does not give (it returns {self.ref.shape[1]} column(s), the first output(s) in "
                                  f"{list(problem.outputs)}); return one column per output or evaluate those it gives")
            self.cols = [k for k in self.cols if k < self.ref.shape[1]]  # a one-column reference: the first output

    @torch.no_grad()
    def predict(self, model: PINNModel) -> torch.Tensor:
        """The model at the eval points, ``(n, outputs)`` float64, in chunks."""
        dtype = next(model.parameters()).dtype
        return torch.cat([model(self.x[s:s + 65536].to(dtype)) for s in range(0, len(self.x), 65536)]).to(torch.float64)

    def __call__(self, model: PINNModel) -> dict[str, float]:
        return {} if self.x is None else self.errors(self.predict(model))

    def errors(self, pred: torch.Tensor) -> dict[str, float]:
        """Relative L2 per output and over the evaluated ones, of predictions at the eval points."""
        out = {}
        for k, name in enumerate(self.problem.outputs):
            if k < self.ref.shape[1]:
                out[f"rel_l2_{name}"] = float((pred[:, k] - self.ref[:, k]).norm() / self.ref[:, k].norm().clamp_min(1e-300))
        sel = self.cols
        if self.problem.eval_error is not None:
            out["rel_l2"] = float(self.problem.eval_error(self.x.to(pred.dtype), pred))
        else:
            out["rel_l2"] = float((pred[:, sel] - self.ref[:, sel]).norm() / self.ref[:, sel].norm().clamp_min(1e-300))
        return out


def _lr_schedule(opt, base_lrs, ph: PhaseConfig, step: int):
    if ph.decay_every or ph.warmup_steps:
        f = ph.decay_rate ** (step / ph.decay_every) if ph.decay_every else 1.0
        if step < ph.warmup_steps:
            f *= step / ph.warmup_steps
        for g, lr in zip(opt.param_groups, base_lrs):
            set_lr(g, lr * f)


def fit(problem: Problem, config: PINNConfig | dict, *, run=None, resume: bool = False, progress=None) -> FitResult:
    """Train a PINN for ``problem``; see the module docstring. ``config``: a mapping, a `PINNConfig` or the path of
    a YAML config file. ``run``: a `RunDir` for logs and checkpoints. The
    caller's global random state is left as it was (building the net draws from it before its seeded init)."""
    from sciml.utils import callers_rng_kept, resolve_device

    source = "PINN config"
    if isinstance(config, (str, Path)):  # a YAML file, as `sciml train` reads one ('str' object is not a mapping)
        from sciml.config import load_yaml

        config, source = load_yaml(config), str(config)
    elif not isinstance(config, (PINNConfig, Mapping)):
        raise ConfigError(f"fit's config must be a mapping (e.g. {{'phases': [...]}}), a PINNConfig or the path of a "
                          f"YAML config file, got {type(config).__name__}")
    cfg = config if isinstance(config, PINNConfig) else validate(PINNConfig, {"problem": problem.name, **config}, source=source)
    # the run folder held against a second process (two resumes of one folder both trained, their metric lines
    # interleaved), as the command line and the operator trainer hold it
    with run.held() if run is not None else contextlib.nullcontext(), \
            callers_rng_kept(resolve_device(cfg.device)):  # a CPU run leaves CUDA uninitialised
        return _fit(problem, cfg, run=run, resume=resume, progress=progress)


def _fit(problem: Problem, cfg: PINNConfig, *, run=None, resume: bool = False, progress=None) -> FitResult:
    from sciml.utils import compile_jet_loss, resolve_device

    changed = run.check_resume(dump(cfg), "pinn") if resume and run is not None else []
    device = resolve_device(cfg.device)
    dtype = _DTYPES[cfg.dtype]
    if cfg.loss.causal.enabled and not problem.is_time_dependent:
        raise ConfigError("loss.causal.enabled needs a time-dependent problem (a SpaceTime domain); set it to false")
    model, covered = build_model(problem, cfg)
    cast_model(model.to(device), dtype)  # complex parameters of a user's net stay complex
    cpu_points = sample_collocation(problem, interior=cfg.points.interior, boundary=cfg.points.boundary,
                                    initial=cfg.points.initial, method=cfg.points.method, seed=cfg.seed, skip=covered)
    cond_weights = {condition_name(i, c): c.weight for i, c, _ in cpu_points.conditions}
    if cfg.loss.weights or len(model.unknowns):
        terms = _probe_residual(problem, model, cpu_points.interior[:4])
        _check_weight_names(problem, terms, cfg.loss.weights, covered)
        _check_unknowns_used(problem, model, terms)
    weights = LossWeights(cfg.loss.weights, method=cfg.loss.adaptive, every=cfg.loss.update_every, alpha=cfg.loss.alpha, seed=cfg.seed)
    causal = None
    if cfg.loss.causal.enabled:
        causal = CausalWeights(problem.domain.t0, problem.domain.t1, bins=cfg.loss.causal.bins, eps=cfg.loss.causal.eps)
    evaluate = _Evaluator(problem, device)
    if cfg.compile and cfg.derivatives != "jet":
        raise ConfigError("compile: true needs derivatives: jet (reverse/forward modes call autograd inside the loss, "
                          "which torch.compile cannot capture)")
    if cfg.derivatives == "jet" and not jet_carries(model.net):  # it would fall back to reverse mode silently
        if isinstance(model.net, MLP):
            raise ConfigError(f"derivatives: jet carries nets with activation {' or '.join(sorted(JET_ACTIVATIONS))}, not "
                              f"{model.net.activation!r}: set net.activation to one of them, or derivatives: reverse")
        if cfg.compile:
            raise ConfigError(f"compile: true needs the jet backend, which carries sciml.pde.nets.MLP only, not this "
                              f"problem's own {type(model.net).__name__}: set compile: false")
    terms_fn = lambda pts, **kw: loss_terms(model, problem, pts, mode=cfg.derivatives, causal=causal, **kw)
    compiled_terms = compile_jet_loss(terms_fn) if cfg.compile else terms_fn  # first-order steps only

    start_phase, start_step, elapsed, history = 0, 0, 0.0, []
    opt_state = guard_state = resumed = None
    saved_config = dump(cfg)  # in each checkpoint: what the state was trained with
    if resume:
        if run is None:
            raise ValueError("resume=True needs the run folder")
        state = run.load_checkpoint("last", map_location=device)
        cast_model(model, _DTYPES[state["dtype"]])
        _load_weights(model, state, run.path)
        cpu_points.interior = state["interior"].cpu()
        weights.load_state_dict(state["weights"])
        start_phase, start_step, elapsed, history = state["phase"], state["step"], state["elapsed"], state["history"]
        taken = {h["phase"]: h["steps"] for h in history}  # finished phases, then the current one
        if start_phase < len(cfg.phases):
            taken[start_phase] = start_step
        for i, steps in taken.items():
            if i < len(cfg.phases) and cfg.phases[i].steps < steps:
                raise ConfigError(f"phases.{i}.steps={cfg.phases[i].steps} is below the {steps} steps this run has taken "
                                  f"in that phase; give at least that many to go on")
        # a finished phase is not run again: a changed setting of one (more steps, another lr) would be written to
        # config.yaml as if it had trained so
        finished = [k for k in changed if k.startswith("phases.")
                    and k.split(".")[1].isdigit() and int(k.split(".")[1]) < start_phase]
        if finished:
            where = (f"the run is in phase {start_phase}" if start_phase < len(cfg.phases) else "the run has finished")
            raise ConfigError(f"{', '.join(finished)}: a resume goes on from where it stopped ({where}) and does not "
                              f"run a finished phase again; change only the current or later phases, or start a new run "
                              f"for the change")
        # only the lines after the checkpoint's: a crashed sitting may have cut the last one off (dropped below)
        final_before = run.final_after(state["metric_lines"])
        if start_phase >= len(cfg.phases) and final_before is not None and not final_before.get("stopped_early"):
            # it only wrote the final record, config and environment again as a new sitting's
            raise ConfigError(f"{run.path} has finished: all its {len(cfg.phases)} phases are done, so a resume would "
                              f"train nothing, and a finished phase does not run again; to train longer, start a new "
                              f"run with more steps (`sciml train CONFIG phases.{len(cfg.phases) - 1}.steps=N`, or a "
                              f"phase more); `sciml eval {run.path}` evaluates this one")
        opt_state, guard_state = state["optimizer"], state.get("guard")
        run.truncate_metrics(state["metric_lines"])
        # what this sitting changed, from where: the config it goes on from is the checkpoint's (config.yaml for
        # one saved before checkpoints held it)
        resumed = run.resume_record(state.get("config"), saved_config, "pinn", device=device,
                                    at={"phase": start_phase, "step": start_step})
    if run is not None:  # a resume's overrides too (max_minutes, a lower lr): the next resume and eval read them
        run.write_config(saved_config)  # headed by a note once a resume changed settings (its history: `resumed`)
        run.write_environment(device, cfg.model_dump(), resumed=resumed)

    def log(record):  # counts every line, so a checkpoint knows where its metrics end
        nonlocal metric_lines
        if run is not None:
            run.log(record)
            metric_lines += 1

    def log_guard_events(guard, phase, judge_pending=True):
        for ev in guard.pop_events(judge_pending):
            log({"kind": "guard", "phase": phase, **ev})  # the operator trainer's shape, phase for epoch

    metric_lines = len(run.read_metrics()) if run is not None else 0
    total_steps = 0
    last_guard = None  # the latest phase's guard: its level carries on, its counts sum the run's
    deadline = None if cfg.max_minutes is None else time.perf_counter() + 60 * cfg.max_minutes
    stopped_early = False
    for i, ph in enumerate(cfg.phases):
        if i < start_phase:
            continue
        if ph.dtype:
            cast_model(model, _DTYPES[ph.dtype])
        cur_dtype = next(model.parameters()).dtype
        points = cpu_points.to(device, cur_dtype)
        opt_kw = dict(ph.optimizer)
        name = opt_kw.pop("name")  # PINNConfig checked the names, and the phases cuda_graph captures
        kind = closure_kind(name)  # "none" | "backward" (L-BFGS) | "loss" (NysNewton-CG differentiates itself)
        needs_closure = kind != "none"
        if causal is not None:
            causal.hold_within_step = needs_closure
        phase_graph = cfg.phase_graph(ph)
        graphed = phase_graph and not needs_closure  # the optimizer inside the graph: first-order only
        if graphed:
            opt_kw.update(graph_optimizer_kwargs(name, device, opt_kw))
        opt = build_optimizer(_param_groups(model, kind, opt_state if i == start_phase else None), name, **opt_kw)
        guard_settings = cfg.phase_guard(ph)
        guard = None if guard_settings is None else Guard(model, opt, **guard_settings)  # None: NaN raises
        first = start_step + 1 if i == start_phase else 1
        if guard is not None:
            guard.step_count = first - 1  # its events then carry the phase's step numbers
            if i == start_phase and guard_state is not None:  # its lr scale, running loss, spike history
                guard.load_state_dict(guard_state)
            elif last_guard is not None:  # the same objective: its loss level is this phase's reference
                guard.carry_level(last_guard)
            last_guard = guard
        base_lrs = [float(g["lr"]) for g in opt.param_groups]  # the config's: a checkpoint holds decayed ones
        if i == start_phase and opt_state is not None:
            load_optimizer_state(opt, opt_state, from_config=opt_kw)
            for g, lr in zip(opt.param_groups, base_lrs):  # the config's (a resume may change it); decayed per step below
                g["lr"] = lr
        lrs_as_tensors(opt, graphed)  # also undoes a resumed graph run's tensor lrs for an eager one

        def backward_loss(terms_of):
            """Fresh gradients of the weighted loss, its terms from `terms_of(points)`: (loss, terms)."""
            opt.zero_grad(set_to_none=True)
            terms = terms_of(points)
            loss = weights.total(terms, cond_weights)
            loss.backward()
            return loss, terms

        def first_order_step():
            """One step of a first-order phase; graph mode captures exactly this (the guard's device part)."""
            loss, terms = backward_loss(compiled_terms)
            record = None
            if guard is None:
                opt.step()
            elif graphed:
                record = guard.update_on_device(loss)
            else:
                guard.step(loss)
            return loss.detach(), _detached(terms), record

        def update_loss_weights():
            """New adaptive loss weights from this step's terms and residuals, before the step takes them.
            Their graphs die here: a live one would pin the parameters' gradient accumulators to this
            stream, and a later CUDA-graph capture would fail."""
            terms, residuals = terms_fn(points, return_residuals=True)
            if weights.maybe_update(step, model, terms, residuals):
                if guard is not None:
                    guard.rebase()
                if captured is not None:  # the weights are numbers baked into the captured step
                    captured.invalidate()

        def loss_and_grad():
            """One L-BFGS evaluation: loss terms, total and gradient, detached. Graph mode captures
            exactly this; L-BFGS moves the weights in place, so each replay sees the new point."""
            loss, terms = backward_loss(terms_fn)
            return loss.detach(), _detached(terms)

        lbfgs_graphed = phase_graph and kind == "backward"  # L-BFGS's steps are host-driven; its evaluations replay
        captured = CapturedStep(first_order_step if graphed else loss_and_grad, device) if graphed or lbfgs_graphed else None
        evaluate_loss_and_grad = captured if lbfgs_graphed else loss_and_grad
        if captured is not None and guard is not None:  # a rollback replaces the optimizer's tensors and lr scale
            guard.on_restore(captured.invalidate)
        t_phase = time.perf_counter()
        loss = torch.tensor(float("nan"))
        step = first - 1
        try:
            for step in range(first, ph.steps + 1):
                if not needs_closure and cfg.points.resample_every and step % cfg.points.resample_every == 0:
                    fresh = _resample(problem, model, cfg, points, step, covered, cur_dtype, device)
                    if captured is not None and fresh.interior.shape == points.interior.shape:
                        with torch.no_grad():
                            points.interior.copy_(fresh.interior)  # where the captured step reads them
                    else:
                        points = fresh
                        if captured is not None:
                            captured.invalidate()
                    cpu_points.interior = points.interior.detach().cpu()
                    if guard is not None:  # new points, new loss level: not a spike
                        guard.rebase()
                _lr_schedule(opt, base_lrs, ph, step)

                def closure():
                    if kind == "backward":
                        total, terms = evaluate_loss_and_grad()
                        total = total.clone()  # a replay writes the same output tensor every time
                    else:
                        terms = terms_fn(points)
                        total = weights.total(terms, cond_weights)  # the optimizer differentiates it itself
                    if closure.terms is None:  # the step's first evaluation, at the point whose loss it returns;
                        closure.terms = _detached(terms)  # later ones are line-search trials
                    return total

                if needs_closure:
                    closure.terms = None
                    if causal is not None:
                        causal.new_step()
                    loss = guard.step(None, closure=closure) if guard else opt.step(closure)
                else:
                    if weights.method != "fixed" and step % weights.every == 0:
                        update_loss_weights()
                    # graph mode: eager until the guard's ZClip warm-up is over (it keeps host state)
                    replay = captured is not None and (guard is None or guard.capturable)
                    loss, closure.terms, record = captured() if replay else first_order_step()
                    if record is not None:
                        guard.record_step(record, replayed=replay and captured.captured)
                evaluates = bool(cfg.eval_every) and (step % cfg.eval_every == 0 or step == ph.steps)
                logs = evaluates or step % cfg.log_every == 0 or step == ph.steps  # an eval step is logged too
                if guard is not None and logs:  # polls: a sync
                    log_guard_events(guard, i)
                if logs:
                    lval = float(loss.detach())
                    if not math.isfinite(lval) and guard is None:
                        raise FloatingPointError(f"non-finite loss at phase {i} ({name}) step {step}: lower the learning rate, "
                                                 "use dtype=float64, or drop the phase's guard: null")
                    rec = {"kind": "step", "phase": i, "optimizer": name, "step": step, "loss": lval,
                           **{f"loss_{k}": float(v.detach()) for k, v in closure.terms.items()},
                           **{f"weight_{k}": weights.weight(k) for k in closure.terms if weights.method != "fixed"},
                           **{f"param_{k}": float(v.detach()) for k, v in model.unknown_values().items()}}
                    if causal is not None:
                        rec["causal_min_weight"] = float(torch.as_tensor(causal.last_min_weight).min())
                    if evaluates:
                        rec.update(evaluate(model))
                    rec["seconds"] = elapsed + time.perf_counter() - t_phase
                    log(rec)
                    if progress:
                        progress(rec)
                if run is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < ph.steps:
                    if guard is not None:  # judge the buffered steps and the weights: the checkpoint holds no unjudged ones
                        guard.check_weights()
                        log_guard_events(guard, i)
                    _save(run, model, opt, guard, weights, cpu_points, i, step, elapsed + time.perf_counter() - t_phase, history, metric_lines, saved_config)
                if deadline is not None and time.perf_counter() > deadline and (step < ph.steps or i + 1 < len(cfg.phases)):
                    stopped_early = True
                    break
            if guard is not None and step == ph.steps:  # a phase ending on non-finite steps hands on its last good state
                guard.finish()
                log_guard_events(guard, i)
        except GuardError as err:  # keep the events and the last good state (the guard restored it)
            log_guard_events(guard, i, judge_pending=False)
            # the guard's restored snapshot, never weights no healthy loss judged (non-finite, or finite ones an lr far
            # too high left, at which the loss overflows)
            good = guard.holds_good_state and guard.weights_finite()
            if run is not None and good:
                _save(run, model, opt, guard, weights, cpu_points, i, step, elapsed + time.perf_counter() - t_phase, history, metric_lines, saved_config)
            where = f"sciml train --resume {run.path}" if run is not None else "resume"
            if not good:  # never saved: a resume starts from the newest checkpoint before, if any
                kept = (" (the run's earlier checkpoint stays as it was)" if run is not None and
                        run.checkpoint_path("last").exists() else "")
                fix = (f"start again with a much lower phases.{i}.optimizer.lr" if err.lr_helps else
                       "start again once the problem's data or residual is fixed")
                raise err.with_context(f"(phase {i}, {name}). The guard kept no good state of this phase, so none is "
                                       f"saved{kept}: {fix}") from err
            then = (f"continue with a lower rate, e.g. `{where} phases.{i}.optimizer.lr=...`" if err.lr_helps else
                    f"continue once the problem's data or residual is fixed: `{where}`")
            raise err.with_context(f"(phase {i}, {name}). The last good state is saved; {then}") from err
        seconds = time.perf_counter() - t_phase
        elapsed += seconds
        if stopped_early and step < ph.steps:  # mid-phase: resume continues with this optimizer's state
            if guard is not None:
                log_guard_events(guard, i)
            if run is not None:
                _save(run, model, opt, guard, weights, cpu_points, i, step, elapsed, history, metric_lines, saved_config)
            break
        total_steps += step - first + 1
        history.append({"phase": i, "optimizer": name, "steps": step, "loss": float(loss.detach()), "seconds": seconds})
        opt_state = None
        if run is not None:  # phase boundary: the next phase starts fresh
            _save(run, model, None, None, weights, cpu_points, i + 1, 0, elapsed, history, metric_lines, saved_config)
        if stopped_early:
            break

    # the loss at the final weights (a step record's loss is the one before its step)
    if causal is not None:
        causal.hold_within_step = False
    at = cpu_points.to(device, next(model.parameters()).dtype)
    last_loss = float(weights.total(terms_fn(at), cond_weights).detach())
    pred = evaluate.predict(model) if evaluate.x is not None else None  # once: for the final errors and the picture
    final = {"kind": "final", "weights": "last", **(evaluate.errors(pred) if pred is not None else {}), "loss": last_loss,
             "seconds": elapsed, "stopped_early": stopped_early, **inferred_unknowns(problem, model),
             **({"guard": last_guard.summary()} if last_guard is not None else {})}
    if run is not None and (changes := run.settings_history()):  # config.yaml alone is not the run
        final["resumed_with_changes"] = changes
    log(final)
    if run is not None and pred is not None:
        from sciml.train.plots import plot_pinn_fields

        cols = evaluate.cols
        plot_pinn_fields(evaluate.x.cpu(), evaluate.ref[:, cols].cpu(), pred[:, cols].cpu(),
                         coords=problem.coords, outputs=[problem.outputs[k] for k in cols], path=run.path / "predictions.png")
    return FitResult(model=model, metrics=final, history=history)


def _param_groups(model: PINNModel, kind: str, saved: dict | None):
    """The optimizer's parameters: the net's, and the physical unknowns in a group of their own without weight
    decay (AdamW's default 0.01 pulled D towards 0: 0.687 for 0.697) or gradient filter (``filtered: False``). A closure optimizer (L-BFGS, Newton-CG) takes one
    group and has no weight decay: all in one; so does an optimizer state saved with one group (a run
    checkpointed before the split), which resumes as it was."""
    unknowns = list(model.unknowns.values())
    if not unknowns or kind != "none" or (saved is not None and len(saved["param_groups"]) == 1):
        return model.parameters()
    ids = {id(p) for p in unknowns}
    # nor a gradient filter: ⊥Grad zeroes a scalar's gradient (it is parallel to the scalar), freezing D
    return [{"params": [p for p in model.parameters() if id(p) not in ids]},
            {"params": unknowns, "weight_decay": 0.0, "filtered": False}]


def inferred_unknowns(problem: Problem, model: PINNModel) -> dict[str, float]:
    """``param_<name>`` of each Unknown as the model holds it, and where its true value is given
    ``param_<name>_true``, ``param_<name>_abs_error`` and (true ≠ 0) ``param_<name>_rel_error``."""
    out = {}
    for k, v in model.unknown_values().items():
        out[f"param_{k}"] = value = float(v.detach())
        true = problem.unknowns[k].true if k in problem.unknowns else None
        if true is not None:
            out[f"param_{k}_true"] = float(true)
            out[f"param_{k}_abs_error"] = error = abs(value - true)
            if true != 0:  # relative to 0 it is no number (it read 8e296)
                out[f"param_{k}_rel_error"] = error / abs(true)
    return out


def describe_unknowns(metrics: dict[str, Any]) -> list[str]:
    """One line per inferred unknown in `metrics` (`inferred_unknowns`' keys), for the CLI."""
    lines = []
    for key, value in metrics.items():
        if not key.startswith("param_") or key.endswith(("_true", "_abs_error", "_rel_error")) or not isinstance(value, float):
            continue
        name = key[len("param_"):]
        parts = [f"true {metrics[f'{key}_true']:.6g}"] if f"{key}_true" in metrics else []
        if f"{key}_abs_error" in metrics:
            parts.append(f"abs error {metrics[f'{key}_abs_error']:.3e}")
        if f"{key}_rel_error" in metrics:
            parts.append(f"rel error {metrics[f'{key}_rel_error']:.3e}")
        lines.append(f"inferred {name} = {value:.6g}" + (f" ({', '.join(parts)})" if parts else ""))
    return lines


def _detached(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in terms.items()}


def _resample(problem, model, cfg, points, step, covered, dtype, device) -> CollocationSet:
    n, seed = cfg.points.interior, cfg.seed + 7919 * step
    if cfg.points.adaptive == "rad":
        score = lambda x: residual_magnitude(model, problem, x.to(device=device, dtype=dtype), mode=cfg.derivatives)
        x = rad_sample(problem, score, n, k=cfg.points.rad_k, c=cfg.points.rad_c, candidates=max(cfg.points.candidates, n), seed=seed)
    elif cfg.points.adaptive == "rar":
        score = lambda x: residual_magnitude(model, problem, x.to(device=device, dtype=dtype), mode=cfg.derivatives)
        x = rar_add(problem, score, points.interior.detach().cpu().to(torch.float64), cfg.points.rar_add, candidates=cfg.points.candidates, seed=seed)
    else:
        x = problem.sample_interior(n, "pseudo", seed)  # a fresh draw (a QMC sequence would repeat itself)
    return CollocationSet(x.to(device=device, dtype=dtype), points.conditions)


def _save(run, model, opt, guard, weights, cpu_points, phase, step, elapsed, history, metric_lines, config):
    """`config`: the config this state was trained with (`dump`): a resume's record of what it changes."""
    run.save_checkpoint({"config": config,
        "model": model.state_dict(), "optimizer": None if opt is None else opt.state_dict(),
        "guard": None if guard is None else guard.state_dict(), "weights": weights.state_dict(),
        "interior": cpu_points.interior, "phase": phase, "step": step, "elapsed": elapsed, "history": list(history),
        "metric_lines": metric_lines, "dtype": str(next(model.parameters()).dtype).replace("torch.", "")})


# ----------------------------------------------------------------------------------------------
def load_problem(cfg: PINNConfig) -> Problem:
    """The config's problem built with its problem_args. Arguments the factory's signature does not take are a
    ConfigError; an error raised inside the factory (a bug in the user's code) propagates with its traceback."""
    from sciml.pde.problems import PROBLEMS
    from sciml.registry import check_call_args, typed_call_args

    factory = PROBLEMS.get(cfg.problem)
    args = cfg.problem_args
    if callable(factory) and not isinstance(factory, Problem):
        try:
            check_call_args(f"problem {cfg.problem!r}", factory, cfg.problem_args, "problem_args")
            # the values as the factory's annotations say (nu: a positive finite float): checked before training
            args = typed_call_args(f"problem {cfg.problem!r}", factory, cfg.problem_args, "problem_args")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return get_problem(cfg.problem, **args)


def run_pinn(config: dict, *, run_dir: Path, resume: bool = False, source: str = "PINN config") -> dict:
    """Train the PINN a config describes into ``run_dir``; returns final metrics (``rel_l2`` where the problem
    has a reference). ``source`` names the config in errors (its file)."""
    from sciml.train.run import RunDir

    cfg = validate(PINNConfig, config, source=source)
    problem = load_problem(cfg)
    result = fit(problem, cfg, run=RunDir(run_dir), resume=resume)
    return result.metrics


def load_pinn(run_path: str | Path, *, which: str = "last", problem: Problem | None = None) -> tuple[PINNModel, PINNConfig, Problem]:
    """A PINN run folder's checkpoint ("last", or "best" where written) as its trained model (points ``(n, dims)``
    -> outputs ``(n, n_outputs)``, conditions built in where hard), with the run's config and problem. `problem`:
    the one it was trained with, where the config cannot name it (a Problem defined in a script)."""
    model, cfg, problem, _ = _load_pinn(run_path, which=which, problem=problem)
    return model, cfg, problem


def _load_pinn(run_path: str | Path, *, which: str, problem: Problem | None) -> tuple[PINNModel, PINNConfig, Problem, str]:
    """`load_pinn`, and the name of the checkpoint it read: `which`, or "last" where `which` was not written (a PINN
    run writes no "best")."""
    from sciml.config import load_yaml, reading_saved_run
    from sciml.train.run import RunDir

    run = RunDir(run_path)
    with reading_saved_run():  # its phases' optimizers need not build: only the model is rebuilt
        cfg = validate(PINNConfig, load_yaml(run.config_path), source=str(run.config_path))
    if problem is None:
        try:
            problem = load_problem(cfg)
        except ValueError as err:  # e.g. "unknown problem 'kovasznay'"
            raise ConfigError(f"{err}; a problem defined in a script reloads as load_pinn(run, problem=...)") from None
    elif problem.name != cfg.problem:
        if problem.name != Problem.name:
            raise ConfigError(f"{run.path} trained problem {cfg.problem!r}, not {problem.name!r}: pass the problem it was "
                              f"trained with")
        # the default name: a Problem built by the very factory the config names (a CLI run of 'pkg.mod:factory'),
        # which records the factory's path; compared with what that factory builds, where it builds
        try:
            recorded = load_problem(cfg)
        except Exception:  # a factory that does not import or build here: the checkpoint's shapes still check
            recorded = None
        differs = [] if recorded is None else _problem_differences(recorded, problem)
        if differs:
            raise ConfigError(f"{run.path} trained problem {cfg.problem!r} (problem_args {cfg.problem_args}); the problem "
                              f"given differs from it in {'; '.join(differs)}: pass the problem it was trained with")
    model, _ = build_model(problem, cfg)
    used = which if run.checkpoint_path(which).exists() else "last"
    state = run.load_checkpoint(used)
    cast_model(model, _DTYPES[state["dtype"]])
    _load_weights(model, state, run.path)
    return model.eval(), cfg, problem, used


def _problem_differences(a: Problem, b: Problem) -> list[str]:
    """What differs between two problems' structure (domain, coordinates, outputs, parameters, conditions and
    their observations), each as ``what: a vs b``; empty when they agree."""
    out = []
    for what, x, y in (("domain", repr(a.domain), repr(b.domain)), ("coords", a.coords, b.coords),
                       ("outputs", a.outputs, b.outputs), ("params", repr(dict(a.params)), repr(dict(b.params))),
                       ("conditions", [(type(c).__name__, c.component) for c in a.conditions],
                        [(type(c).__name__, c.component) for c in b.conditions])):
        if x != y:
            out.append(f"{what}: {x} vs {y}")
    if not out:
        for i, (c, d) in enumerate(zip(a.conditions, b.conditions)):
            if isinstance(c, Data):
                for field in ("points", "values"):
                    u, v = (torch.as_tensor(getattr(e, field)).to(torch.float64) for e in (c, d))
                    if u.shape != v.shape or not torch.equal(u, v):
                        out.append(f"conditions[{i}] (Data) {field}")
    return out


def _load_weights(model: PINNModel, state: dict, where: Path) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # e.g. a periodic embedding that build_model no longer gives this problem
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise ConfigError(f"{where}'s checkpoint does not fit the net its config builds now ({detail} ...): a hard run trained before 2026-11-27 whose transform broke a Periodic condition is built "
                          f"without that periodic embedding since; train it again") from None


def evaluate_pinn_run(run_path: Path, *, which: str = "last") -> dict:
    """Reload a PINN run folder's checkpoint and measure its relative L2 vs the reference; "checkpoint" names the one
    measured (`load_pinn` reads "last" where `which` was not written, as a PINN run writes no "best")."""
    model, cfg, problem, used = _load_pinn(run_path, which=which, problem=None)
    return {"run": str(run_path), "problem": cfg.problem, "checkpoint": used, **_Evaluator(problem, "cpu")(model),
            **inferred_unknowns(problem, model)}
