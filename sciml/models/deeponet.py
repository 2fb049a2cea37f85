"""DeepONet (Lu et al., Nat. Mach. Intell. 2021) in the Cartesian-product form for grid data, with an
optional POD trunk (Lu et al., CMAME 2022)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import activation as check_activation
from ._validate import check_input, per_dim_ints, positive_int
from sciml.utils import TrainingGridOnly

from .fno import grid_coordinates

BRANCHES = ("mlp", "cnn")
TRUNKS = ("mlp", "pod")
COORDINATES = ("periodic", "closed", "cells")


class MLP(nn.Module):
    """``in -> width (x depth, activated) -> out``; the last layer is activated only if `last_act`."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, act, *, last_act: bool = False):
        super().__init__()
        sizes = [n_in] + [width] * depth + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act, self.last_act = act, last_act

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 or self.last_act:
                x = self.act(x)
        return x


class CNNBranch(nn.Module):
    """Strided convolutions (kernel 5, stride 2, channels 32, 64, 128, ...) halving the grid until it
    is at most 8 points per dim (at most 4 of them), then an MLP on the flattened features."""

    def __init__(self, in_channels: int, sensors: Sequence[int], n_out: int, width: int, depth: int, act):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(len(sensors))
        if conv is None:
            raise ValueError(f"branch='cnn' supports 1 to 3 grid dims, got {len(sensors)}; use branch='mlp'")
        self.act = act
        layers, size, channels = [], list(sensors), in_channels
        while max(size) > 8 and len(layers) < 4:
            layers.append(conv(channels, 32 * 2 ** len(layers), 5, stride=2, padding=2))
            channels = 32 * 2 ** (len(layers) - 1)
            size = [(n - 1) // 2 + 1 for n in size]
        self.convs = nn.ModuleList(layers)
        self.mlp = MLP(channels * math.prod(size), n_out, width, depth, act)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = self.act(conv(x))
        return self.mlp(x.flatten(1))


def sensor_stride(n: int, m: int, coordinates: str) -> int | None:
    """The stride at which `m` sensors sit on an axis of `n` points (``j/m`` on ``i/n`` when m divides n;
    ``j/(m-1)`` on ``i/(n-1)`` when m-1 divides n-1), or None where some sensor falls between points. For
    "cells", where m divides n: the blocks of n/m cells that make up the sensor cells."""
    if m == 1:
        return n  # the one sensor at 0, the first point (cells: the one cell, all n)
    if coordinates != "closed":
        return n // m if n % m == 0 else None
    return (n - 1) // (m - 1) if n > 1 and (n - 1) % (m - 1) == 0 else None


def sensor_interpolation(n: int, m: int, coordinates: str) -> Tensor:
    """(m, n) float64 weights giving the `m` sensor values from the `n` grid values of one axis.

    "periodic": the trigonometric interpolant of the samples at ``i/n`` evaluated at ``j/m``, cardinal
    function ``sin(pi n t)/(n sin(pi t))`` (n odd) or ``sin(pi n t)/(n tan(pi t))`` (n even, the
    Nyquist mode as a cosine); spectrally accurate on smooth periodic data. "closed": linear
    interpolation of the samples at ``i/(n-1)`` at ``j/(m-1)`` (``align_corners=True``). "cells": linear
    interpolation of the cell values at ``(i + 1/2)/n`` at ``(j + 1/2)/m``, constant beyond the outermost
    centres (``align_corners=False``)."""
    j, i = torch.arange(m, dtype=torch.int64)[:, None], torch.arange(n, dtype=torch.int64)[None]
    if coordinates == "periodic":
        d = (j * n - i * m).double()  # n m (j/m - i/n), exact in integers: d = 0 is a coinciding point
        half = torch.sin(math.pi * d / (n * m))
        denom = n * (half if n % 2 else torch.tan(math.pi * d / (n * m)))
        return torch.where(d == 0, 1.0, torch.sin(math.pi * d / m) / torch.where(d == 0, 1.0, denom))
    if n == 1:
        return torch.ones(m, 1, dtype=torch.float64)
    if coordinates == "cells":  # sensor j at fine index ((2j + 1) n - m) / (2m), held within the first and last centre
        den = 2 * m
        num = ((2 * j[:, 0] + 1) * n - m).clamp(0, (n - 1) * den)
    else:
        num = j[:, 0] * (n - 1)  # sensor j at fine position num / (m - 1)
        den = max(m - 1, 1)
    lo, frac = num // den, (num % den).double() / den
    w = torch.zeros(m, n, dtype=torch.float64)
    rows = torch.arange(m)
    w[rows, lo] = 1 - frac
    # the right neighbour's share, 0 past the end (no boolean index: torch.compile traces this without a break)
    w.index_put_((rows, (lo + 1).clamp(max=n - 1)), torch.where(lo + 1 < n, frac, 0.0), accumulate=True)
    return w


class DeepONet(nn.Module):
    r"""Unstacked DeepONet :math:`G(a)(y)_c = \sum_{k=1}^{p} b_{c,k}(a)\, t_{c,k}(y) + \beta_c`.

    The branch net sees the input field at fixed sensors; the trunk net maps a coordinate ``y`` to
    ``p`` basis values per output channel. For grid data the output is the Cartesian product: one
    einsum of the branch coefficients ``(batch, C_out, p)`` with the trunk basis evaluated once at
    all grid points ``(points, C_out, p)``.

    Args:
        in_channels, out_channels, n_dims: as for every model (see `sciml.models.build_model`).
        sensors: branch input grid, int or one per dim, at the points of `coordinates` (``j/m``,
            ``j/(m-1)`` or ``(j + 1/2)/m``). A data grid of another size gives the branch its values there: taken
            every k-th point where its points include the sensors (a multiple: 256 or 512 points for
            128 periodic sensors; 169 or 253 for 85 closed ones), for cells the mean of each block of k
            cells where k m cells tile the sensor cells (256 or 512 for 128), as the loader coarsens a
            "cells" file (equal to rounding); interpolated otherwise (with a
            warning; see :func:`sensor_interpolation`). A checkpoint without a ``pooled_sensors`` entry
            (saved before this rule) average-pools other grids onto the sensors, as it was trained.
        basis: ``p``, basis functions per output channel.
        width, depth: hidden width and number of hidden layers of the branch and trunk MLPs.
        branch: "mlp" (on the flattened field) or "cnn" (strided convolutions, then an MLP).
        trunk: "mlp" (on the coordinates, last layer activated) or "pod": the leading `basis`
            principal components of the training outputs, computed by :meth:`prepare` (POD-DeepONet;
            the output is then defined on the training grid only).
        activation: "gelu", "relu", "tanh", "silu", "elu" or a callable.
        coordinates: where the grid's points are, for the trunk inputs and the sensors: ``i/n``
            ("periodic"), ``i/(n-1)`` ("closed", a file of grid kind "nodes") or the cell centres
            ``(i + 1/2)/n`` ("cells", grid kind "cells"). The file's kind keeps a point's coordinate the same at
            every resolution (the trainer warns of another).
    """

    def __init__(self, in_channels: int, out_channels: int, n_dims: int = 1, *, sensors: int | Sequence[int] = 128,
                 basis: int = 128, width: int = 128, depth: int = 3, branch: str = "mlp", trunk: str = "mlp",
                 activation: Any = "gelu", coordinates: str = "periodic"):
        super().__init__()
        self.in_channels = positive_int("in_channels", in_channels)
        self.out_channels = positive_int("out_channels", out_channels)
        self.n_dims = positive_int("n_dims", n_dims)
        self.sensors = per_dim_ints("sensors", sensors, self.n_dims)
        self.basis = positive_int("basis", basis)
        width, depth = positive_int("width", width), positive_int("depth", depth, allow_zero=True)
        for name, value, allowed in (("branch", branch, BRANCHES), ("trunk", trunk, TRUNKS), ("coordinates", coordinates, COORDINATES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.trunk_kind, self.coordinates = trunk, coordinates
        act = check_activation("activation", activation)
        n_coef = out_channels * basis
        if branch == "mlp":
            self.branch = MLP(in_channels * math.prod(self.sensors), n_coef, width, depth, act)
        else:
            self.branch = CNNBranch(in_channels, self.sensors, n_coef, width, depth, act)
        self.trunk = MLP(n_dims, n_coef, width, depth, act, last_act=True) if trunk == "mlp" else None
        self.bias = nn.Parameter(torch.zeros(out_channels))
        # POD trunk, set by prepare(): mean (C_out, points) and scaled modes (C_out, p, points).
        self.register_buffer("pod_mean", torch.zeros(0))
        self.register_buffer("pod_basis", torch.zeros(0))
        self.register_buffer("pod_grid", torch.zeros(0, dtype=torch.long))  # the training grid, saved with the modes
        self._pod_grid: tuple[int, ...] | None = None  # the same, read without a device sync in forward
        # True only for a checkpoint from before sampling at the sensors: it was trained on pooled inputs
        self.register_buffer("pooled_sensors", torch.tensor(False))
        self._pooled_sensors = False  # the same, read without a device sync in forward
        self._weights: dict[tuple, Tensor] = {}  # interpolation weights per (axis, n, dtype, device)

    @torch.no_grad()
    def prepare(self, train_inputs: Tensor, train_outputs: Tensor) -> None:
        """POD trunk: per output channel, the mean of the training outputs and their `basis` leading
        principal directions scaled by ``singular value / sqrt(N)`` (so the branch learns O(1)
        coefficients). train_outputs: (N, C_out, *grid). Does nothing for an MLP trunk."""
        if self.trunk_kind != "pod":
            return
        if train_outputs.ndim != self.n_dims + 2 or train_outputs.shape[1] != self.out_channels:
            raise ValueError(f"prepare expects train_outputs (N, {self.out_channels}, *grid), got {tuple(train_outputs.shape)}")
        n, points = train_outputs.shape[0], math.prod(train_outputs.shape[2:])
        if points < self.basis:  # the SVD gives at most min(N, points) modes
            raise ValueError(f"POD trunk with basis={self.basis} needs at least that many grid points, got {points}; "
                             f"lower model.basis or use a finer grid")
        if n <= self.basis:  # the mean is taken out: N centred samples span at most N - 1 directions
            raise ValueError(f"POD trunk with basis={self.basis} needs more training samples than modes: the "
                             f"mean-centred outputs of {n} samples have rank at most {n - 1}, so mode {n} and beyond "
                             f"would be rounding noise: basis <= {n - 1}; lower model.basis or train on more samples "
                             f"(data.n_train)")
        y = train_outputs.flatten(2).transpose(0, 1).double()  # (C_out, N, points)
        mean = y.mean(dim=1)
        _, s, vh = torch.linalg.svd(y - mean[:, None], full_matrices=False)
        modes = vh[:, : self.basis] * (s[:, : self.basis, None] / math.sqrt(n))
        dtype = self.bias.dtype
        self.pod_mean = mean.to(self.bias.device, dtype)
        self.pod_basis = modes.to(self.bias.device, dtype)
        self._pod_grid = tuple(train_outputs.shape[2:])
        self.pod_grid = torch.tensor(self._pod_grid, device=self.bias.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("pod_mean", "pod_basis"):  # sized by prepare(): take the checkpoint's shape
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.bias.device,
                                                     dtype=self.bias.dtype))  # the model's dtype, as every loaded tensor
        grid = state_dict.setdefault(prefix + "pod_grid", torch.zeros(0, dtype=torch.long))  # absent before 2026-11-27
        # absent before sampling at the sensors: such a model was trained on pooled inputs and keeps them
        self._pooled_sensors = bool(state_dict.setdefault(prefix + "pooled_sensors", torch.tensor(True)))
        self.pod_grid = torch.empty(grid.shape, dtype=torch.long, device=self.bias.device)
        self._pod_grid = tuple(int(k) for k in grid.tolist()) or None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def branch_input(self, x: Tensor) -> Tensor:
        """x: (batch, in, *grid) -> its values at the sensors, (batch, in, *sensors): x itself on the
        sensor grid, every k-th point of a grid that includes the sensor points (cells: the mean of each block
        of k cells), else interpolated."""
        grid = tuple(x.shape[2:])
        if grid == self.sensors:
            return x
        if self._pooled_sensors:
            return {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[self.n_dims](x, self.sensors)
        interpolated = []
        for axis, (n, m) in enumerate(zip(grid, self.sensors)):
            if n == m:
                continue
            dim, stride = 2 + axis, sensor_stride(n, m, self.coordinates)
            if stride is not None:  # exact: the sensor points are grid points, or the sensor cells blocks of cells
                x = x.unflatten(dim, (m, stride)).mean(dim + 1) if self.coordinates == "cells" else \
                    x[(slice(None),) * dim + (slice(None, stride * m, stride),)]
                continue
            key = (axis, n, x.dtype, x.device)
            if key not in self._weights:
                self._weights[key] = sensor_interpolation(n, m, self.coordinates).to(x.device, x.dtype)
            x = torch.matmul(x.movedim(dim, -1), self._weights[key].T).movedim(-1, dim)
            interpolated.append(m)
        if interpolated and not torch.compiler.is_compiling():  # a warning inside a compiled graph would break it
            how = "trigonometric" if self.coordinates == "periodic" else "linear"
            exact = [2 * m - 1 if self.coordinates == "closed" else 2 * m for m in self.sensors]
            gives = "whose cells tile the sensor cells (e.g." if self.coordinates == "cells" else "that includes them (e.g."
            warnings.warn(f"DeepONet: the grid {grid} does not include the sensor points {self.sensors} "
                          f"({self.coordinates} coordinates): the branch input is interpolated to them ({how} "
                          f"interpolation), which adds its error; a grid {gives} {self.sensors} or "
                          f"{tuple(exact)}) gives their exact values", stacklevel=2)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, in_channels, *grid) -> (batch, out_channels, *grid).

        1. branch input: x at the sensors, (batch, in, *sensors) (`branch_input`); 2. branch coefficients
        (batch, C_out, p); 3. trunk basis at the grid points (points, C_out, p) (MLP) or the POD
        modes; 4. output ``einsum(coefficients, basis) + bias`` (+ POD mean), reshaped to the grid.
        """
        check_input("DeepONet", x, self.in_channels, self.n_dims, self.branch.parameters())
        batch, grid = x.shape[0], tuple(x.shape[2:])
        if self.trunk is None:  # before the branch: a grid the POD trunk refuses is not interpolated (and warned of)
            if self.pod_basis.numel() == 0:
                raise RuntimeError("DeepONet(trunk='pod') has no basis yet: call model.prepare(train_inputs, train_outputs) first")
            if self.pod_basis.shape[-1] != math.prod(grid) or self._pod_grid not in (None, grid):  # 64x48 is not 48x64
                trained = "x".join(map(str, self._pod_grid)) if self._pod_grid else f"{self.pod_basis.shape[-1]} points"
                raise TrainingGridOnly(f"the POD trunk is defined on the training grid only ({trained}), "
                                 f"got grid {grid}: evaluate at the training resolution, or train with trunk='mlp' "
                                 "(model.trunk=mlp), whose trunk takes any grid")
        x = self.branch_input(x)
        if isinstance(self.branch, MLP):
            x = x.flatten(1)
        coef = self.branch(x).view(batch, self.out_channels, self.basis)
        if self.trunk is None:
            y = torch.einsum("bck,ckn->bcn", coef, self.pod_basis) + self.pod_mean
        else:
            coords = grid_coordinates(grid, self.coordinates, device=x.device, dtype=coef.dtype)
            basis = self.trunk(coords.flatten(2)[0].T).view(-1, self.out_channels, self.basis)  # (points, C_out, p)
            y = torch.einsum("bck,nck->bcn", coef, basis)
        return (y + self.bias[:, None]).view(batch, self.out_channels, *grid)
