"""Typed run configurations: dataclasses filled from YAML plus ``key=value`` overrides, validated at the boundary.

Every CLI command owns one dataclass. :func:`build_config` merges (defaults ← YAML file ← overrides), refuses unknown
keys and values outside a ``Literal`` with the list of valid ones, and :func:`save_config` writes the resolved config
beside the results.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     epochs: int = 1
...     scope: Literal["global", "layer"] = "global"
>>> build_config(Demo, overrides={"epochs": "3"})
Demo(epochs=3, scope='global')
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is not allowed; the message names it and the allowed values."""


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not allowed; valid values: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(name, value, arg)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if annotation in (int, float, str):
        if annotation is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            return annotation(value)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{name} must be {annotation.__name__}, got {value!r}") from error
    return value


def _load_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors and non-UTF-8 bytes become a :class:`ConfigError` naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"config file {where}: invalid YAML ({problem})") from None


def build_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build a config dataclass from defaults, an optional YAML file and overrides (later wins).

    Raises:
        ConfigError: unknown key (with the valid keys), wrong type or a value outside a ``Literal``.
    """
    values: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = _load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of options, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields, key=str)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for {cls.__name__}; valid options: {', '.join(sorted(fields))}")
    coerced = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
    return cls(**coerced)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["a=1", "b=x,y"]`` (CLI ``--set``) into a dict of strings; a pair without ``=`` raises."""
    result: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        result[key.strip().replace("-", "_")] = value.strip()
    return result


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def save_config(config: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config as YAML in ``out_dir`` and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path
