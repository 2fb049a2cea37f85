"""PINN loss terms, causal weighting and adaptive loss weights.

L(θ) = Σ_k λ_k L_k,  L_k = mean_i r_k(x_i)²  over the term's points, for the PDE residual terms
and every soft condition. λ_k are fixed, or adapted every few steps:

- ``grad_norm`` (learning-rate annealing, Wang, Teng & Perdikaris 2021, in the form of the jaxpi
  guide, Wang et al. 2023): λ̂_k = Σ_j ‖∇_θ L_j‖ / ‖∇_θ L_k‖, λ ← α λ + (1 − α) λ̂ from the second
  update on; the first sets λ = λ̂ (jaxpi averages it with the initial 1);
- ``ntk`` (Wang, Yu & Perdikaris 2022): λ̂_k = Σ_j tr K_j / tr K_k with tr K_k = Σ_i ‖∇_θ r_k(x_i)‖² / n_k,
  estimated without per-sample gradients by Hutchinson's identity tr(J Jᵀ) = E‖Jᵀ v‖²,
  v Rademacher (one backward pass per probe).

Causal weighting (Wang, Sankaran & Perdikaris, "Respecting causality", 2022): the time axis is
cut into M bins with losses L_1 … L_M; bin i gets w_i = exp(−ε Σ_{j<i} L_j) (no gradient), so
later times are fitted only once earlier times are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from sciml.pde.conditions import Condition
from sciml.pde.problem import PINNModel, Problem

Tensor = torch.Tensor


@dataclass
class CollocationSet:
    """Training points on one device/dtype: ``interior (n, d)`` and one batch dict per soft condition."""

    interior: Tensor
    conditions: list[tuple[int, Condition, dict[str, Tensor]]]

    def to(self, *args, **kwargs) -> "CollocationSet":
        """A copy with every tensor cast as ``Tensor.to(*args, **kwargs)`` (device, dtype or both)."""
        cast = lambda t: t.to(*args, **kwargs)
        return CollocationSet(cast(self.interior), [(i, c, {k: cast(v) for k, v in b.items()}) for i, c, b in self.conditions])


def sample_collocation(problem: Problem, *, interior: int, boundary: int, initial: int, method: str = "sobol",
                       seed: int = 0, skip: Sequence[int] = ()) -> CollocationSet:
    """Draw the interior points and the points of every condition not in ``skip`` (float64, CPU)."""
    batches = []
    for i, c in enumerate(problem.conditions):
        if i in skip:
            continue
        n = c.n or (initial if c.kind == "initial" else boundary)
        batches.append((i, c, problem.sample_condition(c, n, method, seed + 17 * (i + 1))))
    return CollocationSet(problem.sample_interior(interior, method, seed), batches)


class CausalWeights:
    """w_i = exp(−ε Σ_{j<i} L_j) over ``bins`` time bins of [t0, t1] (Wang et al. 2022)."""

    def __init__(self, t0: float, t1: float, *, bins: int = 32, eps: float = 1.0):
        if bins < 2 or eps < 0:
            raise ValueError(f"causal weighting needs bins >= 2 and eps >= 0, got bins={bins}, eps={eps}")
        self.t0, self.t1, self.bins, self.eps = t0, t1, bins, eps
        self.hold_within_step = False  # set for closure optimizers (L-BFGS, Newton-CG): see `new_step`
        # per residual term: the step's weights and whether this step has set them (one pair for all terms gave
        # term 2 the weights of term 1), and the last weights, for `last_min_weight`
        self._held: dict[str, Tensor] = {}
        self._set: dict[str, Tensor] = {}
        self._last: dict[str, Tensor] = {}

    def weights(self, key: str = "residual") -> Tensor:
        """The bins' weights of the last evaluation of term `key`."""
        return self._last[key]

    @property
    def last_min_weight(self) -> Tensor | float:
        """The smallest weight of the last evaluation, over every term (a tensor: read it lazily)."""
        return torch.stack([w.min() for w in self._last.values()]).min() if self._last else 1.0

    def new_step(self) -> None:
        """With `hold_within_step`, the next evaluation sets the weights and the step's later ones
        (line-search trials) reuse them: weights redrawn per trial made the line search compare
        values of different objectives, and L-BFGS stalled for good. Device tensors, no host
        sync, so a captured closure replays it."""
        for flag in self._set.values():
            flag.zero_()

    def loss(self, r2: Tensor, t: Tensor, key: str = "residual") -> Tensor:
        """Causally weighted mean of r² ``(n,)`` at times t ``(n,)``; `key` names the residual term (each has
        its own weights)."""
        idx = ((t - self.t0) / (self.t1 - self.t0) * self.bins).long().clamp(0, self.bins - 1)
        count = torch.zeros(self.bins, dtype=r2.dtype, device=r2.device).index_add_(0, idx, torch.ones_like(r2))
        per_bin = torch.zeros(self.bins, dtype=r2.dtype, device=r2.device).index_add_(0, idx, r2) / count.clamp_min(1)
        with torch.no_grad():
            prefix = torch.cat([per_bin.new_zeros(1), torch.cumsum(per_bin, 0)[:-1]])
            w = torch.exp(-self.eps * prefix)
            if self.hold_within_step:
                held = self._held.get(key)
                if held is None or held.dtype != w.dtype or held.device != w.device:
                    held = self._held[key] = torch.zeros_like(w)
                    self._set[key] = torch.zeros((), dtype=torch.bool, device=w.device)
                w = torch.where(self._set[key], held, w)
                held.copy_(w)
                self._set[key].fill_(True)
            self._last[key] = w  # a tensor; read lazily so training does not sync every step
        return (w * per_bin).mean()


def loss_terms(model: PINNModel, problem: Problem, points: CollocationSet, *, mode: str = "reverse",
               causal: CausalWeights | None = None, return_residuals: bool = False):
    """``{term name: mean-square loss}`` (and, optionally, the residual vectors per term)."""
    p = model.params(problem)
    if mode == "jet":
        d = _jet(model, problem, points.interior, p)
    else:
        d = problem.derivatives(model, points.interior, mode)
    terms, residuals = {}, {}
    for name, r in problem.named_residual_terms(d, p).items():
        if r is None:  # "'NoneType' object has no attribute 'shape'"
            raise ValueError(f"residual term {name} is None: the problem's residual returned nothing (a missing "
                             f"`return`?); return a tensor of shape (n,), e.g. `return d.u_xx + 1.0`")
        if r.shape != points.interior.shape[:1]:
            raise ValueError(f"residual term {name} has shape {tuple(r.shape)}; it must be (n,) for n={points.interior.shape[0]} points")
        r2 = r.square()
        terms[name] = causal.loss(r2, points.interior[:, -1], key=name) if causal is not None else r2.mean()
        residuals[name] = r
    for i, c, batch in points.conditions:
        dc = problem.derivatives(model, batch["x"], "reverse" if mode == "jet" else mode)
        r = c.residual(dc, batch)
        name = condition_name(i, c)
        terms[name] = r.square().mean()
        residuals[name] = r
    return (terms, residuals) if return_residuals else terms


def condition_name(i: int, condition) -> str:
    """A condition's loss-term name, as in metrics and ``loss.weights``: dirichlet_0, initial_2, ..."""
    return f"{type(condition).__name__.lower()}_{i}"


def _square_sum(grads) -> float:
    """Σ‖g‖² over the tensors autograd returned (None for unused ones), with one host copy."""
    found = [g for g in grads if g is not None]
    return float(torch.stack([g.square().sum() for g in found]).double().sum()) if found else 0.0


class LossWeights:
    """λ per loss term: fixed, ``grad_norm`` or ``ntk`` (see the module docstring).

    Args:
        fixed: ``{term: λ}`` starting (and, for "fixed", final) weights; default 1; a condition's
            own ``weight`` multiplies in.
        method: "fixed" | "grad_norm" | "ntk".
        every: update period in steps; alpha: moving-average factor; probes: Hutchinson probes.
    """

    METHODS = ("fixed", "grad_norm", "ntk")

    def __init__(self, fixed: dict[str, float] | None = None, *, method: str = "fixed", every: int = 100,
                 alpha: float = 0.9, probes: int = 2, seed: int = 0):
        if method not in self.METHODS:
            raise ValueError(f"loss weighting {method!r} is unknown; use one of {self.METHODS}")
        if every < 1 or not 0 <= alpha < 1:
            raise ValueError(f"need every >= 1 and 0 <= alpha < 1, got every={every}, alpha={alpha}")
        self.fixed, self.method, self.every, self.alpha, self.probes = dict(fixed or {}), method, every, alpha, probes
        self.adaptive: dict[str, float] = {}
        self._gen = torch.Generator().manual_seed(seed)

    def weight(self, name: str) -> float:
        return self.fixed.get(name, 1.0) * self.adaptive.get(name, 1.0)

    def total(self, terms: dict[str, Tensor], condition_weights: dict[str, float]) -> Tensor:
        out = None
        for k, v in terms.items():
            w = self.weight(k) * condition_weights.get(k, 1.0)
            term = v if w == 1.0 else w * v  # no kernel (forward and backward) for a unit weight
            out = term if out is None else out + term
        return out

    def maybe_update(self, step: int, model: torch.nn.Module, terms: dict[str, Tensor], residuals: dict[str, Tensor]) -> bool:
        """Recompute λ at ``step % every == 0`` (needs the terms' graphs); True when updated."""
        if self.method == "fixed" or step % self.every != 0:
            return False
        params = [q for q in model.parameters() if q.requires_grad]
        scores = {}
        for name, loss in terms.items():
            if self.method == "grad_norm":
                grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                scores[name] = math.sqrt(_square_sum(grads))
            else:
                r = residuals[name].reshape(-1)
                acc = 0.0
                for _ in range(self.probes):
                    v = (torch.randint(0, 2, r.shape, generator=self._gen) * 2 - 1).to(r)
                    grads = torch.autograd.grad((v * r).sum(), params, retain_graph=True, allow_unused=True)
                    acc += _square_sum(grads)
                scores[name] = acc / self.probes / max(r.numel(), 1)
        total = sum(scores.values())
        for name, s in scores.items():
            new = total / max(s, 1e-30)
            self.adaptive[name] = self.alpha * self.adaptive.get(name, new) + (1 - self.alpha) * new if name in self.adaptive else new
        return True

    def state_dict(self) -> dict:
        return {"adaptive": dict(self.adaptive), "gen": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.adaptive = dict(state["adaptive"])
        self._gen.set_state(state["gen"].cpu())  # a CPU generator; checkpoints load onto the device


def _jet(model, problem, x, p):
    from sciml.pde.jet import JetDerivatives, jet_carries, needed_paths

    if not jet_carries(model.net):
        return problem.derivatives(model, x, "reverse")  # a problem's own net: the generic backend
    # The derivatives a residual asks for depend on the problem (one residual may serve 1-D and 2-D
    # problems), so they are probed once per problem and kept on it.
    paths = problem.__dict__.get("_jet_paths")
    if paths is None:
        paths = needed_paths(problem, p, dtype=x.dtype, device=x.device)
        object.__setattr__(problem, "_jet_paths", paths)
    return JetDerivatives(model, x, problem.outputs, problem.coords, paths)


def residual_magnitude(model: PINNModel, problem: Problem, x: Tensor, *, mode: str = "reverse", chunk: int = 8192) -> Tensor:
    """|R[u](x)| = sqrt(Σ_terms r²) at points x ``(n, d)``, detached, in chunks."""
    out = []
    p = model.params(problem)
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        d = _jet(model, problem, xs, p) if mode == "jet" else problem.derivatives(model, xs, mode)
        r = sum(t.square() for t in problem.residual_terms(d, p))
        out.append(r.detach().sqrt())
    return torch.cat(out)
