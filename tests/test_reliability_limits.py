"""Issue 24, the requests part: bounds on what a run may ask for, the memory of one batch, folder datasets with
non-image files, error lines in the CLI's words, and the training / sweep logs written so a kill leaves no half row.

Each refusal is checked the same way: exit 2, one line naming the key, the value and the bound (or the estimate),
and nothing written. docs/reliability.md lists the case classes with the test that holds each.
"""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medprune.checkpoint import save_checkpoint
from medprune.cli.main import main
from medprune.config import LimitError, build_config, check_limits, limits_enabled, limits_scope
from medprune.data import load_dataset
from medprune.data.folders import load_folder
from medprune.data.registry import LoadOptions
from medprune.data.validate import validate_splits
from medprune.models import create_model
from medprune.rundir import DiskFullError
from medprune.runs.train import TrainConfig
from medprune.sweep.table import RowLog
from medprune.training.loop import train
from medprune.training.memory import check_batch_memory, estimate_batch_memory


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDPRUNE_OFFLINE", "1")
    monkeypatch.setenv("MEDPRUNE_QUIET", "1")


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture) -> str:
    """Run ``argv``; assert exit 2, one error line, and that ``out`` was not created; return the line."""
    assert main(argv) == 2
    line = error_line(capsys)
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    return line


def tiny_checkpoint(path: Path, model: str = "resnet_small", image_size: int = 28) -> Path:
    network = create_model(model, num_classes=2, image_size=image_size)
    return save_checkpoint(path, network, {"class_names": ["a", "b"], "dataset": {"name": "pneumoniamnist"}})


# 1. bounds beside each option's declaration, checked when the config is built -----------------------------------------
RATES = ",".join(f"{i / 20000:.5f}" for i in range(10_000))
BOUNDED = [
    (["train", "--set", "epochs=1000000000"], "epochs=1000000000", "10000"),
    (["train", "--set", "num_workers=100000"], "num_workers=100000", str(4 * (os.cpu_count() or 1))),
    (["train", "--image-size", "100000"], "image_size=100000", "4096"),
    (["sweep", "--checkpoints", "ck", "--set", "finetune_epochs=0,100000000"], "finetune_epochs[1]=100000000", "10000"),
    (["sweep", "--checkpoints", "ck", "--set", f"rates={RATES}"], "rates holds 10000 entries", "200"),
    (["compress", "ck", "--set", "finetune_steps=1000000000"], "finetune_steps=1000000000", "100000"),
    (["compress", "ck", "--set", f"rates={RATES}"], "rates holds 10000 entries", "200"),
    (["report", "--results", "x.csv", "--set", "n_resamples=1000000000000"], "n_resamples=1000000000000", "1000000"),
    (["score", "ck", "--methods", "ig", "--option", "ig.steps=1e9"], "--option ig.steps=1000000000.0", "10000"),
    (["import", "--arch", "resnet18", "--weights", "w.pt", "--num-classes", "100000000"], "num_classes=100000000", ""),
]


@pytest.mark.parametrize(("argv", "named", "bound"), BOUNDED, ids=[" ".join(a[:3])[:40] for a, _, _ in BOUNDED])
def test_1_requests_beyond_a_bound_are_refused_before_any_work(tmp_path, capsys, argv, named, bound):
    out = tmp_path / "out"
    line = refused([*argv, "--out", str(out)], out, capsys)
    assert named in line and f"bound {bound}" in line and "--no-limits" in line, line


def test_1_a_study_asking_its_claims_for_unbounded_resamples_is_refused_before_any_work(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("claims:\n  n_resamples: 1000000000\n")
    out = tmp_path / "out"
    line = refused(["study", "--config", str(config), "--out", str(out)], out, capsys)
    assert "claims.n_resamples=1000000000" in line and "bound 1000000" in line and "--no-limits" in line, line


def test_1_no_limits_lifts_every_bound_for_that_command_only(tmp_path, capsys):
    config = build_config(TrainConfig, overrides={"epochs": "20000", "limits": "false"})
    assert config.epochs == 20000
    with pytest.raises(LimitError, match=r"epochs=20000 is above its bound 10000"):
        build_config(TrainConfig, overrides={"epochs": "20000"})
    with limits_scope(False):
        check_limits(TrainConfig(epochs=20000))  # lifted: no error
    yaml = tmp_path / "c.yaml"
    yaml.write_text("epochs: 20000\nlimits: false\n")
    assert build_config(TrainConfig, yaml).epochs == 20000
    # through the command: --no-limits gets past the bound, to the next check (no data there)
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()
    argv = ["train", "--dataset", "pneumoniamnist", "--data-root", str(empty), "--set", "epochs=20000"]
    assert main([*argv, "--no-limits", "--out", str(out)]) == 2
    assert "bound" not in error_line(capsys)
    assert limits_enabled()  # the command's switch ended with it


# 2. memory of one batch, estimated before any data is read --------------------------------------------------------
def test_2_a_batch_that_cannot_fit_is_refused_with_its_estimate(tmp_path, capsys):
    out = tmp_path / "out"
    line = refused(["train", "--image-size", "4000", "--out", str(out)], out, capsys)
    assert "resnet_small at 4000 px" in line and "TiB" in line and "available" in line, line
    small = estimate_batch_memory("resnet_small", 2, 28, 3, 32, training=True)
    large = estimate_batch_memory("resnet_small", 2, 56, 3, 32, training=True)
    assert small.activations is not None and large.activations == pytest.approx(4 * small.activations, rel=0.05)
    assert estimate_batch_memory("resnet_small", 2, 28, 3, 32).total < small.total  # evaluation < training
    with limits_scope(False):
        assert check_batch_memory("resnet_small", 2, 4000, batch_size=32, training=True) is None


def test_2_a_sidecar_asking_a_vit_for_a_huge_image_is_refused_before_allocating(tmp_path, capsys):
    checkpoint = tiny_checkpoint(tmp_path / "ck" / "model", "vit_small", 32)
    sidecar = checkpoint.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["model"]["image_size"] = meta["image_size"] = 1_000_000
    sidecar.write_text(json.dumps(meta))
    out = tmp_path / "eval.json"
    line = refused(["evaluate", str(checkpoint), "--out", str(out)], out, capsys)
    assert "vit_small at 1000000 px" in line and str(sidecar) in line and "TiB" in line, line


# 3. folder datasets: other files skipped with a count, undecodable images refused naming the file -----------------
def test_3_folder_dataset_skips_non_image_files_with_a_note_and_refuses_undecodable_images(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "a" / "README.txt").write_text("not an image")
    (tmp_path / "b" / "labels.csv").write_text("x,y\n")
    splits = load_dataset("folder", tmp_path, image_size=8, channels=1)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 12
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        validate_splits(load_dataset("folder", tmp_path, image_size=8, channels=1))


def test_3_skipped_files_are_counted_in_the_notes(tmp_path, caplog):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((8, 8), i * 40, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
        (tmp_path / name / "notes.txt").write_text("x")
    with caplog.at_level("WARNING"):
        load_dataset("folder", tmp_path, image_size=8, channels=1)
    assert "2 file(s) without an image extension skipped" in caplog.text and "a/notes.txt" in caplog.text


# 4. error lines in the CLI's words -------------------------------------------------------------------------------
def test_4_error_lines_speak_the_cli_language(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDPRUNE_DATA", raising=False)
    out = tmp_path / "out"
    line = refused(["evaluate", str(tmp_path / "model.pt"), "--out", str(out)], out, capsys)
    assert "medprune import" in line and "medprune.checkpoint" not in line, line
    table = tmp_path / "table.csv"
    table.write_text("checkpoint,accuracy\nx,0.5\n")
    line = refused(["report", "--results", str(table), "--out", str(out)], out, capsys)
    assert "lacks the column(s) method, rate" in line, line
    with pytest.raises(ValueError) as error:
        load_folder(None, LoadOptions())
    assert "--data-root" in str(error.value) and "pass root=" not in str(error.value)


# 5. the training and sweep logs: no half row after a failed or killed write ------------------------------------------
def test_5_a_row_log_append_that_meets_a_full_disk_leaves_the_complete_rows(tmp_path, monkeypatch):
    log = RowLog(tmp_path / "rows.jsonl")
    log.append({"method": "lrp", "rate": 0.1})
    before = log.path.read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match="rows.jsonl"):
        log.append({"method": "lrp", "rate": 0.2, "predictions": "x" * 10_000})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert log.path.read_bytes() == before
    with open(log.path, "ab") as handle:  # a kill mid-write: half a line
        handle.write(b'{"method": "lrp", "ra')
    assert [r["rate"] for r in log.read()] == [0.1]
    log.append({"method": "lrp", "rate": 0.3})
    assert [r["rate"] for r in log.read()] == [0.1, 0.3]
    assert log.path.read_bytes().count(b"\n") == 2


def test_5_training_writes_history_and_metrics_whole(tmp_path, caplog):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(folder / name / f"{i}.png")
    splits = load_dataset("folder", folder, image_size=28, channels=3)
    config = TrainConfig(epochs=2, batch_size=8, progress=False, bn_recalibration=False, device="cpu")
    torch.manual_seed(0)
    model = create_model("resnet_small", num_classes=2, image_size=28)
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="medprune.training.loop"):
        train(model, splits, config, out)
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    assert not list(out.glob(".*.tmp"))
    assert "the 2 epochs take about" in caplog.text
