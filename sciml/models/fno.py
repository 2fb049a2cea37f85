"""Fourier neural operator (Li et al., ICLR 2021), one N-d implementation, and its named variants."""

from __future__ import annotations

import math

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import activation as check_activation
from ._validate import check_input, per_dim_ints, positive_int
from .spectral import SpectralConv

GRID_EMBEDDINGS = {True: "periodic", False: None, "periodic": "periodic", "closed": "closed", "cells": "cells", None: None}
COORDINATE_KINDS = ("periodic", "closed", "cells")


KERNELS = ("auto", "gemm", "conv", "mm")


class Pointwise(nn.Module):
    """A 1x1 convolution: the same affine map of the channels at every grid point.

    The kernel sets how it runs, and with it the layout of its input and output:

    - "gemm": batch-major ``(batch, channels, *grid)``, one batched matmul over the samples (on CPU
      it beats oneDNN's 1x1 convolution on 4 of the 6 reduced rows of bench_fno_speed, by 11-32 %,
      and loses the two Darcy rows by 7-15 %; it also beats "mm" there, whose 2D GEMMs over
      batch x grid ran 2x slower in MKL).
    - "conv": batch-major, ``conv1d`` (cuDNN on GPU, as neuralop's skips and channel MLPs).
    - "mm": channel-major ``(channels, batch, *grid)``, so the map is one 2D GEMM
      ``W @ x.view(in, -1)`` over every sample and point at once, and its weight gradient one GEMM
      whose reduction runs over batch x grid, a shape cuBLAS splits across the device. The
      batch-major kernels are weakest exactly there: on an H100 (2026-11-26, batch 20, fp32)
      cuDNN's 1x1 convolution backward took 41-52 % of the step at Burgers 8192, Darcy 421² and NS
      256² (its weight gradients 25-42 %), and "gemm"'s batch of 20 long thin GEMMs ran on 20 thread
      blocks (62 % at Darcy 421²).
    - "auto" (default): "conv" on CUDA, "gemm" elsewhere (see :meth:`kernel_for`);
      bench_fno_speed.py times every kernel.

    Initialised as ``nn.Linear`` (uniform, bound ``1/sqrt(in)``).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True, kernel: str = "auto"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.kernel = kernel
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def kernel_for(self, device: torch.device) -> str:
        """The kernel that runs on `device`: "mm" takes channel-major input, the others batch-major."""
        if self.kernel != "auto":
            return self.kernel
        return "conv" if device.type == "cuda" else "gemm"

    def forward(self, x: Tensor, add: Tensor | None = None) -> Tensor:
        """``add + W x + b`` (one GEMM with `add`), in the kernel's layout: (batch, in, *grid) ->
        (batch, out, *grid), or for "mm" (in, batch, *grid) -> (out, batch, *grid)."""
        kernel = self.kernel_for(x.device)
        if kernel == "mm":
            flat = x.reshape(x.shape[0], -1)
            if add is not None:
                y = torch.addmm(add.reshape(add.shape[0], -1), self.weight, flat)
                y = y if self.bias is None else y + self.bias[:, None]
            elif self.bias is not None:
                y = torch.addmm(self.bias[:, None], self.weight, flat)
            else:
                y = self.weight @ flat
            return y.view(y.shape[0], *x.shape[1:])
        flat = x.flatten(2)
        if kernel == "conv":
            y = F.conv1d(flat, self.weight[:, :, None], self.bias)
            if add is not None:
                y = y.add_(add.flatten(2))  # in place: conv1d's backward does not need its output
            return y.view(*y.shape[:2], *x.shape[2:])
        # bmm against the expanded weight: matmul would transpose x and copy it (2x slower on CPU)
        weight = self.weight.expand(flat.shape[0], *self.weight.shape)
        y = torch.bmm(weight, flat) if add is None else torch.baddbmm(add.flatten(2), weight, flat)
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y.view(*y.shape[:2], *x.shape[2:])


class PointwiseMLP(nn.Module):
    """Pointwise two-layer MLP ``in -> hidden -> out`` (one linear map when hidden is 0), in the
    layout of its kernel (see :class:`Pointwise`)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, act, *, kernel: str = "auto"):
        super().__init__()
        self.act = act
        self.layers = nn.ModuleList(
            [Pointwise(in_channels, out_channels, kernel=kernel)] if hidden == 0
            else [Pointwise(in_channels, hidden, kernel=kernel), Pointwise(hidden, out_channels, kernel=kernel)]
        )

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == 0 else layer(self.act(x))
        return x


def grid_coordinates(grid: Sequence[int], kind: str | Sequence[str], *, device=None, dtype=None) -> Tensor:
    """(1, len(grid), *grid) coordinates: ``i/n`` in [0, 1) ("periodic"), ``i/(n-1)`` in [0, 1] ("closed") or
    the cell centres ``(i + 1/2)/n`` ("cells"): where a file of grid kind "periodic", "nodes" or "cells" puts its
    points (`sciml.data.arrays.unit_coordinates`, made here on the device in the model's dtype). `kind` is one
    kind for every axis or one per axis (a cell-centred x beside saved times t from 0 to T: ``("cells", "closed")``)."""
    kinds = (kind,) * len(grid) if isinstance(kind, str) else tuple(kind)
    axes = []
    for n, k in zip(grid, kinds, strict=True):
        if k == "periodic":
            axes.append(torch.arange(n, device=device, dtype=dtype) / n)
        elif k == "cells":
            axes.append((torch.arange(n, device=device, dtype=dtype) + 0.5) / n)
        else:
            axes.append(torch.linspace(0.0, 1.0, n, device=device, dtype=dtype))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def _check_grid_embedding(value: Any, n_dims: int) -> str | tuple[str, ...] | None:
    """One kind (or True / False) for every axis, or one of "periodic", "closed", "cells" per axis; one kind
    repeated comes back as that kind."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == n_dims and all(isinstance(v, str) and v in COORDINATE_KINDS for v in value):
            return value[0] if len(set(value)) == 1 else tuple(value)
    elif isinstance(value, bool) or value is None or isinstance(value, str) and value in GRID_EMBEDDINGS:
        return GRID_EMBEDDINGS[value]
    raise ValueError(f"grid_embedding must be True, False, 'periodic', 'closed', 'cells' or a list of {n_dims} of "
                     f"those kinds (one per grid dim, e.g. [cells, closed] for cell-centred x and times from 0 to T), "
                     f"got {value!r}")


class FNO(nn.Module):
    r"""Fourier neural operator :math:`u = Q \circ \sigma(W_L + K_L) \circ \dots \circ \sigma(W_1 + K_1) \circ P\,(a, x)`.

    Lifting ``P`` and projection ``Q`` are pointwise MLPs; each of the `n_layers` blocks adds a
    spectral convolution ``K`` (:class:`SpectralConv`, lowest `modes`) and a pointwise linear
    map ``W``, followed by the activation except after the last block (Li et al.'s code, GELU,
    no normalisation). Works on 1, 2 or 3 (any) grid dimensions.

    Args:
        in_channels, out_channels: channels of the input and output fields.
        n_dims: number of grid dimensions.
        modes: kept Fourier modes per dimension (int or one per dim). Paper: 16 (Burgers),
            12 (Darcy, NS-2D), 8 (NS-3D); note ``neuralop``'s ``n_modes`` counts both signs.
        width: channels inside the blocks (paper: 64 Burgers, 32 Darcy, 20 NS).
        n_layers: number of Fourier blocks.
        lifting_channels, projection_channels: hidden size of ``P`` / ``Q``; ``None`` means
            ``2 * width``, 0 a single linear map.
        activation: "gelu", "relu", "tanh", "silu", "elu" or a callable.
        padding: zero padding appended after the lifting on the right of each grid dim, removed
            before the projection, so non-periodic data need not look periodic. A float f pads to
            a period of (1 + f) domain lengths at every resolution (see :meth:`pad_sizes`; the grid
            spacing follows `grid_embedding`), an int is a number of points; one value or one per
            dim. 0 (default) for periodic data.
        grid_embedding: append the grid coordinates as input channels: True/"periodic" uses
            ``i/n`` (periodic nodes), "closed" uses ``i/(n-1)`` (nodes including the right end, for
            non-periodic data: a file of grid kind "nodes"), "cells" uses the cell centres
            ``(i + 1/2)/n`` (grid kind "cells"), False none; or one of those kinds per grid dim (a
            space-time grid of cells in x and saved times from 0 to T: ``["cells", "closed"]``). The
            file's kind keeps a point's coordinate the same at every resolution (the trainer warns of another).
        transform: how the spectral layers reach the kept modes, "dft" (truncated DFT matrices)
            or "fft" (pruned FFTs); same result to rounding, see :class:`SpectralConv`.
        pointwise_kernel: how the lifting, skips and projection run: "auto" (conv on CUDA, gemm
            elsewhere), "gemm", "conv" or "mm" (channel-major activations, 2D GEMMs; see
            :class:`Pointwise`); same result to rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 1, *, modes: int | Sequence[int] = 16,
                 width: int = 64, n_layers: int = 4, lifting_channels: int | None = None,
                 projection_channels: int | None = None, activation: Any = "gelu",
                 padding: float | int | Sequence[float | int] = 0, grid_embedding: bool | str = True,
                 transform: str = "dft", pointwise_kernel: str = "auto"):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_dims = positive_int("n_dims", n_dims)
        self.modes = per_dim_ints("modes", modes, self.n_dims)
        self.width = positive_int("width", width)
        self.n_layers = positive_int("n_layers", n_layers)
        lifting = 2 * width if lifting_channels is None else positive_int("lifting_channels", lifting_channels, allow_zero=True)
        projection = 2 * width if projection_channels is None else positive_int("projection_channels", projection_channels, allow_zero=True)
        self.act = check_activation("activation", activation)
        self.padding = _check_padding(padding, self.n_dims)
        self.grid_embedding = _check_grid_embedding(grid_embedding, self.n_dims)
        n_in = in_channels + (self.n_dims if self.grid_embedding else 0)
        self.lifting = PointwiseMLP(n_in, width, lifting, self.act, kernel=pointwise_kernel)
        self.spectral = nn.ModuleList(SpectralConv(width, width, self.modes, transform=transform) for _ in range(n_layers))
        # the block's bias lives in the spectral layer (folded into its zero mode)
        self.pointwise = nn.ModuleList(Pointwise(width, width, bias=False, kernel=pointwise_kernel) for _ in range(n_layers))
        self.projection = PointwiseMLP(width, out_channels, projection, self.act, kernel=pointwise_kernel)

    def pad_sizes(self, grid: Sequence[int]) -> tuple[int, ...]:
        """Points of zero padding per grid dim. A fraction f pads to a period of (1 + f) domain
        lengths in this grid's spacing (1/n periodic or cells, 1/(n - 1) closed, per axis), so the spectral layers see
        one physical period, and so one kernel, at every resolution. (f of the points would not:
        on a closed grid, 9 of 85 points and 45 of 421 give periods 94/84 and 466/420.)"""
        kinds = (self.grid_embedding,) * len(grid) if not isinstance(self.grid_embedding, tuple) else self.grid_embedding
        spacings = (n - 1 if kind == "closed" else n for n, kind in zip(grid, kinds))
        return tuple(p if isinstance(p, int) else max(0, round((1 + p) * m) - n)
                     for p, n, m in zip(self.padding, grid, spacings))

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raises the ValueError `forward` would raise for an input on `grid` (its grid dims, e.g. (64, 64)) whose
        points, padding included, cannot hold the kept modes: a check without a forward pass, e.g. on the grid of
        a file not yet generated."""
        self._check_spectral_grid(tuple(grid))

    def _check_spectral_grid(self, grid: Sequence[int]) -> tuple[int, ...]:
        """The spectral layers' rule on the padded `grid` (`SpectralConv.check_grid`); returns the padding."""
        pads = self.pad_sizes(grid)
        self.spectral[0].check_grid([n + p for n, p in zip(grid, pads)], padding=pads)  # naming the padding
        return pads

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, in_channels, *grid) -> (batch, out_channels, *grid).

        1. append grid coordinates (batch, in + n_dims, *grid); 2. lift to (batch, width, *grid);
        3. pad each grid dim on the right; 4. n_layers blocks ``act(K x + W x)`` (no act after the
        last); 5. crop the padding; 6. project to (batch, out_channels, *grid). With the "mm"
        pointwise kernel the activations inside are channel-major, (channels, batch, *grid), so that
        each pointwise map is one GEMM (see :class:`Pointwise`); input and output keep the batch first.
        """
        check_input(type(self).__name__, x, self.in_channels, self.n_dims, self.lifting.parameters())
        grid = x.shape[2:]
        channel_dim = 0 if self.pointwise[0].kernel_for(x.device) == "mm" else 1
        if channel_dim == 0:
            x = x.transpose(0, 1)
        if self.grid_embedding:
            coords = grid_coordinates(grid, self.grid_embedding, device=x.device, dtype=x.dtype)
            shape = list(x.shape)
            shape[channel_dim] = self.n_dims
            x = torch.cat([x, coords.movedim(1, channel_dim).expand(shape)], dim=channel_dim)
        x = self.lifting(x)
        pads = self._check_spectral_grid(grid)
        if any(pads):
            x = F.pad(x, [v for p in reversed(pads) for v in (0, p)])
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            x = pointwise(x, add=spectral(x, channel_dim))  # K x + W x + b
            if i < self.n_layers - 1:
                x = self.act(x)
        if any(pads):
            x = x[(slice(None), slice(None), *(slice(0, n) for n in grid))]
        x = self.projection(x)
        return x.transpose(0, 1).contiguous() if channel_dim == 0 else x


def _check_padding(padding, n_dims: int) -> tuple[float | int, ...]:
    values = padding if isinstance(padding, Sequence) and not isinstance(padding, str) else (padding,) * n_dims
    if len(values) != n_dims:
        raise ValueError(f"padding must be one value or {n_dims} (one per grid dim), got {padding!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (isinstance(v, float) and v >= 1):
            raise ValueError(
                f"padding must be >= 0: an int (points) or a float in [0, 1) (fraction of the grid), got {padding!r}"
            )
    return tuple(values)


class FNO2dTime(FNO):
    """FNO-2D for Navier-Stokes, autoregressive in time (the paper's "FNO-2D"): the last `history`
    states as channels -> the next state, fed back to predict every later step.

    Contract (the trainer's): (batch, history * C, *grid) -> (batch, n_steps * C, *grid), with C =
    `state_channels`, history = in_channels / C, n_steps = out_channels / C: the whole rollout, so
    the loss and its gradient run through all steps as in Li et al.'s ``fourier_2d_time.py``
    (defaults from it: 10 input steps, modes 12, width 20, linear lifting, projection 128). Feeding
    predictions back needs inputs and outputs on one scale (normalise both the same way, or not).
    """

    def __init__(self, in_channels: int = 10, out_channels: int = 1, n_dims: int = 2, *, state_channels: int = 1,
                 modes=12, width=20, lifting_channels=0, projection_channels=128, **kwargs):
        state_channels = positive_int("state_channels", state_channels)
        super().__init__(in_channels, state_channels, n_dims, modes=modes, width=width,
                         lifting_channels=lifting_channels, projection_channels=projection_channels, **kwargs)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % state_channels:
                raise ValueError(f"{name}={value} must be a multiple of state_channels={state_channels} (steps x state)")
        self.state_channels, self.out_channels = state_channels, out_channels
        self.history, self.n_steps = in_channels // state_channels, out_channels // state_channels

    def step(self, x: Tensor) -> Tensor:
        """One step: (batch, history * C, *grid) -> (batch, C, *grid)."""
        return super().forward(x)

    def rollout(self, x: Tensor, n_steps: int) -> Tensor:
        """x: (batch, history * C, *grid), oldest step first -> (batch, n_steps, C, *grid)."""
        n_steps = positive_int("n_steps", n_steps)
        steps = []
        for _ in range(n_steps):
            y = self.step(x)
            steps.append(y)
            x = torch.cat([x[:, self.state_channels:], y], dim=1)
        return torch.stack(steps, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, history * C, *grid) -> (batch, n_steps * C, *grid): :meth:`rollout`, steps as channels."""
        return self.rollout(x, self.n_steps).flatten(1, 2)


class FNO3dSpaceTime(FNO):
    """FNO-3D over (x, y, t) for Navier-Stokes (the paper's "FNO-3D"): the input steps are repeated
    along a new time axis of length n_steps (:meth:`expand_time`), a 3D FNO maps them to one state
    per time, and all later steps come out at once.

    Contract (the trainer's): (batch, in_channels, *grid) -> (batch, out_channels, *grid), with
    out_channels = n_steps predicted steps (one state channel); the FNO itself runs on n_dims + 1
    dims. Defaults from Li et al.'s ``fourier_3d.py``: modes 8, width 20, linear lifting,
    projection 128, 6 points of zero padding in t only (time is not periodic).
    """

    def __init__(self, in_channels: int = 10, out_channels: int = 40, n_dims: int = 2, *, modes=8, width=20,
                 lifting_channels=0, projection_channels=128, padding=None, **kwargs):
        n_dims = positive_int("n_dims", n_dims)
        padding = (0,) * n_dims + (6,) if padding is None else padding
        super().__init__(in_channels, 1, n_dims + 1, modes=modes, width=width, lifting_channels=lifting_channels,
                         projection_channels=projection_channels, padding=padding, **kwargs)
        self.n_steps = self.out_channels = positive_int("out_channels", out_channels)
        self.space_dims = n_dims

    @staticmethod
    def expand_time(x: Tensor, n_t: int) -> Tensor:
        """(batch, C, *grid) -> (batch, C, *grid, n_t): the input steps repeated along a time axis."""
        return x[..., None].expand(*x.shape, positive_int("n_t", n_t))

    def check_grid(self, grid: Sequence[int]) -> None:
        """As `FNO.check_grid` for an input on the space `grid`: the FNO runs on it with n_steps times appended."""
        self._check_spectral_grid((*grid, self.n_steps))

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, in, *grid) -> (batch, n_steps, *grid): expand in t, 3D FNO, time back to channels."""
        check_input(type(self).__name__, x, self.in_channels, self.space_dims, self.lifting.parameters())
        y = super().forward(self.expand_time(x, self.n_steps))  # (batch, 1, *grid, n_steps)
        return y[:, 0].movedim(-1, 1)


def count_parameters(model: nn.Module) -> int:
    """Real parameters (a complex one counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


__all__ = ["FNO", "FNO2dTime", "FNO3dSpaceTime", "Pointwise", "PointwiseMLP", "SpectralConv", "count_parameters",
           "grid_coordinates", "COORDINATE_KINDS"]
