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
from medprune.cli.config_args import field_default, field_help, format_default, help_text, option_keys, valid_values
from medprune.cli.main import COMMANDS, build_parser, main
from medprune.config import option
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
    """Each option (parts' leaves included) has ``help`` metadata, so -h and --set keys never go blank."""
    cls = _commands()[command].get_default("_config_class")
    missing = [key for key in option_keys(cls) if help_text(cls, key) == key.replace("_", " ")]
    assert not missing, f"{cls.__name__} options without help metadata: {missing}"


def test_score_help_explains_instead_of_pointing_at_the_dataclass() -> None:
    text = _commands()["score"].format_help()
    assert "see ScoreConfig" not in text
    help_of = {a.dest: a.help for a in _commands()["score"]._actions}
    assert help_of["methods"].startswith("scoring methods")
    assert "lrp" in help_of["methods"] and "ig" in help_of["methods"]  # the registry's names
    assert "valid values: signed, abs (default: signed)" in help_of["sign"]
    assert "method_options:" in text  # keys without a flag are listed for --config / --set


@dataclasses.dataclass(frozen=True)
class Part:
    scope: typing.Literal["global", "layer"] = option("global", help="the ranking scope")


@dataclasses.dataclass
class Demo:
    b: list[str] = option(default_factory=lambda: ["x", "y"], help="shared text. With a colon: here.")
    c: str | None = option(None, help="where it is", shown_default="the checkpoint's")
    mode: typing.Literal["fast", "slow"] = option("fast", help="how")
    ranking: Part = option(default_factory=lambda: Part("layer"), help="the ranking")


def test_help_valid_values_and_default_come_from_the_field() -> None:
    assert field_help(Demo, "b") == "shared text. With a colon: here (default: x,y)"
    assert field_help(Demo, "c") == "where it is (default: the checkpoint's)"
    assert field_help(Demo, "mode") == "how; valid values: fast, slow (default: fast)"
    # a part's leaf, by its flat or dotted key, with the command's own default for the part
    assert field_help(Demo, "scope") == field_help(Demo, "ranking.scope")
    assert field_help(Demo, "scope") == "the ranking scope; valid values: global, layer (default: layer)"
    assert option_keys(Demo) == ["b", "c", "mode", "scope"]
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
