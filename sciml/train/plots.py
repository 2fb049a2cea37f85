"""Prediction-vs-truth figures for run folders (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    """Written to a temporary name and renamed, then closed."""
    from sciml.utils import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    _pyplot().close(fig)


def _shown_channel(n_channels: int, fields: Sequence[str]) -> tuple[int, str]:
    """The output channel a figure shows and its label: the last step of the first field (multi-step outputs, as
    FNO-3D's and a rollout's (n, T, *grid), stack their steps as channels, time by time), or without `fields` the
    last channel."""
    if not fields:
        return n_channels - 1, "" if n_channels == 1 else f" (channel {n_channels} of {n_channels})"
    steps = [c for c, name in enumerate(fields) if name == fields[0]]
    return steps[-1], f": {fields[0]}" + (f", step {len(steps)} of {len(steps)}" if len(steps) > 1 else "")


def plot_predictions(x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, path: str | Path,
                     y_fields: Sequence[str] = ()) -> bool:
    """One row per sample: 1D fields as curves (input, truth, prediction); 2D as images (+ error), truth and
    prediction on the truth's colour scale; 3D (a physics run's x, y, t) as images of the last slice along the third
    axis. Of several output channels the last step of the first field is shown (`y_fields`: each channel's field;
    without it the last channel), of the inputs channel 0. False where nothing was drawn (more dimensions)."""
    if y.ndim == 5:  # (n, C, s1, s2, s3): the last slice, e.g. the last predicted time
        x, y, pred = x[..., -1], y[..., -1], pred[..., -1]
    c, shown = _shown_channel(y.shape[1], tuple(y_fields))
    given = "input" + ("" if x.shape[1] == 1 else f" (channel 1 of {x.shape[1]})")
    plt = _pyplot()
    n = len(x)
    if y.ndim == 3:  # (n, C, s)
        fig, axes = plt.subplots(n, 2, figsize=(9, 2.2 * n), squeeze=False)
        grid = torch.arange(y.shape[-1]) / y.shape[-1]
        for i in range(n):
            axes[i, 0].plot(grid.numpy(), x[i, 0].numpy(), color="0.4")  # numpy: torch tensors warn there
            axes[i, 0].set_ylabel(f"sample {i}")
            axes[i, 1].plot(grid.numpy(), y[i, c].numpy(), label="truth", lw=2)
            axes[i, 1].plot(grid.numpy(), pred[i, c].numpy(), "--", label="prediction")
        axes[0, 0].set_title(given)
        axes[0, 1].set_title(f"output{shown}")
        axes[0, 1].legend(loc="best", fontsize=8)
    elif y.ndim == 4:  # (n, C, s, s)
        fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
        for i in range(n):
            # one scale for truth and prediction: each on its own made a near-zero prediction look like a match
            scale = {"vmin": float(y[i, c].min()), "vmax": float(y[i, c].max())}
            for j, (img, title) in enumerate([(x[i, 0], given), (y[i, c], f"truth{shown}"),
                                               (pred[i, c], "prediction"), ((pred[i, c] - y[i, c]).abs(), "|error|")]):
                im = axes[i, j].imshow(img.T.numpy(), origin="lower", cmap="viridis", **(scale if j in (1, 2) else {}))
                axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
                fig.colorbar(im, ax=axes[i, j], fraction=0.046)
                if i == 0:
                    axes[i, j].set_title(title)
    else:
        return False
    _save(fig, path)
    return True


def _as_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(axis 0 values, axis 1 values, order) when 2D points are a full tensor-product grid, else None."""
    u0, u1 = torch.unique(x[:, 0]), torch.unique(x[:, 1])
    if len(u0) * len(u1) != len(x) or len(u0) < 2 or len(u1) < 2:
        return None
    order = torch.argsort(x[:, 1], stable=True)
    order = order[torch.argsort(x[order, 0], stable=True)]  # by axis 0, then axis 1
    return u0, u1, order


def _triangulation(x: torch.Tensor):
    """Delaunay triangles of scattered 2D points, without those that bridge a concave part of the
    domain (the L-shape's notch): a triangle with an edge over 3x the median longest edge is masked."""
    import matplotlib.tri as mtri

    tri = mtri.Triangulation(x[:, 0].numpy(), x[:, 1].numpy())
    corners = x[torch.as_tensor(tri.triangles, dtype=torch.long)]  # (T, 3, 2)
    longest = (corners - corners.roll(1, dims=1)).norm(dim=-1).amax(dim=1)
    tri.set_mask((longest > 3 * longest.median()).numpy())
    return tri


def plot_pinn_fields(x: torch.Tensor, reference: torch.Tensor, prediction: torch.Tensor, *, coords, outputs,
                     path: str | Path) -> None:
    """Reference, prediction and |error| at a PINN's eval points ``(n, d)``, one row per output.

    1D: curves. 2D (space-time or a plane): images when the points form a grid, otherwise a
    triangulation of the scattered points (the L-shape's nodes). Higher dimensions: no picture."""
    plt = _pyplot()
    d, k = x.shape[1], min(reference.shape[1], 4)
    if d > 2:
        return
    if d == 1:
        order = torch.argsort(x[:, 0])
        fig, axes = plt.subplots(k, 2, figsize=(9, 2.6 * k), squeeze=False)
        for i in range(k):
            xs = x[order, 0].numpy()  # numpy for matplotlib: torch tensors warn there
            axes[i, 0].plot(xs, reference[order, i].numpy(), lw=2, label="reference")
            axes[i, 0].plot(xs, prediction[order, i].numpy(), "--", label="prediction")
            axes[i, 0].set_ylabel(outputs[i])
            axes[i, 1].semilogy(xs, (prediction[order, i] - reference[order, i]).abs().clamp_min(1e-300).numpy())
        axes[0, 0].legend(loc="best", fontsize=8)
        axes[0, 1].set_title("|error|")
        axes[-1, 0].set_xlabel(coords[0])
        axes[-1, 1].set_xlabel(coords[0])
    else:
        grid = _as_grid(x)
        if grid is None and len(x) > 40000:  # a triangulation of more scattered points costs seconds and shows no more
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:40000]
            x, reference, prediction = x[keep], reference[keep], prediction[keep]
        tri = _triangulation(x) if grid is None else None
        fig, axes = plt.subplots(k, 3, figsize=(13, 3.4 * k), squeeze=False)
        for i in range(k):
            fields = [(reference[:, i], "reference"), (prediction[:, i], "prediction"),
                      ((prediction[:, i] - reference[:, i]).abs(), "|error|")]
            lo, hi = float(reference[:, i].min()), float(reference[:, i].max())
            for j, (f, title) in enumerate(fields):
                ax = axes[i, j]
                scale = {} if j == 2 else {"vmin": lo, "vmax": hi}  # reference and prediction on one colour scale
                if grid is not None:
                    u0, u1, order = grid
                    im = ax.pcolormesh(u0.numpy(), u1.numpy(), f[order].reshape(len(u0), len(u1)).T.numpy(),
                                       shading="nearest", cmap="viridis", **scale)
                else:
                    im = ax.tripcolor(tri, f.numpy(), shading="gouraud", cmap="viridis", **scale)
                fig.colorbar(im, ax=ax, fraction=0.046)
                ax.set_title(f"{outputs[i]}: {title}" if i == 0 or j == 0 else title)
                ax.set_xlabel(coords[0])
                ax.set_ylabel(coords[1])
    _save(fig, path)
