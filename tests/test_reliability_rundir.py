"""Issue 14, items 1-3 at the library level: one writer per folder, no silent overwrite, corrupt artefacts set aside."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medprune.provenance import file_sha256
from medprune.rundir import (
    HOLDER_FILE,
    LOCK_FILE,
    RECORD_FILE,
    ConfigMismatchError,
    FolderLock,
    FolderLockedError,
    LockHolder,
    RunDir,
    RunDirError,
    check_writable,
    config_diff,
    verify_or_quarantine,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from medprune.rundir import RunDir
    with RunDir(sys.argv[1], "sweep", {"rates": [0.1]}):
        print("ready", flush=True)
        time.sleep(60)
    """
)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_holder(folder: Path, pid: int, host: str | None = None) -> None:
    holder = {"pid": pid, "host": host or socket.gethostname(), "command": "sweep", "since": "2026-01-01T00:00:00"}
    (folder / HOLDER_FILE).write_text(json.dumps(holder))


def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(FolderLockedError) as error, RunDir(folder, "sweep", {"rates": [0.1]}):
            pytest.fail("entered a folder another process holds")
        message = str(error.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "medprune sweep" in message
        assert str(folder) in message
    finally:
        holder.kill()
        holder.wait()
    with RunDir(folder, "sweep", {"rates": [0.1]}) as run:  # the kernel released the killed holder's lock
        assert run.resumed and run.previous_holder is not None and run.previous_holder.pid == holder.pid


def test_stale_holder_record_is_reported_and_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tmp_path.joinpath(LOCK_FILE).touch()
    dead = _dead_pid()
    _write_holder(tmp_path, dead)
    with caplog.at_level(logging.WARNING, logger="medprune.rundir"), RunDir(tmp_path, "train", {}) as run:
        assert run.previous_holder is not None and run.previous_holder.pid == dead
        assert LockHolder.read(tmp_path / HOLDER_FILE).pid == os.getpid()  # type: ignore[union-attr]
    assert f"pid {dead}" in caplog.text and "stale" in caplog.text
    assert not (tmp_path / HOLDER_FILE).exists()


def test_marker_lock_of_a_dead_holder_is_taken_over_and_of_a_live_one_refused(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("marker")
    _write_holder(tmp_path, _dead_pid())
    lock = FolderLock(tmp_path, "score", soft=True)
    lock.acquire()
    assert lock.held and lock.previous_holder is not None
    lock.release()
    (tmp_path / LOCK_FILE).write_text("marker")
    _write_holder(tmp_path, os.getppid())  # alive
    with pytest.raises(FolderLockedError, match=f"pid {os.getppid()}"):
        FolderLock(tmp_path, "score", soft=True).acquire()
    _write_holder(tmp_path, _dead_pid(), host="another-host")  # cannot tell: refused, holder named
    with pytest.raises(FolderLockedError, match="another-host"):
        FolderLock(tmp_path, "score", soft=True).acquire()


def test_same_config_resumes_and_cosmetic_keys_may_change(tmp_path: Path) -> None:
    with RunDir(tmp_path, "sweep", {"rates": [0.1], "device": "cpu"}, cosmetic=["device"]) as run:
        assert not run.resumed
        (tmp_path / "rows.jsonl").write_text("{}\n")
    with RunDir(tmp_path, "sweep", {"rates": [0.1], "device": "cuda", "overwrite": False}, cosmetic=["device"]) as run:
        assert run.resumed
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert [h["status"] for h in record["history"]] == ["finished", "finished"]
    assert record["config"]["device"] == "cuda" and len(record["config_sha256"]) == 64


def test_other_config_is_refused_listing_the_keys_and_nothing_changes(tmp_path: Path) -> None:
    with RunDir(tmp_path, "sweep", {"rates": [0.1], "method_options": {"ig": {"steps": 32}}}):
        (tmp_path / "rows.jsonl").write_text("{}\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ConfigMismatchError) as error:
        RunDir(tmp_path, "sweep", {"rates": [0.2], "method_options": {"ig": {"steps": 64}}}).__enter__()
    assert "rates: [0.1] -> [0.2]" in str(error.value) and "method_options.ig.steps: 32 -> 64" in str(error.value)
    with pytest.raises(ConfigMismatchError, match="'medprune sweep' run, not 'medprune train'"):
        RunDir(tmp_path, "train", {"rates": [0.1]}).__enter__()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert before == after
    assert not (tmp_path / HOLDER_FILE).exists()  # a refused writer leaves no holder behind


def test_overwrite_moves_the_old_content_aside(tmp_path: Path) -> None:
    with RunDir(tmp_path, "train", {"dataset": "breastmnist"}):
        (tmp_path / "model.safetensors").write_bytes(b"old weights")
    with RunDir(tmp_path, "train", {"dataset": "pneumoniamnist"}, overwrite=True) as run:
        assert run.moved_to is not None
        (tmp_path / "model.safetensors").write_bytes(b"new weights")
    assert (run.moved_to / "model.safetensors").read_bytes() == b"old weights"
    old_record = json.loads((run.moved_to / RECORD_FILE).read_text())
    assert old_record["config"]["dataset"] == "breastmnist"
    assert json.loads((tmp_path / RECORD_FILE).read_text())["config"]["dataset"] == "pneumoniamnist"


def test_folder_with_unrecorded_files_or_a_damaged_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"someone's weights")
    with pytest.raises(ConfigMismatchError, match=r"model\.safetensors.*--overwrite"):
        RunDir(tmp_path, "train", {}).__enter__()
    (tmp_path / RECORD_FILE).write_bytes(b"\xff{not json")
    with pytest.raises(RunDirError, match=f"{RECORD_FILE} is damaged"):
        RunDir(tmp_path, "train", {}).__enter__()
    with RunDir(tmp_path, "train", {}, overwrite=True) as run:
        assert run.moved_to is not None and (run.moved_to / "model.safetensors").is_file()


def test_config_diff_reports_added_and_removed_keys() -> None:
    assert config_diff({"a": 1}, {"a": 1, "b": None}) == ["b: (absent) -> null"]
    assert config_diff({"a": 1, "verbose": True}, {"a": 1}) == []


def test_check_writable_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match=f"output folder {blocker} is a file"):
        check_writable(blocker)
    with pytest.raises(RunDirError, match=f"output folder {blocker / 'sub'} cannot be written"):
        check_writable(blocker / "sub")
    assert check_writable(tmp_path / "a" / "b").is_dir()


def test_corrupt_cached_artefact_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "lrp_random_0123.safetensors"
    sidecar = path.with_suffix(".json")
    save_file({"features.0": torch.arange(8.0)}, str(path))
    sidecar.write_text("{}")
    digest = file_sha256(path)
    assert verify_or_quarantine(path, digest) and verify_or_quarantine(path, None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5])  # truncated, as by a kill mid-write
    with caplog.at_level(logging.WARNING, logger="medprune.rundir"):
        assert not verify_or_quarantine(path, digest, companions=[sidecar])
    assert not path.exists() and not sidecar.exists()
    moved = sorted(p.name for p in tmp_path.iterdir())
    assert len(moved) == 2 and all(".corrupt-" in name for name in moved)
    assert path.name in caplog.text and "recomputed" in caplog.text
    path.write_bytes(data[: len(data) - 5])  # no digest recorded: the header says bytes are missing
    assert not verify_or_quarantine(path, None)
    assert not verify_or_quarantine(tmp_path / "absent.safetensors", None)
