"""Frozen config dataclasses <-> TOML/JSON mappings, with unknown keys rejected (docs/architecture.md: Config).

Each component owns its own frozen dataclass (``UNetConfig`` in ``nets``, ``TrainConfig`` in ``training`` ...);
this module only converts between them and plain mappings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from diffuscope.checks import validate
from diffuscope.checks.errors import UsageError, one_line, quote

T = TypeVar("T")
MAX_CONFIG_BYTES = 1024 * 1024  # a config file (ours are ~2 KB)


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path} is not valid TOML: {one_line(str(e), 160)}") from None
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror or e}") from None


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a TOML/JSON value to the annotated field type, failing on a clear mismatch."""
    origin = typing.get_origin(tp)
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise UsageError(f"config {where} must be a table, got {quote(value)}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except UsageError as e:
                errors.append(str(e))
        raise UsageError(errors[0] if errors else f"config {where}: bad value {quote(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise UsageError(f"config {where} must be a list, got {quote(value)}")
        (elem,) = typing.get_args(tp)[:1]
        return tuple(_coerce(elem, v, where) for v in value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            valid = ", ".join(repr(a) for a in typing.get_args(tp))
            raise UsageError(f"config {where} = {quote(value)} is not one of: {valid}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UsageError(f"config {where} must be a finite number, got {value}")
        return float(value)
    if tp in (int, str, bool, float) and type(value) is not tp:
        kind = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}[tp]
        raise UsageError(f"config {where} must be {kind}, got {quote(value)}")
    return value


def from_dict(cls: type[T], mapping: dict[str, Any], where: str = "") -> T:
    """Build a (possibly nested) frozen dataclass from a mapping; unknown keys, wrong types and values outside
    ``validate.RANGES`` are errors."""
    if not isinstance(mapping, dict):
        raise UsageError(f"config {where or 'root'} must be a table (JSON object), got {quote(mapping)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        prefix = f"[{where}] " if where else ""
        raise UsageError(
            f"unknown config key {prefix}{quote(unknown[0])} (valid: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in mapping.items():
        sub = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, sub)
    obj = cls(**kwargs)
    validate.check_ranges(obj, where, recursive=False)  # nested dataclasses were checked when they were built
    return obj


def merge(base: Any, overrides: dict[str, Any]) -> Any:
    """`dataclasses.replace` that recurses into nested config tables and drops ``None`` overrides."""
    changes = {}
    for name, value in overrides.items():
        if value is None:
            continue
        current = getattr(base, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = merge(current, value)
        else:
            changes[name] = value
    return dataclasses.replace(base, **changes) if changes else base


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def to_json(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=False)
