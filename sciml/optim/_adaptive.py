"""Our implementations of adaptive optimizers whose library versions drift or reject complex.

Each is a thin `FunctionalOptimizer` over a per-parameter update written from the paper (and the
official code where one exists). Each update is written once for both kinds of step count (see
`FunctionalOptimizer`): a Python int (eager, the default) or, with ``capturable=True``, a 0-dim
device tensor, so that the step can be captured in a CUDA graph; the two modes that choose
coordinates on the host (SPAM's sparse momentum, Subset-Norm's Subspace-Momentum) cannot be.
Notation: g gradient, m / v first / second moments, t step (from 1), η learning rate, λ weight
decay (decoupled, AdamW-style: θ ← θ − ηλθ).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import FunctionalOptimizer, check_betas, check_range, real_view


def _weight(w: Tensor | float, like: Tensor) -> Tensor | float:
    """A lerp weight: a tensor one must have the tensor's dtype."""
    return w.to(like.dtype) if isinstance(w, Tensor) else w


def _add_scaled(x: Tensor, y: Tensor, scale: Tensor | float) -> Tensor:
    """x += scale·y; the scale a number (one kernel) or a 0-dim tensor (capturable)."""
    return x.add_(y * scale) if isinstance(scale, Tensor) else x.add_(y, alpha=scale)


def _add_quotient(x: Tensor, num: Tensor, den: Tensor, scale: Tensor | float) -> Tensor:
    """x += scale·num/den, likewise."""
    return x.add_((num / den).mul_(scale)) if isinstance(scale, Tensor) else x.addcdiv_(num, den, value=scale)


def _add_product(x: Tensor, a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    """x += scale·a·b, likewise."""
    return x.add_(a * b * scale) if isinstance(scale, Tensor) else x.addcmul_(a, b, value=scale)


def _zero_where(x: Tensor, condition: Tensor | bool) -> None:
    if isinstance(condition, Tensor):
        x.masked_fill_(condition, 0.0)
    elif condition:
        x.zero_()


def _decay(p: Tensor, group: dict) -> None:
    if group["weight_decay"]:
        p.mul_(1.0 - group["lr"] * group["weight_decay"])


def _common(lr, eps, weight_decay) -> None:
    check_range("lr", lr, 0.0, fix="use a positive learning rate, e.g. 1e-3")
    check_range("eps", eps, 0.0)
    check_range("weight_decay", weight_decay, 0.0)


class AdaBelief(FunctionalOptimizer):
    """AdaBelief: Adam whose second moment tracks the gradient's deviation from its EMA.

    m ← β₁m + (1−β₁)g;  s ← β₂s + (1−β₂)(g−m)² + ε;
    θ ← θ − η·(m/(1−β₁ᵗ)) / (√(s/(1−β₂ᵗ)) + ε)   (decoupled decay).

    Zhuang et al., NeurIPS 2020, arXiv:2010.07468 (defaults of the official code: ε = 1e-16,
    no rectification). Single per-parameter path: pytorch-optimizer's foreach path omits a bias
    correction (5.27× off after 3 steps), ours has no second path to drift.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-16, weight_decay: float = 0.0,
                 capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      capturable=capturable))

    def init_state(self, p, group):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_var": torch.zeros_like(p)}

    def update(self, p, g, state, group):
        (b1, b2), eps, t = group["betas"], group["eps"], state["step"]
        m, s = state["exp_avg"], state["exp_avg_var"]
        _decay(p, group)
        m.lerp_(g, 1 - b1)
        d = g - m
        s.mul_(b2).addcmul_(d, d, value=1 - b2).add_(eps)
        denom = (s / (1 - b2 ** t)).sqrt_().add_(eps)
        _add_quotient(p, m, denom, -group["lr"] / (1 - b1 ** t))


class SPAM(FunctionalOptimizer):
    """SPAM: Adam with spike-aware clipping and periodic momentum reset.

    With t the step (from 1) and k = t mod ΔT (ΔT = `reset_interval`): before every step t = jΔT
    (k = 0) m and v are zeroed. Clip, when k ≥ `clip_delay` (then t ≥ clip_delay too): where
    g² > θ·v (v before this update), g ← sign(g)·√(θ·v). Then Adam, with the bias corrections in the
    step size and ε outside them: θ ← θ − η·s·(√(1−β₂ᵗ)/(1−β₁ᵗ))·m/(√v + ε), t counted across resets.
    s is a cosine warm-up that runs only after a reset, never at the start:
    s = 1 − 0.99·(1 + cos(π·k/(N+1)))/2 for t ≥ ΔT and k < N (0.01 at the reset step, N =
    `warmup_steps`), else 1. A `clip_delay` of 0 or 1 clips the first step's gradient to 0 (v = 0
    there), as in the authors' code.

    Sparse momentum (`density` d < 1, the paper's memory saver): in every tensor of two or more
    dimensions only a random ⌊d·numel⌋ coordinates keep moments and move; the subset is redrawn
    at every reset (the moments are zeroed there anyway) from `seed`. Decoupled decay then
    applies to the chosen coordinates only, as the authors intend (their code's decay of the masked
    coordinates writes to a copy). Decay comes before the step (torch's AdamW order; the authors'
    code decays after it, a difference of η·λ times the step). d = 1 (default) is dense SPAM.

    Huang et al., ICLR 2025, arXiv:2501.06842. The rules above are those of the authors' code
    (SPAM.py of the SPAM-Optimizer repository: the warm-up counter starts past N, moments reset
    before steps jΔT, clipping from k ≥ grad_accu_steps), as are the defaults: θ = 5000, ΔT = 500,
    N = 150 (pytorch-optimizer drifted to N = 50), clip_delay = 20, ε = 1e-6, d = 1.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 threshold: float = 5000.0, reset_interval: int = 500, warmup_steps: int = 150, clip_delay: int = 20,
                 density: float = 1.0, seed: int = 0, capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas)
        check_range("threshold", threshold, 0.0, lo_open=True, fix="the paper uses 5000")
        check_range("density", density, 0.0, 1.0, lo_open=True, fix="the fraction of coordinates with momentum, e.g. 0.25")
        for name, v in (("reset_interval", reset_interval), ("warmup_steps", warmup_steps), ("clip_delay", clip_delay),
                        ("seed", seed)):
            if not isinstance(v, int) or v < (1 if name == "reset_interval" else 0):
                raise ValueError(f"{name}={v!r} must be a non-negative integer (reset_interval >= 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, threshold=threshold,
                                      reset_interval=reset_interval, warmup_steps=warmup_steps, clip_delay=clip_delay,
                                      density=density, seed=seed, capturable=capturable))
        self._subsets: dict[int, tuple[int, Tensor]] = {}  # storage pointer -> (step drawn, indices)

    @property
    def graph_capturable(self) -> bool:
        """Dense SPAM only: sparse momentum draws its coordinates on the host at every reset."""
        return super().graph_capturable and all(group["density"] >= 1.0 for group in self.param_groups)

    def _subset(self, p: Tensor, group: dict, t: int, legacy: bool = False) -> Tensor | None:
        """Sorted flat indices of the coordinates of `p` (a parameter or its real view) that keep
        momentum at step t; None where momentum is dense.

        The subset is drawn at the first step and at every reset from (seed, the parameter's position in the
        optimizer, the step of the draw), never from torch's global generator: it is derivable, so it
        is cached here rather than kept in the state (a resume draws it again, bit for bit, and
        data order is untouched).
        """
        if group["density"] >= 1.0 or p.dim() < 2:
            return None
        t, every = int(t), group["reset_interval"]  # reads the host: sparse momentum is not capturable
        # the last reset's step (0: the start); a state saved before resets moved to t = jΔT drew at jΔT + 1
        drawn_at = (t - 1) // every * every + 1 if legacy else t // every * every
        cached = self._subsets.get(p.data_ptr())
        if cached is None or cached[0] != drawn_at:
            position = next(i for i, q in enumerate(q for g in self.param_groups for q in g["params"])
                            if q.data_ptr() == p.data_ptr())  # a real view shares its parameter's storage
            gen = torch.Generator().manual_seed((group["seed"] * 1_000_003 + position) * 1_000_033 + drawn_at)
            index = torch.randperm(p.numel(), generator=gen)[:self._subset_size(p, group)].sort().values
            cached = self._subsets[p.data_ptr()] = (drawn_at, index.to(p.device))
        return cached[1]

    def momentum_subset(self, param: Tensor) -> Tensor | None:
        """The flat indices (into ``torch.view_as_real(param)`` for a complex one) that keep momentum
        and move in the current interval; None for dense momentum or before the first step."""
        state = self.state.get(param)
        if not state:
            return None
        group = next(g for g in self.param_groups if any(q is param for q in g["params"]))
        return self._subset(real_view(param), group, state["step"], "subsets_at_resets" not in state)

    @staticmethod
    def _subset_size(p: Tensor, group: dict) -> int:
        return max(1, int(group["density"] * p.numel()))

    def init_state(self, p, group):
        if group["density"] >= 1.0 or p.dim() < 2:
            return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        n = self._subset_size(p, group)
        return {"exp_avg": torch.zeros(n, dtype=p.dtype, device=p.device),
                "exp_avg_sq": torch.zeros(n, dtype=p.dtype, device=p.device),
                "subsets_at_resets": True}  # absent from states saved before the draw moved to the resets

    def update(self, p, g, state, group):
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        since = t % group["reset_interval"]  # steps since the last reset (t itself before the first)
        reset = since == 0  # reset before step t = jΔT
        _zero_where(m, reset)
        _zero_where(v, reset)
        if "subsets_at_resets" not in state and m.shape != p.shape and reset:
            state["subsets_at_resets"] = True  # an old state's interval ends here: from now on the new rule
        index = self._subset(p, group, t, "subsets_at_resets" not in state)
        if index is None:
            self._adam_step(p, g, m, v, t, since, group)
        else:  # sparse momentum: gather the chosen coordinates, step them, scatter back
            chosen = p.view(-1)[index]
            self._adam_step(chosen, g.reshape(-1)[index], m, v, t, since, group)
            p.view(-1)[index] = chosen

    @staticmethod
    def _adam_step(p, g, m, v, t, since, group):
        b1, b2 = group["betas"]
        clipping = since >= group["clip_delay"]
        if isinstance(clipping, Tensor) or clipping:
            bound_sq = group["threshold"] * v  # v before this update
            g = torch.where((g * g > bound_sq) & clipping, g.sign() * bound_sq.sqrt(), g)
        n = group["warmup_steps"]
        warming = (t >= group["reset_interval"]) & (since < n)  # after a reset only
        if isinstance(since, Tensor):
            cosine = 1.0 - 0.99 * (1.0 + torch.cos(since * (math.pi / (n + 1)))) / 2.0
            scale = torch.where(warming, cosine, torch.ones_like(cosine))
        else:
            scale = 1.0 - 0.99 * (1.0 + math.cos(math.pi * since / (n + 1))) / 2.0 if warming else 1.0
        _decay(p, group)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = group["lr"] * scale * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
        _add_quotient(p, m, v.sqrt().add_(group["eps"]), -step)


def _linear_warmup(step: Tensor | int, end: float, start: float, warmup: int | None) -> Tensor | float:
    if not warmup:
        return end
    a = step / warmup
    if isinstance(step, Tensor):
        return torch.where(step >= warmup, end, (1 - a) * start + a * end)
    return end if step >= warmup else (1 - a) * start + a * end


def _half_life_warmup(step: Tensor | int, end: float, start: float, warmup: int | None) -> Tensor | float:
    """β₃ scheduler of the official code: linear in the half-life log(0.5)/log(β) − 1."""
    if not warmup:
        return end
    f = lambda b: math.log(0.5) / math.log(b + 1e-8) - 1  # noqa: E731
    a = step / warmup
    if isinstance(step, Tensor):
        return torch.where(step >= warmup, end, torch.pow(0.5, 1.0 / ((1 - a) * f(start) + a * f(end) + 1)))
    return end if step >= warmup else math.pow(0.5, 1.0 / ((1 - a) * f(start) + a * f(end) + 1))


class AdEMAMix(FunctionalOptimizer):
    """AdEMAMix: Adam plus a slow EMA of gradients mixed in with weight α.

    m₁ ← β₁m₁ + (1−β₁)g;  m₂ ← β₃m₂ + (1−β₃)g;  v ← β₂v + (1−β₂)g²;
    θ ← θ − η·[(m₁/(1−β₁ᵗ) + α·m₂) / (√(v/(1−β₂ᵗ)) + ε) + λθ].
    With `alpha_warmup` = T_α, α rises linearly from 0; with `beta3_warmup` = T_β₃, β₃ rises
    from β₁ linearly in half-life (the official schedulers; the paper sets both to the run
    length — without them early training is unstable).

    Pagliardini et al. 2024, arXiv:2409.03137; defaults of apple/ml-ademamix: α = 2 (the
    library drifted to 5), decay decoupled (the library defaults to coupled L2).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999, 0.9999), alpha: float = 2.0, eps: float = 1e-8,
                 weight_decay: float = 0.0, alpha_warmup: int | None = None, beta3_warmup: int | None = None,
                 capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas, 3)
        check_range("alpha", alpha, 0.0)
        for name, v in (("alpha_warmup", alpha_warmup), ("beta3_warmup", beta3_warmup)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}={v!r} must be a positive integer (steps) or None; the paper uses the run length")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      alpha_warmup=alpha_warmup, beta3_warmup=beta3_warmup, capturable=capturable))

    def init_state(self, p, group):
        return {"exp_avg_fast": torch.zeros_like(p), "exp_avg_slow": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def update(self, p, g, state, group):
        (b1, b2, b3_end), t = group["betas"], state["step"]
        alpha = _linear_warmup(t, group["alpha"], 0.0, group["alpha_warmup"])
        b3 = _half_life_warmup(t, b3_end, b1, group["beta3_warmup"])
        m1, m2, v = state["exp_avg_fast"], state["exp_avg_slow"], state["exp_avg_sq"]
        m1.lerp_(g, 1 - b1)
        m2.lerp_(g, _weight(1 - b3, m2))
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
        upd = _add_scaled(m1 / (1 - b1 ** t), m2, alpha).div_(denom)
        if group["weight_decay"]:
            upd.add_(p, alpha=group["weight_decay"])
        _add_scaled(p, upd, -group["lr"])


class MARS(FunctionalOptimizer):
    """MARS-AdamW (approximate): variance-reduced, norm-clipped gradient fed to AdamW.

    c = g_t + γ·β₁/(1−β₁)·(g_t − g_{t−1})  (g₀ = 0);  c ← c/‖c‖ if ‖c‖ > 1 (per tensor);
    m ← β₁m + (1−β₁)c;  v ← β₂v + (1−β₂)c²;  θ ← θ − η·(m̂/(√v̂ + ε)) (decoupled decay).

    Yuan et al. 2024, arXiv:2411.10438; defaults of the official code (lr 3e-3, β = (0.95, 0.99),
    γ = 0.025). Applied to every tensor (the official `optimize_1d=True`): the library routes
    1-D tensors to a separate AdamW with weight decay 0.1 by default, which decays PINN biases.
    """

    def __init__(self, params, lr: float = 3e-3, betas=(0.95, 0.99), gamma: float = 0.025, eps: float = 1e-8,
                 weight_decay: float = 0.0, capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas)
        check_range("gamma", gamma, 0.0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), gamma=gamma, eps=eps, weight_decay=weight_decay,
                                      capturable=capturable))

    def init_state(self, p, group):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p), "last_grad": torch.zeros_like(p)}

    def update(self, p, g, state, group):
        (b1, b2), t = group["betas"], state["step"]
        m, v, last = state["exp_avg"], state["exp_avg_sq"], state["last_grad"]
        c = (g - last).mul_(group["gamma"] * b1 / (1 - b1)).add_(g)
        norm = torch.linalg.vector_norm(c)
        c.div_(torch.clamp(norm, min=1.0))  # unit-norm clip without a host sync
        last.copy_(g)
        _decay(p, group)
        m.lerp_(c, 1 - b1)
        v.mul_(b2).addcmul_(c, c, value=1 - b2)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
        _add_quotient(p, m, denom, -group["lr"] / (1 - b1 ** t))


class FAdam(FunctionalOptimizer):
    """FAdam: Adam as a diagonal natural gradient with momentum on the natural gradient.

    β̂₂ = β₂(1−β₂ᵗ⁻¹)/(1−β₂ᵗ);  F ← β̂₂F + (1−β̂₂)g²;  ḡ = g/(F^p + ε);
    ḡ ← ḡ / max(1, RMS(ḡ)/c);  m ← β₁m + (1−β₁)ḡ;
    ḡ_w = θ/(F^p + ε), clipped the same way;  θ ← θ − η·(m + λ·ḡ_w).

    Hwang 2024, arXiv:2405.12807 (Algorithm 1; defaults λ = 0.1, c = 1, p = 0.5, ε = 1e-8; set
    weight_decay=0 for PINNs). The library adds an adaptive ε' = min(ε, 0.01·RMS(g)) that the
    paper does not have, and rejects complex parameters.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, clip: float = 1.0,
                 p: float = 0.5, weight_decay: float = 0.1, capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas)
        check_range("clip", clip, 0.0, lo_open=True)
        check_range("p", p, 0.0, 1.0, lo_open=True)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, clip=clip, p=p, weight_decay=weight_decay,
                                      capturable=capturable))

    def init_state(self, p, group):
        return {"momentum": torch.zeros_like(p), "fim": torch.zeros_like(p)}

    def update(self, p, g, state, group):
        (b1, b2), t = group["betas"], state["step"]
        b2_hat = b2 * (1 - b2 ** (t - 1)) / (1 - b2 ** t)
        fim, mom = state["fim"], state["momentum"]
        _add_product(fim.mul_(b2_hat), g, g, 1 - b2_hat)
        denom = fim.pow(group["p"]).add_(group["eps"])

        def clipped(x):
            rms = x.pow(2).mean().sqrt()
            return x.div_(torch.clamp(rms / group["clip"], min=1.0))

        mom.lerp_(clipped(g / denom), 1 - b1)
        step = mom.clone()
        if group["weight_decay"]:
            step.add_(clipped(p / denom), alpha=group["weight_decay"])
        _add_scaled(p, step, -group["lr"])


class SubsetNorm(FunctionalOptimizer):
    """AdamW with Subset-Norm step sizes, optionally with Subspace-Momentum.

    Subset-Norm: a tensor viewed as a matrix G (rows = first dim, columns = the rest flattened) gets
    one adaptive step size per index of its larger dimension, each from the norm of that row (rows ≥
    columns) or column (rows < columns): v_j ← β₂v_j + (1−β₂)‖g_{S_j}‖²;
    θ_{S_j} ← θ_{S_j} − η·m̂_{S_j}/(√v̂_j + ε) — the authors' code (adamw_sn.py: for rows ≥ cols the
    sum of g² over dim 1, one value per row; else over dim 0, one per column). Memory for v:
    O(max(rows, cols)). 1-D tensors and scalars keep per-coordinate moments (plain AdamW), as the
    authors' setup does for every parameter but nn.Linear weights. A tensor of more than 2 dims is the
    matrix above (first dim × the rest): our choice, the authors apply Subset-Norm to 2-D weights only
    (their rule would sum over dim 1 alone).
    A complex entry is two reals, as in every optimizer here, and the complex tensor's own shape
    decides vector or matrix: a complex vector (n,) steps as the real vector (2n,) of its (re, im)
    pairs, per coordinate; a complex (r, c, ...) tensor as the real matrix (r, 2c·...) of its rows' pairs.

    Subspace-Momentum (`momentum_rank` r): for matrices whose smaller side exceeds r, momentum
    lives in the span P of G's top-r singular vectors on the smaller side, recomputed from the
    gradient every `proj_every` steps (the momentum restarts there):
    M ← β₁M + (1−β₁)·proj(G);  direction = back(M)/(1−β₁ᵏ) + (G − back(proj(G))),
    k = steps since the subspace was drawn; the direction replaces m̂ above. Memory for m:
    O(r·max(rows, cols)). The authors' code divides the whole direction, the momentum-free
    orthogonal part included, by 1−β₁ᵗ with t counted from the start; we correct the momentum
    part only, by its own age, so the first step after each refresh is the gradient step.

    Nguyen et al. 2024, arXiv:2411.07120 (AdamSN / AdamSNSM; authors' defaults r = 256 for
    language models, subspace every 200 steps).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum_rank: int | None = None, proj_every: int = 200, capturable: bool = False):
        _common(lr, eps, weight_decay)
        check_betas("betas", betas)
        if momentum_rank is not None and (not isinstance(momentum_rank, int) or momentum_rank < 1):
            raise ValueError(f"momentum_rank={momentum_rank!r} must be a positive integer, or None for full momentum")
        if not isinstance(proj_every, int) or proj_every < 1:
            raise ValueError(f"proj_every={proj_every!r} must be a positive integer (the paper uses 200)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      momentum_rank=momentum_rank, proj_every=proj_every, capturable=capturable))

    @property
    def graph_capturable(self) -> bool:
        """Without Subspace-Momentum only: the subspace is redrawn on the host every proj_every steps."""
        return super().graph_capturable and all(group["momentum_rank"] is None for group in self.param_groups)

    def _real_views(self, p):
        """A complex vector or scalar as the flat real vector of its (re, im) pairs: its real view (n, 2)
        would read as a matrix (one step size for all real parts, one for all imaginary parts)."""
        pr, gr = real_view(p), real_view(p.grad)
        if p.is_complex() and p.dim() <= 1:
            if p.numel() > 1 and p.stride(-1) != 1:
                raise ValueError(f"subset_norm needs a complex vector parameter with unit stride, got strides {p.stride()}; "
                                 "pass a contiguous tensor")
            pr, gr = pr.view(-1), gr.reshape(-1)
        return pr, gr

    @staticmethod
    def _reduce_dim(p: Tensor) -> int | None:
        if p.dim() < 2:
            return None
        rows, cols = p.shape[0], p[0].numel()
        return 1 if rows >= cols else 0  # sum over the smaller: one second moment per index of the larger

    @staticmethod
    def _subspace(p: Tensor, group: dict) -> bool:
        r = group["momentum_rank"]
        return r is not None and p.dim() >= 2 and min(p.shape[0], p[0].numel()) > r

    @classmethod
    def _grouping(cls, p: Tensor, v: Tensor) -> int | None:
        """The sum's axis for this state: its v's shape says it (states saved before the grouping followed the
        authors' code keep the other axis, so such a run resumes as it ran)."""
        d = cls._reduce_dim(p)
        if d is not None and v.dim() == 2 and tuple(v.shape) != ((p.shape[0], 1) if d == 1 else (1, p[0].numel())):
            d = 1 - d  # e.g. a Linear(1, w) weight (w, 1): the old v was (1, 1), the new one (w, 1)
        return d

    def init_state(self, p, group):
        d = self._reduce_dim(p)
        if d is None:
            v = torch.zeros_like(p)
        else:
            v = torch.zeros((p.shape[0], 1) if d == 1 else (1, p[0].numel()), dtype=p.dtype, device=p.device)
        if self._subspace(p, group):
            return {"exp_avg_sq": v}  # basis and low-rank momentum are made at the first step
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": v}

    @staticmethod
    def _subspace_direction(g: Tensor, state: dict, group: dict) -> Tensor:
        """back(M)/(1−β₁ᵏ) + (G − back(proj(G))) for G = g as a matrix; redraws P every proj_every steps."""
        b1, r, t = group["betas"][0], group["momentum_rank"], int(state["step"])  # reads the host
        G = g.reshape(g.shape[0], -1)
        left = G.shape[0] < G.shape[1]  # project the smaller side
        if (t - 1) % group["proj_every"] == 0:
            U, _, Vh = torch.linalg.svd(G, full_matrices=False)
            state["basis"] = U[:, :r].contiguous() if left else Vh[:r].contiguous()
            state["exp_avg"] = torch.zeros((r, G.shape[1]) if left else (G.shape[0], r), dtype=g.dtype, device=g.device)
        P, M = state["basis"], state["exp_avg"]
        proj = P.T @ G if left else G @ P.T
        back = (lambda x: P @ x) if left else (lambda x: x @ P)
        M.lerp_(proj, 1 - b1)
        k = (t - 1) % group["proj_every"] + 1
        return (back(M) / (1 - b1 ** k) + (G - back(proj))).reshape(g.shape)

    def update(self, p, g, state, group):
        (b1, b2), t = group["betas"], state["step"]
        v = state["exp_avg_sq"]
        d = self._grouping(p, v)
        g2 = g * g if d is None else (g * g).reshape(p.shape[0], -1).sum(dim=d, keepdim=True)
        _decay(p, group)
        if self._subspace(p, group):  # already bias-corrected
            direction, correction = self._subspace_direction(g, state, group), 1.0
        else:  # the moment itself; its bias correction folds into the step's scalar
            direction, correction = state["exp_avg"].lerp_(g, 1 - b1), 1 - b1 ** t
        v.mul_(b2).add_(g2, alpha=1 - b2)
        denom = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
        if d is not None:
            denom = denom.expand(p.shape[0], p[0].numel()).reshape(p.shape)
        _add_quotient(p, direction, denom, -group["lr"] / correction)


class ClipRAdaGradD(FunctionalOptimizer):
    """Clip-RAdaGradD: clipped, reweighted AdaGrad-Norm with a delayed step size.

    Over each parameter group as one vector x: ĝ = min(1, λ/‖g‖)·g;
    x ← x − (γ/b_t)·ĝ;  b²_{t+1} = b²_t + η·‖ĝ‖²  (b_t does not see g_t: the delay).

    Chezhegov et al. 2024, arXiv:2406.04443 (v1 naming). No reference code was found; our
    defaults: γ = lr = 1e-2, λ = clip = 1, η = reweight = 1, b₀ = 1e-1 (first step length
    ≤ γλ/b₀ = 0.1). Group-level state (b²) lives with the group's first parameter, whether or not it
    has a gradient (b² accumulates over every step of the group).
    """

    def __init__(self, params, lr: float = 1e-2, clip: float = 1.0, reweight: float = 1.0, b0: float = 1e-1,
                 capturable: bool = False):
        check_range("lr", lr, 0.0, fix="γ in the paper")
        check_range("clip", clip, 0.0, lo_open=True, fix="λ, the clipping level")
        check_range("reweight", reweight, 0.0, lo_open=True)
        check_range("b0", b0, 0.0, lo_open=True, fix="the initial step-size denominator must be positive")
        super().__init__(params, dict(lr=lr, clip=clip, reweight=reweight, b0=b0, capturable=capturable))

    def _prepare_group(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            group["_coef"] = None
            return
        norms = torch.stack([torch.linalg.vector_norm(real_view(p.grad)) for p in params])
        norm = torch.linalg.vector_norm(norms)
        coef = torch.clamp(group["clip"] / (norm + 1e-300), max=1.0)
        # b² lives with the group's first parameter whether or not it has a gradient now: keyed by the first
        # one that has, a step without it would start a second b² at b₀²
        first = self.state[group["params"][0]]
        if "b2" not in first:
            first["b2"] = torch.full((), group["b0"] ** 2, dtype=norm.dtype, device=norm.device)
        b = first["b2"].sqrt()
        group["_coef"] = coef * group["lr"] / b  # step multiplier with the delayed b_t
        first["b2"].add_(group["reweight"] * (coef * norm) ** 2)

    def init_state(self, p, group):
        return {}

    def update(self, p, g, state, group):
        p.sub_(g * group["_coef"].to(g.dtype))

    def state_dict(self):
        sd = super().state_dict()
        for g in sd["param_groups"]:
            g.pop("_coef", None)
        return sd
