"""Losses by name. Each maps (prediction, target) of shape (batch, channels, *grid) to a scalar."""

from __future__ import annotations

import torch

from sciml.registry import Registry

LOSSES: Registry = Registry("loss")


def relative_l2_per_sample(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||pred - target||_2 / ||target||_2 over all non-batch axes, one value per sample: (batch,)."""
    diff = (pred - target).flatten(1).norm(dim=1)
    return diff / target.flatten(1).norm(dim=1).clamp_min(eps)


@LOSSES.register("rel_l2", description="mean over samples of ||pred - y|| / ||y|| (the FNO papers' metric)")
def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return relative_l2_per_sample(pred, target).mean()


@LOSSES.register("mse", description="mean squared error over all entries")
def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(pred, target)
