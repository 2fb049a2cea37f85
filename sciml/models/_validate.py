"""Argument checks shared by the models: each message names the argument, the value and the fix."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu, "elu": F.elu}


def positive_int(name: str, value: Any, *, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return value


def per_dim_ints(name: str, value: Any, n_dims: int, *, allow_zero: bool = False) -> tuple[int, ...]:
    """An int (same for every dimension) or a sequence of `n_dims` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n_dims
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n_dims:
        raise ValueError(f"{name} must be an int or a sequence of {n_dims} ints (one per grid dimension), got {value!r}")
    return tuple(positive_int(f"{name}[{i}]", v, allow_zero=allow_zero) for i, v in enumerate(value))


def activation(name: str, value: Any):
    if callable(value):
        return value
    if value not in ACTIVATIONS:
        raise ValueError(f"{name} must be one of {sorted(ACTIVATIONS)} or a callable, got {value!r}")
    return ACTIVATIONS[value]


def check_input(model: str, x, in_channels: int, n_dims: int, params=()) -> None:
    """x's shape, and its dtype against the first floating tensor of `params` (the model's)."""
    if x.ndim != n_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{model} expects input of shape (batch, {in_channels}, *grid) with {n_dims} grid dimension(s), "
            f"got {tuple(x.shape)}; check in_channels/n_dims against the data"
        )
    check_dtypes(model, {"x": x}, params)


def check_dtypes(where: str, inputs: dict, params) -> None:
    """A float64 input to a float32 model fails deep inside with a raw dtype error: say which to convert.
    Attributes only (no host sync); not under autocast, which mixes dtypes on purpose."""
    want = next((p.dtype for p in params if p.is_floating_point()), None)
    if want is None:
        return
    for name, t in inputs.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != want \
                and not torch.is_autocast_enabled(t.device.type):
            raise TypeError(f"{where}: {name} is {t.dtype} but the model's parameters are {want}; convert one of them: "
                            f"model.to({t.dtype}) (e.g. model.double()) or {name}.to({want})")
