"""A param group's learning rate as a float or, for CUDA-graph training, a device tensor that
every change must write in place (a captured step reads that tensor's memory)."""

from __future__ import annotations

import torch


def lrs_as_tensors(optimizer: torch.optim.Optimizer, as_tensors: bool) -> None:
    """Each group's lr as a 0-d tensor on the parameters' device (a captured step reads it, and
    a schedule fills it in place), or back to a float (eager steps; e.g. a resumed checkpoint).

    The tensor is float32 whatever the parameters' precision: torch's fused CUDA Adam reads it
    through a float pointer. A float64 run then steps with lr rounded to float32 (~1e-8 relative).
    """
    for g in optimizer.param_groups:
        lr = g["lr"]
        if as_tensors and not isinstance(lr, torch.Tensor):
            g["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=g["params"][0].device)
        elif as_tensors and (lr.dtype != torch.float32 or lr.device != g["params"][0].device):
            g["lr"] = lr.to(device=g["params"][0].device, dtype=torch.float32)
        elif not as_tensors and isinstance(lr, torch.Tensor):
            g["lr"] = float(lr)


def set_lr(group: dict, value: float) -> None:
    """Set a group's lr; a tensor lr in place, so that a captured step sees it."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def scale_lr(group: dict, factor: float, undo: bool = False) -> None:
    """lr ← lr·factor (or lr/factor to undo); a tensor lr (CUDA-graph training) in place, so that
    a captured step sees it."""
    lr = group["lr"]
    if isinstance(lr, torch.Tensor):
        lr.div_(factor) if undo else lr.mul_(factor)
    else:
        group["lr"] = lr / factor if undo else lr * factor
