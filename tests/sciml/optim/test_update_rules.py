"""First steps of every optimizer we implement or adapt equal the paper's rule, in float64.

Each reference below is written from the paper's equations (and the official code where the
paper leaves a detail open), as plain out-of-place tensor algebra; the optimizer is fed the
same fixed gradient sequence (including a 50x outlier at step 5, so clipping branches run).
"""

import math

import pytest
import torch

from sciml.optim import build_optimizer

STEPS = 7


def _setup(shapes=((3, 3), (3,))):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) * (50.0 if t == 4 else 1.0) for s in shapes] for t in range(STEPS)]
    return params, grads


def _run_watching(name, params, grads, watch, **kw):
    """Step the optimizer through `grads`; also return watch(opt, first parameter) after every step."""
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = build_optimizer(ps, name, **kw)
    seen = []
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        if watch is not None:
            seen.append(watch(opt, ps[0]))
    return [p.detach() for p in ps], seen


def _run(name, params, grads, **kw):
    return _run_watching(name, params, grads, None, **kw)[0]


def _check(name, ref, params, grads, **kw):
    got = _run(name, params, grads, **kw)
    want = ref([p.clone() for p in params], grads, **kw)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    moved = max((a - p).abs().max().item() for a, p in zip(got, params))
    assert moved > 1e-6, "the optimizer must actually move (far above the 1e-14 tolerance)"


def _adam_like(b1, b2, t, m, v, eps):
    return (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)


def ref_adabelief(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0):
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = s = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
            p = p - lr * _adam_like(b1, b2, t, m, s, eps)
        out.append(p)
    return out


def _spam_warmup(t, k, reset_interval, warmup_steps):
    """The authors' code: CosineDecay(0.99, N) over CosineAnnealingLR(T_max=N+1), its counter set to 0
    at each reset and started past N (no warm-up at the start)."""
    if t < reset_interval or k >= warmup_steps:
        return 1.0
    return 1 - 0.99 * (1 + math.cos(math.pi * k / (warmup_steps + 1))) / 2


def ref_spam(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, threshold=5000.0,
             reset_interval=500, warmup_steps=150, clip_delay=20):
    """SPAM as the authors' code steps it (SPAM.py): moments reset before steps t = jΔT; clipping when
    t ≥ clip_delay and t mod ΔT ≥ clip_delay; the cosine warm-up only after a reset; ε added to √v
    with both bias corrections in the step size."""
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = v = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            k = t % reset_interval
            if k == 0:
                m = v = torch.zeros_like(p)
            if t >= clip_delay and k >= clip_delay:
                spike = g ** 2 > threshold * v
                g = torch.where(spike, torch.sign(g) * torch.sqrt(threshold * v), g)
            s = _spam_warmup(t, k, reset_interval, warmup_steps)
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g ** 2
            p = p - lr * s * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps)
        out.append(p)
    return out


def ref_ademamix(ps, grads, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, eps=1e-8, weight_decay=0.0,
                 alpha_warmup=None, beta3_warmup=None):
    b1, b2, b3f = betas
    half_life = lambda b: math.log(0.5) / math.log(b + 1e-8) - 1  # noqa: E731
    out = []
    for i, p in enumerate(ps):
        m1 = m2 = v = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            a = alpha * min(t / alpha_warmup, 1.0) if alpha_warmup else alpha
            if beta3_warmup and t < beta3_warmup:
                x = t / beta3_warmup
                b3 = 0.5 ** (1 / ((1 - x) * half_life(b1) + x * half_life(b3f) + 1))
            else:
                b3 = b3f
            m1 = b1 * m1 + (1 - b1) * g
            m2 = b3 * m2 + (1 - b3) * g
            v = b2 * v + (1 - b2) * g ** 2
            upd = (m1 / (1 - b1 ** t) + a * m2) / ((v / (1 - b2 ** t)).sqrt() + eps) + weight_decay * p
            p = p - lr * upd
        out.append(p)
    return out


def ref_mars(ps, grads, lr=3e-3, betas=(0.95, 0.99), gamma=0.025, eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = v = prev = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            c = g + gamma * b1 / (1 - b1) * (g - prev)
            n = c.norm()
            if n > 1:
                c = c / n
            prev = g
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * c
            v = b2 * v + (1 - b2) * c ** 2
            p = p - lr * _adam_like(b1, b2, t, m, v, eps)
        out.append(p)
    return out


def ref_fadam(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, clip=1.0, p=0.5, weight_decay=0.1):
    b1, b2 = betas
    out = []
    for i, th in enumerate(ps):
        m = F = torch.zeros_like(th)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            b2h = b2 * (1 - b2 ** (t - 1)) / (1 - b2 ** t)
            F = b2h * F + (1 - b2h) * g ** 2
            gbar = g / (F ** p + eps)
            gbar = gbar / max(1.0, (gbar.pow(2).mean().sqrt() / clip).item())
            m = b1 * m + (1 - b1) * gbar
            gw = th / (F ** p + eps)
            gw = gw / max(1.0, (gw.pow(2).mean().sqrt() / clip).item())
            th = th - lr * (m + weight_decay * gw)
        out.append(th)
    return out


def ref_subset_norm(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = torch.zeros_like(p)
        # one v per index of the larger dimension (authors' adamw_sn.py): a 3x5 matrix sums over its 3 rows
        v = torch.zeros(1, p.shape[1]) if p.dim() == 2 else torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            g2 = (g ** 2).sum(dim=0, keepdim=True) if p.dim() == 2 else g ** 2
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g2
            p = p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
        out.append(p)
    return out


def ref_clip_radagradd(ps, grads, lr=1e-2, clip=1.0, reweight=1.0, b0=1e-1):
    b2 = b0 ** 2
    for gs in grads:
        norm = torch.sqrt(sum((g ** 2).sum() for g in gs))
        c = min(1.0, clip / norm.item())
        ps = [p - lr / math.sqrt(b2) * c * g for p, g in zip(ps, gs)]  # delayed: b_t, not b_{t+1}
        b2 = b2 + reweight * (c * norm.item()) ** 2
    return ps


def ref_diffgrad(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    # eps is added to sqrt(v) before the bias correction, as in the official diffGrad code
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = v = prev = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            p = p * (1 - lr * weight_decay)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g ** 2
            xi = 1 / (1 + torch.exp(-(prev - g).abs()))
            p = p - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * xi * m / (v.sqrt() + eps)
            prev = g
        out.append(p)
    return out


def ref_grams(ps, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
    b1, b2 = betas
    out = []
    for i, p in enumerate(ps):
        m = v = torch.zeros_like(p)
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g ** 2
            u = _adam_like(b1, b2, t, m, v, eps)
            p = p * (1 - lr * weight_decay) - lr * torch.sign(g) * u.abs()
        out.append(p)
    return out


CASES = {
    "adabelief": (ref_adabelief, [{}, {"weight_decay": 0.1, "lr": 1e-2, "eps": 1e-8}]),
    "spam": (ref_spam, [{}, {"threshold": 2.0, "reset_interval": 3, "warmup_steps": 2, "clip_delay": 1,
                             "weight_decay": 0.1}, {"threshold": 2.0, "reset_interval": 4, "warmup_steps": 3, "clip_delay": 2}]),
    "ademamix": (ref_ademamix, [{}, {"alpha_warmup": 4, "beta3_warmup": 5, "weight_decay": 0.1, "alpha": 5.0}]),
    "mars": (ref_mars, [{}, {"gamma": 0.5, "weight_decay": 0.1}]),
    "fadam": (ref_fadam, [{}, {"weight_decay": 0.0, "clip": 0.5}]),
    "subset_norm": (ref_subset_norm, [{}, {"weight_decay": 0.1}]),
    "clip_radagradd": (ref_clip_radagradd, [{}, {"clip": 100.0, "reweight": 0.5, "b0": 1.0}]),
    "diffgrad": (ref_diffgrad, [{}, {"weight_decay": 0.1}]),
    "grams": (ref_grams, [{}, {"weight_decay": 0.1}]),
}


@pytest.mark.parametrize("name, kw", [(n, kw) for n, (_, kws) in CASES.items() for kw in kws])
def test_matches_paper_rule(name, kw):
    shapes = ((3, 5), (3,)) if name == "subset_norm" else ((3, 3), (3,))
    params, grads = _setup(shapes)
    _check(name, CASES[name][0], params, grads, **kw)


def test_subset_norm_keeps_one_second_moment_per_index_of_the_larger_dimension():
    # the authors' adamw_sn.py; sciml kept one per index of the smaller dimension (a 20x2 layer got 2, not 20)
    params, grads = _setup(((5, 3),))
    got, v_shapes = _run_watching("subset_norm", params, grads, lambda opt, p: tuple(opt.state[p]["exp_avg_sq"].shape))
    assert v_shapes[0] == (5, 1)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-3
    p, m, v = params[0].clone(), 0, torch.zeros(5, 1)
    for t, (g,) in enumerate(grads, 1):  # 5 rows > 3 columns: one v per row, the sum over its 3 columns
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g ** 2).sum(dim=1, keepdim=True)
        p = p - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    torch.testing.assert_close(got[0], p, rtol=1e-12, atol=1e-14)


def test_spam_clip_and_reset_branches_fire():
    params, grads = _setup()
    kw = {"threshold": 2.0, "reset_interval": 3, "warmup_steps": 2, "clip_delay": 1}
    unclipped = ref_spam([p.clone() for p in params], grads, **{**kw, "threshold": 1e30})
    clipped = _run("spam", params, grads, **kw)
    assert (clipped[0] - unclipped[0]).abs().max() > 1e-5, "the outlier at step 5 was clipped"


def test_gravity_matches_paper_rule():
    params, grads = _setup()
    lr, alpha, beta = 1e-2, 0.01, 0.9
    torch.manual_seed(7)  # V0 ~ N(0, alpha/lr) is drawn at the first step
    got = _run("gravity", params, grads)
    torch.manual_seed(7)
    vs = [torch.empty_like(p).normal_(0.0, alpha / lr) for p in params]
    for i, p in enumerate(params):
        v = vs[i]
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            M = 1 / g.abs().max()
            zeta = g / (1 + (g / M) ** 2)
            bt = (beta * t + 1) / (t + 2)
            v = bt * v + (1 - bt) * zeta
            p = p - lr * v
        torch.testing.assert_close(got[i], p, rtol=1e-12, atol=1e-14)


def _soap_ref(params, grads, lr=3e-3, betas=(0.95, 0.95), eps=1e-8, weight_decay=1e-2):
    """SOAP (Vyas et al. 2024, Alg. 1 + official code): Adam in the eigenbasis of Shampoo's
    L = EMA(GGᵀ), R = EMA(GᵀG); the first step only initialises L, R and the bases; 1-D tensors
    are not preconditioned; eigenbases are refreshed every 10 steps (not reached here)."""
    b1, b2 = betas
    out = []
    for i, p in enumerate(params):
        g1 = grads[0][i]
        m = v = torch.zeros_like(p)
        if p.dim() == 2:
            L, R = torch.zeros(3, 3), torch.zeros(3, 3)
            L.lerp_(g1 @ g1.T, 1 - b2)
            R.lerp_(g1.T @ g1, 1 - b2)
            QL = torch.flip(torch.linalg.eigh(L + 1e-30 * torch.eye(3))[1], dims=[1])
            QR = torch.flip(torch.linalg.eigh(R + 1e-30 * torch.eye(3))[1], dims=[1])
            fwd, bwd = (lambda x: QL.T @ x @ QR), (lambda x: QL @ x @ QR.T)
        else:
            fwd = bwd = lambda x: x  # noqa: E731
        for k, gs in enumerate(grads[1:], 1):
            g = gs[i]
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * fwd(g) ** 2
            n = bwd(fwd(m) / (v.sqrt() + eps))
            p = p - lr * math.sqrt(1 - b2 ** k) / (1 - b1 ** k) * n
            p = p * (1 - lr * weight_decay)
        out.append(p)
    return out


def test_soap_matches_paper_rule():
    params, grads = _setup()
    grads = grads[:5]  # within the first precondition_frequency window
    got = _run("soap", params, grads)
    want = _soap_ref(params, grads)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_grokfast_filter_over_adam():
    params, grads = _setup()
    alpha, lamb, lr = 0.98, 2.0, 1e-3
    got = _run("grokfast", params, grads, base="adam", lr=lr)
    filtered = []
    h = [g.clone() for g in grads[0]]  # h₁ = g₁ (official gradfilter_ema)
    for t, gs in enumerate(grads):
        if t > 0:
            h = [alpha * hi + (1 - alpha) * g for hi, g in zip(h, gs)]
        filtered.append([g + lamb * hi for g, hi in zip(gs, h)])
    want = _run("adam", params, filtered, lr=lr)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # base given as a mapping, filter keywords checked
    got2 = _run("grokfast", params, grads, base={"name": "adam", "lr": lr})
    assert all(torch.equal(a, b) for a, b in zip(got, got2))
    with pytest.raises(ValueError, match="did you mean 'lamb'"):
        _run("grokfast", params, grads, base="adam", lamda=1.0)


def test_perpgrad_filter_over_sgd():
    params, grads = _setup()
    got = _run("perpgrad", params, grads, base="sgd", lr=0.1)
    ps = [p.clone() for p in params]
    for gs in grads:
        new = []
        for p, g in zip(ps, gs):
            w, gv = p.reshape(-1), g.reshape(-1)
            gp = gv - (w @ gv) / (w @ w) * w
            gp = gp * gv.norm() / gp.norm()
            assert abs((gp @ w).item()) < 1e-12 * gv.norm().item() * w.norm().item()
            new.append(p - 0.1 * gp.view_as(p))
        ps = new
    for a, b in zip(got, ps):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_adabelief_both_library_paths_and_ours_equal_the_rule():
    """Issue 8 reports that pytorch-optimizer's AdaBelief foreach path skips a bias correction.
    With the pinned 4.1.0 we measure no such defect (both of its paths equal the rule); this test
    keeps checking it, and ours, against the paper's rule, so a change in the pin shows up."""
    from pytorch_optimizer import AdaBelief as POAdaBelief

    params, grads = _setup()
    grads = grads[:3]
    want = ref_adabelief([p.clone() for p in params], grads)
    ran_foreach = []
    for foreach in (True, False):
        ps = [torch.nn.Parameter(p.clone()) for p in params]
        opt = POAdaBelief(ps, lr=1e-3, foreach=foreach)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            ran_foreach.append(opt._can_use_foreach(opt.param_groups[0]))
            opt.step()
        for a, b in zip(ps, want):
            torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)
    assert ran_foreach == [True] * 3 + [False] * 3, "both library code paths were exercised"
    for a, b in zip(_run("adabelief", params, grads), want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_spam_sparse_momentum_steps_only_its_subset_by_the_spam_rule():
    kw = {"threshold": 2.0, "reset_interval": 3, "warmup_steps": 2, "clip_delay": 1, "weight_decay": 0.1}
    lr, (b1, b2), eps = 1e-3, (0.9, 0.999), 1e-6
    params, grads = _setup(((4, 5), (3,)))
    got, subsets = _run_watching("spam", params, grads, lambda opt, p: opt.momentum_subset(p).clone(), density=0.4, **kw)

    # 40% of 20 coordinates, kept for an interval and redrawn at each reset (before steps 3 and 6)
    assert all(s.numel() == 8 and torch.equal(s, s.unique()) for s in subsets)
    assert torch.equal(subsets[0], subsets[1]) and torch.equal(subsets[2], subsets[4])
    assert not torch.equal(subsets[1], subsets[2]) and not torch.equal(subsets[4], subsets[5])

    p = params[0].clone().reshape(-1)
    for t, gs in enumerate(grads, 1):
        idx, k = subsets[t - 1], t % 3
        if k == 0 or t == 1:
            m = v = torch.zeros(8, dtype=torch.float64)
        g = gs[0].reshape(-1)[idx]
        if k >= 1:
            g = torch.where(g ** 2 > 2.0 * v, torch.sign(g) * torch.sqrt(2.0 * v), g)
        s = _spam_warmup(t, k, 3, 2)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        p[idx] = p[idx] * (1 - lr * 0.1) - lr * s * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps)
    torch.testing.assert_close(got[0].reshape(-1), p, rtol=1e-12, atol=1e-14)
    never = torch.ones(20, dtype=torch.bool)
    never[torch.cat(subsets)] = False
    assert never.any() and torch.equal(got[0].reshape(-1)[never], params[0].reshape(-1)[never])
    # a vector keeps dense SPAM
    torch.testing.assert_close(got[1], ref_spam([params[1].clone()], [[gs[1]] for gs in grads], **kw)[0],
                               rtol=1e-12, atol=1e-14)


def ref_subset_norm_subspace(p, grads, rank, proj_every, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """AdamSNSM on one matrix: momentum in the span of the top-`rank` singular vectors of the
    gradient on its smaller side, redrawn every `proj_every` steps; one subset norm per index of the larger side."""
    b1, b2 = betas
    rows, cols = p.shape
    left = rows < cols
    v = torch.zeros(rows, 1) if rows >= cols else torch.zeros(1, cols)
    for t, g in enumerate(grads, 1):
        if (t - 1) % proj_every == 0:
            U, _, Vh = torch.linalg.svd(g, full_matrices=False)
            Q = U[:, :rank] if left else Vh[:rank].T  # orthonormal basis of the momentum subspace
            M = torch.zeros(rank, cols) if left else torch.zeros(rows, rank)
        low = Q.T @ g if left else g @ Q
        lift = (lambda x: Q @ x) if left else (lambda x: x @ Q.T)  # noqa: E731
        M = b1 * M + (1 - b1) * low
        k = (t - 1) % proj_every + 1
        direction = lift(M) / (1 - b1 ** k) + (g - lift(low))
        v = b2 * v + (1 - b2) * (g ** 2).sum(dim=1 if rows >= cols else 0, keepdim=True)
        p = p * (1 - lr * weight_decay) - lr * direction / ((v / (1 - b2 ** t)).sqrt() + eps)
    return p


@pytest.mark.parametrize("shape", [(6, 4), (3, 7)])
def test_subset_norm_subspace_momentum_matches_the_rule(shape):
    params, grads = _setup((shape, (3,)))
    kw = {"momentum_rank": 2, "proj_every": 3, "weight_decay": 0.1, "lr": 1e-2}
    got, moments = _run_watching("subset_norm", params, grads, lambda opt, p: opt.state[p]["exp_avg"].clone(), **kw)
    want = ref_subset_norm_subspace(params[0].clone(), [gs[0] for gs in grads], 2, 3, lr=1e-2, weight_decay=0.1)
    torch.testing.assert_close(got[0], want, rtol=1e-12, atol=1e-14)
    assert moments[0].shape == ((2, shape[1]) if shape[0] < shape[1] else (shape[0], 2)), "momentum is rank 2"
    # vectors, and matrices whose smaller side is not above the rank, keep full momentum
    plain = ref_subset_norm([params[1].clone()], [[gs[1]] for gs in grads], lr=1e-2, weight_decay=0.1)[0]
    torch.testing.assert_close(got[1], plain, rtol=1e-12, atol=1e-14)
    full_rank = _run("subset_norm", params, grads, **{**kw, "momentum_rank": min(shape)})
    torch.testing.assert_close(full_rank[0], _run("subset_norm", params, grads, lr=1e-2, weight_decay=0.1)[0],
                               rtol=1e-12, atol=1e-14)


def test_subspace_momentum_restarts_with_a_plain_gradient_step():
    """Right after each new subspace the direction is the gradient itself (bias-corrected
    momentum of one step), so the first step equals Subset-Norm's first step."""
    params, grads = _setup(((6, 4),))
    sub = _run("subset_norm", params, grads[:1], momentum_rank=1)
    plain = _run("subset_norm", params, grads[:1])
    torch.testing.assert_close(sub[0], plain[0], rtol=1e-12, atol=1e-14)
    assert not torch.equal(_run("subset_norm", params, grads, momentum_rank=1)[0], _run("subset_norm", params, grads)[0])


def _state_numel(opt, key):
    return sum(s[key].numel() for s in opt.state.values() if key in s)


def test_memory_savers_shrink_the_fno_optimizer_state():
    """The point of both options: on an FNO (complex spectral weights) SPAM at density 1/4
    keeps a quarter of the moments of the matrices, Subspace-Momentum rank 4 a fraction of m."""
    from sciml.models.fno import FNO

    model = FNO(in_channels=1, out_channels=1, n_dims=2, modes=6, width=16, n_layers=2)
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    model = model.double()
    sizes = {}
    for label, name, kw in [("adam-like", "spam", {}), ("sparse", "spam", {"density": 0.25}),
                            ("full m", "subset_norm", {}), ("subspace m", "subset_norm", {"momentum_rank": 4})]:
        opt = build_optimizer(model.parameters(), name, **kw)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        sizes[label] = _state_numel(opt, "exp_avg")
    dense_vectors = sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters() if p.dim() < 2)
    assert sizes["adam-like"] == sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())
    assert sizes["sparse"] - dense_vectors < 0.26 * (sizes["adam-like"] - dense_vectors)
    assert sizes["subspace m"] < 0.5 * sizes["full m"], sizes


@pytest.mark.parametrize("capturable", [False, True])
def test_clip_radagradd_accumulates_b_over_every_step_when_the_first_parameter_sometimes_has_no_gradient(capturable):
    """b² is the group's: a first parameter unused on odd steps (a branch not taken) must not move it
    to another parameter and restart it at b₀² (the rule: b²_{t+1} = b²_t + η‖ĝ_t‖², every step)."""
    import copy

    params, grads = _setup(((3,), (2, 2), (4,)))
    lr, clip, reweight, b0 = 1e-2, 5.0, 0.5, 0.3
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = build_optimizer(ps, "clip_radagradd", lr=lr, clip=clip, reweight=reweight, b0=b0, capturable=capturable)
    want, b2 = [p.clone() for p in params], b0 ** 2
    for t, gs in enumerate(grads):
        active = [i for i in range(len(ps)) if i != 0 or t % 2 == 0]
        if t == 3:  # a resume on a step whose first parameter has no gradient
            sd = copy.deepcopy(opt.state_dict())
            opt = build_optimizer(ps, "clip_radagradd", lr=lr, clip=clip, reweight=reweight, b0=b0,
                                  capturable=capturable)
            opt.load_state_dict(sd)
        for i, p in enumerate(ps):
            p.grad = gs[i].clone() if i in active else None
        opt.step()
        norm = math.sqrt(sum((gs[i] ** 2).sum().item() for i in active))
        c = min(1.0, clip / norm)
        for i in active:
            want[i] = want[i] - lr / math.sqrt(b2) * c * gs[i]
        b2 += reweight * (c * norm) ** 2
    for a, b in zip(ps, want):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)
    held = [s["b2"] for s in opt.state.values() if "b2" in s]
    assert len(held) == 1 and held[0].item() == pytest.approx(b2, rel=1e-12)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1, "momentum_rank": 1, "proj_every": 2}, {"capturable": True}])
@pytest.mark.parametrize("shape, real_shape", [((6,), (12,)), ((), (2,)), ((3, 2), (3, 4)), ((2, 5), (2, 10))])
def test_subset_norm_steps_a_complex_tensor_as_the_real_tensor_of_its_pairs(shape, real_shape, kw):
    """A complex vector keeps per-coordinate moments like the real vector of its (re, im) pairs (its
    real view (n, 2) is no matrix: one step size for all real parts was the bug); a complex matrix
    steps as the real matrix of its rows' pairs."""
    g = torch.Generator().manual_seed(5)
    p0 = torch.randn(*shape, 2, generator=g)
    grads = [torch.randn(*shape, 2, generator=g) * (50.0 if t == 4 else 1.0) for t in range(STEPS)]
    c = torch.nn.Parameter(torch.view_as_complex(p0.clone()))
    r = torch.nn.Parameter(p0.clone().reshape(real_shape))
    opt = build_optimizer([c, r], "subset_norm", lr=1e-2, **kw)
    for gt in grads:
        c.grad, r.grad = torch.view_as_complex(gt.clone()), gt.clone().reshape(real_shape)
        opt.step()
    assert torch.equal(torch.view_as_real(c.detach()).reshape(real_shape), r.detach())
    assert (r.detach() - p0.reshape(real_shape)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("name", ["diffgrad", "grams", "soap", "gravity"])
def test_a_parameter_that_first_gets_a_gradient_late_steps_as_if_optimised_alone(name, dtype):
    """pytorch-optimizer's DiffGrad, Grams, SOAP and Gravity count steps per group: a parameter whose
    first gradient came at the group's step 4 took a first step with step 4's bias corrections
    (Grams: 0.55·lr instead of lr; SOAP: a full step where its first step only initialises). Each
    parameter now has its own count, as in torch's optimizers and ours, also across a resume whose
    parameters have different counts."""
    import copy

    g = torch.Generator().manual_seed(11)
    shape = (3, 2)
    late0 = torch.randn(shape, dtype=dtype, generator=g)
    other0 = torch.randn(4, dtype=torch.float64, generator=g)
    late_grads = [torch.randn(shape, dtype=dtype, generator=g) for _ in range(6)]
    other_grads = [torch.randn(4, dtype=torch.float64, generator=g) for _ in range(9)]
    kw = {"weight_decay": 0.0} if name in ("grams", "soap") else {}

    late, other = torch.nn.Parameter(late0.clone()), torch.nn.Parameter(other0.clone())
    opt = build_optimizer([late, other], name, lr=1e-2, **kw)
    for t in range(9):  # `late` gets gradients from step 4 on; a resume after step 5
        if t == 5:
            sd = copy.deepcopy(opt.state_dict())
            opt = build_optimizer([late, other], name, lr=1e-2, **kw)
            opt.load_state_dict(sd)
        late.grad = late_grads[t - 3].clone() if t >= 3 else None
        other.grad = other_grads[t].clone()
        if t == 3:
            torch.manual_seed(5)  # Gravity draws the late parameter's initial velocity now
        opt.step()

    alone = torch.nn.Parameter(late0.clone())
    opt = build_optimizer([alone], name, lr=1e-2, **kw)
    torch.manual_seed(5)
    for gt in late_grads:
        alone.grad = gt.clone()
        opt.step()
    assert not torch.equal(alone.detach(), late0)
    torch.testing.assert_close(late.detach(), alone.detach(), rtol=1e-13, atol=1e-15)


def test_a_checkpoint_with_only_a_group_step_count_gives_each_parameter_that_count():
    """Optimizer state saved before counts were per parameter (pytorch-optimizer's own group count):
    its parameters continue from the group's count."""
    import copy

    params, grads = _setup()
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = build_optimizer(ps, "grams", lr=1e-2)
    for gs in grads[:3]:
        for p, gt in zip(ps, gs):
            p.grad = gt.clone()
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert sd["param_groups"][0]["step"] == 3 and all(s["step"] == 3 for s in sd["state"].values())
    for s in sd["state"].values():
        del s["step"]
    resumed = build_optimizer([torch.nn.Parameter(p.detach().clone()) for p in ps], "grams", lr=1e-2)
    resumed.load_state_dict(sd)
    for opt_ in (opt, resumed):
        for p, gt in zip(opt_.param_groups[0]["params"], grads[3]):
            p.grad = gt.clone()
        opt_.step()
    for a, b in zip(opt.param_groups[0]["params"], resumed.param_groups[0]["params"]):
        assert torch.equal(a, b)
    assert all(s["step"] == 4 for s in resumed.state.values())


@pytest.mark.parametrize("capturable", [False, True])
def test_spam_has_no_warmup_at_the_start_and_equals_pytorch_optimizers_spam_until_its_first_reset(capturable):
    """The authors' code (and pytorch-optimizer's SPAM, which follows it) takes full Adam steps from step 1:
    sciml's warmed up from step 1 (step-1 displacement 0.01 of Adam's). Until the first reset the two
    equal (after it pytorch-optimizer's warm-up runs one step ahead of the authors' closed form)."""
    import warnings

    from pytorch_optimizer import SPAM as POSPAM

    params, grads = _setup()
    grads = [[g * (40.0 if t == 25 else 1.0) for g in gs] for t, gs in enumerate(grads * 5)]  # 35 steps, a spike
    ours = [torch.nn.Parameter(p.clone()) for p in params]
    theirs = [torch.nn.Parameter(p.clone()) for p in params]
    opt = build_optimizer(ours, "spam", lr=1e-2, threshold=50.0, capturable=capturable)  # reset_interval 500
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = POSPAM(theirs, lr=1e-2, threshold=50.0, warmup_epoch=150, grad_accu_steps=20, update_proj_gap=500)
    for t, gs in enumerate(grads, 1):
        for a, b, g in zip(ours, theirs, gs):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        if t == 1:
            adam_step = 1e-2 * grads[0][0].sign()  # |m̂/√v̂| = 1 at step 1 (up to ε)
            torch.testing.assert_close(params[0] - ours[0].detach(), adam_step, rtol=1e-3, atol=0)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-15)


def test_gravity_refuses_a_zero_rate_and_a_warmup_from_zero_draws_the_velocity_from_the_built_rate():
    """Gravity draws V₀ ~ N(0, α/η): lr 0 was accepted by the config check, and a warm-up from 0 divided
    by zero at the first step (bare ZeroDivisionError). lr must be positive; a schedule may still start
    at 0: η is the rate the optimizer was built with, the paper's constant rate."""
    from sciml.optim import check_optimizer

    for lr in (0.0, -1.0):
        with pytest.raises(ValueError, match="gravity|lr"):
            check_optimizer("gravity", {"lr": lr})
    params, grads = _setup()
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    lr, alpha, beta = 1e-2, 0.01, 0.9
    opt = build_optimizer(ps, "gravity", lr=lr)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 4)  # lr x 0, 1/4, 1/2, ...
    torch.manual_seed(7)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        warm.step()
    torch.manual_seed(7)
    for i, p in enumerate(params):
        v = torch.empty_like(p).normal_(0.0, alpha / lr)  # the built rate, not the warm-up's 0
        for t, gs in enumerate(grads, 1):
            g = gs[i]
            zeta = g / (1 + (g * g.abs().max()) ** 2)
            bt = (beta * t + 1) / (t + 2)
            v = bt * v + (1 - bt) * zeta
            p = p - lr * (t - 1) / 4 * v
        torch.testing.assert_close(ps[i].detach(), p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape, old_v, summed", [((3, 5), (3, 1), 1), ((4, 1), (1, 1), 0)])
def test_a_subset_norm_state_saved_with_the_old_grouping_resumes_with_it(shape, old_v, summed):
    """Before the grouping followed the authors' code a 3 x 5 weight kept one v per row, (3, 1), and a
    Linear(1, w) weight (w, 1) kept v (1, 1); such a checkpoint met the new grouping's update on resume and
    crashed (reading "the axis of size 1" could not tell the second case). Its v's shape now says how it sums."""
    torch.manual_seed(0)
    p0, grads = torch.randn(*shape, dtype=torch.float64), [torch.randn(*shape, dtype=torch.float64) for _ in range(3)]
    p = torch.nn.Parameter(p0.clone())
    opt = build_optimizer([p], "subset_norm", lr=1e-2)
    opt.state[p].update(step=0, exp_avg=torch.zeros_like(p0), exp_avg_sq=torch.zeros(old_v, dtype=torch.float64))
    for g in grads:
        p.grad = g.clone()
        opt.step()
    assert opt.state[p]["exp_avg_sq"].shape == old_v
    b1, b2, want, m, v = 0.9, 0.999, p0.clone(), torch.zeros_like(p0), torch.zeros(old_v, dtype=torch.float64)
    for t, g in enumerate(grads, 1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * (g * g).sum(summed, keepdim=True)
        want = want - 1e-2 * _adam_like(b1, b2, t, m, v, 1e-8)
    torch.testing.assert_close(p.detach(), want, rtol=1e-12, atol=1e-14)


def test_a_sparse_spam_state_saved_before_resets_moved_keeps_its_subset_to_the_next_reset():
    """The subset's seed holds the step of its draw, which moved (t = jΔT + 1 -> jΔT): a checkpoint saved
    mid-interval by the old code drew another subset on resume, pairing its moments with other coordinates
    until the next reset. Golden values: the old code's subset of this run at t = 250."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.randn(8, 8))
    opt = build_optimizer([W], "spam", lr=1e-2, density=0.25, reset_interval=500)
    W.grad = torch.ones_like(W)
    opt.step()
    state = opt.state[W]
    del state["subsets_at_resets"]  # as saved by the old code
    state["step"] = 250
    old = [1, 6, 10, 15, 27, 30, 31, 32, 33, 36, 37, 47, 48, 60, 61, 63]
    assert opt.momentum_subset(W).tolist() == old
    state["step"] = 499
    opt.step()  # t = 500, a reset: the new rule from here on
    assert state["subsets_at_resets"] is True and opt.momentum_subset(W).tolist() != old


def test_gravity_group_with_a_velocity_seed_draws_its_velocity_from_that_seed_alone():
    """V₀ comes from the global RNG at the first step, so in an ensemble (one group per member) a member's
    V₀ depended on the members drawn before it. A group's ``velocity_seed`` gives it a stream of its own."""
    def velocities(seeds, shapes=((3, 2), (2,)), global_seed=None):
        groups = [{"params": [torch.nn.Parameter(torch.zeros(s)) for s in shapes], "lr": 0.1, "velocity_seed": seed}
                  for seed in seeds]
        opt = build_optimizer(groups, "gravity")
        for g in groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        torch.manual_seed(len(seeds) if global_seed is None else global_seed)  # differs between the calls
        opt.step()
        return [[opt.state[p]["v"].clone() for p in g["params"]] for g in groups]

    alone = velocities([5])[0]
    first, later = velocities([5, 9]), velocities([9, 5])  # before and after another member
    for a, b, c in zip(alone, first[0], later[1]):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(first[0][0], first[1][0])  # another seed, another draw
    a, b = velocities([None, None])  # without one: the global RNG, as before (one stream for all groups)
    assert not torch.equal(a[0], b[0])
    again, other = velocities([None, None]), velocities([None, None], global_seed=7)  # the global RNG's draws, alone
    assert all(torch.equal(x, y) for x, y in zip([*a, *b], [*again[0], *again[1]]))
    assert not torch.equal(a[0], other[0][0])
