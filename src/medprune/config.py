"""Typed run configurations: dataclasses composed of small parts, filled from YAML plus ``key=value`` overrides.

Every CLI command owns one dataclass; each field is declared once, with its help text beside it, by :func:`option`.
A field whose type is itself a dataclass is a *part* (a ranking, a score recipe, a fine-tuning recipe) that several
command configs contain. :func:`build_config` merges (defaults ← YAML file ← overrides) and accepts three spellings
of a part's option: nested (``ranking: {scope: layer}``), dotted (``ranking.scope=layer``) and flat (``scope=layer``,
today's keys: a flat key that is no top-level field names the one part leaf of that name, or an alias declared on the
part's field). It refuses unknown keys and values outside a ``Literal`` with the list of valid ones;
:func:`save_config` writes the resolved config (nested) beside the results, and :func:`leaf_values` reads a nested or
an old flat record into one comparable form.

Requests beyond what a run can finish are refused when the config is built: an option may declare its bound beside
its help (``limit``: the largest value, of a number or of each number in a list, or ``{"inner.key": bound}`` inside
a mapping option; ``max_items``: the most entries of a list). :func:`check_limits` refuses a value above its bound
with one line naming the key, the value and the bound, unless the limits are lifted: ``--no-limits`` on the command
line, or the key ``limits: false`` (:data:`LIMITS_SWITCH`) in a config file or ``--set`` (:func:`limits_scope`).

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     epochs: int = option(1, help="training epochs")
...     scope: Literal["global", "layer"] = option("global", help="ranking scope")
>>> build_config(Demo, overrides={"epochs": "3"})
Demo(epochs=3, scope='global')
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from medprune.atomic import write_text_atomic

T = TypeVar("T")

__all__ = [
    "LIMITS_KEY",
    "LIMITS_SWITCH",
    "ConfigError",
    "LimitError",
    "LimitSwitch",
    "check_limits",
    "limits_enabled",
    "limits_requested",
    "limits_scope",
    "lift_limits",
    "build_config",
    "config_to_dict",
    "flat_keys",
    "flat_names",
    "flat_record",
    "leaf_defaults",
    "leaf_paths",
    "leaf_values",
    "option",
    "parse_overrides",
    "part_type",
    "save_config",
]


class ConfigError(ValueError):
    """A configuration value or key is not allowed; the message names it and the allowed values."""


class LimitError(ConfigError):
    """A request beyond a bound this machine is held to (an option's ``limit``, a batch that does not fit in memory);
    ``--no-limits`` lifts it."""


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,  # noqa: A002 - the word every CLI library uses
    choices: Iterable[Any] | None = None,
    aliases: Iterable[str] | Mapping[str, str] = (),
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    shown_default: str | None = None,
    required: bool = False,
    fixed: Iterable[str] = (),
    limit: float | Callable[[], float] | Mapping[str, float] | None = None,
    max_items: int | None = None,
) -> Any:
    """A dataclass field that carries its own help text (``medprune CMD -h`` reads it).

    Args:
        default: the default value (or give ``default_factory``).
        help: what the option is, one phrase; valid values and the default are appended by the CLI.
        choices: the valid values when the type does not say them (a ``Literal`` does).
        aliases: other keys accepted for it: on a plain field, old names (``("out_dir",)``); on a part field, old flat
            keys of its leaves (``{"finetune_lr": "lr"}``).
        default_factory: builds the default (lists, dicts, parts with per-command defaults).
        shown_default: what a default of ``None`` stands for, shown in the help instead of ``none``.
        required: the option has no usable default (the help says ``required``).
        fixed: on a part field, the part's leaves this command decides itself (no keys: refused when given, left out
            of the saved config), e.g. the sweep's recipe epochs, which its ``finetune_epochs`` grid axis sets.
        limit: the largest value a run may ask for (a number, or a function of the machine giving one): of a number
            option, or of each number in a list option; on a mapping option, ``{"inner.key": bound}`` (e.g.
            ``{"ig.steps": 10000}``). Checked by :func:`check_limits` when the config is built.
        max_items: the most entries a list option may hold (e.g. the rates of a sweep).
    """
    metadata: dict[str, Any] = {"help": help}
    if limit is not None:
        metadata["limit"] = dict(limit) if isinstance(limit, Mapping) else limit
    if max_items is not None:
        metadata["max_items"] = max_items
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if aliases:
        metadata["aliases"] = dict(aliases) if isinstance(aliases, Mapping) else tuple(aliases)
    if shown_default is not None:
        metadata["shown_default"] = shown_default
    if required:
        metadata["required"] = True
    if fixed:
        metadata["fixed"] = tuple(fixed)
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


#: The key of the switch that lifts every bound (:func:`check_limits`, the memory check before a run): not an option of
#: any command config (it cannot change a result, so run records never hold it) but accepted by every one.
LIMITS_KEY = "limits"


@dataclasses.dataclass(frozen=True)
class LimitSwitch:
    """The one switch of the bounds every command holds requests to (declared here once; the CLI's ``--limits /
    --no-limits`` and the ``limits`` key of ``--config`` / ``--set`` read it)."""

    limits: bool = option(
        True,
        help="refuse, before any work, requests beyond medprune's bounds (steps, epochs, resamples, workers, rates, "
        "image size, classes: each option's bound is in its help) and batches whose estimated memory exceeds what "
        "this machine has; false (--no-limits) runs them anyway",
    )


#: The declaration of the switch (its help and default), for the CLI.
LIMITS_SWITCH: dataclasses.Field = next(f for f in dataclasses.fields(LimitSwitch) if f.name == LIMITS_KEY)  # type: ignore[type-arg]

_LIMITS: ContextVar[bool] = ContextVar("medprune_limits", default=True)


def limits_enabled() -> bool:
    """Whether bounds are enforced in the current scope (:func:`limits_scope`); true unless lifted."""
    return _LIMITS.get()


@contextmanager
def limits_scope(enabled: bool = True) -> Iterator[None]:
    """Enforce (or, ``enabled=False``, lift) the bounds inside the block; the state before is restored after it, also
    when :func:`lift_limits` was called inside (the CLI runs each command in one such block).

    >>> with limits_scope(False):
    ...     limits_enabled()
    False
    """
    token = _LIMITS.set(enabled)
    try:
        yield
    finally:
        _LIMITS.reset(token)


def lift_limits() -> None:
    """Lift the bounds for the rest of the enclosing :func:`limits_scope` (the CLI, on ``--no-limits``)."""
    _LIMITS.set(False)


def limits_requested(yaml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> bool:
    """The :data:`LIMITS_KEY` switch of a command: from ``overrides`` (flags, ``--set``), else the config file, else
    true.

    Raises:
        ConfigError: a value that is not true / false.
    """
    value: Any = True
    if yaml_path is not None and Path(yaml_path).is_file():
        loaded = _load_yaml(Path(yaml_path))
        if isinstance(loaded, dict) and LIMITS_KEY in loaded:
            value = loaded[LIMITS_KEY]
    if overrides and overrides.get(LIMITS_KEY) is not None:
        value = overrides[LIMITS_KEY]
    return bool(_coerce(LIMITS_KEY, value, bool))


def _bound(value: Any) -> float:
    return float(value()) if callable(value) else float(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(key: str, value: Any, bound: float) -> None:
    shown = int(bound) if float(bound).is_integer() else bound
    raise LimitError(
        f"{key}={value!r} is above its bound {shown}; pass --no-limits (or set limits=false) to run it anyway"
    )


def _nested(value: Any, path: str) -> Any:
    for name in path.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value


def check_limits(config: Any, keys: Mapping[str, str] | None = None) -> None:
    """Refuse a value of ``config`` above its option's bound (``limit`` / ``max_items`` of :func:`option`), in every
    part too; nothing is checked while the bounds are lifted (:func:`limits_scope`).

    Args:
        config: a config dataclass.
        keys: ``{dotted path: key as the user gave it}`` (errors name the key given; else the dotted path).

    Raises:
        LimitError: naming the key, the value and the bound.

    >>> @dataclasses.dataclass
    ... class Run:
    ...     epochs: int = option(1, help="epochs", limit=100)
    >>> check_limits(Run(epochs=1000))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medprune.config.LimitError: epochs=1000 is above its bound 100; pass --no-limits ...
    """
    if not limits_enabled():
        return
    _check_limits(config, keys or {}, "")


def _check_limits(config: Any, keys: Mapping[str, str], prefix: str, skip: Iterable[str] = ()) -> None:
    """:func:`check_limits` on ``config`` whose fields sit at ``prefix``; ``skip``: leaves its part field fixes."""
    parts = _parts(type(config))
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        value = getattr(config, f.name)
        path = f"{prefix}{f.name}"
        key = keys.get(path, path)
        if f.name in parts:
            if value is not None:
                _check_limits(value, keys, f"{path}.", f.metadata.get("fixed", ()))
            continue
        max_items = f.metadata.get("max_items")
        if max_items is not None and isinstance(value, (list, tuple)) and len(value) > max_items:
            raise LimitError(
                f"{key} holds {len(value)} entries, above its bound {max_items}; pass --no-limits (or set "
                "limits=false) to run it anyway"
            )
        limit = f.metadata.get("limit")
        if limit is None or value is None:
            continue
        if isinstance(limit, Mapping):
            for inner_path, bound in limit.items():
                item = _nested(value, inner_path)
                if _number(item) and item > _bound(bound):
                    _refuse(keys.get(f"{path}.{inner_path}", f"{key}.{inner_path}"), item, _bound(bound))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if _number(item) and item > _bound(limit):
                    _refuse(f"{key}[{i}]", item, _bound(limit))
        elif _number(value) and value > _bound(limit):
            _refuse(key, value, _bound(limit))


def part_type(annotation: Any) -> type | None:
    """The dataclass a field of type ``annotation`` holds (a part), or ``None`` for a plain value."""
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


def _parts(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: t for f in dataclasses.fields(cls) if (t := part_type(hints[f.name])) is not None}


def leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Dotted paths of every option: plain (non-part) fields, parts' leaves recursively (``ranking.scope``) except
    the leaves a part field fixes (:func:`option`'s ``fixed``)."""
    parts = _parts(cls)
    paths: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in parts:
            fixed = {f"{prefix}{f.name}.{leaf}" for leaf in f.metadata.get("fixed", ())}
            paths.extend(p for p in leaf_paths(parts[f.name], f"{prefix}{f.name}.") if p not in fixed)
        else:
            paths.append(f"{prefix}{f.name}")
    return paths


def flat_keys(cls: type) -> dict[str, str]:
    """``{flat key: dotted path}``: every key a config file or ``--set`` may use without naming the part.

    Top-level fields (and their aliases) are themselves; a part leaf's own name maps to it when no top-level field
    and no other part leaf has that name; a part field's ``aliases`` map old flat keys to its leaves.
    """
    parts = _parts(cls)
    keys: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.name not in parts:
            keys[f.name] = f.name
            keys.update({alias: f.name for alias in f.metadata.get("aliases", ())})
    candidates: dict[str, list[str]] = {}
    for f in dataclasses.fields(cls):
        if f.name not in parts:
            continue
        fixed = {f"{f.name}.{leaf}" for leaf in f.metadata.get("fixed", ())}
        for path in (p for p in leaf_paths(parts[f.name], f"{f.name}.") if p not in fixed):
            candidates.setdefault(path.rsplit(".", 1)[1], []).append(path)
        for alias, leaf in dict(f.metadata.get("aliases", {})).items():
            keys.setdefault(alias, f"{f.name}.{leaf}")
    for name, paths in candidates.items():
        if len(paths) == 1:
            keys.setdefault(name, paths[0])
    return keys


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
        _check_finite(name, value)
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
            coerced = annotation(value)
        except (TypeError, ValueError, OverflowError) as error:
            raise ConfigError(f"{name} must be {annotation.__name__}, got {value!r}") from error
        if isinstance(coerced, float) and not math.isfinite(coerced):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return coerced
    return value


def _check_finite(name: str, value: Any) -> None:
    """Refuse a NaN or infinite number anywhere inside ``value`` (a mapping option), naming its key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(f"{name}.{key}", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(f"{name}[{i}]", item)


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


def _dotted(cls: type, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Any mix of nested, dotted and flat keys -> ``{dotted path: value}`` (later keys win); unknown keys raise."""
    keys, parts = flat_keys(cls), _parts(cls)
    leaves = set(leaf_paths(cls))
    result: dict[str, Any] = {}
    for key, value in values.items():
        key = str(key)
        if key in parts:
            if isinstance(value, parts[key]):
                result[key] = value
            elif isinstance(value, Mapping):
                fixed = sorted(set(value) & set(_fields_fixed(cls, key)))
                if fixed:
                    raise ConfigError(
                        f"{prefix}{key}.{fixed[0]} is not an option of {cls.__name__}: it is set by the command itself"
                    )
                inner = _dotted(parts[key], value, f"{prefix}{key}.")
                result.update({f"{key}.{k}": v for k, v in inner.items()})
            else:
                raise ConfigError(f"{prefix}{key} must be a mapping of {parts[key].__name__} options, got {value!r}")
            continue
        head, _, rest = key.partition(".")
        if rest and head in parts and f"{prefix}{key}" not in _fixed(cls, prefix):
            inner = _dotted(parts[head], {rest: value}, f"{prefix}{head}.")
            result.update({f"{head}.{k}": v for k, v in inner.items()})
        elif key in keys:
            result[keys[key]] = value
        else:
            valid = sorted(set(keys) | {p for p in leaves if "." in p})
            raise ConfigError(
                f"unknown option(s) [{prefix + key!r}] for {cls.__name__}; valid options: {', '.join(valid)}"
            )
    return result


def _fields_fixed(cls: type, name: str) -> tuple[str, ...]:
    """The leaves part field ``name`` of ``cls`` fixes."""
    return next((tuple(f.metadata.get("fixed", ())) for f in dataclasses.fields(cls) if f.name == name), ())


def _fixed(cls: type, prefix: str = "") -> set[str]:
    """Dotted paths (with ``prefix``) of every leaf a part field of ``cls`` fixes."""
    return {f"{prefix}{f.name}.{leaf}" for f in dataclasses.fields(cls) for leaf in f.metadata.get("fixed", ())}


def _build(
    cls: type[T],
    values: Mapping[str, Any],
    base: T | None = None,
    prefix: str = "",
    keys: Mapping[str, str] | None = None,
) -> T:
    """``cls`` from ``{dotted path: value}``: parts start from ``base``'s (or the field's default) part. Errors name an
    option by the key it was given as (``keys``: ``{dotted path: key given}``), else by its dotted path."""
    keys = keys or {}
    hints = typing.get_type_hints(cls)
    parts = _parts(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in parts:
            inner = {k.split(".", 1)[1]: v for k, v in values.items() if k.split(".", 1)[0] == f.name and "." in k}
            if f.name in values:  # the part given whole
                default = values[f.name]
            elif base is not None:
                default = getattr(base, f.name)
            else:
                default = _field_default(f)
                default = None if default is dataclasses.MISSING else default
            if inner or default is None:
                kwargs[f.name] = _build(parts[f.name], inner, default, f"{prefix}{f.name}.", keys)
            else:
                kwargs[f.name] = default
        elif f.name in values:
            path = f"{prefix}{f.name}"
            kwargs[f.name] = _coerce(keys.get(path, path), values[f.name], hints[f.name])
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)  # type: ignore[type-var]
    except ConfigError as error:
        if not prefix:
            raise
        text = str(error)
        name = re.match(r"\w+", text)
        path = f"{prefix}{name.group(0)}" if name else prefix.rstrip(".")
        if name and path in keys:
            text = keys[path] + text[name.end() :]
        elif name and hasattr(cls, name.group(0)):
            text = prefix + text
        raise ConfigError(text) from None


def _given_keys(cls: type, values: Mapping[str, Any]) -> dict[str, str]:
    """``{dotted path: key}`` of the flat and dotted keys in ``values`` (nested ones are named by their path)."""
    names: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and key in _parts(cls):
            continue
        try:
            paths = list(_dotted(cls, {key: value}))
        except ConfigError:
            continue
        if len(paths) == 1:
            names[paths[0]] = str(key)
    return names


def build_config(cls: type[T], yaml_path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build a config dataclass from defaults, an optional YAML file and overrides (later wins).

    Keys may be nested (``ranking: {scope: layer}``), dotted (``ranking.scope``) or flat (``scope``; see
    :func:`flat_keys`).

    A key ``limits`` (:data:`LIMITS_KEY`) is the switch of the bounds, not an option: ``false`` builds the config
    without :func:`check_limits` (which runs otherwise, unless lifted by :func:`limits_scope`).

    Raises:
        ConfigError: unknown key (with the valid keys), wrong type or a value outside a ``Literal``.
        LimitError: a value above its option's bound (:func:`check_limits`).
    """
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    own_switch = LIMITS_KEY in {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    switch: Any = True
    if yaml_path is not None:
        path = Path(yaml_path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; --config takes a YAML file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = _load_yaml(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of options, got {type(loaded).__name__}")
        if not own_switch:
            switch = loaded.pop(LIMITS_KEY, switch)
        values.update(_dotted(cls, loaded))
        keys.update(_given_keys(cls, loaded))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not own_switch:
        switch = given.pop(LIMITS_KEY, switch)
    values.update(_dotted(cls, given))
    keys.update(_given_keys(cls, given))
    config = _build(cls, values, keys=keys)
    if _coerce(LIMITS_KEY, switch, bool):
        check_limits(config, keys)
    return config


def leaf_values(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config (nested as :func:`save_config` writes it, or an old flat one) as ``{dotted path: value}``.

    Keys this class does not know are kept under their own name, so a comparison still sees them: a record
    ``{"scope": "layer"}`` and one ``{"ranking": {"scope": "layer"}}`` both read ``{"ranking.scope": "layer"}``.
    """
    result: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and _fields_fixed(cls, str(key)):  # a record's fixed leaves: not options
            value = {k: v for k, v in value.items() if k not in _fields_fixed(cls, str(key))}
        try:
            result.update(_dotted(cls, {key: value}))
        except ConfigError:
            result[str(key)] = value
    return result


def flat_names(cls: type) -> dict[str, str]:
    """``{dotted path: flat key}`` of every part leaf: the name it had before parts existed, a part field's alias for
    it (``finetune.lr`` -> ``finetune_lr``), else its own name when unique (``ranking.scope`` -> ``scope``); a leaf
    with neither keeps its dotted path (and is left out)."""
    names: dict[str, str] = {}
    for key, path in flat_keys(cls).items():
        if "." in path and (path not in names or key != path.rsplit(".", 1)[1]):
            names[path] = key  # aliases win over the leaf's own name
    return names


def flat_record(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """A config dict (nested or flat) with every leaf under its flat key (:func:`flat_names`), else its dotted path.

    Hashes and records made from flat configs (study sweep keys) stay the same when read through this.
    """
    names = flat_names(cls)
    return {names.get(path, path): value for path, value in leaf_values(cls, data).items()}


def leaf_defaults(cls: type) -> dict[str, Any]:
    """``{dotted path: default}`` of every leaf that has a default, JSON-typed as :func:`config_to_dict` writes it."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults: dict[str, Any] = {}
    for path in leaf_paths(cls):
        head, *rest = path.split(".")
        value = _field_default(fields[head])
        if value is dataclasses.MISSING:
            continue
        for name in rest:
            value = getattr(value, name)
        defaults[path] = json.loads(json.dumps(value, default=str))
    return defaults


def _field_default(field: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


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
    """A JSON-serialisable dict of a config dataclass (parts nested; the leaves a part field fixes left out)."""
    data = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    for path in _fixed(type(config)):
        head, leaf = path.split(".", 1)
        if isinstance(data.get(head), dict):
            data[head].pop(leaf, None)
    return data


def save_config(config: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config as YAML in ``out_dir`` (atomically: a temporary file renamed into place) and return
    its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / name, yaml.safe_dump(config_to_dict(config), sort_keys=False))
