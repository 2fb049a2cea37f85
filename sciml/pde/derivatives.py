"""Fields and their partial derivatives, independent of how they are computed.

A residual R[u](x) is written once against a `Derivatives` object ``d``::

    def burgers(d, p):                         # u_t + u u_x − ν u_xx = 0
        return d.u_t + d.u * d.u_x - p.nu * d.u_xx

``d("u", "x", "x")`` is ∂²u/∂x²; ``d.u_xx`` is its shorthand (output name, underscore, one letter
per coordinate); ``d.x`` is the coordinate itself; ``d.grad("u")`` stacks ∂u/∂x_i over the spatial
coordinates and ``d.laplacian("u")`` is Σ_i ∂²u/∂x_i². Mixed partials commute, so ``d.u_xt`` and
``d.u_tx`` are one cached tensor. Three backends implement it:

- `ReverseDerivatives`: pointwise network, reverse-mode autograd. One ``autograd.grad`` per
  (output, lower-order derivative) yields the whole gradient row, cached for its siblings
  (DeepXDE's scheme, but scoped to one evaluation instead of a global cache).
- `ForwardDerivatives`: pointwise network, forward mode via ``torch.func.jvp`` with a tangent
  e_j for all points at once (a pointwise net's Jacobian is block diagonal, so one batched jvp
  gives ∂u/∂x_j at every point and for every output); nested jvps give higher orders.
- `GridDerivatives`: fields sampled on a uniform grid, derivatives by finite differences
  (2nd-order, ``torch.gradient``) or Fourier differentiation along periodic axes.

Both pointwise backends need a network whose output at a point depends only on that point
(an MLP, with any input embedding); batch norm or attention across points breaks them.
"""

from __future__ import annotations

import functools
import inspect
import math
from fractions import Fraction
from typing import Callable, Mapping, Sequence

import torch

from sciml.registry import close_matches

Tensor = torch.Tensor


def default_coords(space_dim: int, time: bool) -> tuple[str, ...]:
    """("x",), ("x", "y"), ("x", "y", "z") or ("x1", …) for d > 3; then "t" when time-dependent."""
    names = ("x", "y", "z")[:space_dim] if space_dim <= 3 else tuple(f"x{i + 1}" for i in range(space_dim))
    return names + (("t",) if time else ())


class Derivatives:
    """Named fields u_k and their partial derivatives at a set of points or grid nodes.

    Args:
        outputs: field names, e.g. ("u",) or ("u", "v", "p").
        coords: coordinate names in column / axis order, e.g. ("x", "t").
        spatial: which coordinates count for `grad` / `laplacian` (default: all but "t").

    Every value has the same shape: ``(n,)`` for point sets, the grid shape for grids.
    """

    def __init__(self, outputs: Sequence[str], coords: Sequence[str], spatial: Sequence[str] | None = None):
        self.outputs, self.coords = tuple(outputs), tuple(coords)
        if len(set(self.outputs)) != len(self.outputs) or len(set(self.coords)) != len(self.coords):
            raise ValueError(f"output and coordinate names must be unique, got outputs={self.outputs}, coords={self.coords}")
        clash = set(self.outputs) & set(self.coords)
        if clash:
            raise ValueError(f"names {sorted(clash)} are both outputs and coordinates; rename one")
        self.spatial = tuple(spatial) if spatial is not None else tuple(c for c in self.coords if c != "t")
        self._cache: dict[tuple[int, tuple[int, ...]], Tensor] = {}

    # --- backend hooks --------------------------------------------------------------------
    def _compute(self, k: int, path: tuple[int, ...]) -> Tensor:
        raise NotImplementedError

    def coordinate(self, j: int) -> Tensor:
        raise NotImplementedError

    # --- public ----------------------------------------------------------------------------
    def __call__(self, name: str, *wrt: str) -> Tensor:
        """∂^m u_name / ∂x_{wrt[0]} … ∂x_{wrt[m-1]} (``d("u")`` is u itself)."""
        k = self._output_index(name)
        path = tuple(sorted(self._coord_index(c) for c in wrt))
        key = (k, path)
        if key not in self._cache:
            self._cache[key] = self._compute(k, path)
        return self._cache[key]

    def __getattr__(self, attr: str) -> Tensor:
        if attr.startswith("_"):
            raise AttributeError(attr)
        if attr in self.coords:
            return self.coordinate(self.coords.index(attr))
        if attr in self.outputs:
            return self(attr)
        name, sep, suffix = attr.rpartition("_")
        if sep and name in self.outputs and suffix and all(c in self.coords for c in suffix):
            return self(name, *suffix)
        known = [*self.outputs, *self.coords, *(f"{o}_{c}" for o in self.outputs for c in self.coords)]
        raise AttributeError(
            f"{attr!r} is neither an output {self.outputs}, a coordinate {self.coords} nor a derivative "
            f"like 'u_x' / 'u_xt'{close_matches(attr, known)}; for multi-letter coordinate names call d(name, coord, ...)"
        )

    def grad(self, name: str) -> Tensor:
        """∇u over the spatial coordinates, shape ``(*value_shape, n_spatial)``."""
        return torch.stack([self(name, c) for c in self.spatial], -1)

    def laplacian(self, name: str) -> Tensor:
        """Δu = Σ_i ∂²u/∂x_i² over the spatial coordinates."""
        return sum(self(name, c, c) for c in self.spatial)

    def divergence(self, names: Sequence[str]) -> Tensor:
        """∇·(u_1, …, u_d) = Σ_i ∂u_i/∂x_i for the output names given per spatial coordinate."""
        if len(names) != len(self.spatial):
            raise ValueError(f"divergence needs one output per spatial coordinate {self.spatial}, got {list(names)}")
        return sum(self(n, c) for n, c in zip(names, self.spatial))

    def _output_index(self, name: str) -> int:
        try:
            return self.outputs.index(name)
        except ValueError:
            raise KeyError(f"unknown output {name!r}{close_matches(name, self.outputs)}; outputs are {self.outputs}") from None

    def _coord_index(self, name: str) -> int:
        try:
            return self.coords.index(name)
        except ValueError:
            raise KeyError(f"unknown coordinate {name!r}{close_matches(name, self.coords)}; coordinates are {self.coords}") from None


def _check_output(y: Tensor, x: Tensor, m: int) -> Tensor:
    if y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] != m:
        raise ValueError(f"the network maps (n, {x.shape[1]}) points to (n, {m}) outputs; got output shape {tuple(y.shape)} for input {tuple(x.shape)}")
    return y


class ReverseDerivatives(Derivatives):
    """Pointwise fields by reverse-mode autograd.

    Args:
        fn: network, ``(n, d) -> (n, m)``, pointwise.
        x: points ``(n, d)``; a leaf that requires grad is made from it.

    Every derivative keeps its graph (higher orders and training differentiate through it).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], x: Tensor, outputs, coords, spatial=None):
        super().__init__(outputs, coords, spatial)
        if x.ndim != 2 or x.shape[1] != len(self.coords):
            raise ValueError(f"points must have shape (n, {len(self.coords)}) for coordinates {self.coords}, got {tuple(x.shape)}")
        self._pts = x if x.requires_grad else x.detach().requires_grad_(True)
        with torch.enable_grad():  # derivatives need a graph even when called under no_grad
            self._out = _check_output(fn(self._pts), self._pts, len(self.outputs))
            for k in range(len(self.outputs)):
                self._cache[(k, ())] = self._out[:, k]

    def coordinate(self, j):
        return self._pts[:, j]

    def _compute(self, k, path):
        parent_path = path[:-1]
        parent = self(self.outputs[k], *(self.coords[i] for i in parent_path))
        if not parent.requires_grad:  # a constant (e.g. a derivative that vanished identically)
            return torch.zeros_like(parent)
        with torch.enable_grad():
            (row,) = torch.autograd.grad(parent.sum(), self._pts, create_graph=True, allow_unused=True)
            if row is None:
                row = torch.zeros_like(self._pts)
            for j in range(self._pts.shape[1]):  # cache the siblings: one grad call gives the whole row
                self._cache.setdefault((k, tuple(sorted(parent_path + (j,)))), row[:, j])
        return self._cache[(k, path)]


class ForwardDerivatives(Derivatives):
    """Pointwise fields by forward mode: nested ``torch.func.jvp`` with batched tangents e_j.

    Each requested derivative path (j_1 ≤ … ≤ j_m) is one nested jvp that returns every lower
    derivative along the way, for all outputs at once; those are cached too. Training
    backpropagates through the jvps as usual.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], x: Tensor, outputs, coords, spatial=None):
        super().__init__(outputs, coords, spatial)
        if x.ndim != 2 or x.shape[1] != len(self.coords):
            raise ValueError(f"points must have shape (n, {len(self.coords)}) for coordinates {self.coords}, got {tuple(x.shape)}")
        self.fn, self._pts = fn, x.detach()
        self._full: dict[tuple[int, ...], Tensor] = {}
        self._y: Tensor | None = None

    def coordinate(self, j):
        return self._pts[:, j]

    def _tangent(self, j):
        e = torch.zeros_like(self._pts)
        e[:, j] = 1
        return e

    def _nested(self, path: tuple[int, ...]) -> Callable[[Tensor], tuple[Tensor, ...]]:
        """x -> (D^{path[:0]} y, D^{path[:1]} y, …, D^{path} y), each (n, m)."""
        if not path:
            return lambda x: (self.fn(x),)
        inner = self._nested(path[:-1])
        e = self._tangent(path[-1])

        def f(x):
            values, tangents = torch.func.jvp(inner, (x,), ((e),))
            return (*values, tangents[-1])

        return f

    def _compute(self, k, path):
        if path not in self._full:
            if not path and self._y is not None:
                self._full[()] = self._y
            else:
                values = self._nested(path)(self._pts)
                _check_output(values[0], self._pts, len(self.outputs))
                for i, v in enumerate(values):
                    self._full.setdefault(path[:i], v)
        return self._full[path][:, k]

    def jacobian(self) -> Tensor:
        """All first derivatives at once, ``(n, m, d)``: one vmap over the d tangents."""
        basis = torch.eye(self._pts.shape[1], dtype=self._pts.dtype, device=self._pts.device)
        tangents = basis[:, None, :].expand(-1, self._pts.shape[0], -1)
        jac = torch.func.vmap(lambda v: torch.func.jvp(self.fn, (self._pts,), (v,))[1])(tangents)  # (d, n, m)
        return jac.permute(1, 2, 0)


class GridDerivatives(Derivatives):
    """Fields sampled on a uniform tensor-product grid; derivatives along grid axes.

    Args:
        fields: ``{name: tensor}`` all of one shape ``(*batch, n_1, …, n_D)``; the last D axes
            are the grid, one per coordinate in ``coords`` order.
        coords: coordinate names, one per grid axis.
        spacing: grid step h_i per coordinate.
        origin: coordinate of node 0 per axis (default 0).
        periodic: coordinates whose axis is periodic (the grid excludes the right end);
            differentiated spectrally (exact for band-limited fields), others by 2nd-order
            central differences with 2nd-order one-sided ends (``torch.gradient`` for u_x, the
            compact 3-point stencil for u_xx, one stencil per order above: 2nd order at every node).
        method: "spectral" (periodic axes only) or "fd" for every axis.
    """

    def __init__(self, fields: Mapping[str, Tensor], coords, spacing: Sequence[float], *, origin: Sequence[float] | None = None,
                 periodic: Sequence[str] = (), method: str = "spectral", spatial=None):
        super().__init__(tuple(fields), coords, spatial)
        shapes = {tuple(v.shape) for v in fields.values()}
        if len(shapes) != 1:
            raise ValueError(f"all fields must share one shape, got {sorted(shapes)}")
        self.shape = shapes.pop()
        D = len(self.coords)
        if len(self.shape) < D or len(spacing) != D:
            raise ValueError(f"need one grid axis and one spacing per coordinate {self.coords}; field shape {self.shape}, spacing {list(spacing)}")
        if method not in ("spectral", "fd"):
            raise ValueError(f"method must be 'spectral' or 'fd', got {method!r}")
        unknown = set(periodic) - set(self.coords)
        if unknown:
            raise ValueError(f"periodic coordinates {sorted(unknown)} are not among {self.coords}")
        self.fields, self.h, self.method = dict(fields), [float(h) for h in spacing], method
        self.origin = [0.0] * D if origin is None else [float(o) for o in origin]
        self.periodic = {self.coords.index(c) for c in periodic}
        for k, name in enumerate(self.outputs):
            self._cache[(k, ())] = self.fields[name]

    def _axis(self, j):
        return len(self.shape) - len(self.coords) + j

    def coordinate(self, j):
        n = self.shape[self._axis(j)]
        ref = next(iter(self.fields.values()))
        c = self.origin[j] + self.h[j] * torch.arange(n, dtype=ref.dtype, device=ref.device)
        view = [1] * len(self.shape)
        view[self._axis(j)] = n
        return c.reshape(view).expand(self.shape)

    def _diff(self, f: Tensor, j: int) -> Tensor:
        axis, h = self._axis(j), self.h[j]
        if j in self.periodic and self.method == "spectral":
            return self._spectral(f, j, 1)
        if j in self.periodic:
            return (f.roll(-1, axis) - f.roll(1, axis)) / (2 * h)
        return torch.gradient(f, spacing=h, dim=axis, edge_order=2)[0]

    def _spectral(self, f: Tensor, j: int, m: int) -> Tensor:
        """The m-th derivative along periodic coordinate j: one multiplication by (ik)^m. For odd m the
        Nyquist mode's derivative is imaginary (not real-representable): dropped; for even m it is the
        real (-1)^(m/2) k_N^m f_N and kept (two first derivatives would drop it: cos(k_N x) -> u_xx = 0)."""
        axis, h = self._axis(j), self.h[j]
        n = f.shape[axis]
        k = torch.fft.rfftfreq(n, d=h / (2 * math.pi), device=f.device, dtype=f.dtype)  # in f.dtype: a float32 k costs 1e-7
        factor = k ** m
        if n % 2 == 0 and m % 2:
            factor[-1] = 0
        view = [1] * f.ndim
        view[axis] = k.numel()
        i_m = (1, 1j, -1, -1j)[m % 4]
        return torch.fft.irfft(i_m * factor.reshape(view) * torch.fft.rfft(f, dim=axis), n=n, dim=axis)

    def _diff_n(self, f: Tensor, j: int, m: int) -> Tensor:
        """The m-th derivative along coordinate j, taken in one go (not as lower orders composed: at
        non-periodic ends that amplifies the one-sided stencils' non-smooth O(h^2) error to O(1))."""
        if m == 1:
            return self._diff(f, j)
        if j in self.periodic and self.method == "spectral":
            return self._spectral(f, j, m)
        if m == 2:
            return self._diff2(f, j)
        if j in self.periodic:  # no ends: composing the periodic stencils stays 2nd order
            return self._diff2(self._diff_n(f, j, m - 2), j)
        return self._diff_high(f, j, m)

    def _diff_high(self, f: Tensor, j: int, m: int) -> Tensor:
        """m >= 3 on a non-periodic axis: the central (2p+1)-point stencil, p = (m+1)//2, inside and
        one-sided (m+2)-point stencils at the p nodes nearest each end: 2nd order at every node."""
        axis = self._axis(j)
        n = f.shape[axis]
        s, p = m + 2, (m + 1) // 2
        if n < s:  # too few nodes for a 2nd-order end stencil: the lower orders composed, as before
            return self._diff2(self._diff_n(f, j, m - 2), j)

        def combine(weights, start, length=1):
            return sum(w * f.narrow(axis, start + i, length) for i, w in enumerate(weights) if w)

        inner = combine(_fd_weights(m, tuple(range(-p, p + 1))), 0, n - 2 * p)
        left = [combine(_fd_weights(m, tuple(q - i for q in range(s))), 0) for i in range(p)]
        right = [combine(_fd_weights(m, tuple(q - i for q in range(n - s, n))), n - s) for i in range(n - p, n)]
        return torch.cat([*left, inner, *right], dim=axis) / self.h[j] ** m

    def _diff2(self, f: Tensor, j: int) -> Tensor:
        """The second derivative along coordinate j by the compact 3-point stencil (second-order
        one-sided at non-periodic ends): the first-derivative stencil applied twice is the wide
        (f[i+2] - 2 f[i] + f[i-2]) / 4h^2, blind to a grid-scale (-1)^i mode and first order at the ends."""
        axis, h2 = self._axis(j), self.h[j] ** 2
        if j in self.periodic:
            return (f.roll(-1, axis) - 2 * f + f.roll(1, axis)) / h2
        n = f.shape[axis]
        if n < 4:
            return self._diff(self._diff(f, j), j)

        def at(i, m=1):
            return f.narrow(axis, i, m)

        inner = at(2, n - 2) - 2 * at(1, n - 2) + at(0, n - 2)
        first = 2 * at(0) - 5 * at(1) + 4 * at(2) - at(3)
        last = 2 * at(n - 1) - 5 * at(n - 2) + 4 * at(n - 3) - at(n - 4)
        return torch.cat([first, inner, last], dim=axis) / h2

    def _compute(self, k, path):
        j = path[-1]
        m = len(path) - next(i for i, c in enumerate(path) if c == j)  # path is sorted: j's run is at its end
        base = self(self.outputs[k], *(self.coords[i] for i in path[:-m]))
        return self._diff_n(base, j, m)


@functools.lru_cache(maxsize=None)
def _fd_weights(m: int, offsets: tuple[int, ...]) -> tuple[float, ...]:
    """Weights w of sum_i w_i f(x + o_i h) = h^m f^(m)(x) + O(h^(len(offsets))), exact for polynomials
    of degree < len(offsets): the Taylor conditions sum_i w_i o_i^q = m! [q = m], solved in rationals."""
    s = len(offsets)
    rows = [[Fraction(o) ** q for o in offsets] + [Fraction(math.factorial(m) if q == m else 0)] for q in range(s)]
    for c in range(s):  # Gauss-Jordan; the Vandermonde matrix of distinct offsets is invertible
        piv = next(r for r in range(c, s) if rows[r][c] != 0)
        rows[c], rows[piv] = rows[piv], rows[c]
        rows[c] = [v / rows[c][c] for v in rows[c]]
        for r in range(s):
            if r != c and rows[r][c] != 0:
                rows[r] = [a - rows[r][c] * b for a, b in zip(rows[r], rows[c])]
    return tuple(float(r[-1]) for r in rows)


class Recorder(Derivatives):
    """Stands in for real fields on a probe call: answers every request with distinct non-zero values
    on a few points and records which ``(output index, path)`` keys were asked for, in order."""

    def __init__(self, outputs, coords, spatial=None, *, n: int = 4, dtype=torch.float64, device="cpu"):
        super().__init__(outputs, coords, spatial)
        self.n, self.dtype, self.device, self.asked = n, dtype, device, {}
        # distinct non-zero coordinates made on the device, without drawing from the caller's random stream
        self._x = torch.linspace(0.5, 1.5, n * len(self.coords), dtype=dtype, device=device).view(n, len(self.coords))

    def coordinate(self, j):
        return self._x[:, j]

    def _compute(self, k, path):
        self.asked[(k, path)] = None
        return torch.ones(self.n, dtype=self.dtype, device=self.device) * (1.0 + 0.1 * (len(path) + k))


def takes_params(residual: Callable) -> bool:
    """Whether a residual is ``f(d, p)`` (True; also for callables without a signature) or ``f(d)``."""
    try:
        return len(inspect.signature(residual).parameters) >= 2
    except (TypeError, ValueError):
        return True


def as_terms(out) -> list[Tensor]:
    """A residual's value as a list of terms: one tensor, a list / tuple of them, or a dict of them."""
    if isinstance(out, Mapping):
        out = list(out.values())
    elif isinstance(out, (tuple, list)):
        out = list(out)
    else:
        out = [out]
    return [None if r is None else torch.as_tensor(r) for r in out]  # None (a missing return): callers name it


def residual_terms(fn: Callable, d: "Derivatives", p: "Params", with_params: bool | None = None) -> list[Tensor]:
    """``fn(d, p)`` or ``fn(d)`` as a list of terms (`as_terms`). Callers that evaluate `fn` in a loop
    pass `with_params` from `takes_params`, found once: the signature test is not free."""
    return as_terms(_call_residual(fn, d, p, with_params))


def named_residual_terms(fn: Callable, d: "Derivatives", p: "Params", with_params: bool | None = None) -> dict[str, Tensor]:
    """The terms by their loss names: ``residual`` for one, ``residual_0``, ``residual_1``, ... in a list's order,
    ``residual_<key>`` for a dict's keys (as metrics and ``loss.weights`` name them)."""
    out = _call_residual(fn, d, p, with_params)
    if isinstance(out, Mapping):
        return {f"residual_{key}": None if r is None else torch.as_tensor(r) for key, r in out.items()}  # as as_terms
    terms = as_terms(out)
    return {"residual": terms[0]} if len(terms) == 1 else {f"residual_{j}": r for j, r in enumerate(terms)}


def _call_residual(fn: Callable, d: "Derivatives", p: "Params", with_params: bool | None):
    if with_params is None:
        with_params = takes_params(fn)
    return fn(d, p) if with_params else fn(d)


class Params:
    """PDE parameters by attribute: ``p.nu``. Values are floats or (learnable) tensors."""

    def __init__(self, values: Mapping[str, object]):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"unknown parameter {name!r}{close_matches(name, self._values)}; parameters are {sorted(self._values)}") from None

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __setattr__(self, name, value):
        raise AttributeError("Params is read-only; set values on the problem or the model")

    def as_dict(self) -> dict:
        return dict(self._values)
