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

import functools
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
        u = _lattice(n, [math.ceil(n ** (1.0 / d) - 1e-9)] * d, seed)
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


def _apportion(n: int, weights) -> list[int]:
    """n split into integer counts ∝ weights (largest remainder; ties to the first)."""
    w = np.asarray(weights, dtype=np.float64)
    q = n * w / w.sum()
    c = np.floor(q).astype(np.int64)
    c[np.argsort(-(q - c), kind="stable")[: n - int(c.sum())]] += 1
    return c.tolist()


def _lattice(n: int, counts: Sequence[int], seed: int | None) -> np.ndarray:
    """n points of the centred lattice with counts[i] points on axis i of [0, 1)^k, ``(n, k)``, trimmed
    to n by a seeded subset (kept in lattice order)."""
    grid = _grid(counts)
    return grid[np.sort(np.random.default_rng(seed).permutation(len(grid))[:n])]


def _grid(counts: Sequence[int]) -> np.ndarray:
    """The whole centred lattice with counts[i] points on axis i of [0, 1)^k, ``(Π counts, k)``, axis 0 slowest."""
    axes = [(np.arange(c) + 0.5) / c for c in counts]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(counts))


def _lattice_counts(m: int, ext: Sequence[float]) -> list[int]:
    """Points per axis of an even lattice of at least m nodes in a box with side lengths ext: ≈ ext_i / h
    for the spacing h = (Π ext / m)^(1/k), at least one, the coarsest axis refined until there are m."""
    e = np.asarray(ext, dtype=np.float64)
    h = (e.prod() / m) ** (1.0 / len(e))
    cnt = np.maximum(1, np.floor(e / h * (1 + 1e-9))).astype(np.int64)
    while int(cnt.prod()) < m:
        cnt[np.argmax(e / cnt)] += 1
    return cnt.tolist()


def _safe_sqrt(q: torch.Tensor) -> torch.Tensor:
    """sqrt(q) for q ≥ 0 whose gradient at q = 0 is 0, not 0·∞ = NaN."""
    pos = q > 0
    return torch.where(pos, torch.where(pos, q, torch.ones_like(q)).sqrt(), torch.zeros_like(q))


def _sub_seed(seed: int | None, k: int) -> int | None:
    return None if seed is None else seed + k


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

    def _sample_boundary(self, n: int, method: str, seed, extra: int = 0) -> torch.Tensor:
        """``(n, d + extra)``: n points on ∂Ω, then ``extra`` columns in [0, 1) drawn jointly with
        them (one low-discrepancy draw over the boundary parameters and the extra columns), so a
        caller can map them to e.g. time without tying time to the position on ∂Ω."""
        raise NotImplementedError

    def boundary_measure(self) -> float:  # |∂Ω| (an upper bound for CSG shapes)
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def on_boundary(self, x: torch.Tensor, tol: float = 1e-7) -> torch.Tensor:
        x = _as_points(x)
        return self.inside(x) & (self.distance_to_boundary(x) <= tol)

    def _tol(self, tol: float) -> float:
        """tol scaled by the size of the coordinates: rounding errors grow with |x|, not with the extent."""
        return tol * self._scale

    @functools.cached_property
    def _scale(self) -> float:  # read per call of inside / distance on every sampling round: found once
        return max(1.0, float(self.lo.abs().max()), float(self.hi.abs().max()))

    def sample_interior(self, n: int, method: str = "sobol", seed: int | None = 0) -> torch.Tensor:
        """n points in Ω, ``(n, d)``: the bounding box's draw, rejection outside Ω."""
        return self._sample_interior(n, method, seed)

    def _sample_interior(self, n: int, method: str, seed, extra: int = 0) -> torch.Tensor:
        """``(n, d + extra)``: n points in Ω, then ``extra`` columns in [0, 1) from the same
        (d + extra)-dim draw (the rejection keeps or drops whole rows, so they stay joint)."""
        if method == "uniform":
            return self._lattice_interior(n, extra)
        volume_ratio, got, k = 1.0, [], 0
        while sum(len(g) for g in got) < n:
            m = int(math.ceil((n - sum(len(g) for g in got)) / max(volume_ratio, 0.05) * 1.2)) + 16
            u = unit_samples(m, self.dim + extra, method, None if seed is None else seed + 7919 * k)
            x = self.lo + u[:, : self.dim] * (self.hi - self.lo)
            keep = self.inside(x) & (self.distance_to_boundary(x) > 0)
            volume_ratio = max(keep.double().mean().item(), 1e-3)
            got.append(torch.cat([x, u[:, self.dim:]], -1)[keep])
            k += 1
            if k > 50:
                raise RuntimeError(f"{self!r}: rejection sampling found too few interior points; is the shape empty?")
        return torch.cat(got)[:n]

    def _lattice_interior(self, n: int, extra: int) -> torch.Tensor:
        """The "uniform" draw: one centred lattice over the bounding box (× [0, 1)^extra), c nodes per
        axis as in `unit_samples`, grown until ≥ n nodes lie strictly inside, then thinned evenly to n.
        (A prefix of the nodes inside would cut off the high-x end; pooled lattices would repeat nodes.)"""
        k = self.dim + extra
        c = math.ceil(n ** (1.0 / k) - 1e-9)
        for _ in range(100):
            u = torch.as_tensor(_grid([c] * k), dtype=_F64)
            x = self.lo + u[:, : self.dim] * (self.hi - self.lo)
            keep = self.inside(x) & (self.distance_to_boundary(x) > 0)
            kept = int(keep.sum())
            if kept >= n:
                pick = torch.linspace(0, kept - 1, n, dtype=_F64).round().long()
                return torch.cat([x, u[:, self.dim:]], -1)[keep][pick]
            if kept == 0 and len(u) >= 1000 * (n + 16):
                break
            # the size the observed share of nodes inside asks for, at least one node more per axis
            c = max(c + 1, math.ceil((n / max(kept / len(u), 1e-3)) ** (1.0 / k) - 1e-9))
        raise RuntimeError(f"{self!r}: the uniform lattice found too few interior points; is the shape empty?")

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
        if lo_t.numel() == 0 and hi_t.numel() == 0:  # (lo < hi).all() holds for no coordinates; sampling then failed
            raise ValueError("Box needs at least one coordinate, got Box([], []); for an ODE (time only) use the time "
                             "interval itself: Problem(Interval(t0, t1), coords=('t',), ...)")
        for name, given, t in (("lo", lo, lo_t), ("hi", hi, hi_t)):
            if not bool(torch.isfinite(t).all()):  # inf: sampling drew NaN points; nan failed no comparison below
                raise ValueError(f"Box {name}={list(t.tolist())} must be finite numbers (an unbounded or NaN "
                                 f"bound has no points to sample); got {given!r}")
        if lo_t.shape != hi_t.shape or not bool((lo_t < hi_t).all()):
            raise ValueError(f"Box needs lo < hi componentwise with equal lengths, got lo={list(lo_t.tolist())}, hi={list(hi_t.tolist())}")
        self.lo, self.hi, self.dim = lo_t, hi_t, lo_t.numel()

    def __repr__(self):
        return f"Box(lo={self.lo.tolist()}, hi={self.hi.tolist()})"

    def inside(self, x):
        x = _as_points(x).to(_F64)
        eps = 1e-12 * torch.maximum(self.hi - self.lo, torch.tensor(self._tol(1.0), dtype=_F64))
        return ((x >= self.lo - eps) & (x <= self.hi + eps)).all(-1)

    def _sample_interior(self, n, method, seed, extra=0):
        # the box is its own bounding box: the draw itself, nothing rejected or cut off (for Sobol,
        # Halton and pseudo the same points as a prefix of a larger draw)
        u = unit_samples(n, self.dim + extra, method, seed)
        return torch.cat([self.lo + u[:, : self.dim] * (self.hi - self.lo), u[:, self.dim:]], -1)

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

    def _face_areas(self) -> torch.Tensor:  # (2d,): the lo faces, then the hi faces
        ext = self.hi - self.lo
        a = torch.stack([ext.prod() / ext[i] for i in range(self.dim)]) if self.dim > 1 else torch.ones(1, dtype=_F64)
        return torch.cat([a, a])

    def _on_faces(self, face: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Points on the faces ``face`` (n,) at free coordinates v ∈ [0, 1)^(d−1) (the other axes in order)."""
        d, ext = self.dim, self.hi - self.lo
        x = torch.empty(len(face), d, dtype=_F64)
        for axis in range(d):  # a loop over the d axes, batched over points
            rows = (face % d) == axis
            free = [j for j in range(d) if j != axis]
            xa = self.lo.expand(int(rows.sum()), d).clone()
            xa[:, free] = self.lo[free] + v[rows] * ext[free]
            xa[:, axis] = torch.where(face[rows] < d, self.lo[axis], self.hi[axis])
            x[rows] = xa
        return x

    def _sample_boundary(self, n, method, seed, extra=0):
        d, ext = self.dim, self.hi - self.lo
        if d == 1 and extra == 0:
            return torch.where(torch.arange(n)[:, None] % 2 == 0, self.lo, self.hi).to(_F64)
        areas = self._face_areas()
        if method == "uniform":
            # per face an even lattice over its d − 1 free axes (and the extra columns, with the
            # face's mean side length), point counts ∝ face areas; rows shuffled so that any
            # prefix covers all faces
            parts = []
            for f, m in enumerate(_apportion(n, areas.tolist())):
                if m == 0:
                    continue
                fe = [float(ext[j]) for j in range(d) if j != f % d]
                side = float(np.prod(fe)) ** (1.0 / len(fe)) if fe else 1.0
                sides = fe + [side] * extra  # never empty: d = 1 without extra columns returned above
                u = torch.as_tensor(_lattice(m, _lattice_counts(m, sides), _sub_seed(seed, f)), dtype=_F64)
                x = self._on_faces(torch.full((m,), f), u[:, : d - 1])
                parts.append(torch.cat([x, u[:, d - 1:]], -1))
            out = torch.cat(parts)
            return out[torch.as_tensor(np.random.default_rng(seed).permutation(n))]
        # column 0 of one (d + extra)-dim draw picks the face (∝ area), columns 1..d−1 the free
        # coordinates, so the coordinates are independent of the face choice
        cum = torch.cat([torch.zeros(1, dtype=_F64), torch.cumsum(areas, 0)])
        cum = cum / cum[-1]
        u = unit_samples(n, d + extra, method, seed)
        face = (torch.searchsorted(cum, u[:, 0].contiguous(), right=True) - 1).clamp(0, 2 * d - 1)
        return torch.cat([self._on_faces(face, u[:, 1:d]), u[:, d:]], -1)


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
        try:
            r = math.nan if isinstance(radius, (bool, str)) else float(radius)
        except (TypeError, ValueError):
            r = math.nan
        if not (math.isfinite(r) and r > 0):  # nan failed no comparison, inf drew NaN points
            raise ValueError(f"Disk radius must be a finite number > 0, got {radius!r}")
        self.c = torch.as_tensor(center, dtype=_F64)
        if self.c.shape != (2,):
            raise ValueError(f"Disk center must be a 2-vector, got {center}")
        if not bool(torch.isfinite(self.c).all()):
            raise ValueError(f"Disk center must be finite numbers, got {center!r}")
        self.r, self.dim = float(radius), 2
        self.lo, self.hi = self.c - self.r, self.c + self.r

    def __repr__(self):
        return f"Disk(center={self.c.tolist()}, radius={self.r})"

    def inside(self, x):
        return (_as_points(x).to(_F64) - self.c).norm(dim=-1) <= self.r + self._tol(1e-12)

    def distance_to_boundary(self, x):
        return (self.r - (_as_points(x).to(_F64) - self.c).norm(dim=-1)).abs()

    def boundary_normal(self, x):
        v = _as_points(x).to(_F64) - self.c
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)

    def boundary_measure(self):
        return 2 * math.pi * self.r

    def _sample_boundary(self, n, method, seed, extra=0):
        u = unit_samples(n, 1 + extra, method, seed)
        theta = 2 * math.pi * u[:, 0]
        return torch.cat([self.c + self.r * torch.stack([theta.cos(), theta.sin()], -1), u[:, 1:]], -1)


class Polygon(Geometry):
    """Ω = the closed simple polygon with vertices v_0 … v_{m−1} (either orientation).

    Args: vertices: ``(m, 2)``, m ≥ 3 distinct; a repeated closing vertex (a closed ring, as
        GeoJSON / shapely write it) and other consecutive repeats are dropped.
    """

    def __init__(self, vertices):
        v = torch.as_tensor(vertices, dtype=_F64)
        if v.ndim != 2 or v.shape[1] != 2 or v.shape[0] < 3:
            raise ValueError(f"Polygon vertices must have shape (m >= 3, 2), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"Polygon vertices must be finite numbers, got {v.tolist()}")
        # a repeated vertex makes a zero-length edge, whose normal and distance are NaN
        v = v[(v - v.roll(1, 0)).abs().amax(-1) > 1e-14 * max(1.0, float(v.abs().max()))]
        if v.shape[0] < 3:
            raise ValueError(f"Polygon needs at least 3 distinct vertices (consecutive repeats and a closing repeat of the "
                             f"first are dropped), got {v.shape[0]}: {v.tolist()}")
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
        return (crosses.sum(-1) % 2 == 1) | (self.distance_to_boundary(x) <= self._tol(1e-12))

    def distance_to_boundary(self, x):
        return self._segment_distance(_as_points(x).to(_F64)).min(-1).values

    def boundary_normal(self, x):
        return self.normal[self._segment_distance(_as_points(x).to(_F64)).argmin(-1)]

    def boundary_measure(self):
        return float(self.length.sum())

    def _sample_boundary(self, n, method, seed, extra=0):
        u = unit_samples(n, 1 + extra, method, seed)
        s = u[:, 0] * self.length.sum()
        cum = torch.cat([torch.zeros(1, dtype=_F64), torch.cumsum(self.length, 0)])
        k = torch.searchsorted(cum, s.contiguous(), right=True).clamp(1, len(self.length)) - 1
        t = ((s - cum[k]) / self.length[k])[:, None]
        return torch.cat([self.a[k] + t * (self.b[k] - self.a[k]), u[:, 1:]], -1)

    def adf(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x) ≥ 0, zero exactly on ∂Ω, smooth inside: an approximate distance function.

        Sukumar & Srivastava (CMAME 2022) trimmed segment functions joined by the R-equivalence
        1/φ = Σ 1/φ_i (m = 1). Differentiable in torch, any dtype; x: ``(n, 2)`` → ``(n,)``.
        Use it for hard Dirichlet constraints u = g + φ·N on polygons.

        On ∂Ω φ has a kink (φ ≈ |distance| on both sides); there its gradient is the limit from
        inside, the inward unit normal on an edge (finite at vertices too), so a normal
        derivative of u = g + φ·N at boundary points is ∂g/∂n − N, as in the interior limit.
        """
        a, b = self.a.to(x), self.b.to(x)
        L = self.length.to(x)
        c = (a + b) / 2
        d = x[:, None, :] - a
        e = b - a
        f = (d[..., 0] * e[:, 1] - d[..., 1] * e[:, 0]) / L  # signed distance to the edge's line (< 0 inside)
        t = ((L / 2) ** 2 - ((x[:, None, :] - c) ** 2).sum(-1)) / L  # > 0 within the edge's disk
        varphi = _safe_sqrt(t**2 + f**4)  # 0 only at the edge's end points
        p = f**2 + ((varphi - t) / 2) ** 2
        # on an edge (up to rounding) sqrt(p) ≈ |f|: keep its value but take the gradient from
        # inside, −∇f, rather than sqrt's 0·∞ = NaN (f = 0) or the outside one (f ≳ 0 by rounding)
        tol = 16 * torch.finfo(x.dtype).eps * (L + d.detach().abs().amax(-1) + 1)
        on_edge = (f.detach().abs() <= tol) & (t.detach() > 0)
        phi = torch.where(on_edge, p.detach().sqrt() + (f.detach() - f), _safe_sqrt(torch.where(on_edge, 1.0, p)))
        # 1/Σ 1/φ_i as φ_k / Σ_i (φ_k/φ_i) with φ_k the smallest: the same value, but smooth where
        # φ_k = 0 (a clamp of φ_k would cut its gradient there)
        k = phi.detach().argmin(-1, keepdim=True)
        phi_k = phi.gather(-1, k)
        is_k = torch.arange(phi.shape[-1], device=x.device) == k
        ratio = phi_k / torch.where(is_k, 1.0, phi.clamp_min(torch.finfo(x.dtype).tiny ** 0.5))
        return phi_k[:, 0] / torch.where(is_k, 1.0, ratio).sum(-1)


class _CSG(Geometry):
    def __init__(self, a: Geometry, b: Geometry):
        if a.dim != b.dim:
            raise ValueError(f"CSG of shapes with different dimensions ({a.dim} vs {b.dim})")
        self.A, self.B, self.dim = a, b, a.dim

    def __repr__(self):
        return f"{type(self).__name__}({self.A!r}, {self.B!r})"

    def boundary_measure(self):  # an upper bound: Σ over the primitive shapes
        return sum(g.boundary_measure() for g in self._primitives())

    def _primitives(self) -> list[Geometry]:
        """The CSG tree's leaves (the non-CSG shapes), left to right."""
        return [p for g in (self.A, self.B) for p in (g._primitives() if isinstance(g, _CSG) else [g])]

    def _sample_boundary(self, n, method, seed, extra=0):
        # ∂Ω ⊂ ∪ ∂P over the primitives P. Each round samples every primitive by its exact measure
        # (so all of them at one density, the extra columns drawn jointly with each), keeps the
        # points on ∂Ω and, where primitives share a piece of boundary, only the first one's,
        # so the kept points are uniform in arc length over the true ∂Ω. The acceptance rate of
        # one round sizes the next.
        prims = self._primitives()
        weights = [g.boundary_measure() for g in prims]
        rng = np.random.default_rng(None if seed is None else seed + 4099)
        got, have, rate, k = [], 0, 0.5, 0
        tol = self._tol(1e-9)
        while have < n:
            m = min(int(math.ceil((n - have) / rate * 1.2)), 20 * (n - have) + 1024) + 16
            parts = []
            for i, (g, mi) in enumerate(zip(prims, _apportion(m, weights))):
                if mi == 0:
                    continue
                xu = g._sample_boundary(mi, method, _sub_seed(seed, 1013 * k + 31 * i), extra)
                x = xu[:, : self.dim]
                keep = self.on_boundary(x, tol=tol)
                for h in prims[:i]:
                    keep &= h.distance_to_boundary(x) > tol
                parts.append(xu[keep])
            x = torch.cat(parts)
            rate = max(len(x) / m, 1e-3)
            got.append(x[torch.as_tensor(rng.permutation(len(x)), dtype=torch.long)])
            have += len(x)
            k += 1
            if k > 50:
                raise RuntimeError(f"{self!r}: found too few boundary points; is the shape empty?")
        return torch.cat(got)[:n]


def _shared(a: Geometry, b: Geometry, x: torch.Tensor, cos: float, opposite: bool = False) -> torch.Tensor:
    """Points on both ∂A and ∂B whose normals agree (cos(angle) > cos) or oppose (< cos)."""
    tol = max(a._tol(1e-9), b._tol(1e-9))
    both = (a.distance_to_boundary(x) <= tol) & (b.distance_to_boundary(x) <= tol)
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
        x, tol = _as_points(x).to(_F64), self._tol(1e-9)
        da = torch.where(self.B.inside(x) & (self.B.distance_to_boundary(x) > tol), torch.inf, self.A.distance_to_boundary(x))
        db = torch.where(self.A.inside(x) & (self.A.distance_to_boundary(x) > tol), torch.inf, self.B.distance_to_boundary(x))
        # a face A and B share from opposite sides is interior to A ∪ B
        return torch.where(_shared(self.A, self.B, x, -0.5, opposite=True), torch.inf, torch.minimum(da, db))

    def boundary_normal(self, x):
        x, tol = _as_points(x).to(_F64), self._tol(1e-9)
        on_a = self.A.on_boundary(x, tol) & ~(self.B.inside(x) & (self.B.distance_to_boundary(x) > tol))
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
        return self.A.inside(x) & ~(self.B.inside(x) & (self.B.distance_to_boundary(x) > self._tol(1e-12))) & ~_shared(self.A, self.B, x, 0.5)

    def distance_to_boundary(self, x):
        x, tol = _as_points(x).to(_F64), self._tol(1e-9)
        db = torch.where(self.A.inside(x), self.B.distance_to_boundary(x), torch.inf)
        da = torch.where(self.B.inside(x) & (self.B.distance_to_boundary(x) > tol), torch.inf, self.A.distance_to_boundary(x))
        return torch.minimum(da, db)

    def boundary_normal(self, x):
        x, tol = _as_points(x).to(_F64), self._tol(1e-9)
        on_b = self.B.on_boundary(x, tol) & self.A.inside(x) & (self.A.distance_to_boundary(x) > tol)
        return torch.where(on_b[:, None], -self.B.boundary_normal(x), self.A.boundary_normal(x))


class SpaceTime:
    """Ω × [t0, t1]; points are ``(n, d + 1)`` with t the last column.

    Args: space: a `Geometry` Ω; time: (t0, t1) with t0 < t1.
    """

    def __init__(self, space: Geometry, time: tuple[float, float]):
        t0, t1 = map(float, time)
        if not (math.isfinite(t0) and math.isfinite(t1)):
            raise ValueError(f"time interval needs finite t0 < t1, got ({t0}, {t1})")
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

    def _with_time(self, xu):  # (n, d + 1) with the last column in [0, 1) -> (x, t)
        return torch.cat([xu[:, :-1], self.t0 + (self.t1 - self.t0) * xu[:, -1:]], -1)

    # Space and time come from ONE (space + 1)-dim draw: two draws of the same QMC family (or
    # "uniform" lattice) with different seeds move in lockstep and would tie t to the position.
    def sample_interior(self, n, method="sobol", seed=0):
        return self._with_time(self.space._sample_interior(n, method, seed, extra=1))  # a box: one joint draw

    def sample_boundary(self, n, method="sobol", seed=0):
        """n points on ∂Ω × [t0, t1] and their (spatial, time-component 0) outward normals."""
        xt = self._with_time(self.space._sample_boundary(n, method, seed, extra=1))
        nrm = self.space.boundary_normal(xt[:, :-1])
        return xt, torch.cat([nrm, torch.zeros_like(xt[:, -1:])], -1)

    def sample_initial(self, n, method="sobol", seed=0):
        x = self.space.sample_interior(n, method, seed)
        return torch.cat([x, torch.full((n, 1), self.t0, dtype=_F64)], -1)

    def boundary_normal(self, x):
        x = _as_points(x).to(_F64)
        return torch.cat([self.space.boundary_normal(x[:, :-1]), torch.zeros_like(x[:, -1:])], -1)


def uniform_grid(lo: Sequence[float], hi: Sequence[float], shape: Sequence[int]) -> torch.Tensor:
    """The tensor-product grid, endpoints included, flattened to ``(prod(shape), d)`` (ij order)."""
    axes = [torch.linspace(float(a), float(b), int(m), dtype=_F64) for a, b, m in zip(lo, hi, shape)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
