"""Shared CLI plumbing for config-driven commands: ``--config YAML``, a few flags, ``--set key=value``.

Later wins: dataclass defaults ← YAML ← flags ← ``--set``; unknown keys and disallowed values are refused by
:func:`medprune.config.build_config` with the valid ones listed.

Help comes from the field itself: its ``help`` metadata (:func:`medprune.config.option`), followed by its valid values
(a ``Literal`` type, a ``metadata["choices"]`` or the registry of that kind of name) and its default (the command's
own: a part's default comes from the command config's part). A flag or key names a field of the config or a leaf of
one of its parts (``scope``, or ``ranking.scope``; :func:`medprune.config.flat_keys`). Every key without a flag is
listed the same way after the options, as a key for ``--config`` / ``--set``. An option with a bound
(:func:`medprune.config.option`'s ``limit`` / ``max_items``) says it; ``--limits / --no-limits`` (or the key ``limits``)
switches every bound of the command (:data:`medprune.config.LIMITS_SWITCH`).
"""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from medprune.config import (
    LIMITS_KEY,
    LIMITS_SWITCH,
    build_config,
    flat_keys,
    flat_names,
    leaf_paths,
    lift_limits,
    limits_requested,
    parse_overrides,
    part_type,
)
from medprune.data import available_datasets
from medprune.models import available_models
from medprune.options import SAMPLINGS
from medprune.scoring.registry import available_scorers
from medprune.sweep.protocols import PROTOCOLS

T = TypeVar("T")

#: Valid values of plain ``str`` fields, by field name: names that live in a registry rather than a ``Literal``.
NAMED_VALUES: dict[str, Callable[[], Sequence[str]]] = {
    "method": available_scorers,
    "methods": available_scorers,
    "controls": available_scorers,
    "sampling": lambda: [*SAMPLINGS, "none"],
    "samplings": lambda: SAMPLINGS,
    "model": available_models,
    "architectures": available_models,
    "dataset": available_datasets,
    "datasets": available_datasets,
    "protocols": lambda: list(PROTOCOLS),
    "device": lambda: ("auto", "cpu", "cuda", "cuda:N"),
}


def _resolve(cls: type, name: str) -> tuple[type, dataclasses.Field, Any]:  # type: ignore[type-arg]
    """The class holding the field a key names (``scope``, ``ranking.scope``), that field and its default for ``cls``
    (a part's leaf defaults to the value in ``cls``'s own default part)."""
    path = flat_keys(cls).get(name, name).split(".")
    owner, default = cls, None
    for i, step in enumerate(path):
        fields = {f.name: f for f in dataclasses.fields(owner)}
        if step not in fields:
            raise KeyError(f"{cls.__name__} has no option {name!r}")
        field = fields[step]
        value = field_default(field) if i == 0 else getattr(default, step)
        if i == len(path) - 1:
            return owner, field, value
        owner, default = typing.get_type_hints(owner)[step], value
    raise KeyError(name)


def help_text(cls: type, name: str) -> str:
    """The help text of the option ``name`` of ``cls`` (its field's ``help`` metadata; the name when it has none)."""
    return str(_resolve(cls, name)[1].metadata.get("help") or name.replace("_", " "))


def _literals(annotation: Any) -> list[Any]:
    """Values of every ``Literal`` inside ``annotation`` (through ``Optional``, ``list[...]``)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    values: list[Any] = []
    for arg in get_args(annotation):
        values.extend(v for v in _literals(arg) if v not in values)
    return values


def valid_values(cls: type, name: str) -> list[str]:
    """The valid values of option ``name`` of ``cls`` (empty when any value of its type is allowed)."""
    owner, field, _ = _resolve(cls, name)
    name = field.name
    if field.metadata.get("choices"):
        return [str(v) for v in field.metadata["choices"]]
    annotation = typing.get_type_hints(owner)[name]
    literals = _literals(annotation)
    if literals:
        return [str(v) for v in literals]
    if name in NAMED_VALUES and _is_str(annotation):
        return [str(v) for v in NAMED_VALUES[name]()]
    return []


def _is_str(annotation: Any) -> bool:
    return annotation is str or any(_is_str(a) for a in get_args(annotation))


def field_default(field: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """The default value of a dataclass field (``MISSING`` when it has none)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def format_default(value: Any) -> str:
    """A default the way it is written on the command line or in YAML."""
    if value is dataclasses.MISSING:
        return "required"
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "empty"
    if isinstance(value, dict):
        return "empty" if not value else str(value)
    return str(value)


def field_help(cls: type, name: str) -> str:
    """``<what it is>; valid values: ... (default: ...)`` for option ``name`` of ``cls``."""
    _, field, value = _resolve(cls, name)
    text = help_text(cls, name).rstrip(".")
    default = "required" if field.metadata.get("required") else format_default(value)
    if default == "none" and field.metadata.get("shown_default"):  # what none stands for, e.g. "the checkpoint's"
        default = str(field.metadata["shown_default"])
    values = valid_values(cls, name)
    if values:
        text = f"{text}; valid values: {', '.join(values)}"
    return f"{text}{_bound_text(field)} (default: {default})"


def _bound_text(field: dataclasses.Field) -> str:  # type: ignore[type-arg]
    """``; at most N ...`` for an option with a bound (``limit`` / ``max_items``), else empty."""
    limit, items = field.metadata.get("limit"), field.metadata.get("max_items")
    bounds = []
    if isinstance(limit, Mapping):
        bounds.extend(f"{key} at most {value}" for key, value in limit.items())
    elif limit is not None:
        bounds.append(f"at most {limit() if callable(limit) else limit}")
    if items is not None:
        bounds.append(f"at most {items} entries")
    return f"; {', '.join(bounds)} unless --no-limits" if bounds else ""


def _is_bool(annotation: Any) -> bool:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return annotation is bool or (get_origin(annotation) in (typing.Union, types.UnionType) and args == [bool])


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) in (list, tuple) or any(get_origin(a) in (list, tuple) for a in get_args(annotation))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--quiet``, accepted after the command name too (they also exist before it)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging and tracebacks on errors (default: off)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no info logs, warnings and errors only; also MEDPRUNE_QUIET=1 (default: off)",
    )


def add_positional(parser: argparse.ArgumentParser, cls: type, name: str, *, optional: bool = True) -> None:
    """A positional argument for field ``name`` of ``cls`` (e.g. the checkpoint), its help from ``cls``."""
    help_text = field_help(cls, name).replace("%", "%%")
    if optional:
        parser.add_argument(name, nargs="?", metavar=name.upper(), help=help_text)
    else:
        parser.add_argument(name, metavar=name.upper(), help=help_text)


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, flags: Mapping[str, str], *, run_folder: bool = True
) -> None:
    """Add ``--config``, one option per ``flags`` entry (``--flag -> field``), ``--set``, ``--verbose``, ``--quiet``
    and (for commands that write a run folder, ``run_folder``) ``--overwrite``; every help text comes from ``cls``
    (see the module docstring). A ``bool`` field's flag is a pair ``--flag/--no-flag``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser.set_defaults(_config_class=cls)
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML file of {cls.__name__} options, keys as listed here (default: none)"
    )
    for flag, name in flags.items():
        text = field_help(cls, name).replace("%", "%%")
        owner, field, _ = _resolve(cls, name)
        annotation = typing.get_type_hints(owner)[field.name]
        metavar = name.rsplit(".", 1)[-1].upper()
        if _is_bool(annotation):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif _is_list(annotation):
            parser.add_argument(flag, dest=name, nargs="+", metavar=metavar, help=text)
        else:
            parser.add_argument(flag, dest=name, metavar=metavar, help=text)
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="set any option by its key (listed below; lists as a,b,c); repeatable; later wins: defaults < --config "
        "< flags < --set (default: none)",
    )
    parser.add_argument(
        "--limits",
        dest=LIMITS_KEY,
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"{LIMITS_SWITCH.metadata['help']}; also the key limits (default: true)".replace("%", "%%"),
    )
    add_common_arguments(parser)
    if run_folder and "overwrite" not in fields:  # a config with its own overwrite field has it among its flags
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="reuse an output folder made by another config: its content is moved into <out>/.old-<time>/ "
            "(default: off)",
        )
    _add_key_listing(parser, cls, set(flags.values()))


def option_keys(cls: type) -> list[str]:
    """Every option key of ``cls`` in declaration order: a part's leaves by their flat key where they have one
    (``scope``, ``finetune_lr``: :func:`medprune.config.flat_names`), else dotted (``finetune.distill``)."""
    names = flat_names(cls)
    return [names.get(path, path) for path in leaf_paths(cls)]


def _parts_text(cls: type) -> list[str]:
    """One line per part of ``cls``: its field, its keys and its help (what the part means for this command)."""
    hints = typing.get_type_hints(cls)
    names = flat_names(cls)
    lines = []
    for f in dataclasses.fields(cls):
        part = part_type(hints[f.name])
        if part is None:
            continue
        fixed = {f"{f.name}.{leaf}" for leaf in f.metadata.get("fixed", ())}  # set by the command itself
        keys = ", ".join(names.get(path, path) for path in leaf_paths(part, f"{f.name}.") if path not in fixed)
        lines.append(f"{f.name} ({keys}): {str(f.metadata.get('help') or f.name).rstrip('.')}")
    return lines


def _add_key_listing(parser: argparse.ArgumentParser, cls: type, flagged: set[str]) -> None:
    """List the keys without a flag (``--config`` / ``--set`` keys) after the options, one per line."""
    flagged_paths = {flat_keys(cls).get(name, name) for name in flagged}
    others = [key for key in option_keys(cls) if flat_keys(cls).get(key, key) not in flagged_paths]
    if not others:
        return
    lines = [f"other {cls.__name__} keys (--config FILE or --set KEY=VALUE; every flag above is a key too):"]
    for name in others:
        lines.extend(
            textwrap.wrap(f"{name}: {field_help(cls, name)}", 116, initial_indent="  ", subsequent_indent="      ")
        )
    parts = _parts_text(cls)
    if parts:
        lines.append("parts (a key may also be written PART.KEY, or nested under PART: in a --config file):")
        for text in parts:
            lines.extend(textwrap.wrap(text, 116, initial_indent="  ", subsequent_indent="      "))
    parser.epilog = "\n".join(lines)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _split_commas(value: Any) -> Any:
    """A list flag given as ``a,b c`` -> ``["a", "b", "c"]`` (both spellings work); other values unchanged."""
    if isinstance(value, list):
        return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
    return value


def config_from_args(args: argparse.Namespace, cls: type[T], flags: Mapping[str, str], **extra: Any) -> T:
    """The resolved config of ``cls`` from parsed arguments (see module docstring)."""
    overrides = {name: _split_commas(getattr(args, name, None)) for name in flags.values()}
    overrides.update({k: v for k, v in extra.items() if v is not None})
    overrides = {k: v for k, v in overrides.items() if v is not None}
    overrides.update(parse_overrides(args.set))
    if getattr(args, LIMITS_KEY, None) is not None:  # --limits / --no-limits wins over --set and the file
        overrides[LIMITS_KEY] = args.limits
    if not limits_requested(args.config, overrides):
        lift_limits()  # for the rest of the command (cli.main scopes it): memory checks, configs built by runners
    return build_config(cls, args.config, overrides)
