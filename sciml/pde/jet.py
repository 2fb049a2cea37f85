"""Taylor-mode derivatives of an MLP: all needed partials in one forward sweep ("jet" backend).

For a layer a = σ(W h + b), the partials of a along a multiset of coordinates p follow from those
of z = W h + b by Faà di Bruno's formula

    ∂^p a = Σ_{partitions π of p} σ^{(|π|)}(z) Π_{B ∈ π} ∂^B z,      ∂^p z = W ∂^p h  (p ≠ ∅),

so every partial the residual needs is carried through the network together: one matmul per
layer on the stacked ``(n_partials, n, width)`` tensor and a few elementwise products, instead
of one reverse sweep per derivative order. Training then backpropagates through this forward
graph once — no double backward — which also makes the step compilable (torch.compile / CUDA
graphs). An output transform T(x, N(x)) (hard constraints) is differentiated by nested
``torch.func.jvp`` on T alone, fed with the network's jets.

Supported: `sciml.pde.nets.MLP` with tanh or sin activation, any periodic / Fourier embedding,
the modified (gated) MLP — products of jets by Leibniz's rule — and factorised weights (a linear
map like any other), derivative orders ≤ 4. The partials to carry are found by probing the residual once
(`needed_paths`).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Callable, Iterable, Sequence

import torch

from sciml.pde.derivatives import Derivatives, Recorder
from sciml.pde.nets import MLP
from sciml.utils import tracing

Tensor = torch.Tensor
Path = tuple[int, ...]


def _derivs_tanh(z: Tensor, order: int) -> list[Tensor]:
    t = torch.tanh(z)
    out = [t]
    if order >= 1:
        s1 = 1 - t * t
        out.append(s1)
    if order >= 2:
        s2 = -2 * t * s1
        out.append(s2)
    if order >= 3:
        out.append(-2 * s1 * s1 - 2 * t * s2)
    if order >= 4:
        out.append(-6 * s1 * s2 - 2 * t * out[3])
    return out


def _derivs_sin(z: Tensor, order: int) -> list[Tensor]:
    s, c = torch.sin(z), torch.cos(z)
    return [s, c, -s, -c, s][: order + 1]


def _derivs_cos(z: Tensor, order: int) -> list[Tensor]:
    s, c = torch.sin(z), torch.cos(z)
    return [c, -s, -c, s, c][: order + 1]


JET_ACTIVATIONS = {"tanh": _derivs_tanh, "sin": _derivs_sin}


def jet_carries(net) -> bool:
    """Whether this backend can carry `net`: a `sciml.pde.nets.MLP` with one of `JET_ACTIVATIONS`."""
    return isinstance(net, MLP) and net.activation in JET_ACTIVATIONS


@functools.lru_cache(maxsize=None)
def _partitions(m: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """All set partitions of positions {0, …, m−1}."""
    if m == 0:
        return ((),)
    out = []
    for part in _partitions(m - 1):
        out.append(part + ((m - 1,),))
        for i in range(len(part)):
            out.append(part[:i] + (part[i] + (m - 1,),) + part[i + 1:])
    return tuple(out)


def closure(paths: Iterable[Path]) -> list[Path]:
    """Every sub-multiset of the given sorted paths, sorted by order then lexicographically."""
    out = {()}
    for p in paths:
        for r in range(len(p) + 1):
            out.update(tuple(sorted(c)) for c in itertools.combinations(p, r))
    return sorted(out, key=lambda q: (len(q), q))


def _elementwise(J: dict[Path, Tensor], derivs: Callable[[Tensor, int], list[Tensor]], paths: Sequence[Path]) -> dict[Path, Tensor]:
    """Jets of f(z) from jets of z (Faà di Bruno over set partitions)."""
    order = max(len(p) for p in paths)
    f = derivs(J[()], order)
    out = {(): f[0]}
    for p in paths:
        if not p:
            continue
        acc = None
        for part in _partitions(len(p)):
            term = f[len(part)]
            for block in part:
                term = term * J[tuple(sorted(p[i] for i in block))]
            acc = term if acc is None else acc + term
        out[p] = acc
    return out


@functools.lru_cache(maxsize=None)
def _leibniz_terms(p: Path) -> tuple[tuple[Path, Path, int], ...]:
    """∂^p (a b) = Σ_S ∂^{p_S} a ∂^{p∖S} b over position subsets S, equal pairs merged with their count."""
    counts: dict[tuple[Path, Path], int] = {}
    for r in range(len(p) + 1):
        for S in itertools.combinations(range(len(p)), r):
            key = (tuple(p[i] for i in S), tuple(p[i] for i in range(len(p)) if i not in S))
            counts[key] = counts.get(key, 0) + 1
    return tuple((q, rest, c) for (q, rest), c in counts.items())


def _gate(Z: dict[Path, Tensor], V: dict[Path, Tensor], D: dict[Path, Tensor], paths: Sequence[Path]) -> dict[Path, Tensor]:
    """Jets of the modified MLP's gate z ⊙ u + (1 − z) ⊙ v = v + z ⊙ d, given the jets of v and d = u − v."""
    out = {}
    for p in paths:
        acc = V[p]
        for q, rest, c in _leibniz_terms(p):
            term = Z[q] * D[rest]
            acc = acc + (term if c == 1 else c * term)
        out[p] = acc
    return out


def _linear(J: dict[Path, Tensor], weight: Tensor, bias: Tensor | None, paths: Sequence[Path]) -> dict[Path, Tensor]:
    stacked = torch.stack([J[p] for p in paths])  # (P, n, in): one matmul for every partial
    Z = stacked @ weight.T
    out = dict(zip(paths, Z.unbind(0)))  # unbind: one stack in the backward, not a zero-fill per path
    if bias is not None:
        out[()] = out[()] + bias
    return out


def _elementwise_of_affine(x: Tensor, weight: Tensor, bias: Tensor | None, derivs, paths: Sequence[Path]) -> dict[Path, Tensor]:
    """Jets of σ(W x + b) in the coordinates x themselves: ∂_j z = W[:, j] is constant and every
    higher partial of z vanishes, so only Faà di Bruno's all-singleton partition is left,
    ∂^p σ = σ^{(|p|)}(z) Π_{j ∈ p} W[:, j]: one GEMM on the points instead of one per partial."""
    f = derivs(torch.addmm(bias, x, weight.T) if bias is not None else x @ weight.T, max(len(p) for p in paths))
    out = {(): f[0]}
    for p in paths:
        if p:
            out[p] = f[len(p)] * math.prod((weight[:, j] for j in p[1:]), start=weight[:, p[0]])
    return out


def mlp_jets(net: MLP, x: Tensor, paths: Sequence[Path]) -> dict[Path, Tensor]:
    """``{path: ∂^path N(x)}`` for every path in ``closure(paths)``, each ``(n, out_dim)``."""
    if not jet_carries(net):
        raise ValueError(f"the jet backend supports activations {sorted(JET_ACTIVATIONS)}, not {net.activation!r}; use derivatives: reverse")
    paths = closure(paths)
    act = JET_ACTIVATIONS[net.activation]
    if not net.periodic_cols and net.B is None:  # the raw coordinates feed the first layer (and the encoders)
        def first(lin):
            return _elementwise_of_affine(x, lin.weight, lin.bias, act, paths)
    else:
        features = _embedding_jets(net, x, paths)

        def first(lin):
            return _elementwise(_linear(features, lin.weight, lin.bias, paths), act, paths)
    gates = None
    if net.encoders is not None:  # v and d = u − v, shared by every hidden layer
        U, V = (first(enc) for enc in net.encoders)
        gates = (V, {p: U[p] - V[p] for p in paths})
    H = None
    *hidden, last = net.layers
    for lin in hidden:
        H = first(lin) if H is None else _elementwise(_linear(H, lin.weight, lin.bias, paths), act, paths)
        if gates is not None:
            H = _gate(H, *gates, paths)
    return _linear(H, last.weight, last.bias, paths)


def _embedding_jets(net: MLP, x: Tensor, paths: Sequence[Path]) -> dict[Path, Tensor]:
    """Jets of the net's input features: the coordinates, their periodic and Fourier embeddings."""
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    X = {p: (x if not p else (eye[p[0]].expand(n, d) if len(p) == 1 else x.new_zeros(n, d))) for p in paths}
    parts = []
    if net.plain_cols:
        parts.append(X if len(net.plain_cols) == d else {p: v[:, net.plain_cols] for p, v in X.items()})
    if net.periodic_cols:
        A = {p: (v[:, net.periodic_cols, None] * net.omega).flatten(1) for p, v in X.items()}  # ω x_c, (n, P·K)
        parts.append(_elementwise(A, _derivs_cos, paths))
        parts.append(_elementwise(A, _derivs_sin, paths))
    H = {p: torch.cat([q[p] for q in parts], -1) if len(parts) > 1 else parts[0][p] for p in paths}
    if net.B is not None:
        A = _linear(H, net.B.T, None, paths)
        H = {p: torch.cat([c, s], -1) for (p, c), s in zip(_elementwise(A, _derivs_cos, paths).items(), _elementwise(A, _derivs_sin, paths).values())}
    return H


def transform_jets(transform: Callable[[Tensor, Tensor], Tensor], x: Tensor, N: dict[Path, Tensor], paths: Sequence[Path]) -> dict[Path, Tensor]:
    """Jets of u(x) = T(x, N(x)) given the jets of N, by nested ``torch.func.jvp`` on T.

    F_q(x, {N_s}_{s ⊆ q}) = ∂^q T(x, N(x)); F_{q+j} is the jvp of F_q along (e_j, {N_{s+j}}).
    A transform that says it is A(x) + D(x) y (``transform.affine_parts``, as the automatic hard
    constraints do) takes Leibniz's rule instead, with the jets of A and D kept per point set.
    """
    parts = getattr(transform, "affine_parts", None)
    if parts is not None and not x.requires_grad:
        A, D = _affine_jets(transform, x, N[()].shape[1], paths)
        return _gate(D, A, N, paths)  # A + D N, by Leibniz
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype, device=x.device)

    def F(q: Path):
        if not q:
            return lambda xx, n0: transform(xx, n0)
        parent, j = q[:-1], q[-1]
        inner, inner_subs, subs = F(parent), closure([parent]), closure([q])

        def f(xx, *Ns):
            sub = dict(zip(subs, Ns))
            args = (xx, *[sub[s] for s in inner_subs])
            tang = (eye[j].expand(n, d).contiguous(), *[sub[tuple(sorted(s + (j,)))] for s in inner_subs])
            return torch.func.jvp(inner, args, tang)[1]

        return f

    return {p: F(p)(x, *[N[s] for s in closure([p])]) for p in closure(paths)}


def _affine_jets(transform, x: Tensor, m: int, paths: Sequence[Path]) -> tuple[dict[Path, Tensor], dict[Path, Tensor]]:
    """Jets of A and D in T(x, y) = A(x) + D(x) y. They depend on the points alone, fixed for a whole L-BFGS
    phase and between resamples: kept on the transform for the last point set (the same tensor, unchanged in
    place) outside compilation and graph capture. Their nested jvps were ~40 % of a hard-constraint Adam step."""
    # not kept while compiling or capturing, nor in inference mode (its tensors cannot be saved for a later backward)
    uncached = tracing() or torch.is_inference_mode_enabled() or x.is_inference()
    key = None if uncached else (tuple(paths), m, x._version)
    kept = None if uncached else getattr(transform, "_jets_kept", None)
    if kept is not None and kept[0] is x and kept[1] == key:  # holds x, so its identity cannot be reused
        return kept[2]
    parts = transform.affine_parts
    zero = {p: x.new_zeros(x.shape[0], m) for p in closure(paths)}
    with torch.no_grad():
        jets = tuple(transform_jets(lambda xx, _y, i=i: parts(xx, m)[i], x, zero, paths) for i in (0, 1))
    if not uncached:
        transform._jets_kept = (x, key, jets)
    return jets


class JetDerivatives(Derivatives):
    """Derivatives of ``model = T(x, MLP(x))`` precomputed for the given ``paths`` (see module doc).

    Args:
        model: a `PINNModel` whose ``net`` is an `MLP` (tanh or sin).
        x: points ``(n, d)``; paths: sorted coordinate-index tuples to carry (plus sub-paths).
    """

    def __init__(self, model, x: Tensor, outputs, coords, paths: Iterable[Path], spatial=None):
        super().__init__(outputs, coords, spatial)
        self._pts = x
        paths = closure(paths)
        if max(len(p) for p in paths) > 4:
            raise ValueError("the jet backend carries derivatives up to order 4; use derivatives: reverse")
        jets = mlp_jets(model.net, x, paths)
        if model.transform is not None:
            jets = transform_jets(model.transform, x, jets, paths)
        self.jets = jets

    def coordinate(self, j):
        return self._pts[:, j]

    def _compute(self, k, path):
        if path not in self.jets:
            raise KeyError(f"the jet backend did not carry ∂{path} of {self.outputs[k]!r} (probe missed it: "
                           "the residual must ask for the same derivatives on every call); use derivatives: reverse")
        return self.jets[path][:, k]


def needed_paths(problem, params, *, dtype=torch.float64, device="cpu") -> list[Path]:
    """The derivative paths the problem's residual asks for (probed once on 4 dummy points)."""
    rec = Recorder(problem.outputs, problem.coords, dtype=dtype, device=device)
    with torch.no_grad():
        problem.residual_terms(rec, params)
    return closure({path for _, path in rec.asked})
