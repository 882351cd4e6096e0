"""Shared CLI plumbing for config-driven commands: ``--config YAML``, a few flags, ``--set key=value``.

Later wins: dataclass defaults ← YAML ← flags ← ``--set``; unknown keys and disallowed values are refused by
:func:`medprune.config.build_config` with the valid ones listed.

Help comes from one source: each option's text is the config field's entry under ``Attributes:`` in the dataclass
docstring (or ``field(metadata={"help": ...})``), followed by its valid values (a ``Literal`` type, a
``metadata["choices"]`` or the registry of that kind of name) and its default. Every field without a flag is listed
the same way after the options, as a key for ``--config`` / ``--set``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, get_args, get_origin

from medprune.config import build_config, parse_overrides
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

_NAMES = r"[a-z_][a-z0-9_]*(?:,\s*[a-z_][a-z0-9_]*)*"
_ENTRY = re.compile(rf"^({_NAMES}):\s+(.*)$")
_INLINE = re.compile(rf"(?:(?<=^)|(?<=\.\s))({_NAMES}):\s")
_DOC_DEFAULT = re.compile(r"\s*\((?:default:?|None\s*[:=])\s+([^()]*)\)")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain(text: str) -> str:
    """Docstring markup -> terminal text (``x`` -> x, :class:`~a.B` -> B)."""
    text = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1), text)
    return " ".join(text.replace("``", "").split())


def field_docs(cls: type) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of ``cls``'s docstring and ``metadata["help"]``.

    An entry may name several fields (``epochs, lr: ...``) and one line may hold several entries (``a: x. b: y``).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    entries: list[tuple[str, str]] = []
    lines = (inspect.getdoc(cls) or "").splitlines()
    inside = False
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        if line.strip() and not line.startswith(" "):
            break
        match = _ENTRY.match(line.strip()) if line.startswith("    ") and not line.startswith("     ") else None
        if match and all(n.strip() in fields for n in match.group(1).split(",")):
            entries.append((match.group(1), match.group(2)))
        elif entries and line.strip():
            entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
    docs: dict[str, str] = {}
    for names, text in entries:
        for name, part in _split_inline(names, text, fields):
            for field_name in (n.strip() for n in name.split(",")):
                docs[field_name] = _plain(part)
    for name, field in fields.items():
        if field.metadata.get("help"):
            docs[name] = _plain(str(field.metadata["help"]))
    return docs


def _split_inline(names: str, text: str, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``"x. b: y"`` after ``a`` -> ``[(a, "x."), (b, "y")]`` when every name before a colon is a field."""
    parts: list[tuple[str, str]] = []
    start, current = 0, names
    for match in _INLINE.finditer(text):
        if match.start() == 0 or not all(n.strip() in fields for n in match.group(1).split(",")):
            continue
        parts.append((current, text[start : match.start()].strip()))
        start, current = match.end(), match.group(1)
    parts.append((current, text[start:].strip()))
    return parts


def _literals(annotation: Any) -> list[Any]:
    """Values of every ``Literal`` inside ``annotation`` (through ``Optional``, ``list[...]``)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    values: list[Any] = []
    for arg in get_args(annotation):
        values.extend(v for v in _literals(arg) if v not in values)
    return values


def valid_values(cls: type, name: str) -> list[str]:
    """The valid values of field ``name`` of ``cls`` (empty when any value of its type is allowed)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.metadata.get("choices"):
        return [str(v) for v in field.metadata["choices"]]
    annotation = typing.get_type_hints(cls)[name]
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
    """``<what it is>; valid values: ... (default: ...)`` for field ``name`` of ``cls``."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    text = (field_docs(cls).get(name) or name.replace("_", " ")).rstrip(".")
    default = "required" if field.metadata.get("required") else format_default(field_default(field))
    described = _DOC_DEFAULT.search(text)
    if described and default == "none":  # "(default: the checkpoint's)" says what none means: use it
        text, default = (text[: described.start()] + text[described.end() :]).strip(), described.group(1)
    values = valid_values(cls, name)
    if values:
        text = f"{text}; valid values: {', '.join(values)}"
    return f"{text} (default: {default})"


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
    hints = typing.get_type_hints(cls)
    parser.set_defaults(_config_class=cls)
    parser.add_argument(
        "--config", metavar="FILE", help=f"YAML file of {cls.__name__} options, keys as listed here (default: none)"
    )
    for flag, name in flags.items():
        help_text = field_help(cls, name).replace("%", "%%")
        if _is_bool(hints[name]):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif _is_list(hints[name]):
            parser.add_argument(flag, dest=name, nargs="+", metavar=name.upper(), help=help_text)
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), help=help_text)
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="set any option by its key (listed below; lists as a,b,c); repeatable; later wins: defaults < --config "
        "< flags < --set (default: none)",
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


def _add_key_listing(parser: argparse.ArgumentParser, cls: type, flagged: set[str]) -> None:
    """List the fields without a flag (``--config`` / ``--set`` keys) after the options, one per line."""
    others = [f.name for f in dataclasses.fields(cls) if f.name not in flagged]
    if not others:
        return
    lines = [f"other {cls.__name__} keys (--config FILE or --set KEY=VALUE; every flag above is a key too):"]
    for name in others:
        lines.extend(
            textwrap.wrap(f"{name}: {field_help(cls, name)}", 116, initial_indent="  ", subsequent_indent="      ")
        )
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
    return build_config(cls, args.config, overrides)
