"""Registries: components chosen by name in a config.

Every pluggable kind (models, optimizers, losses, PDE problems, dataset recipes) keeps one
`Registry`. Entries are registered explicitly under a chosen string; a user's own object plugs
in as ``"package.module:Attribute"``. Unknown names fail with the list of known ones and the
closest matches.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def close_matches(name: str, candidates) -> str:
    """A ``" (did you mean 'x'?)"`` suffix for an error message, or ``""``. Case is ignored in the
    comparison (``AdamW`` suggests ``adamw`` first); names are still matched exactly."""
    names = [str(c) for c in candidates]
    by_lower: dict[str, list[str]] = {}
    for c in names:
        by_lower.setdefault(c.lower(), []).append(c)
    same = by_lower.get(str(name).lower(), [])
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.6)
    matches = same + [c for low in close for c in by_lower[low] if c not in same]
    matches = matches[:max(3, len(same))]
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"


def _parameters(obj):
    """The parameters of `obj`'s call: a class's ``__init__``, or the function itself."""
    return inspect.signature(obj.__init__ if isinstance(obj, type) else obj).parameters.values()


def signature_kwargs(obj, skip=("self", "params")) -> list[str]:
    """The named keyword arguments `obj` (a class or function) takes, less `skip` (a ``**kwargs``
    catch-all is not counted: see `takes_any_kwargs`)."""
    return sorted(p.name for p in _parameters(obj)
                  if p.name not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def accepted_kwargs(obj, skip=("self", "params")) -> list[str] | None:
    """`signature_kwargs` of `obj`, following a class's ``**kwargs`` up its bases (FNO3dSpaceTime passes its
    own to FNO's ``__init__``): the names it takes, or None where a ``**kwargs`` leads nowhere named."""
    names: set[str] = set()
    for cls in obj.__mro__ if isinstance(obj, type) else (obj,):
        if cls is object:
            break
        if "__init__" not in vars(cls) and cls is not obj:
            continue  # its __init__ is a base's, met later in the walk
        names.update(signature_kwargs(cls, skip))
        if not takes_any_kwargs(cls):
            return sorted(names)
    return None


def takes_any_kwargs(obj) -> bool:
    """Whether `obj`'s signature ends in ``**kwargs``."""
    return any(p.kind is p.VAR_KEYWORD for p in _parameters(obj))


def check_kwargs(what: str, kwargs, valid: list[str]) -> None:
    """A ValueError naming the first of `kwargs` that `what` does not take, its close matches and
    the valid names."""
    for key in kwargs:
        if key not in valid:
            raise ValueError(f"{what} got an unknown keyword argument {key!r}{close_matches(key, valid)}; "
                             f"valid: {', '.join(valid)}")


def check_call_args(what: str, obj, args: dict, label: str = "the arguments") -> None:
    """A ValueError if calling `obj` with keyword `args` would fail on the arguments themselves (an unknown or
    missing one), naming the close matches and what it takes; nothing is called. Objects without a signature
    (builtins) are left to the call."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**args)
    except TypeError as err:
        takes = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in args if k not in takes]
        hint = close_matches(unknown[0], takes) if unknown and not takes_any_kwargs(obj) else ""
        raise ValueError(f"{what} rejected {label} {args}: {err}{hint}; it takes {takes}") from None


def typed_call_args(what: str, obj, args: dict, label: str) -> dict:
    """`args` checked against the types (and ``Annotated`` bounds, e.g. ``Field(gt=0)``) `obj`'s signature
    declares for them, with pydantic, as a config's own keys are: the values converted to those types (a
    ``float`` given as 1 becomes 1.0), or a ValueError naming ``{label}.{key}``, the value and what it must be,
    before anything is built. Arguments without an annotation, and objects whose signature or annotations cannot
    be read, pass unchanged; `check_call_args` judges unknown or missing names."""
    import typing

    from pydantic import ConfigDict, TypeAdapter, ValidationError

    try:
        parameters = inspect.signature(obj).parameters
        hints = typing.get_type_hints(obj, include_extras=True)
    except Exception:  # a builtin, or an annotation naming what its module does not import
        return dict(args)
    out = dict(args)
    for key, value in args.items():
        if key not in parameters or key not in hints or hints[key] is Any:
            continue
        try:
            adapter = TypeAdapter(hints[key], config=ConfigDict(arbitrary_types_allowed=True))
        except Exception:  # a type pydantic cannot check: left to the call
            continue
        try:
            out[key] = adapter.validate_python(value)
        except ValidationError as err:
            problem = "; ".join(e["msg"] for e in err.errors())
            default = parameters[key].default
            example = "" if default is inspect.Parameter.empty else f" (its default is {default!r})"
            raise ValueError(f"{label}.{key}={value!r} is not accepted by {what}: {problem}{example}") from None
    return out


def checked_problem_args(registry: "Registry", what: str, name: str, args: dict, label: str) -> dict:
    """`typed_call_args` of the factory `name` names in `registry` (registered or ``module:attr``); `args`
    unchanged where `name` names an instance, or nothing yet (the build then says what is wrong)."""
    try:
        factory = registry.get(name)
    except Exception:
        return dict(args)
    if not callable(factory) or not args:
        return dict(args)
    return typed_call_args(what, factory, args, label)


def _import_here_too(module_name: str):
    """`importlib.import_module`, also from the working directory: `python script.py` puts the script's
    folder on sys.path, but the `sciml` console script does not, so `problem: mypde:problem` with mypde.py
    beside the user would not be found."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        here = os.getcwd()
        if err.name != module_name.partition(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, here)
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError:
            sys.path.remove(here)
            raise


def load_object(path: str) -> Any:
    """Import ``"package.module:Attribute"`` (the attribute may be dotted)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{path!r} is not of the form 'package.module:Attribute'")
    try:
        obj: Any = _import_here_too(module_name)
    except ModuleNotFoundError as err:
        named = err.name is None or module_name == err.name or module_name.startswith(err.name + ".")
        if not named:  # the module was found; an import inside it failed: the user's traceback says where
            raise
        raise ValueError(f"cannot import module {module_name!r} named in {path!r}: {err} (looked in the working "
                         f"directory and on sys.path; install it or run from the folder that holds it)") from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            names = [n for n in dir(obj) if not n.startswith("_")]
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})"
                             f"{close_matches(part, names)}") from err
    return obj


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str = ""
    source: str = ""  # paper or library the entry comes from, shown by `sciml list`


class Registry(Generic[T]):
    """A name -> object table for one kind of component.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("fno", description="Fourier neural operator", source="Li et al. 2021")
    ... class FNO: ...
    >>> MODELS.build("fno")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str = "", source: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, description=description, source=source)
            return obj

        return deco

    def add(self, name: str, obj: T, *, description: str = "", source: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} already registered by {self._entries[name].obj!r}")
        if not description:  # the docstring's first sentence, its lines joined
            doc = " ".join((getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0].split())
            description = doc.split(". ")[0].rstrip(".")
        self._entries[name] = Entry(name, obj, description, source)

    def get(self, name: str) -> T:
        """The object registered as `name`, or imported from ``"module:Attribute"``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        if ":" in name:
            return load_object(name)
        try:
            return self._entries[name].obj
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise ValueError(
                f"unknown {self.kind} {name!r}{close_matches(name, self._entries)}; known: {known}; "
                f"or give your own as 'package.module:Attribute'"
            ) from None

    def instance(self, name: str, cls: type, /, **args: Any) -> Any:
        """`name`'s object if it is a `cls` (then `args` must be empty), else what calling it with
        `args` returns, which must be a `cls`: for entries that are instances or factories of one."""
        obj = self.get(name)
        if isinstance(obj, cls):
            if args:
                raise ValueError(f"{self.kind} {name!r} is a {cls.__name__} object; it takes no arguments (got {sorted(args)})")
            return obj
        if not callable(obj):
            raise TypeError(f"{name!r} is neither a {cls.__name__} nor a function returning one (got {type(obj).__name__})")
        check_call_args(f"{self.kind} {name!r}", obj, args)
        made = obj(**args)
        if not isinstance(made, cls):
            raise TypeError(f"{name!r} returned {type(made).__name__}, not a {cls.__module__}.{cls.__name__}")
        return made

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the registered object (usually a class) with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[k] for k in sorted(self._entries)]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


_SCIML_FOLDERS = (str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent / "solvers"))


def _is_users_file(path: str) -> bool:
    """A file outside sciml, solvers, the standard library and installed packages. A relative name that is no file
    is not one: a compiled module's frame names its source as built (h5py's "h5py/_objects.pyx"), which resolved
    against the working folder looked like a user's file, and every h5py error was shown with a traceback."""
    if not Path(path).is_absolute() and not Path(path).is_file():
        return False
    path = str(Path(path).resolve())
    return not path.startswith(_SCIML_FOLDERS) and "site-packages" not in path and "/lib/python" not in path


def user_modules(config: Any) -> dict[str, dict[str, str]]:
    """For each ``module:attr`` in `config` (nested dicts and lists) whose module is a user's file already
    imported: its path and the sha256 of its source, so a run folder says which code it ran."""
    import hashlib

    found: dict[str, dict[str, str]] = {}

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and ":" in value:
            module = sys.modules.get(value.partition(":")[0])
            path = getattr(module, "__file__", None)
            if path and _is_users_file(path) and Path(path).is_file():
                found[module.__name__] = {"file": str(Path(path).resolve()),
                                          "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}

    walk(config)
    return found


def user_code_traceback(err: BaseException) -> str:
    """The traceback of `err` or of the error it was raised from, when one of its frames is in a file outside
    sciml, solvers and installed packages that sciml called (a user's module named as module:attr); "" otherwise."""
    import traceback

    seen, chain = set(), err
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        called_by_us = False  # frames above sciml's first are the caller's (a script, a test), not a component's
        for frame in traceback.extract_tb(chain.__traceback__):
            if str(Path(frame.filename).resolve()).startswith(_SCIML_FOLDERS):
                called_by_us = True
            elif called_by_us and _is_users_file(frame.filename) and not frame.filename.startswith("<"):
                return "".join(traceback.format_exception(type(chain), chain, chain.__traceback__, chain=False))
        chain = chain.__cause__ or chain.__context__
    return ""
