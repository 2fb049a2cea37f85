"""Configs: YAML files plus ``key=value`` overrides, validated by strict typed schemas.

A config is read in three steps: `load_yaml` (a mapping), `apply_overrides` (dotted
``key=value`` strings, values parsed as YAML scalars), `validate` (a pydantic schema whose
models forbid unknown keys). Any problem raises `ConfigError` naming the key, the bad value and
the close matches, before anything is trained or written.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from sciml.registry import close_matches, user_code_traceback

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; configs mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are unique: a key given twice kept its last value silently (`epochs: 5` above
    `epochs: 500` trained 500). Keys merged in with ``<<`` may be overridden, as YAML allows."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the constructor below names it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1}, first given on line "
                            f"{first + 1}): the later value would replace the earlier one; keep one of them",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping_without_duplicates)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config key or value a user can fix."""


class StrictModel(BaseModel):
    """Base of every config schema: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config {str(path)!r} is a folder; give a config file (e.g. configs/burgers/fno.yaml), or "
                          f"--resume FOLDER for a run")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): is it a config file?") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value (e.g. training.epochs=10)")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: its value is not valid YAML ({str(err).splitlines()[0]}); quote the whole "
                          f"override for the shell, e.g. 'model={{name: fno, width: 32}}' or 'phases.0.steps=100'") from None
    return key.strip().split("."), value


def apply_overrides(config: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of `config` with dotted ``key=value`` overrides applied (the caller's dict is untouched).

    A numeric part indexes a list, e.g. ``phases.1.steps=300`` for a PINN's second training phase."""
    result = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = result
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {text!r}: {'.'.join(path[:i])!r} is a list of {len(node)}; "
                                      f"index it with 0..{len(node) - 1}, not {part!r}")
                part = int(part)
                child = node[part]
            else:
                child = node.get(part)
                if child is None and not last:
                    child = node[part] = {}
            if last:
                node[part] = value
            elif not isinstance(child, (dict, list)):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])!r} is a value, not a section")
            node = child
    return result


def _members(annotation: Any) -> list[Any]:
    """The types a field's annotation allows: `X | None` and `Union[...]` split into their members."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _model_of(annotation: Any) -> Any:
    """The config section (a pydantic model) a field holds, through `X | None`, `list[X]` and `Annotated[X, ...]`,
    else None (`physics.constrain=soft` got no did-you-mean: `physics` is `PhysicsConfig | None`)."""
    for member in _members(annotation):
        if typing.get_origin(member) is Annotated:
            member = typing.get_args(member)[0]
        if typing.get_origin(member) in (list, tuple) and typing.get_args(member):
            member = typing.get_args(member)[0]
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _allowed(annotation: Any) -> str:
    """What a field takes, in a config's words: "an integer >= 0, or a list of them"."""
    def one(a: Any) -> str:
        bounds = ""
        if typing.get_origin(a) is Annotated:
            a, *meta = typing.get_args(a)
            for m in meta:
                for item in getattr(m, "metadata", [m]):
                    for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                        if getattr(item, name, None) is not None:
                            bounds += f" {sign} {getattr(item, name)}"
        origin, args = typing.get_origin(a), typing.get_args(a)
        if a is type(None):
            return "null"
        if origin is typing.Literal:
            return "one of " + ", ".join(map(repr, args))
        if origin is tuple and args and args[-1] is not Ellipsis and len(set(args)) == 1:
            return f"a list of {len(args)}, each {one(args[0])}"
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(one(x) for x in args)})"
        if origin in (list, tuple):
            return f"a list, each {one(args[0])}" if args else "a list"
        if isinstance(a, type) and issubclass(a, BaseModel):
            return f"a section with keys {', '.join(a.model_fields)}"
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        return names.get(a, getattr(a, "__name__", str(a))) + bounds
    return ", or ".join(one(m) for m in _members(annotation))


def _user_key(loc: tuple[Any, ...], schema: type[BaseModel]) -> tuple[list[str], Any]:
    """An error's location as the user's key, and the annotation of the field whose union members pydantic put in
    the location (``physics.overlap.function-after[functools.partial(...)]``), or None when it put none."""
    model: Any = schema
    annotation, parts = None, []
    for part in map(str, loc):
        if annotation is not None and part.isdigit() and typing.get_origin(annotation) in (list, tuple):
            parts.append(part)  # an index into a list field: its items
            annotation = typing.get_args(annotation)[0] if typing.get_args(annotation) else None
            model = _model_of(annotation)
            continue
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            if annotation is not None and len([m for m in _members(annotation) if m is not type(None)]) > 1:
                return parts, annotation  # a union's member tag follows the user's key
            return parts + [str(p) for p in loc[len(parts):]], None
        parts.append(part)
        annotation = fields[part].annotation
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        model = _model_of(annotation)
    return parts, None


def _describe(error: dict[str, Any], schema: type[BaseModel]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        model: Any = schema
        for part in loc[:-1]:  # walk down to the model that owns the unknown key (through list items and `X | None`)
            if part.isdigit() and model is not None:
                continue  # an index into the list field the previous part named: its items' model
            field = getattr(model, "model_fields", {}).get(part)
            model = _model_of(getattr(field, "annotation", None))
            if model is None:
                break
        known = list(getattr(model, "model_fields", {})) if model is not None else []
        hint = close_matches(loc[-1], known) or _nested_match(model, loc[-1], ".".join(loc[:-1]))
        allowed = f"; allowed here: {', '.join(known)}" if known else ""
        return f"unknown key {key!r}{hint}{allowed}"
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    if not loc and error["type"] == "value_error":  # a check across keys: its message names them
        return str(error["ctx"]["error"]) if "error" in error.get("ctx", {}) else error["msg"]
    given, hint = error.get("input"), ""
    if error["type"] == "literal_error" and isinstance(given, str):  # the allowed words, from pydantic's context
        hint = close_matches(given, re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", ""))))
    return f"bad value for {key!r}: {error['msg']} (got {given!r}){hint}"


def _describe_all(errors: list[dict[str, Any]], schema: type[BaseModel]) -> list[str]:
    """One line per problem: the errors pydantic gives per member of a union-typed field (keyed
    ``data.input_time.int`` and ``data.input_time.tuple[int, int]``) become one line naming the user's key, the
    value and what the field allows."""
    lines: list[str] = []
    unions: dict[str, int] = {}
    for error in errors:
        parts, annotation = _user_key(error["loc"], schema) if error["type"] != "extra_forbidden" else ([], None)
        if annotation is None:
            lines.append(_describe(error, schema))
            continue
        key = ".".join(parts)
        inner = [str(p) for p in error["loc"][len(parts) + 1:]]  # past the member tag: an item of a list member
        if key not in unions:
            unions[key] = len(lines)
            lines.append(f"bad value for {key!r}: got {error.get('input')!r}; allowed: {_allowed(annotation)}")
        if inner:
            lines[unions[key]] += f" ({key}.{'.'.join(inner)}={error.get('input')!r}: {error['msg']})"
    return lines


def _nested_match(model: Any, name: str, prefix: str) -> str:
    """" (did you mean 'training.max_minutes'?)" for a key given one level too high."""
    for field_name, field in getattr(model, "model_fields", {}).items():
        annotation = field.annotation
        annotation = _model_of(annotation)
        if annotation is not None and name in annotation.model_fields:
            return f" (did you mean {'.'.join(p for p in (prefix, field_name, name) if p)!r}?)"
    return ""


def validate(schema: type[M], data: dict[str, Any], *, source: str = "config") -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        problems = "\n  ".join(_describe_all(err.errors(), schema))
        # an error raised inside a user's module (module:attr) keeps its traceback as the cause; others are ours
        causes = [e.get("ctx", {}).get("error") for e in err.errors()]
        cause = next((c for c in causes if isinstance(c, BaseException) and user_code_traceback(c)), None)
        raise ConfigError(f"{source} has errors:\n  {problems}") from cause


def _whole_number(value: Any) -> Any:
    """Integer fields take whole numbers (operator and PINN configs alike): `training.epochs=true` ran 1 epoch, 2.5
    or "3" slipped through. A float
    with no fractional part (`training.epochs=1e3`, 100.0) is that integer, as it was before the check."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError("give a whole number (e.g. 3 or 1e3)")  # the caller names the key and the value
    return int(value)


# number arguments of problem factories (`sciml.registry.typed_call_args` checks a config's problem_args on them)
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFiniteFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

PositiveInt = Annotated[int, BeforeValidator(_whole_number), Field(gt=0)]
NonNegativeInt = Annotated[int, BeforeValidator(_whole_number), Field(ge=0)]
WholeInt = Annotated[int, BeforeValidator(_whole_number)]  # bounds by Field(...) where the field sets them


_READING_SAVED_RUN = contextvars.ContextVar("reading_saved_run", default=False)


@contextlib.contextmanager
def reading_saved_run():
    """Validate a finished run's config for evaluation or loading: the checks that only training needs (that the
    optimizer and guard build) are skipped, so a run trained with a user's optimizer module loads without it."""
    token = _READING_SAVED_RUN.set(True)
    try:
        yield
    finally:
        _READING_SAVED_RUN.reset(token)


def checks_training_components() -> bool:
    """False while `reading_saved_run` is active."""
    return not _READING_SAVED_RUN.get()


def load_config(schema: type[M], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> M:
    return validate(schema, apply_overrides(load_yaml(path), overrides), source=str(path))


def dump(model: BaseModel) -> str:
    """The fully resolved config as YAML (defaults included), as saved in a run folder."""
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
