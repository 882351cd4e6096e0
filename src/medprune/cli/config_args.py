"""Shared CLI plumbing for config-driven commands: ``--config YAML``, a few flags, ``--set key=value``.

Later wins: dataclass defaults ← YAML ← flags ← ``--set``; unknown keys and disallowed values are refused by
:func:`medprune.config.build_config` with the valid ones listed.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from medprune.config import build_config, parse_overrides

T = TypeVar("T")


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, flags: Mapping[str, str], *, run_folder: bool = True
) -> None:
    """Add ``--config``, one option per ``flags`` entry (``--flag -> field``), ``--set``, ``--verbose`` and (for
    commands that write a run folder, ``run_folder``) ``--overwrite``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    parser.add_argument("--config", metavar="YAML", help=f"YAML file of {cls.__name__} options")
    for flag, name in flags.items():
        field = fields[name]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        if "list" in str(field.type):
            parser.add_argument(flag, dest=name, nargs="+", metavar=name.upper(), help=f"(default: {default})")
        else:
            parser.add_argument(flag, dest=name, metavar=name.upper(), help=f"(default: {default})")
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help=f"any {cls.__name__} option; valid keys: {', '.join(fields)}",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, tracebacks on errors"
    )
    if run_folder and "overwrite" not in fields:  # a config with its own overwrite field declares its own flag
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="reuse an output folder made by another config: its content is moved into <out>/.old-<time>/",
        )


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
