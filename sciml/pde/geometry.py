"""Domains for PINNs: spatial shapes (interval, box, disk, polygon, CSG) and space-time products.

A shape Ω ⊂ R^d answers ``inside(x)``, ``on_boundary(x)``, ``boundary_normal(x)`` (outward unit
normal n(x)) and draws points in Ω or on ∂Ω. A `SpaceTime` is Ω × [t0, t1] with time as the
last coordinate column, as in DeepXDE's ``GeometryXTime``.

Written natively in torch + scipy.stats.qmc (not through DeepXDE's geometry module): importing
deepxde prints a banner, reads ``~/.deepxde`` and may set torch's default device to CUDA, which
no adapter can undo safely for other threads of the same process.

Points are float64 tensors of shape ``(n, d)``; callers cast them. Every sampler takes
``method`` ∈ {"uniform", "pseudo", "sobol", "lhs", "halton"} and a ``seed`` so draws are
reproducible ("uniform" is a deterministic lattice; the others change with the seed).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from sciml.registry import close_matches

METHODS = ("uniform", "pseudo", "sobol", "lhs", "halton")
_F64 = torch.float64


def unit_samples(n: int, d: int, method: str = "sobol", seed: int | None = 0) -> torch.Tensor:
    """n points in [0, 1)^d, shape ``(n, d)``, float64.

    "sobol" (scrambled, Owen) / "halton" / "lhs" come from scipy.stats.qmc, "pseudo" from a
    seeded numpy generator, "uniform" is the centred lattice with ⌈n^(1/d)⌉ points per axis,
    trimmed to n by a seeded permutation.
    """
    if method not in METHODS:
        raise ValueError(f"sampling method {method!r}{close_matches(method, METHODS)} is unknown; use one of {METHODS}")
    if n < 1 or d < 1:
        raise ValueError(f"need n >= 1 and d >= 1 points/dimensions, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    if method == "pseudo":
        u = rng.random((n, d))
    elif method == "uniform":
        k = math.ceil(n ** (1.0 / d) - 1e-9)
        axes = [(np.arange(k) + 0.5) / k] * d
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d)
        u = grid[np.sort(rng.permutation(len(grid))[:n])]
    else:
        from scipy.stats import qmc

        if method == "sobol":
            engine = qmc.Sobol(d, scramble=True, seed=rng)
            m = max(0, math.ceil(math.log2(n)))
            u = engine.random_base2(m)[:n]  # a power of two keeps Sobol balanced
        elif method == "halton":
            u = qmc.Halton(d, scramble=True, seed=rng).random(n)
        else:
            u = qmc.LatinHypercube(d, seed=rng).random(n)
    return torch.as_tensor(u, dtype=_F64)


def _as_points(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"points must have shape (n, dim), got {tuple(x.shape)}")
    return x


class Geometry:
    """A spatial shape Ω ⊂ R^d (abstract). Subclasses set ``dim``, ``lo``, ``hi`` (bounding box)."""

    dim: int
    lo: torch.Tensor
    hi: torch.Tensor

    # --- to implement -------------------------------------------------------------------
    def inside(self, x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (n,) bool, closed set
        raise NotImplementedError

    def distance_to_boundary(self, x: torch.Tensor) -> torch.Tensor:  # (n,) >= 0, exact or bound
        raise NotImplementedError

    def boundary_normal(self, x: torch.Tensor) -> torch.Tensor:  # (n, d) outward unit normal
        raise NotImplementedError

    def _sample_boundary(self, n: int, method: str, seed) -> torch.Tensor:
        raise NotImplementedError

    def boundary_measure(self) -> float:  # |∂Ω| (an upper bound for CSG shapes)
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def on_boundary(self, x: torch.Tensor, tol: float = 1e-7) -> torch.Tensor:
        x = _as_points(x)
        return self.inside(x) & (self.distance_to_boundary(x) <= tol)

    def sample_interior(self, n: int, method: str = "sobol", seed: int | None = 0) -> torch.Tensor:
        """n points in Ω, ``(n, d)``: the bounding box's draw, rejection outside Ω."""
        volume_ratio, got, k, draws = 1.0, [], 0, 0
        while sum(len(g) for g in got) < n:
            m = int(math.ceil((n - sum(len(g) for g in got)) / max(volume_ratio, 0.05) * 1.2)) + 16
            u = unit_samples(m, self.dim, method, None if seed is None else seed + 7919 * k)
            x = self.lo + u * (self.hi - self.lo)
            keep = self.inside(x) & (self.distance_to_boundary(x) > 0)
            volume_ratio = max(keep.double().mean().item(), 1e-3)
            got.append(x[keep])
            k += 1
            draws += m
            if k > 50:
                raise RuntimeError(f"{self!r}: rejection sampling found too few interior points; is the shape empty?")
        return torch.cat(got)[:n]

    def sample_boundary(self, n: int, method: str = "sobol", seed: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """n points on ∂Ω and their outward normals, both ``(n, d)``."""
        x = self._sample_boundary(n, method, seed)
        return x, self.boundary_normal(x)

    def __or__(self, other: "Geometry") -> "Geometry":
        return Union(self, other)

    def __and__(self, other: "Geometry") -> "Geometry":
        return Intersection(self, other)

    def __sub__(self, other: "Geometry") -> "Geometry":
        return Difference(self, other)

    def with_time(self, t0: float, t1: float) -> "SpaceTime":
        return SpaceTime(self, (t0, t1))


class Box(Geometry):
    """Ω = Π_i [lo_i, hi_i] (an interval for d = 1, a rectangle for d = 2).

    Args: lo, hi: sequences of length d with lo_i < hi_i.
    """

    def __init__(self, lo: Sequence[float], hi: Sequence[float]):
        lo_t, hi_t = torch.as_tensor(lo, dtype=_F64).reshape(-1), torch.as_tensor(hi, dtype=_F64).reshape(-1)
        if lo_t.shape != hi_t.shape or not bool((lo_t < hi_t).all()):
            raise ValueError(f"Box needs lo < hi componentwise with equal lengths, got lo={list(lo_t.tolist())}, hi={list(hi_t.tolist())}")
        self.lo, self.hi, self.dim = lo_t, hi_t, lo_t.numel()

    def __repr__(self):
        return f"Box(lo={self.lo.tolist()}, hi={self.hi.tolist()})"

    def inside(self, x):
        x = _as_points(x).to(_F64)
        eps = 1e-12 * (self.hi - self.lo)
        return ((x >= self.lo - eps) & (x <= self.hi + eps)).all(-1)

    def distance_to_boundary(self, x):
        x = _as_points(x).to(_F64)
        inner = torch.minimum(x - self.lo, self.hi - x)  # > 0 on every axis iff strictly inside
        outside = torch.maximum(self.lo - x, x - self.hi).clamp_min(0).norm(dim=-1)
        return torch.where(inner.min(-1).values >= 0, inner.min(-1).values, outside)

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        gap = torch.cat([x - self.lo, self.hi - x], -1).abs()  # (n, 2d): which face is nearest
        face = gap.argmin(-1)
        n = torch.zeros_like(x)
        axis = face % self.dim
        n[torch.arange(len(x)), axis] = torch.where(face < self.dim, -1.0, 1.0).to(_F64)
        return n

    def boundary_measure(self):
        ext = self.hi - self.lo
        return 2.0 if self.dim == 1 else float(2 * sum(ext.prod() / ext[i] for i in range(self.dim)))

    def _sample_boundary(self, n, method, seed):
        d, ext = self.dim, self.hi - self.lo
        if d == 1:
            return torch.where(torch.arange(n)[:, None] % 2 == 0, self.lo, self.hi).to(_F64)
        # faces in proportion to their (d-1)-volume. Column 0 of one d-dim QMC draw picks the
        # face and, rescaled within the face's share, the first free coordinate; columns 1..d-1
        # give the others, so points stay quasi-random on every face.
        areas = torch.stack([ext.prod() / ext[i] for i in range(d)])
        cum = torch.cat([torch.zeros(1, dtype=_F64), torch.cumsum(torch.cat([areas, areas]), 0)])
        cum = cum / cum[-1]
        u = unit_samples(n, d, method, seed)
        face = (torch.searchsorted(cum, u[:, 0].contiguous(), right=True) - 1).clamp(0, 2 * d - 1)
        s = ((u[:, 0] - cum[face]) / (cum[face + 1] - cum[face])).clamp(0, 1)
        x = torch.empty(n, d, dtype=_F64)
        for axis in range(d):
            rows = (face % d) == axis
            free = [j for j in range(d) if j != axis]
            x[rows, free[0]] = self.lo[free[0]] + s[rows] * ext[free[0]]
            for k, j in enumerate(free[1:], start=1):
                x[rows, j] = self.lo[j] + u[rows, k] * ext[j]
            x[rows, axis] = torch.where(face[rows] < d, self.lo[axis], self.hi[axis])
        return x


def Interval(a: float, b: float) -> Box:
    """Ω = [a, b] ⊂ R."""
    return Box([a], [b])


def Rectangle(lo: Sequence[float], hi: Sequence[float]) -> Box:
    """Ω = [lo_0, hi_0] × [lo_1, hi_1]."""
    if len(lo) != 2 or len(hi) != 2:
        raise ValueError(f"Rectangle takes 2-vectors lo, hi; got {lo}, {hi} (use Box for other dimensions)")
    return Box(lo, hi)


class Disk(Geometry):
    """Ω = {x ∈ R²: |x − c| ≤ r}."""

    def __init__(self, center: Sequence[float], radius: float):
        if radius <= 0:
            raise ValueError(f"Disk radius must be > 0, got {radius}")
        self.c = torch.as_tensor(center, dtype=_F64)
        if self.c.shape != (2,):
            raise ValueError(f"Disk center must be a 2-vector, got {center}")
        self.r, self.dim = float(radius), 2
        self.lo, self.hi = self.c - self.r, self.c + self.r

    def __repr__(self):
        return f"Disk(center={self.c.tolist()}, radius={self.r})"

    def inside(self, x):
        return (_as_points(x).to(_F64) - self.c).norm(dim=-1) <= self.r * (1 + 1e-12)

    def distance_to_boundary(self, x):
        return (self.r - (_as_points(x).to(_F64) - self.c).norm(dim=-1)).abs()

    def boundary_normal(self, x):
        v = _as_points(x).to(_F64) - self.c
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)

    def boundary_measure(self):
        return 2 * math.pi * self.r

    def _sample_boundary(self, n, method, seed):
        theta = 2 * math.pi * unit_samples(n, 1, method, seed)[:, 0]
        return self.c + self.r * torch.stack([theta.cos(), theta.sin()], -1)


class Polygon(Geometry):
    """Ω = the closed simple polygon with vertices v_0 … v_{m−1} (either orientation).

    Args: vertices: ``(m, 2)``, m ≥ 3, no repeated closing vertex.
    """

    def __init__(self, vertices):
        v = torch.as_tensor(vertices, dtype=_F64)
        if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 3:
            raise ValueError(f"Polygon vertices must have shape (m >= 3, 2), got {tuple(v.shape)}")
        area2 = (v[:, 0] * v.roll(-1, 0)[:, 1] - v.roll(-1, 0)[:, 0] * v[:, 1]).sum()
        if area2.abs() < 1e-14:
            raise ValueError("Polygon has zero area; check the vertex order")
        self.v = v if area2 > 0 else v.flip(0)  # counter-clockwise: outward normal = edge rotated -90°
        self.a, self.b = self.v, self.v.roll(-1, 0)
        e = self.b - self.a
        self.length = e.norm(dim=-1)
        self.normal = torch.stack([e[:, 1], -e[:, 0]], -1) / self.length[:, None]
        self.dim, self.lo, self.hi = 2, self.v.min(0).values, self.v.max(0).values

    def __repr__(self):
        return f"Polygon({self.v.tolist()})"

    def _segment_distance(self, x):  # (n, m) distance of each point to each edge
        ab = self.b - self.a
        t = (((x[:, None, :] - self.a) * ab).sum(-1) / (self.length**2)).clamp(0, 1)
        proj = self.a + t[..., None] * ab
        return (x[:, None, :] - proj).norm(dim=-1)

    def inside(self, x):
        x = _as_points(x).to(_F64)
        # even-odd crossing test vectorised over points and edges; edges count as inside
        xa, ya, xb, yb = self.a[:, 0], self.a[:, 1], self.b[:, 0], self.b[:, 1]
        px, py = x[:, :1], x[:, 1:]
        crosses = ((ya > py) != (yb > py)) & (px < (xb - xa) * (py - ya) / (yb - ya + 1e-300) + xa)
        return (crosses.sum(-1) % 2 == 1) | (self.distance_to_boundary(x) <= 1e-12)

    def distance_to_boundary(self, x):
        return self._segment_distance(_as_points(x).to(_F64)).min(-1).values

    def boundary_normal(self, x):
        return self.normal[self._segment_distance(_as_points(x).to(_F64)).argmin(-1)]

    def boundary_measure(self):
        return float(self.length.sum())

    def _sample_boundary(self, n, method, seed):
        s = unit_samples(n, 1, method, seed)[:, 0] * self.length.sum()
        cum = torch.cat([torch.zeros(1, dtype=_F64), torch.cumsum(self.length, 0)])
        k = torch.searchsorted(cum, s.contiguous(), right=True).clamp(1, len(self.length)) - 1
        t = ((s - cum[k]) / self.length[k])[:, None]
        return self.a[k] + t * (self.b[k] - self.a[k])

    def adf(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) ≥ 0, zero exactly on ∂Ω, smooth inside: an approximate distance function.

        Sukumar & Srivastava (CMAME 2022) trimmed segment functions joined by the R-equivalence
        1/φ = Σ 1/φ_i (m = 1). Differentiable in torch, any dtype; x: ``(n, 2)`` → ``(n,)``.
        Use it for hard Dirichlet constraints u = g + φ·N on polygons.
        """
        a, b = self.a.to(x), self.b.to(x)
        L = self.length.to(x)
        c = (a + b) / 2
        d = x[:, None, :] - a
        e = b - a
        f = (d[..., 0] * e[:, 1] - d[..., 1] * e[:, 0]) / L  # signed distance to the edge's line
        t = ((L / 2) ** 2 - ((x[:, None, :] - c) ** 2).sum(-1)) / L  # > 0 within the edge's disk
        varphi = torch.sqrt(t**2 + f**4)
        phi = torch.sqrt(f**2 + ((varphi - t) / 2) ** 2)
        return 1.0 / (1.0 / phi.clamp_min(1e-30)).sum(-1)


class _CSG(Geometry):
    def __init__(self, a: Geometry, b: Geometry):
        if a.dim != b.dim:
            raise ValueError(f"CSG of shapes with different dimensions ({a.dim} vs {b.dim})")
        self.A, self.B, self.dim = a, b, a.dim

    def __repr__(self):
        return f"{type(self).__name__}({self.A!r}, {self.B!r})"

    def boundary_measure(self):
        return self.A.boundary_measure() + self.B.boundary_measure()

    def _sample_boundary(self, n, method, seed):
        got, k = [], 0
        while sum(len(g) for g in got) < n:
            # draw from each part in proportion to its boundary measure so density stays uniform
            ma, mb = self.A.boundary_measure(), self.B.boundary_measure()
            m = 2 * n + 64
            xa = self.A._sample_boundary(int(m * ma / (ma + mb)) + 8, method, None if seed is None else seed + 31 * k)
            xb = self.B._sample_boundary(int(m * mb / (ma + mb)) + 8, method, None if seed is None else seed + 31 * k + 17)
            x = torch.cat([xa, xb])
            keep = self.on_boundary(x, tol=1e-9)
            got.append(x[keep][torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(k + (seed or 0)))])
            k += 1
            if k > 50:
                raise RuntimeError(f"{self!r}: found too few boundary points; is the shape empty?")
        return torch.cat(got)[:n]


def _shared(a: Geometry, b: Geometry, x: torch.Tensor, cos: float, opposite: bool = False) -> torch.Tensor:
    """Points on both ∂A and ∂B whose normals agree (cos(angle) > cos) or oppose (< cos)."""
    both = (a.distance_to_boundary(x) <= 1e-9) & (b.distance_to_boundary(x) <= 1e-9)
    if not bool(both.any()):
        return both
    dot = (a.boundary_normal(x) * b.boundary_normal(x)).sum(-1)
    return both & ((dot < cos) if opposite else (dot > cos))


class Union(_CSG):
    """Ω = A ∪ B."""

    def __init__(self, a, b):
        super().__init__(a, b)
        self.lo, self.hi = torch.minimum(a.lo, b.lo), torch.maximum(a.hi, b.hi)

    def inside(self, x):
        return self.A.inside(x) | self.B.inside(x)

    def distance_to_boundary(self, x):
        x = _as_points(x).to(_F64)
        da = torch.where(self.B.inside(x) & (self.B.distance_to_boundary(x) > 1e-9), torch.inf, self.A.distance_to_boundary(x))
        db = torch.where(self.A.inside(x) & (self.A.distance_to_boundary(x) > 1e-9), torch.inf, self.B.distance_to_boundary(x))
        # a face A and B share from opposite sides is interior to A ∪ B
        return torch.where(_shared(self.A, self.B, x, -0.5, opposite=True), torch.inf, torch.minimum(da, db))

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        on_a = self.A.on_boundary(x, 1e-9) & ~(self.B.inside(x) & (self.B.distance_to_boundary(x) > 1e-9))
        return torch.where(on_a[:, None], self.A.boundary_normal(x), self.B.boundary_normal(x))


class Intersection(_CSG):
    """Ω = A ∩ B."""

    def __init__(self, a, b):
        super().__init__(a, b)
        self.lo, self.hi = torch.maximum(a.lo, b.lo), torch.minimum(a.hi, b.hi)

    def inside(self, x):
        return self.A.inside(x) & self.B.inside(x)

    def distance_to_boundary(self, x):
        return torch.minimum(self.A.distance_to_boundary(x), self.B.distance_to_boundary(x))

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        on_a = self.A.distance_to_boundary(x) <= self.B.distance_to_boundary(x)
        return torch.where(on_a[:, None], self.A.boundary_normal(x), self.B.boundary_normal(x))


class Difference(_CSG):
    """Ω = A \\ B (closed: the part of ∂B inside A belongs to ∂Ω, its normal points into B)."""

    def __init__(self, a, b):
        super().__init__(a, b)
        self.lo, self.hi = a.lo, a.hi

    def inside(self, x):
        x = _as_points(x).to(_F64)
        return self.A.inside(x) & ~(self.B.inside(x) & (self.B.distance_to_boundary(x) > 1e-12)) & ~_shared(self.A, self.B, x, 0.5)

    def distance_to_boundary(self, x):
        x = _as_points(x).to(_F64)
        db = torch.where(self.A.inside(x), self.B.distance_to_boundary(x), torch.inf)
        da = torch.where(self.B.inside(x) & (self.B.distance_to_boundary(x) > 1e-9), torch.inf, self.A.distance_to_boundary(x))
        return torch.minimum(da, db)

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        on_b = self.B.on_boundary(x, 1e-9) & self.A.inside(x) & (self.A.distance_to_boundary(x) > 1e-9)
        return torch.where(on_b[:, None], -self.B.boundary_normal(x), self.A.boundary_normal(x))


class SpaceTime:
    """Ω × [t0, t1]; points are ``(n, d + 1)`` with t the last column.

    Args: space: a `Geometry` Ω; time: (t0, t1) with t0 < t1.
    """

    def __init__(self, space: Geometry, time: tuple[float, float]):
        t0, t1 = map(float, time)
        if not t1 > t0:
            raise ValueError(f"time interval needs t0 < t1, got ({t0}, {t1})")
        self.space, self.t0, self.t1 = space, t0, t1
        self.dim = space.dim + 1
        self.lo = torch.cat([space.lo, torch.tensor([t0], dtype=_F64)])
        self.hi = torch.cat([space.hi, torch.tensor([t1], dtype=_F64)])

    def __repr__(self):
        return f"SpaceTime({self.space!r}, ({self.t0}, {self.t1}))"

    def inside(self, x):
        x = _as_points(x).to(_F64)
        return self.space.inside(x[:, :-1]) & (x[:, -1] >= self.t0) & (x[:, -1] <= self.t1)

    def _times(self, n, method, seed):
        return self.t0 + (self.t1 - self.t0) * unit_samples(n, 1, method, None if seed is None else seed + 101)[:, 0]

    def sample_interior(self, n, method="sobol", seed=0):
        if isinstance(self.space, Box):  # one joint (d+1)-dim draw keeps the QMC balance
            u = unit_samples(n, self.dim, method, seed)
            return self.lo + u * (self.hi - self.lo)
        return torch.cat([self.space.sample_interior(n, method, seed), self._times(n, method, seed)[:, None]], -1)

    def sample_boundary(self, n, method="sobol", seed=0):
        """n points on ∂Ω × [t0, t1] and their (spatial, time-component 0) outward normals."""
        x, nrm = self.space.sample_boundary(n, method, seed)
        t = self._times(n, method, seed)[:, None]
        return torch.cat([x, t], -1), torch.cat([nrm, torch.zeros_like(t)], -1)

    def sample_initial(self, n, method="sobol", seed=0):
        x = self.space.sample_interior(n, method, seed) if not isinstance(self.space, Box) else \
            self.space.lo + unit_samples(n, self.space.dim, method, seed) * (self.space.hi - self.space.lo)
        return torch.cat([x, torch.full((n, 1), self.t0, dtype=_F64)], -1)

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        return torch.cat([self.space.boundary_normal(x[:, :-1]), torch.zeros_like(x[:, -1:])], -1)


def uniform_grid(lo: Sequence[float], hi: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """The tensor-product grid, endpoints included, flattened to ``(prod(shape), d)`` (ij order)."""
    axes = [torch.linspace(float(a), float(b), int(m), dtype=_F64) for a, b, m in zip(lo, hi, shape)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
