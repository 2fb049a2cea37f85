"""Nyström-preconditioned Newton-CG (NysNewton-CG) for small, ill-conditioned losses (PINNs).

Per step, with x all parameters as one real vector, g = ∇L(x), H = ∇²L(x):

1. every `update_freq` steps, a rank-r Nyström sketch of H: Ω (n×r) orthonormal Gaussian,
   Y = HΩ (r Hessian-vector products), ν = eps·‖Y‖, Y_ν = Y + νΩ, C = chol(ΩᵀY_ν),
   B = Y_ν C⁻ᵀ = UΣVᵀ, Λ = max(Σ² − ν, 0): H ≈ U Λ Uᵀ;
2. d solves (H + μI) d = g by preconditioned CG (warm-started from the previous d) with
   P⁻¹ = (λ_r + μ) U (Λ + μI)⁻¹ Uᵀ + (I − UUᵀ);
   CG stops early at negative curvature (pᵀ(H+μI)p ≤ 0, truncated Newton-CG: the Hessian of
   a PINN loss is indefinite away from a minimum);
3. if dᵀg ≤ 0 the gradient is used instead; Armijo backtracking from t = lr:
   L(x − t d) ≤ L(x) − c·t·gᵀd, t ← βt (at most `max_line_search` halvings);
4. x ← x − t d (every trial written from the saved x; x unchanged, bit for bit, when none is accepted).

Rathore, Lei, Frangella, Lu & Udell, "Challenges in Training PINNs: A Loss Landscape
Perspective", ICML 2024, arXiv:2402.01868 (code: pratikrathore8/opt_for_pinns; defaults lr 1,
Armijo c = 0.1, β = 0.5; rank 60 and precond_update_freq 20 as in their PINN runs).

Closure contract: ``step(closure)`` where ``closure()`` returns the loss **without** calling
``backward()`` — Hessian-vector products differentiate the gradient a second time. The line
search calls the closure again (grad mode on: PINN losses differentiate w.r.t. their inputs). Expensive per step (r + CG
iterations HVPs): a final polishing phase after Adam → L-BFGS (see `sciml.optim.phases`).
Complex parameters are handled as (real, imag) pairs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import check_range


class NysNewtonCG(torch.optim.Optimizer):
    """Nyström-preconditioned Newton-CG with Armijo line search; see the module docstring."""

    closure_returns_loss_only = True  # the closure must not call backward()

    def __init__(self, params, lr: float = 1.0, rank: int = 60, mu: float = 1e-4, update_freq: int = 20,
                 cg_tol: float = 1e-16, cg_max_iters: int = 100, line_search: str | None = "armijo",
                 armijo_c: float = 0.1, armijo_beta: float = 0.5, max_line_search: int = 30):
        check_range("lr", lr, 0.0, lo_open=True)
        check_range("mu", mu, 0.0, fix="the damping of H + mu*I, e.g. 1e-4 .. 1e-1")
        check_range("cg_tol", cg_tol, 0.0)
        check_range("armijo_c", armijo_c, 0.0, 1.0, lo_open=True, hi_open=True)
        check_range("armijo_beta", armijo_beta, 0.0, 1.0, lo_open=True, hi_open=True)
        for name, v in (("rank", rank), ("update_freq", update_freq), ("cg_max_iters", cg_max_iters),
                        ("max_line_search", max_line_search)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if line_search not in ("armijo", None):
            raise ValueError(f"line_search={line_search!r} must be 'armijo' or None (fixed step lr)")
        super().__init__(params, dict(lr=lr, rank=rank, mu=mu, update_freq=update_freq, cg_tol=cg_tol,
                                      cg_max_iters=cg_max_iters, line_search=line_search, armijo_c=armijo_c,
                                      armijo_beta=armijo_beta, max_line_search=max_line_search))
        if len(self.param_groups) != 1:
            raise ValueError("nys_newton_cg treats all parameters as one vector: pass a single parameter group")

    # -- flat-vector helpers (complex parameters as real pairs)
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    @staticmethod
    def _flat(ts) -> Tensor:
        return torch.cat([(torch.view_as_real(t) if t.is_complex() else t).reshape(-1) for t in ts])

    def _split(self, v: Tensor) -> list[Tensor]:
        out, i = [], 0
        for p in self._params():
            n = p.numel() * (2 if p.is_complex() else 1)
            c = v[i:i + n]
            # view_as_complex needs an even storage offset: copy the slice
            out.append(torch.view_as_complex(c.clone().view(*p.shape, 2)) if p.is_complex() else c.view_as(p))
            i += n
        return out

    def _add(self, v: Tensor, t: float) -> None:
        with torch.no_grad():
            for p, d in zip(self._params(), self._split(v)):
                p.add_(d, alpha=t)

    @torch.no_grad()
    def step(self, closure):
        if closure is None:
            raise ValueError("nys_newton_cg needs step(closure) with closure() returning the loss (no backward())")
        group = self.param_groups[0]
        params = self._params()
        state = self.state[params[0]]
        with torch.enable_grad():
            loss = closure()
            try:
                grads = torch.autograd.grad(loss, params, create_graph=True)
            except RuntimeError as err:
                raise RuntimeError(
                    "nys_newton_cg differentiates the gradient again: its closure must return the loss without "
                    f"calling backward() (original error: {err})") from err
        g_graph = self._flat(grads)
        g = g_graph.detach()
        if not bool(torch.isfinite(g).all() & torch.isfinite(loss.detach())):  # one host sync, beside the step's others
            return loss.detach()  # no move: a sketch of a NaN gradient would factor NaN (eigh raises)

        def hvp(v: Tensor) -> Tensor:
            state["hvps"] = state.get("hvps", 0) + 1  # cost accounting (benchmarks count it)
            with torch.enable_grad():
                hv = torch.autograd.grad(grads, params, grad_outputs=self._split(v), retain_graph=True)
            return self._flat(hv).detach()

        k = state.get("n_iters", 0)
        if k % group["update_freq"] == 0 or "U" not in state:
            state["U"], state["S"] = self._nystrom(hvp, g, min(group["rank"], g.numel()))
        U, S = state["U"], state["S"]
        mu = group["mu"]
        d = self._pcg(hvp, g, state.get("d", torch.zeros_like(g)), U, S, mu, group["cg_tol"], group["cg_max_iters"])
        descent = torch.dot(d, g)
        # an indefinite H can give an ascent direction; fall back to the gradient (one host sync)
        if not bool(descent > 0):
            d, descent = g.clone(), torch.dot(g, g)
            state["gradient_fallbacks"] = state.get("gradient_fallbacks", 0) + 1
        state["d"] = d
        t = group["lr"]
        if group["line_search"] == "armijo":
            f0 = float(loss)
            slope = float(descent)
            # every trial is written from this copy of x (undoing x − t·d by adding t·d back drifts by
            # rounding, and a rejected step would still move x)
            x0 = [p.detach().clone() for p in params]
            steps = self._split(d)
            for _ in range(group["max_line_search"]):
                for p, p0, dp in zip(params, x0, steps):
                    p.copy_(p0).add_(dp, alpha=-t)
                with torch.enable_grad():  # PINN losses differentiate w.r.t. their inputs
                    f1 = float(closure().detach())
                if math.isfinite(f1) and f1 <= f0 - group["armijo_c"] * t * slope:
                    break  # x holds x0 − t·d
                t *= group["armijo_beta"]
            else:
                t = 0.0  # no acceptable step: stay put, exactly (the loss is at its numerical floor)
                for p, p0 in zip(params, x0):
                    p.copy_(p0)
        else:
            self._add(d, -t)
        state["t"] = t
        state["n_iters"] = k + 1
        return loss.detach()

    @staticmethod
    def _nystrom(hvp, g: Tensor, r: int):
        n = g.numel()
        gen = torch.Generator(device=g.device).manual_seed(n)  # deterministic sketch per problem size
        omega = torch.linalg.qr(torch.randn(n, r, dtype=g.dtype, device=g.device, generator=gen))[0]
        Y = torch.stack([hvp(omega[:, j]) for j in range(r)], dim=1)
        nu = torch.finfo(g.dtype).eps * torch.linalg.matrix_norm(Y)
        Yn = Y + nu * omega
        M = omega.T @ Yn
        d, V = torch.linalg.eigh((M + M.T) / 2)
        # an indefinite H (saddle regions) makes ΩᵀHΩ indefinite: shift it positive, as the
        # reference code does, and remember the shift so it is subtracted from the eigenvalues
        extra = torch.clamp(-d[0], min=0.0) + torch.where(d[0] <= 0, nu + torch.finfo(g.dtype).eps * d[-1].abs(), 0.0)
        Yn = Yn + extra * omega
        d, nu = d + extra, nu + extra
        B = (Yn @ V) / d.clamp_min(torch.finfo(g.dtype).tiny).sqrt()  # = Y_ν C⁻ᵀ up to a rotation
        U, sigma, _ = torch.linalg.svd(B, full_matrices=False)
        return U, torch.clamp(sigma ** 2 - nu, min=0.0)

    @staticmethod
    def _pcg(hvp, b, x0, U, S, mu, tol, max_iters):
        lam_r = S[-1]

        def precond(r):
            z = U.T @ r
            return (lam_r + mu) * (U @ (z / (S + mu))) + (r - U @ z)

        x = x0.clone()
        r = b - (hvp(x) + mu * x)
        z = precond(r)
        p = z.clone()
        rz = torch.dot(r, z)
        for it in range(max_iters):
            if float(torch.linalg.vector_norm(r)) <= tol:
                break
            v = hvp(p) + mu * p
            curv = torch.dot(p, v)
            # negative curvature: H + μI is indefinite along p; stop (truncated Newton-CG,
            # Nocedal & Wright Alg. 7.1) — continuing would produce an ascent direction
            if not bool(curv > 0):
                if it == 0:  # no usable curvature at all: the preconditioned gradient
                    x = z.clone() if not bool(torch.dot(x0, b) > 0) else x
                break
            alpha = rz / curv
            x.add_(alpha * p)
            r.sub_(alpha * v)
            z = precond(r)
            rz_new = torch.dot(r, z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        return x
