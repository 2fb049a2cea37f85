"""Dataset recipes: what `sciml generate` makes, written as YAML in ``datasets/``.

A recipe names a PDE *family* (registered here: its parameters schema, grid, fields and a
batched generator built on `solvers.pde`), sample counts, a seed, and presets::

    family: burgers1d
    name: burgers
    seed: 0
    n_samples: 2048
    batch_size: 256
    params: {nu: 0.1, t_end: 1.0, resolution: 8192, alpha: 2.0, tau: 5.0, sigma: 25.0}
    presets:
      small: {n_samples: 256, params: {resolution: 1024}}

Batch ``b`` draws its random inputs from a generator seeded with ``seed * 1_000_003 + b`` on the
generating device (`batch_seed`; `seed_range` gives the seeds for which torch takes that), so a file is
reproducible batch by batch (same recipe, same device type) and an interrupted generation resumes at
the next unfinished batch.
"""

from __future__ import annotations

import copy
import math
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator

from sciml.config import ConfigError, StrictModel, apply_overrides, load_yaml, validate
from sciml.data.h5 import FieldSpec
from sciml.registry import Registry, close_matches
from sciml.paths import DATASETS_DIR

SEED_STRIDE = 1_000_003  # batch b of a recipe with seed s draws from a generator seeded with s * SEED_STRIDE + b
_GENERATOR_SEEDS = (-2 ** 63, 2 ** 64 - 1)  # what torch.Generator.manual_seed takes (a negative one wraps)


def too_coarse(key: str, value: int, least: int, why: str) -> ValueError:
    """A family's refusal of a grid its solver cannot run on, naming the recipe key and its minimum (the
    solvers name their own arguments: "u0 has shape (48, 3)", "n_cells=2")."""
    return ValueError(f"params.{key}={value} is too coarse: {why}; set params.{key} to {least} or more")


def seed_range(n_batches: int) -> tuple[int, int]:
    """The recipe seeds whose batch seeds, ``seed * SEED_STRIDE + b`` for b < n_batches, torch takes."""
    low, high = _GENERATOR_SEEDS
    return -(-low // SEED_STRIDE), (high - (n_batches - 1)) // SEED_STRIDE


def batch_seed(seed: int, batch: int, n_batches: int | None = None) -> int:
    """Batch `batch`'s generator seed; an error naming the recipe's `seed` where torch cannot take it
    (it said "Overflow when unpacking long long")."""
    low, high = seed_range(n_batches or batch + 1)
    if not low <= seed <= high:
        raise ConfigError(f"seed={seed} is out of range: batch b draws from a generator seeded with seed * {SEED_STRIDE} "
                          f"+ b, which torch takes only within [-2**63, 2**64 - 1]; use a seed from {low} to {high}")
    return seed * SEED_STRIDE + batch


@dataclass(frozen=True)
class Layout:
    """What a family's files look like for given parameters."""

    spatial_shape: tuple[int, ...]
    grid_kind: str
    grid: dict[str, np.ndarray]
    fields: list[FieldSpec]
    attrs: dict[str, Any]  # equation, domain, boundary_conditions, solver, solver_options, ...


class Family(Protocol):
    """A PDE family that can fill a dataset file (registered in `FAMILIES`)."""

    Params: type[StrictModel]

    def layout(self, params: Any) -> Layout: ...

    def generate(self, params: Any, n: int, *, generator: torch.Generator,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """`n` samples: ({"inputs/<field>": (n, ...), "outputs/<field>": ...}, {diagnostic: (n,)})."""
        ...


FAMILIES: Registry[Callable[[], Family]] = Registry("dataset family")


class Recipe(StrictModel):
    family: str
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    n_samples: PositiveInt
    batch_size: PositiveInt = 256
    params: dict[str, Any] = {}
    presets: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _seed_fits(self) -> "Recipe":
        n_batches = -(-self.n_samples // self.batch_size)
        batch_seed(self.seed, n_batches - 1, n_batches)  # fail at load, not after the family's setup
        return self

    def family_obj(self) -> Family:
        return FAMILIES.get(self.family)()

    def typed_params(self) -> StrictModel:
        params = validate(self.family_obj().Params, self.params, source=f"recipe {self.name!r} params")
        bad = [key for key, value in _leaves(params.model_dump()) if isinstance(value, float) and not math.isfinite(value)]
        if bad:  # an infinite forcing made a "complete" Darcy file of zeros (CG met an infinite tolerance at once)
            raise ConfigError(f"recipe {self.name!r} params {', '.join(bad)} must be finite numbers, not inf or nan")
        return params

    def fingerprint(self) -> str:
        """A short hash of everything that determines the file's contents."""
        content = self.model_dump(mode="json", exclude={"presets", "description"})
        content["params"] = self.typed_params().model_dump(mode="json")
        version = getattr(self.family_obj(), "layout_version", 1)
        if version != 1:  # a family whose files changed shape: its old files are not taken for new ones
            content["layout_version"] = version
        return hashlib.sha256(repr(sorted(content.items())).encode()).hexdigest()[:8]

    def filename(self) -> str:
        res = self.typed_params().model_dump().get("resolution", "")
        return f"{self.name}_s{res}_n{self.n_samples}_seed{self.seed}_{self.fingerprint()}.h5"


def recipe_path(name_or_path: str | Path) -> Path:
    """``"burgers"`` -> ``datasets/burgers.yaml``; a path is taken as it is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    candidate = DATASETS_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in DATASETS_DIR.glob("*.yaml"))
    raise ConfigError(f"unknown dataset recipe {str(name_or_path)!r}{close_matches(str(name_or_path), known)}; "
                      f"known: {', '.join(known)}; or give a path to a recipe .yaml")


def load_recipe(name_or_path: str | Path, *, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe, apply a preset (a partial recipe merged over it) and ``key=value`` overrides."""
    path = recipe_path(name_or_path)
    data = load_yaml(path)
    if preset is not None:
        presets = data.get("presets", {})
        if preset not in presets:
            raise ConfigError(f"recipe {path} has no preset {preset!r}{close_matches(preset, presets)}; "
                              f"presets: {', '.join(presets) or '(none)'}")
        data = _merge(data, presets[preset])
    data = apply_overrides(data, overrides)
    changes = ([f"preset {preset}"] if preset is not None else []) + list(overrides)
    if changes and data.get("description"):  # its numbers are the recipe's: say what moved them
        data["description"] = f"{str(data['description']).strip()} (changed by {'; '.join(changes)})"
    recipe = validate(Recipe, data, source=str(path))
    recipe.typed_params()  # fail now, not after the first batch
    return recipe


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every non-container value in nested dicts and lists."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), value)]


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def list_recipes() -> list[tuple[str, str]]:
    rows = []
    for path in sorted(DATASETS_DIR.glob("*.yaml")):
        data = load_yaml(path)
        rows.append((path.stem, str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""))
    return rows


# The families register themselves on import; importing them here keeps one place that knows them all.
from sciml.data import families as _families  # noqa: E402,F401
