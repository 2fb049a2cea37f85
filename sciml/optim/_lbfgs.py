"""L-BFGS whose search direction is a few matrix products over the history, not a loop over it.

torch.optim.LBFGS applies the inverse-Hessian approximation by the two-loop recursion: per stored
pair a dot product, a host read of it (``.item()``) and an axpy. At history 100 that is about 200
host syncs and 600 small kernels per iteration (measured: 207 ``.item()`` calls), and on a GPU
they, not the loss and gradient of a PINN, set the time of an L-BFGS phase.

Here the product uses the compact representation of Byrd, Nocedal & Schnabel (1994), with S and Y
the stored steps and gradient changes (n x k, oldest first), R the upper triangle of SᵀY, D its
diagonal and γ = sᵀy / yᵀy of the newest pair:

    H g = γ g + S c − γ Y u,   u = R⁻¹ Sᵀg,   c = R⁻ᵀ ((D + γ YᵀY) u − γ Yᵀg),

two products against the history, two k x k triangular solves and two products back: the two-loop
recursion's direction to rounding, in ~20 kernels and no host read. The history is a ring buffer;
its Gram matrices SᵀY and YᵀY gain a row and a column per new pair (two products).

Everything else is torch.optim.LBFGS's algorithm: the same arguments and defaults, the same
stopping tests and pair-acceptance rule, and torch's own strong-Wolfe line search, so the iterates
equal torch's to rounding (tested in float64). Parameters are updated with one foreach kernel, and
complex parameters are optimised as their real views.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Optimizer
try:  # torch's line search, kept so the iterates match torch's; private, so its absence is an error at use
    from torch.optim.lbfgs import _strong_wolfe
except ImportError:  # pragma: no cover - torch 2.11 to 2.13 have it
    _strong_wolfe = None


def _real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


class LBFGS(Optimizer):
    """L-BFGS with the compact-form direction (see the module docstring); ``step(closure)``.

    Args (as torch.optim.LBFGS): lr, max_iter (iterations per ``step``), max_eval (default
    ``max_iter * 5 // 4``), tolerance_grad, tolerance_change, history_size, line_search_fn
    (None or "strong_wolfe"). One parameter group; parameters of one dtype.
    """

    def __init__(self, params, lr: float = 1.0, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None):
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        if lr <= 0 or max_iter < 1 or history_size < 1:
            raise ValueError(f"need lr > 0, max_iter >= 1 and history_size >= 1, got {lr}, {max_iter}, {history_size}")
        if line_search_fn == "strong_wolfe" and _strong_wolfe is None:
            raise RuntimeError("this torch lacks torch.optim.lbfgs._strong_wolfe (sciml is tested with torch 2.11 to 2.13); "
                               "use line_search_fn: null, or one of those torch versions")
        max_eval = max_iter * 5 // 4 if max_eval is None else max_eval
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change, history_size=history_size,
                                      line_search_fn=line_search_fn))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS takes one parameter group (no per-parameter options)")
        self._params = self.param_groups[0]["params"]
        if len({_real(p).dtype for p in self._params}) > 1:  # complex64 goes with float32
            raise ValueError("LBFGS needs all parameters in one precision; cast the model first (e.g. model.double())")
        self._numels = [_real(p).numel() for p in self._params]

    # -- flat views of the parameters and gradients (complex as real)
    def _flat_grad(self) -> Tensor:
        return torch.cat([_real(p.grad).reshape(-1) if p.grad is not None else _real(p).new_zeros(n)
                          for p, n in zip(self._params, self._numels)])

    def _flat_params(self) -> Tensor:
        return torch.cat([_real(p).detach().reshape(-1) for p in self._params])

    def _set_params(self, flat: Tensor) -> None:
        torch._foreach_copy_([_real(p) for p in self._params],
                             [v.view_as(_real(p)) for p, v in zip(self._params, flat.split(self._numels))])

    def _move(self, t, d: Tensor) -> None:
        """params += t * d (t a number or a 0-d tensor: no host read)."""
        torch._foreach_add_([_real(p) for p in self._params],
                            [v.view_as(_real(p)) for p, v in zip(self._params, (d * t).split(self._numels))])

    def _evaluate_at(self, closure, x: Tensor, t, d: Tensor):
        """Loss (a float) and flat gradient at x + t d, where the parameters are left: every trial
        point is written whole from x, so no restore is needed between them."""
        self._set_params(x + t * d)
        return float(closure()), self._flat_grad()

    # -- the history: ring buffer of (s, y) rows and their Gram matrices in slot order
    def _store_pair(self, state: dict, s: Tensor, y: Tensor, m: int) -> None:
        if "S" not in state:
            state["S"], state["Y"] = s.new_zeros(m, s.numel()), s.new_zeros(m, s.numel())
            state["SY"], state["YY"] = s.new_zeros(m, m), s.new_zeros(m, m)
            state["k"], state["next"] = 0, 0
        S, Y, SY, YY = state["S"], state["Y"], state["SY"], state["YY"]
        slot = state["next"]
        S[slot], Y[slot] = s, y
        k = state["k"] = min(state["k"] + 1, m)
        state["next"] = (slot + 1) % m
        sy_yy = Y[:k] @ torch.stack([s, y], 1)  # (k, 2): y_j·s_slot and y_j·y_slot
        SY[slot, :k] = sy_yy[:, 0]
        SY[:k, slot] = S[:k] @ y
        YY[slot, :k] = YY[:k, slot] = sy_yy[:, 1]

    def _direction(self, state: dict, g: Tensor) -> Tensor:
        """−H g by the compact form (−γ g with no stored pair)."""
        gamma, k = state["gamma"], state.get("k", 0)
        if k == 0:
            return g.neg().mul_(gamma)
        S, Y = state["S"][:k], state["Y"][:k]
        m = state["S"].shape[0]
        # slots in age order: 0..k-1 until the ring is full, then starting at the oldest
        order = torch.arange(k, device=g.device)
        if k == m and state["next"]:
            order = order.add_(state["next"]).remainder_(m)
        SY = state["SY"][:k, :k][order][:, order]
        YY = state["YY"][:k, :k][order][:, order]
        R = SY.triu()
        Sg, Yg = (S @ g)[order], (Y @ g)[order]
        u = torch.linalg.solve_triangular(R, Sg[:, None], upper=True)[:, 0]
        w = SY.diagonal() * u + gamma * (YY @ u - Yg)
        c = torch.linalg.solve_triangular(R.T, w[:, None], upper=False)[:, 0]
        c_slot, u_slot = torch.empty_like(c), torch.empty_like(u)
        c_slot[order], u_slot[order] = c, u
        return (S.T @ c_slot).sub_(gamma * (Y.T @ u_slot)).add_(gamma * g).neg_()

    @torch.no_grad()
    def step(self, closure, on_accept=None):
        """One call runs up to max_iter iterations; returns the loss at the starting point. `on_accept`: called with
        the loss (a float, no extra host read) of each point an iteration moves to and evaluates (not the line
        search's rejected trials), e.g. to count loss spikes along the path."""
        if closure is None:
            raise ValueError("LBFGS.step needs a closure that zeroes the gradients, computes the loss, calls backward and returns it")
        closure = torch.enable_grad()(closure)
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change, m = group["tolerance_grad"], group["tolerance_change"], group["history_size"]
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        evals = 1
        state["func_evals"] += 1
        g = self._flat_grad()
        if g.abs().max() <= tol_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        prev_g, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        # after a strong-Wolfe search: the next pair (y, s, y·s) and y·s on the host, read with the stopping tests
        # (one host read for three)
        pair, ys_read = None, None
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                for key in ("S", "Y", "SY", "YY", "k", "next"):
                    state.pop(key, None)
                state["gamma"] = 1.0
                d = g.neg()
            else:
                if pair is None:
                    y, s = g - prev_g, d * t
                    ys = y.dot(s)
                else:
                    y, s, ys = pair
                if (ys if ys_read is None else ys_read) > 1e-10:  # curvature condition; otherwise the pair is skipped
                    self._store_pair(state, s, y, m)
                    state["gamma"] = ys / y.dot(y)
                d = self._direction(state, g)
            if prev_g is None:
                prev_g = g.clone(memory_format=torch.contiguous_format)
            else:
                prev_g.copy_(g)
            prev_loss = loss

            t = min(1.0, 1.0 / float(g.abs().sum())) * lr if state["n_iter"] == 1 else lr
            gtd = g.dot(d)
            if gtd > -tol_change:  # not a descent direction
                break

            if group["line_search_fn"] == "strong_wolfe":
                x0 = self._flat_params()
                loss, g, t, ls_evals = _strong_wolfe(lambda x, step, direction: self._evaluate_at(closure, x, step, direction),
                                                     x0, t, d, loss, g, gtd)
                s, y = d * t, g - prev_g
                self._set_params(x0 + s)  # the accepted point (the last trial need not be it)
                stats = torch.stack([g.abs().max(), s.abs().max(), y.dot(s)])
                g_max, step_max, ys_read = stats.tolist()
                pair = (y, s, stats[2])  # (γ takes y·s as a tensor: float / tensor rounds differently)
                converged = g_max <= tol_grad
            else:
                self._move(t, d)
                ls_evals = 0
                converged = False
                if n_iter != max_iter:  # the next step call evaluates the last point
                    loss = float(closure())
                    g = self._flat_grad()
                    converged = g.abs().max() <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals
            if on_accept is not None and ls_evals:
                on_accept(float(loss))

            if n_iter == max_iter or evals >= max_eval or converged:
                break
            if ys_read is None:
                step_max = (d * t).abs().max()
            if step_max <= tol_change or abs(loss - prev_loss) < tol_change:
                break

        state.update(d=d, t=t, prev_flat_grad=prev_g, prev_loss=prev_loss)
        return orig_loss
