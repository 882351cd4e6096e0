"""One CLI style: every command takes --config, flags, --set and --quiet; every option's help says what it is, its
valid values and its default, from the config dataclass (issue 13)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import typing

import pytest

from medprune import progress
from medprune.cli.config_args import field_default, field_docs, field_help, format_default, valid_values
from medprune.cli.main import COMMANDS, build_parser, main
from medprune.runs.score import ScoreConfig


@functools.cache
def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


def test_every_command_is_registered_and_has_a_parser() -> None:
    assert set(_commands()) == set(COMMANDS) >= {
        "train", "evaluate", "score", "prune", "sweep", "report", "demo", "import", "compress", "study",
    }  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_config_set_quiet_verbose(command: str) -> None:
    parser = _commands()[command]
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--config", "--set", "--quiet", "-q", "--verbose"} <= flags
    assert parser.get_default("_config_class") is not None  # options come from one config dataclass


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help_with_its_default_and_valid_values(command: str) -> None:
    parser = _commands()[command]
    cls = parser.get_default("_config_class")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for action in _options(parser):
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{command} {name}: no help"
        assert "(default: " in action.help, f"{command} {name}: help names no default: {action.help!r}"
        assert "see " not in action.help.split("(default")[0][:4], f"{command} {name}: help is a reference"
        if action.dest not in fields:
            continue
        field = fields[action.dest]
        default = field_default(field)
        shown = format_default(default)
        if shown != "none" and not field.metadata.get("required"):
            assert f"(default: {shown})" in action.help, f"{command} {name}: default {shown!r} not in help"
        literals = [v for arg in [hints[action.dest], *typing.get_args(hints[action.dest])] for v in _lits(arg)]
        for value in literals:
            assert str(value) in action.help.split("valid values:")[-1], f"{command} {name}: {value!r} not listed"
        if literals:
            assert "valid values:" in action.help


def _lits(annotation: typing.Any) -> list[typing.Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _lits(arg)]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_config_field_is_documented(command: str) -> None:
    """Each field has an ``Attributes:`` entry (or metadata help), so -h and --set keys never go blank."""
    cls = _commands()[command].get_default("_config_class")
    missing = [f.name for f in dataclasses.fields(cls) if not field_docs(cls).get(f.name)]
    assert not missing, f"{cls.__name__} fields without a docstring entry: {missing}"


def test_score_help_explains_instead_of_pointing_at_the_dataclass() -> None:
    text = _commands()["score"].format_help()
    assert "see ScoreConfig" not in text
    help_of = {a.dest: a.help for a in _commands()["score"]._actions}
    assert help_of["methods"].startswith("scoring methods")
    assert "lrp" in help_of["methods"] and "ig" in help_of["methods"]  # the registry's names
    assert "valid values: signed, abs (default: signed)" in help_of["sign"]
    assert "method_options:" in text  # keys without a flag are listed for --config / --set


def test_doc_parsing_splits_several_entries_on_one_line() -> None:
    @dataclasses.dataclass
    class Demo:
        """Demo.

        Attributes:
            a: first thing. b, c: shared text
                continued here.
            mode: how. Not a field: text.
        """

        a: int = 1
        b: list[str] = dataclasses.field(default_factory=lambda: ["x", "y"])
        c: str | None = None
        mode: typing.Literal["fast", "slow"] = "fast"

    docs = field_docs(Demo)
    assert docs == {"a": "first thing.", "b": "shared text continued here.", "c": "shared text continued here.",
                    "mode": "how. Not a field: text."}  # fmt: skip
    assert field_help(Demo, "b") == "shared text continued here (default: x,y)"
    assert field_help(Demo, "mode") == "how. Not a field: text; valid values: fast, slow (default: fast)"
    assert valid_values(ScoreConfig, "samplings") == ["random", "confidence", "clustering"]


def test_quiet_flag_before_or_after_the_command_silences_info_logs(
    tmp_path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """``--quiet`` raises medprune's log level to WARNING and silences progress for the run, then restores both."""
    seen: list[tuple[bool, int]] = []

    def spy(args: argparse.Namespace) -> int:
        seen.append((progress.is_quiet(), logging.getLogger("medprune").getEffectiveLevel()))
        logging.getLogger("medprune.runs").info("an info line")
        return 0

    caplog.set_level(logging.DEBUG)
    for argv in (["--quiet", "import"], ["import", "-q"], ["import"]):
        parser_run = COMMANDS["import"].run
        try:
            COMMANDS["import"].run = spy  # type: ignore[attr-defined]
            assert main([*argv, "--arch", "resnet18", "--weights", "w.pt", "--num-classes", "2"]) == 0
        finally:
            COMMANDS["import"].run = parser_run  # type: ignore[attr-defined]
    assert seen[0] == (True, logging.WARNING) and seen[1] == (True, logging.WARNING)
    assert seen[2] == (False, logging.INFO)
    assert [r.getMessage() for r in caplog.records].count("an info line") == 1  # only the run without --quiet
    assert not progress.is_quiet()  # restored after main returns


def test_bad_value_of_a_flag_is_one_line_exit_2(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["score", str(tmp_path / "m.safetensors"), "--sign", "both", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "sign='both'" in err[0] and "signed, abs" in err[0]
