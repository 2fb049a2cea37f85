"""Losses by name. Each maps (prediction, target) of shape (batch, channels, *grid) to a scalar."""

from __future__ import annotations

import torch

from sciml.registry import Registry

LOSSES: Registry = Registry("loss")


def build_loss(name: str):
    """The loss `name` names as a callable (prediction, target) -> scalar: a registered function, or a user's
    ``module:attr`` that is a function, an ``nn.Module`` or an ``nn.Module`` class taking no arguments (as
    ``torch.nn:L1Loss``: calling the class itself would construct a module, not compute a loss)."""
    obj = LOSSES.get(name)
    if isinstance(obj, type):
        if not issubclass(obj, torch.nn.Module):
            raise TypeError(f"loss {name!r} is the class {obj.__qualname__}, which is not a torch.nn.Module; give a "
                            "function (prediction, target) -> scalar or an nn.Module class")
        try:
            obj = obj()
        except TypeError as err:
            raise TypeError(f"loss {name!r}: the class {obj.__qualname__} cannot be built without arguments ({err}); "
                            "give a function of (prediction, target), or a module:attr naming an instance") from err
    elif not callable(obj):
        raise TypeError(f"loss {name!r} is a {type(obj).__name__}, not a function (prediction, target) -> scalar")
    return obj


def check_scalar_loss(loss: torch.Tensor, name: str) -> torch.Tensor:
    """`loss` if it is a one-element tensor (shape only: no host read), else a TypeError naming the loss."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise TypeError(f"loss {name!r} returned {got}; a training loss must be one number (reduce it, e.g. .mean())")
    return loss


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
