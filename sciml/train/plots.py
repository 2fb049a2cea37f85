"""Prediction-vs-truth figures for run folders (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import torch


def plot_predictions(x: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, path: str | Path) -> None:
    """One row per sample: 1D fields as curves (input, truth, prediction); 2D as images (+ error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sciml.utils import atomic_path

    n = len(x)
    if y.ndim == 3:  # (n, C, s)
        fig, axes = plt.subplots(n, 2, figsize=(9, 2.2 * n), squeeze=False)
        grid = torch.arange(y.shape[-1]) / y.shape[-1]
        for i in range(n):
            axes[i, 0].plot(grid, x[i, 0], color="0.4")
            axes[i, 0].set_ylabel(f"sample {i}")
            axes[i, 1].plot(grid, y[i, 0], label="truth", lw=2)
            axes[i, 1].plot(grid, pred[i, 0], "--", label="prediction")
        axes[0, 0].set_title("input")
        axes[0, 1].set_title("output")
        axes[0, 1].legend(loc="best", fontsize=8)
    elif y.ndim == 4:  # (n, C, s, s)
        fig, axes = plt.subplots(n, 4, figsize=(12, 3 * n), squeeze=False)
        for i in range(n):
            for j, (img, title) in enumerate([(x[i, 0], "input"), (y[i, 0], "truth"), (pred[i, 0], "prediction"),
                                               ((pred[i, 0] - y[i, 0]).abs(), "|error|")]):
                im = axes[i, j].imshow(img.T, origin="lower", cmap="viridis")
                axes[i, j].set_xticks([]), axes[i, j].set_yticks([])
                fig.colorbar(im, ax=axes[i, j], fraction=0.046)
                if i == 0:
                    axes[i, j].set_title(title)
    else:
        return  # no picture for 3D fields
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
