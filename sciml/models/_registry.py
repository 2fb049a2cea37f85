"""The model registry and `build_model`: every model is built from a config the same way.

Contract: ``build_model(name, in_channels=C_in, out_channels=C_out, n_dims=d, **options)``
returns an ``nn.Module`` mapping ``(batch, C_in, *grid) -> (batch, C_out, *grid)``; `options`
is the config's ``model:`` mapping minus ``name``. Names are registered ones (`sciml list`),
``"neuralop.<Class>"`` for any ``neuralop.models`` class (see `neuralop_model`), or
``"package.module:Class"`` for a user's own class taking the same keywords.

Optional hook: a model may define ``prepare(train_inputs, train_outputs) -> None``. The trainer
calls it once, before training, with the normalised training tensors ``(N, C_in, *grid)`` and
``(N, C_out, *grid)`` (e.g. DeepONet's POD trunk computes its basis there).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry, accepted_kwargs, check_kwargs

MODELS: Registry = Registry("model")


def neuralop_model(class_name: str, *, in_channels: int, out_channels: int, n_dims: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``neuralop.models.<class_name>(in_channels=..., out_channels=..., **kwargs)``.

    `n_dims` is not a neuralop argument: it is checked against ``len(n_modes)`` when both are given.
    Lists from YAML are passed as tuples. neuralop's ``n_modes`` counts both frequency signs
    (sciml ``modes=12`` in 2D is ``n_modes=(24, 23)``, same weights).
    """
    try:
        import neuralop.models as nm
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(f"model 'neuralop.{class_name}' needs neuraloperator: pip install neuraloperator ({err})") from err
    cls = getattr(nm, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        known = sorted(n for n in dir(nm) if isinstance(getattr(nm, n), type) and issubclass(getattr(nm, n), nn.Module))
        raise ValueError(f"neuralop.models has no model {class_name!r}; known: {', '.join(known)}")
    valid = accepted_kwargs(cls, skip=("self", "in_channels", "out_channels"))
    if valid is not None:  # "FNO.__init__() got an unexpected keyword argument 'modes'" listed none
        check_kwargs(f"model 'neuralop.{class_name}'", kwargs, valid)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    n_modes = kwargs.get("n_modes")
    if isinstance(n_modes, int):
        raise ValueError(f"neuralop's n_modes takes one count per grid dim (full spectrum widths), e.g. "
                         f"n_modes: {[n_modes] * (n_dims or 1)}, not the single number {n_modes}")
    if n_dims is not None and n_modes is not None and len(n_modes) != n_dims:
        raise ValueError(f"n_modes={n_modes!r} has {len(n_modes)} entries but the data has n_dims={n_dims}; give one per grid dim")
    return cls(in_channels=in_channels, out_channels=out_channels, **kwargs)


def _any_neuralop_class(name) -> bool:
    """``"neuralop.<Class>"`` for a class not registered by name: built by `neuralop_model`."""
    return isinstance(name, str) and name.startswith("neuralop.") and name not in MODELS


def build_model(name: str, *, in_channels: int, out_channels: int, n_dims: int, **options: Any) -> nn.Module:
    """Build model `name` for data with `in_channels`/`out_channels` channels on an `n_dims`-d grid."""
    if _any_neuralop_class(name):
        return neuralop_model(name.split(".", 1)[1], in_channels=in_channels, out_channels=out_channels, n_dims=n_dims, **options)
    model = MODELS.build(name, in_channels=in_channels, out_channels=out_channels, n_dims=n_dims, **options)
    if not isinstance(model, nn.Module):  # a user's class or factory of another kind failed later, deep in training
        raise ValueError(f"model {name!r} built a {type(model).__name__}, not a torch.nn.Module: a model is a Module "
                         f"(or a function returning one) taking in_channels, out_channels and n_dims")
    return model


_GIVEN_BY_THE_DATA = ("self", "in_channels", "out_channels", "n_dims")


def check_model(name: str, options: dict[str, Any]) -> None:
    """Fail now, not after the data is made, on an unknown model `name` or an option its class does
    not take (a misspelt key names its close matches). Values are checked when the model is built
    (they may depend on the data's shape). ValueError."""
    if _any_neuralop_class(name):
        return  # checked when built (importing neuralop here would cost seconds)
    obj = MODELS.get(name)
    valid = accepted_kwargs(obj, skip=_GIVEN_BY_THE_DATA) if callable(obj) else None
    if valid is not None:  # fno3d's and fno2d_time's **kwargs are FNO's: checked against those too
        check_kwargs(f"model {name!r}", options, valid)
