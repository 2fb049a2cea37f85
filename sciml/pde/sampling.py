"""Residual-based adaptive collocation (Wu, Zhu, Tan, Kartha & Lu, CMAME 2023).

- RAD (distribution): draw ``candidates`` points, keep n with probability
  p(x) ∝ |R(x)|^k / mean |R|^k + c  (k = 1, c = 1 is their robust default; c → ∞ is uniform).
- RAR (refinement, RAR-G): append the ``add`` candidates with the largest |R(x)| to the set.

Both take the residual magnitude as a function so they do not depend on how it is computed.
"""

from __future__ import annotations

from typing import Callable

import torch

from sciml.pde.problem import Problem

Tensor = torch.Tensor


def rad_sample(problem: Problem, score: Callable[[Tensor], Tensor], n: int, *, k: float = 1.0, c: float = 1.0,
               candidates: int | None = None, seed: int = 0) -> Tensor:
    """n interior points ``(n, d)`` float64 drawn by RAD from ``candidates`` pseudo-random ones.

    Args: score: ``x (m, d) float64 -> |R(x)| (m,)``; k, c: the RAD exponent and offset.
    """
    if n < 1 or k < 0 or c < 0:
        raise ValueError(f"RAD needs n >= 1, k >= 0, c >= 0; got n={n}, k={k}, c={c}")
    m = candidates or 10 * n
    if m < n:
        raise ValueError(f"RAD needs candidates >= n, got candidates={m}, n={n}")
    x = problem.sample_interior(m, "pseudo", seed)
    s = score(x).to(torch.float64).cpu().abs().pow(k)
    p = s / s.mean().clamp_min(1e-300) + c
    idx = torch.multinomial(p, n, replacement=False, generator=torch.Generator().manual_seed(seed))
    return x[idx]


def rar_add(problem: Problem, score: Callable[[Tensor], Tensor], points: Tensor, add: int, *,
            candidates: int = 10000, seed: int = 0) -> Tensor:
    """``points`` with the ``add`` highest-residual candidates appended: ``(n + add, d)``."""
    if add < 1:
        raise ValueError(f"RAR needs add >= 1, got {add}")
    x = problem.sample_interior(candidates, "pseudo", seed)
    s = score(x).to(torch.float64).cpu()
    top = s.topk(min(add, candidates)).indices
    return torch.cat([points, x[top].to(points)])
