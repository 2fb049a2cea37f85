"""Boundary, initial and data conditions, each a residual r(x) that training drives to zero.

=============  ===========================================  ============================
condition      residual at its points                       points
=============  ===========================================  ============================
Dirichlet      u(x) − g(x)                                  ∂Ω (× time), filtered by ``where``
Neumann        ∂u/∂n(x) − g(x) = n·∇u − g                   ∂Ω (× time), filtered by ``where``
Robin          ∂u/∂n + a u − g                              ∂Ω (× time)
Periodic       ∂^k u(x_lo) − ∂^k u(x_hi), k = 0…order       pairs on the two faces of one coordinate
Initial        ∂_t^k u(x, t0) − g(x)                        Ω × {t0} (an ODE: t0 alone)
Data           u(x_i) − u_i                                 given observations
=============  ===========================================  ============================

Values g are a float or a function of the points ``x: (n, d) -> (n,)`` (columns in coordinate
order, time last). ``where`` is a predicate ``x -> (n,) bool`` or a box-face string such as
``"x=lo"`` / ``"y=hi"``; None means the whole boundary, less the faces of the coordinates the output is
periodic in (a Periodic condition on it: those faces are no boundary). ``component`` names the output.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import KW_ONLY, dataclass, field
from typing import Callable, Union

import numpy as np
import torch

from sciml.pde.derivatives import Derivatives

Value = Union[float, Callable[[torch.Tensor], torch.Tensor]]


def evaluate_value(g: Value, x: torch.Tensor) -> torch.Tensor:
    """g at points x ``(n, d)`` as an ``(n,)`` tensor of x's dtype."""
    if callable(g):
        out = g(x)
        if not isinstance(out, torch.Tensor) and np.ndim(out) == 0:
            # a number (DeepXDE's `lambda x: 0`); a one-element tensor may be x[0] or a mean, so only numbers broadcast.
            # Built from x, like the transform's `one`, so jvp tangents stay dense
            return x[:, 0] * 0.0 + torch.as_tensor(out).to(x)
        v = torch.as_tensor(out)
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if v.shape != (x.shape[0],):
            hint = (" (one value for all points: x[0] where x[:, 0] was meant, or a reduction? a constant is a number: "
                    "return 0.0, or pass it directly, e.g. Dirichlet(0.0))" if v.numel() == 1 else "")
            raise ValueError(f"a condition's value function must map (n, d) points to (n,) values (or return a number); "
                             f"got shape {tuple(v.shape)} for n={x.shape[0]}{hint}")
        return v.to(x)
    return torch.full((x.shape[0],), float(g), dtype=x.dtype, device=x.device)


def check_value_differentiable(g: Value, x: torch.Tensor, label: str) -> None:
    """Under a hard constraint g enters the output (u = g + D N), so its derivatives enter the residual: a value
    function must be a torch expression of x. A NumPy result failed deep inside autograd or the jet backend, and a
    detached one trained to a wrong solution (rel. L2 0.87 where the torch expression gives 3e-6). Checked once."""
    if not callable(g):
        return
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        try:
            out = g(x)
        except (RuntimeError, TypeError) as err:
            if "numpy" not in str(err).lower() and "requires grad" not in str(err):
                raise
            raise TypeError(f"{label}: its value function calls NumPy on the points ({str(err).splitlines()[0]}); a hard "
                            f"constraint differentiates it, so write it with torch (torch.sin, not np.sin), or keep "
                            f"the condition soft") from err
    if not isinstance(out, torch.Tensor):
        if np.ndim(out) == 0:
            return  # a number: constant
        raise TypeError(f"{label}: its value function returned {type(out).__name__}; a hard constraint differentiates it "
                        f"(u = g + D N), so return a torch expression of x (torch.sin, not np.sin), or keep it soft")
    if not out.requires_grad and out.numel() > 1 and bool((out != out.reshape(-1)[0]).any()):
        # no graph, yet varying: a step (torch.where(x < 0, 1, 0): derivative 0 almost everywhere, as autograd says)
        # keeps its value under a tiny move of the points; a smooth function that lost its graph does not
        with torch.no_grad():
            moved = torch.as_tensor(g(x.detach() + 1e-7 * (1 + x.detach().abs()))).reshape(out.shape).to(out)
        if bool(((moved != out).double().mean() > 0.5)):
            raise ValueError(f"{label}: its value varies smoothly over the points but has no autograd path to them "
                             f"(detached, or made outside autograd: .numpy(), torch.tensor(...)); a hard constraint "
                             f"differentiates it (u = g + D N), so compute it from x with torch ops, or keep the "
                             f"condition soft")


def check_value_finite(c: "Condition", x: torch.Tensor, label: str) -> None:
    """Raise if the target value of `c` (a ``value`` attribute) is NaN or inf at any of its points x. Run where the
    points are drawn (once, before training), not per step: a NaN target otherwise reached the guard, which blamed
    the learning rate."""
    if not hasattr(c, "value"):
        return
    v = evaluate_value(c.value, x)
    bad = ~torch.isfinite(v)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        point = tuple(round(p, 6) for p in x[i].tolist())
        raise ValueError(f"{label} value is not finite (NaN or inf) at {int(bad.sum())} of its {len(v)} points, the first "
                         f"{point} (value {float(v[i])}); fix its value there (e.g. a sqrt of a negative number or a 0/0 "
                         f"on part of the boundary)")


@dataclass(frozen=True)
class Condition:
    """Base: ``component`` output, ``weight`` of its loss, ``n`` points (None: the trainer's default; `Data` takes
    no n: it uses every observation).

    These three are keyword-only; a subclass's own fields come first and may be positional.
    """

    _: KW_ONLY
    component: str = "u"
    weight: float = 1.0
    n: int | None = None

    kind = "condition"

    def __post_init__(self):
        name = type(self).__name__
        try:
            w = float(self.weight)
        except (TypeError, ValueError):
            raise TypeError(f"{name}(weight={self.weight!r}): weight must be a real number") from None
        # a negative weight makes training maximise the term; 0 leaves it out of the loss (w * term)
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{name}(weight={self.weight!r}): a loss weight must be finite and >= 0 (0 leaves the "
                             f"term out); pass e.g. weight=10.0 to stress it")
        value = getattr(self, "value", None)
        if value is not None and not callable(value):  # a function is checked at its points (check_value_finite)
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}(value={value!r}): a constant value must be finite")

    def residual(self, d: Derivatives, batch: dict) -> torch.Tensor:
        raise NotImplementedError


def parse_face(where: str, coords: tuple[str, ...]) -> tuple[int, str]:
    """``"x=lo"`` -> (column of x in ``coords``, "lo"); anything else is a ValueError naming the valid forms."""
    name, _, side = where.partition("=") if isinstance(where, str) else ("", "", "")
    if name not in coords or side not in ("lo", "hi"):
        valid = ", ".join(f"'{c}=lo', '{c}=hi'" for c in coords)
        raise ValueError(f"face {where!r} must look like '<coord>=lo' or '<coord>=hi' with coord in {coords} "
                         f"(one of {valid}); fix the condition's where")
    return coords.index(name), side


def face_predicate(where: str, coords: tuple[str, ...], lo: torch.Tensor, hi: torch.Tensor) -> Callable:
    """``"x=lo"`` -> x ↦ |x_col − lo| ≈ 0 (a box face)."""
    j, side = parse_face(where, coords)
    target = float((lo if side == "lo" else hi)[j])
    scale = float(hi[j] - lo[j])
    return lambda x: (x[:, j] - target).abs() <= 1e-9 * max(1.0, abs(scale))


def normal_derivative(d: Derivatives, component: str, normal: torch.Tensor) -> torch.Tensor:
    """∂u/∂n = Σ_j n_j ∂u/∂x_j over the spatial coordinates ``d.spatial`` (a boundary normal has no
    time component). Which columns to use is static, so no host sync per residual evaluation."""
    return sum(normal[:, j] * d(component, c) for j, c in enumerate(d.coords) if c in d.spatial)


@dataclass(frozen=True)
class Dirichlet(Condition):
    """u(x) = g(x) on the boundary part ``where``."""

    value: Value = 0.0
    where: Union[str, Callable, None] = None
    kind = "boundary"

    def residual(self, d, batch):
        return d(self.component) - evaluate_value(self.value, batch["x"])


@dataclass(frozen=True)
class Neumann(Condition):
    """∂u/∂n = n·∇u = g(x) on ``where`` (n: outward unit normal)."""

    value: Value = 0.0
    where: Union[str, Callable, None] = None
    kind = "boundary"

    def residual(self, d, batch):
        return normal_derivative(d, self.component, batch["normal"]) - evaluate_value(self.value, batch["x"])


@dataclass(frozen=True)
class Robin(Condition):
    """∂u/∂n + a u = g(x) on ``where``."""

    a: float = 1.0
    value: Value = 0.0
    where: Union[str, Callable, None] = None
    kind = "boundary"

    def __post_init__(self):
        super().__post_init__()
        if not math.isfinite(float(self.a)):
            raise ValueError(f"Robin(a={self.a!r}): the coefficient a must be finite")

    def residual(self, d, batch):
        du_dn = normal_derivative(d, self.component, batch["normal"])
        return du_dn + self.a * d(self.component) - evaluate_value(self.value, batch["x"])


@dataclass(frozen=True)
class Periodic(Condition):
    """u and its first ``order`` derivatives in ``coord`` agree on the faces coord = lo and coord = hi."""

    coord: str = "x"
    order: int = 1
    kind = "periodic"

    def residual(self, d, batch):
        # batch["x"] stacks the lo-face points then their hi-face images: (2n, dim)
        n = batch["x"].shape[0] // 2
        parts = []
        for k in range(self.order + 1):
            v = d(self.component, *([self.coord] * k))
            parts.append(v[:n] - v[n:])
        return torch.cat(parts)


@dataclass(frozen=True)
class Initial(Condition):
    """∂_t^k u(x, t0) = g(x) with k = ``derivative`` (0: the value, 1: the velocity)."""

    value: Value = 0.0
    derivative: int = 0
    kind = "initial"

    def __post_init__(self):
        super().__post_init__()
        k = self.derivative
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
            raise ValueError(f"Initial derivative must be a non-negative int (0: the value, 1: the velocity, k: ∂_t^k u), "
                             f"got {k!r}; pass e.g. Initial(g, derivative=1)")
        object.__setattr__(self, "derivative", int(k))

    def residual(self, d, batch):
        return d(self.component, *(["t"] * self.derivative)) - evaluate_value(self.value, batch["x"])


@dataclass(frozen=True)
class Data(Condition):
    """u(x_i) = u_i at observed points ``points (n, d)`` with ``values (n,)``: all of them (no ``n``)."""

    points: torch.Tensor = field(default=None)
    values: torch.Tensor = field(default=None)
    kind = "data"

    def __post_init__(self):
        super().__post_init__()
        if self.points is None or self.values is None:
            raise ValueError("Data needs points (n, d) and values (n,)")
        if self.n is not None:  # it was ignored: every observation was used
            raise ValueError(f"Data(n={self.n!r}): Data uses every observation it is given and takes no n; to fit a "
                             f"subset, pass it: idx = torch.randperm(len(points), generator=...)[:n], then "
                             f"Data(points[idx], values[idx])")
        p, v = torch.as_tensor(self.points), torch.as_tensor(self.values)
        if p.ndim != 2 or v.reshape(-1).shape[0] != p.shape[0]:
            raise ValueError(f"Data points must be (n, d) and values (n,); got {tuple(p.shape)} and {tuple(v.shape)}")
        for what, t in (("points", p), ("values", v.reshape(-1))):
            # a NaN observation poisons the loss, and the guard then blamed the learning rate or the precision
            if t.is_floating_point() or t.is_complex():
                bad = ~torch.isfinite(t) if t.ndim == 1 else ~torch.isfinite(t).all(1)
                if bool(bad.any()):
                    i = int(bad.nonzero()[0, 0])
                    raise ValueError(f"Data {what} hold non-finite numbers (NaN or inf) at {int(bad.sum())} of "
                                     f"{len(t)} observations, the first at index {i}: {t[i].tolist()}; drop those "
                                     f"observations (e.g. keep = {'torch.isfinite(points).all(1)' if what == 'points' else 'torch.isfinite(values)'}) "
                                     f"before Data(points[keep], values[keep])")

    def residual(self, d, batch):
        return d(self.component) - batch["values"]
