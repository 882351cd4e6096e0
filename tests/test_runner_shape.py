"""One runner shape (issue 19): every folder-writing command's config is an OutputFolder, its runner takes no
``overwrite`` keyword, checks its inputs first and returns a dataclass; the runner table lists every command."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import yaml

import medprune.runs
from medprune.cli.main import COMMANDS, build_parser, main
from medprune.config import build_config
from medprune.rundir import FolderLock, FolderLockedError, OutputFolder
from medprune.runs.study import StudyConfig, run_study
from medprune.training.config import TrainConfig

#: command -> (runner module, runner name); ``evaluate`` writes one file beside the checkpoint, not a folder.
RUNNERS = {
    "import": ("import_model", "run_import"),
    "train": ("train", "run_train"),
    "evaluate": ("evaluate", "run_evaluate"),
    "score": ("score", "run_score"),
    "prune": ("prune", "run_prune"),
    "compress": ("compress", "run_compress"),
    "quantize": ("quantize", "run_quantize"),
    "sweep": ("sweep", "run_sweep"),
    "report": ("report", "run_report"),
    "demo": ("demo", "run_demo"),
    "study": ("study", "run_study"),
}
FOLDER_WRITERS = sorted(set(RUNNERS) - {"evaluate"})


def _runner(command: str):  # noqa: ANN202
    module, name = RUNNERS[command]
    return getattr(importlib.import_module(f"medprune.runs.{module}"), name)


def test_the_runner_table_lists_every_command() -> None:
    assert set(RUNNERS) == set(COMMANDS)
    table = medprune.runs.__doc__ or ""
    for command, (module, name) in RUNNERS.items():
        assert re.search(rf"``{command}``\s+``{module}\.{name}\(\w+\)``\s+:class:", table), command


@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_every_runner_takes_its_config_and_returns_a_dataclass(command: str) -> None:
    runner = _runner(command)
    hints = typing.get_type_hints(runner)
    assert "overwrite" not in inspect.signature(runner).parameters
    assert dataclasses.is_dataclass(hints["config"]) and dataclasses.is_dataclass(hints["return"])


@pytest.mark.parametrize("command", FOLDER_WRITERS)
def test_folder_writers_share_out_and_overwrite(command: str) -> None:
    config = typing.get_type_hints(_runner(command))["config"]
    assert issubclass(config, OutputFolder)
    fields = {f.name: f for f in dataclasses.fields(config)}
    assert (
        fields["overwrite"].default is False
        and fields["overwrite"].metadata == dataclasses.fields(OutputFolder)[1].metadata
    )
    argv = [command, *(["CHECKPOINT"] if command == "compress" else [])]
    assert build_parser().parse_args([*argv, "--overwrite"]).overwrite is True
    assert not build_parser().parse_args(argv).overwrite


def test_train_out_dir_is_still_accepted(tmp_path: Path) -> None:
    assert build_config(TrainConfig, overrides={"out_dir": "a"}).out == "a"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"out_dir": "b", "epochs": 2}))
    assert build_config(TrainConfig, tmp_path / "train.yaml").out == "b"
    assert build_config(TrainConfig, tmp_path / "train.yaml", {"out": "c"}).out == "c"  # later wins
    for flag in ("--out-dir", "--out"):
        assert build_parser().parse_args(["train", flag, "d"]).out == "d"


def test_study_takes_its_folder_with_rundir(tmp_path: Path, data_root: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "study"
    out.mkdir()
    lock = FolderLock(out, "study")
    lock.acquire()  # another study is writing the folder
    try:
        config = StudyConfig(out=str(out), data_root=str(data_root), architectures=["nope"])
        with pytest.raises(ValueError, match="nope"):  # options are checked before the folder is taken
            run_study(config)
        config = build_config(StudyConfig, overrides={"out": str(out), "data_root": str(data_root)})
        with pytest.raises(FolderLockedError, match="being written by"):
            run_study(config)
        assert main(["study", "--out", str(out), "--data-root", str(data_root), "--quick"]) == 2
        assert "being written by" in capsys.readouterr().err
    finally:
        lock.release()
    assert not (out / "run.json").exists()
