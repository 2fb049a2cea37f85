"""Pointwise networks for PINNs: an MLP with optional periodic and Fourier-feature input embeddings,
the modified (gated) MLP and random weight factorisation.

u(x) = W_L σ(… σ(W_1 φ(x) + b_1) …) + b_L, with the input embedding φ:

- periodic: a coordinate x_i of period P_i becomes [cos(2πk x_i / P_i), sin(2πk x_i / P_i)],
  k = 1…K, so u is exactly P_i-periodic (a hard periodic boundary condition; Dong & Ni 2021);
- Fourier features: [cos(B φ), sin(B φ)] with B_ij ~ N(0, σ²) fixed (Tancik et al. 2020; Wang,
  Wang & Perdikaris 2021), which counters the spectral bias on multiscale solutions.

Two options of Wang et al.'s PINN recipes (jaxpi). Measured here (`examples/pinn_net_options.py`),
together they help a net whose loss terms are unbalanced (Helmholtz with fixed weights: 0.26 against
0.6-2.5 after 3000 Adam steps) but add nothing once gradient-norm weights balance the terms, at about
twice the cost of a step:

- modified MLP (Wang, Teng & Perdikaris 2021): two encoders U = σ(W_u φ + b_u), V = σ(W_v φ + b_v)
  gate every hidden layer, h ← z ⊙ U + (1 − z) ⊙ V with z = σ(W_k h + b_k), so the input reaches
  every depth multiplicatively;
- random weight factorisation (Wang et al. 2022, "Random weight factorization improves the training
  of continuous neural representations"): every weight is W = diag(exp(s)) V, s ~ N(μ, σ²) per output
  unit, V = W₀ / exp(s) from the usual init W₀, so the net starts as the plain one and each unit's
  scale is learnt on its own log scale.

Registered in `sciml.models` as "pinn_mlp" (``build_model("pinn_mlp", in_channels=2, out_channels=1, n_dims=1, width=20)``).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn

from sciml.registry import close_matches


class FactorizedLinear(nn.Module):
    """``x ↦ x Wᵀ + b`` with ``W = diag(exp(log_scale)) · direction`` (random weight factorisation).

    Built from an initial weight ``W₀``: ``log_scale ~ N(mean, std²)`` per output unit and
    ``direction = W₀ / exp(log_scale)``, so ``weight`` equals ``W₀`` at initialisation.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, mean: float, std: float, generator: torch.Generator):
        super().__init__()
        s = mean + std * torch.randn(weight.shape[0], generator=generator, dtype=torch.float64)
        self.log_scale = nn.Parameter(s.to(weight.dtype))
        self.direction = nn.Parameter((weight.double() / s.exp()[:, None]).to(weight.dtype))
        self.bias = nn.Parameter(bias.clone())

    @property
    def weight(self) -> torch.Tensor:
        return self.log_scale.exp()[:, None] * self.direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

ACTIVATIONS = {"tanh": torch.tanh, "sin": torch.sin, "gelu": nn.functional.gelu, "silu": nn.functional.silu,
               "softplus": nn.functional.softplus}


class MLP(nn.Module):
    """Fully connected net ``(n, in_dim) -> (n, out_dim)``, Glorot-normal weights, zero biases.

    Args:
        in_dim, out_dim: number of input coordinates and outputs.
        width, depth: hidden layer width and number of hidden layers (3 × 20 is DeepXDE's Burgers).
        activation: one of ``ACTIVATIONS``.
        periodic: ``{input column: period}`` embedded as K harmonics (``harmonics``).
        fourier_features: number m of random features (0 disables), scale σ = ``fourier_scale``.
        modified: gate every hidden layer by two encoders of the embedding (modified MLP).
        weight_factorization: ``{"mean": μ, "std": σ}`` factorises every weight (``FactorizedLinear``);
            None keeps plain weights. jaxpi's recipes use μ = 1 (0.5 on some), σ = 0.1.
        seed: seeds the weights and B so a net is reproducible without touching global RNG state.
    """

    def __init__(self, in_dim: int, out_dim: int, *, width: int = 20, depth: int = 3, activation: str = "tanh",
                 periodic: Mapping[int, float] | None = None, harmonics: int = 1, fourier_features: int = 0,
                 fourier_scale: float = 1.0, modified: bool = False,
                 weight_factorization: Mapping[str, float] | None = None, seed: int | None = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}{close_matches(activation, ACTIVATIONS)} is unknown; use one of {sorted(ACTIVATIONS)}")
        if width < 1 or depth < 1 or in_dim < 1 or out_dim < 1:
            raise ValueError(f"MLP needs positive in_dim, out_dim, width, depth; got {in_dim}, {out_dim}, {width}, {depth}")
        periodic = {int(k): float(v) for k, v in (periodic or {}).items()}
        bad = [k for k in periodic if not 0 <= k < in_dim] + [k for k, v in periodic.items() if v <= 0]
        if bad:
            raise ValueError(f"periodic must map input columns in [0, {in_dim}) to positive periods, got {periodic}")
        factor = dict(weight_factorization) if weight_factorization is not None else None
        if factor is not None and (set(factor) != {"mean", "std"} or factor["std"] < 0):
            raise ValueError(f"weight_factorization must be {{'mean': μ, 'std': σ ≥ 0}} (jaxpi: mean 1.0, std 0.1), got {factor}")
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        self.in_dim, self.out_dim, self.activation = in_dim, out_dim, activation
        self.periodic_cols = sorted(periodic)
        self.plain_cols = [i for i in range(in_dim) if i not in periodic]
        self._periods, self._harmonics = [periodic[c] for c in self.periodic_cols], harmonics
        self.register_buffer("omega", self._exact_omega(dtype, None))  # (n_periodic, K)
        emb = len(self.plain_cols) + 2 * harmonics * len(self.periodic_cols)
        if fourier_features:
            B = torch.randn(emb, fourier_features, generator=g, dtype=torch.float64) * fourier_scale
            self.register_buffer("B", B.to(dtype))
            emb = 2 * fourier_features
        else:
            self.B = None

        def linear(a: int, b: int) -> nn.Linear:  # Glorot normal, zero bias
            lin = nn.utils.skip_init(nn.Linear, a, b, dtype=dtype)  # its own init would draw from the global RNG
            with torch.no_grad():
                lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64) * math.sqrt(2.0 / (a + b)))
                lin.bias.zero_()
            return lin

        sizes = [emb] + [width] * depth + [out_dim]
        self.layers = nn.ModuleList(linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # drawn after the layers, so that neither option changes the plain weights of a seed
        self.encoders = nn.ModuleList([linear(emb, width), linear(emb, width)]) if modified else None
        if factor is not None:
            def factorize(mods):
                return nn.ModuleList(FactorizedLinear(m.weight.detach(), m.bias.detach(), **factor, generator=g) for m in mods)
            self.layers = factorize(self.layers)
            self.encoders = factorize(self.encoders) if modified else None
        self._act = ACTIVATIONS[activation]

    def _exact_omega(self, dtype: torch.dtype, device) -> torch.Tensor:
        """ω = 2πk / P from float64, rounded once to `dtype`."""
        k = torch.arange(1, self._harmonics + 1, dtype=torch.float64)
        omega = torch.stack([2 * math.pi * k / p for p in self._periods]) if self._periods else torch.zeros(0, self._harmonics)
        return omega.to(device=device, dtype=dtype)

    def _apply(self, fn, *args, **kwargs):
        # A cast (float32 -> float64, a phase's dtype) would carry ω's float32 rounding, and the net would
        # be periodic only to ~1e-7: ω is rebuilt in the new dtype instead.
        super()._apply(fn, *args, **kwargs)
        self.omega = self._exact_omega(self.omega.dtype, self.omega.device)
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): ``(n, in_dim) -> (n, embedding)``."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MLP expects input (n, {self.in_dim}), got {tuple(x.shape)}")
        plain = x if len(self.plain_cols) == self.in_dim else x[:, self.plain_cols]  # skip a gather when nothing is embedded
        parts = [plain] if self.plain_cols else []
        if self.periodic_cols:
            a = x[:, self.periodic_cols, None] * self.omega  # (n, n_periodic, K)
            parts += [a.cos().flatten(1), a.sin().flatten(1)]
        h = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
        if self.B is not None:
            a = h @ self.B
            h = torch.cat([a.cos(), a.sin()], -1)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        *hidden, last = self.layers  # not self.layers[:-1]: slicing builds a new ModuleList every call
        if self.encoders is None:
            for lin in hidden:
                h = self._act(lin(h))
        else:
            u, v = (self._act(enc(h)) for enc in self.encoders)
            d = u - v
            for lin in hidden:
                h = v + self._act(lin(h)) * d  # z ⊙ u + (1 − z) ⊙ v
        return last(h)
