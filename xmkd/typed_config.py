"""YAML option files read into a dataclass, every key checked against the field's type.

The pipelines that take a flat option file (``xmkd pipeline linear-eval --config
experiments/eval/svm_*.yaml``) describe their options as a dataclass, like the LightningCLI runs
describe theirs with typed ``__init__`` signatures; :func:`load_options` refuses an unknown key or
a value of the wrong type with a :class:`~xmkd.errors.ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from xmkd.errors import ConfigError

__all__ = ["check_value", "load_options"]


def check_value(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (as YAML gives it) fits ``annotation``: ``int``, ``float`` (ints accepted),
    ``str``, ``bool``, ``None``, ``Literal[...]``, unions and ``list[...]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(check_value(value, a) for a in typing.get_args(annotation))
    if origin is Literal:
        return value in typing.get_args(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        return isinstance(value, list) and all(check_value(v, item) for v in value)
    if annotation is Any:
        return True
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    raise TypeError(f"check_value does not handle {annotation!r}")


def _describe(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def read_yaml(path: str | Path) -> Any:
    """The YAML document in ``path``; a syntax error names the file and the line."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("config", f"{where}: not valid YAML ({problem})") from None


def load_options(path: str | Path, schema: type) -> dict[str, Any]:
    """The options in YAML file ``path``, each key a field of dataclass ``schema`` with a value of
    the field's type (keys may use ``-`` for ``_``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", f"{path} not found")
    loaded = read_yaml(path) or {}
    if not isinstance(loaded, Mapping):
        raise ConfigError("config", f"{path} must hold a mapping of options, got {type(loaded).__name__}")
    hints = typing.get_type_hints(schema)
    names = {f.name for f in dataclasses.fields(schema)}
    out: dict[str, Any] = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(str(key), f"unknown option in {path} (options: {', '.join(sorted(names))})")
        annotation = hints[name]
        if not check_value(value, annotation):
            raise ConfigError(str(key), f"in {path}: expected {_describe(annotation)}, got {value!r}")
        out[name] = value
    return out
